"""The usage process (``scr: usage``): runs the usage reader (``scr.usage.reader``).

Like a destinations' reader process, it is woken by the writer's datagram after each commit
(on ``usage.aggregates.notify`` in the socket folder: no destination process can have that
name), looks at the ledger's head itself when it hears nothing for ``QUIET_CHECK_S``, and
sends its writes to the one writer (``scr.serve.writes``). Once woken it waits
``ROUND_INTERVAL_S`` and counts everything committed meanwhile in one round: under load a
round holds thousands of events, and the events of a minute that share a key become one row
(measured: 0.1 row per event at 20k events/s), which keeps the writer's share small. It
runs at nice ``USAGE_NICENESS``, so on a busy machine it gives way to ingest; it catches up
afterwards.

In a cluster every instance runs it, and it counts only while it holds the usage lease
(``scr.bus.leases``): a standby is ready and idle, and the one that takes the lease over reads
the cursor, the alerts sent and the totals again, then counts from where the last holder's
write left the cursor. That write went through the holder's own writer, and the cursor's
compare-and-set admits each round once whichever instance sends it: never counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any

from scr.bus.leases import Lease, lease_for
from scr.config import UsageConfig
from scr.metrics import Metrics
from scr.route.price_file import live_prices
from scr.serve.child import EXIT_START_ERROR, calm_the_collector, prepared, until_stopped
from scr.serve.reader import MAX_DATAGRAM_BYTES, QUIET_CHECK_S
from scr.serve.readers import bind_unix, usage_notify_path, writes_path
from scr.serve.supervisor import READY_MESSAGE, ChildArgs
from scr.serve.writes import AddUsage, RecordingTx, RemoteCommitter
from scr.store import Store, open_store
from scr.store.records import DurationRow, UsageRow
from scr.usage.reader import UsageReader

log = logging.getLogger("scr.serve.usage")

USAGE_NICENESS = 10
ROUND_INTERVAL_S = 0.5  # the usage aggregates trail the ledger by about this much
TITLE = "scr: usage"


def run_usage(args: ChildArgs) -> int:
    """Keep the usage aggregates at the ledger's head until SIGTERM."""
    os.nice(USAGE_NICENESS)
    socket_dir, data_dir = Path(args.socket_dir), Path(args.data)
    ready = prepared(args, lambda settings, store_uri: open_store(
        data_dir, store_uri, settings.cluster.partitions, settings.store_pool))
    if ready is None:
        return EXIT_START_ERROR
    settings, store = ready
    wake = bind_unix(socket.SOCK_DGRAM, usage_notify_path(socket_dir))
    wake.setblocking(False)
    calm_the_collector()
    metrics = Metrics()
    lease = lease_for(settings, args.store or settings.store, "usage", args.url, metrics)
    try:
        asyncio.run(_follow(store, data_dir, writes_path(socket_dir), wake, args.ready_fd,
                            settings.usage, lease, metrics))
    finally:
        store.close()
        wake.close()
    return 0


async def _follow(store: Store, data_dir: Path, writer_at: Path, wake: socket.socket, ready_fd: int,
                  usage: UsageConfig, lease: Lease, metrics: Metrics) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    remote = RemoteCommitter(writer_at)

    async def write(rows: list[UsageRow], after_seq: int, seq: int, alerts: list[dict[str, Any]],
                    durations: list[DurationRow], judged: int) -> bool:
        def record(tx: RecordingTx) -> int:
            return tx.record(AddUsage(rows, after_seq, seq, alerts, durations, judged))

        # not durable: the rows and the cursor commit together, so a group lost with the
        # page cache is counted again from the older cursor (the next durable commit's
        # fsync covers it otherwise, as for the destinations' cursors)
        return bool(await remote.run(record, durable=False))

    reader = UsageReader(store, live_prices(data_dir), write, metrics, usage.budgets, usage.anomalies)
    os.write(ready_fd, READY_MESSAGE)  # ready as a standby too: it waits for the lease
    os.close(ready_fd)
    try:
        await until_stopped(stop, lease.hold(lambda: _count(reader, store, wake)))
    finally:
        await remote.close()


async def _count(reader: UsageReader, store: Store, wake: socket.socket) -> None:
    """While the lease is held: the reader's state read from the store (another instance may
    have counted since), then every round to the ledger's head."""
    while True:
        try:
            await asyncio.to_thread(reader.load)
            break
        except Exception as error:  # the store is unreachable: try again
            log.warning("cannot read the usage cursor: %s", error)
            await asyncio.sleep(QUIET_CHECK_S)
    try:
        await _wake_and_count(reader, store, wake)
    finally:
        reader.hide_gauges()  # the next holder shows them


async def _wake_and_count(reader: UsageReader, store: Store, wake: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(loop.sock_recv(wake, MAX_DATAGRAM_BYTES), QUIET_CHECK_S)
            # a round covers ROUND_INTERVAL_S of commits: fewer, larger rounds write fewer rows
            await asyncio.sleep(ROUND_INTERVAL_S)
            drain(wake)
            await reader.catch_up(await asyncio.to_thread(store.last_seq))
        except Exception as error:  # the store or the writer is unreachable: try again
            log.warning("cannot count the ledger's new entries: %s", error)
            await asyncio.sleep(QUIET_CHECK_S)


def drain(wake: socket.socket) -> None:
    """Forget the wake-ups that came meanwhile (the ledger's head is read from the store)."""
    with contextlib.suppress(BlockingIOError):
        while wake.recv(MAX_DATAGRAM_BYTES):
            pass
