"""The enricher's process (``scr: enrich``): runs the enricher (``scr.enrich.enricher``).

Like the usage process, it is woken by the writer's datagram after each commit (on
``enrich.vectors.notify`` in the socket folder), looks at the ledger's head itself when it
hears nothing for ``QUIET_CHECK_S``, and sends its writes to the one writer. Embedding is
the heaviest work of an instance, and never on the way of an acknowledgement: each round's
embedding runs under Linux's ``SCHED_IDLE`` policy (``idle``), with numpy on
``ENRICH_THREADS`` thread, so it takes only CPU time that ingest and the other readers leave
(measured: ingest with enrichment on at 100-107% of it off, ``bench.bench_enrich``). A round
starved there (entries waiting ``STARVED_AFTER_S`` without progress) is moved to the normal
policy at the process's nice ``ENRICH_NICENESS`` (``_unstarve``), so a machine busy for good
still sees the enricher move.
On the SQLite store it keeps the tenants' indexes and saves them beside the database at
most every ``SAVE_EVERY_S`` (and when it stops).

In a cluster every instance runs it, and it embeds only while it holds the enrichment lease
(``scr.bus.leases``): a standby loads its model and waits; the one that takes the lease over
reads the cursor again and goes on from where the last holder's write (through that
holder's writer, compare-and-set) left it. The vectors are in PostgreSQL, so every instance
searches them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from scr.bus.leases import Lease, lease_for
from scr.config import EnrichmentConfig
from scr.enrich.embedders import Embedder, open_embedder
from scr.enrich.enricher import Enricher
from scr.enrich.neighbours import IndexedNeighbours
from scr.enrich.status import STATE_NAME
from scr.log.commit import utc_now
from scr.log.tail import Opening
from scr.metrics import Metrics
from scr.privacy.opening import EventOpener
from scr.serve.child import EXIT_START_ERROR, calm_the_collector, prepared, until_stopped
from scr.serve.reader import MAX_DATAGRAM_BYTES, QUIET_CHECK_S, open_with_subjects
from scr.serve.readers import bind_unix, enrich_notify_path, writes_path
from scr.serve.supervisor import READY_MESSAGE, ChildArgs
from scr.serve.usage import drain
from scr.serve.writes import AddVectors, RecordingTx, RemoteCommitter, SetCursor, SetState, StartEnrichment
from scr.store import Store
from scr.store.records import BACKFILL_ANSWERED, VectorRow
from scr.store.sqlite import SqliteStore

log = logging.getLogger("scr.serve.enrich")

ENRICH_NICENESS = 15
ENRICH_THREADS = 1
WATCH_EVERY_S = 0.5  # how often a starved round is looked for
SAVE_EVERY_S = 10.0
TITLE = "scr: enrich"


class RemoteWrites:
    """The enricher's writes, through the one writer (``scr.serve.writes``)."""

    def __init__(self, writer_at: Path) -> None:
        self.remote = RemoteCommitter(writer_at)

    async def _one(self, op: AddVectors | StartEnrichment | SetState | SetCursor,
                   durable: bool) -> int | None:
        def record(tx: RecordingTx) -> int:
            return tx.record(op)

        result: int | None = await self.remote.run(record, durable=durable)
        return result

    async def start(self, head: int) -> None:
        await self._one(StartEnrichment(head), durable=True)

    async def add(self, rows: list[VectorRow], after_seq: int, seq: int, backfill: bool) -> bool:
        # not durable: the rows and the cursor commit together, so a round lost with the page
        # cache is embedded again from the older cursor (as the usage rounds)
        return bool(await self._one(AddVectors(rows, after_seq, seq, backfill), durable=False))

    async def report(self, error: str | None) -> None:
        state = "active" if error is None else "failing"
        await self._one(SetState(STATE_NAME, state, error or "", utc_now()), durable=False)

    async def answer(self, asked: int) -> None:
        await self._one(SetCursor(BACKFILL_ANSWERED, asked), durable=True)


def run_enrich(args: ChildArgs) -> int:
    """Keep the vectors at the ledger's head until SIGTERM."""
    os.nice(ENRICH_NICENESS)
    socket_dir, data_dir = Path(args.socket_dir), Path(args.data)
    ready = prepared(args, lambda settings, store_uri: open_with_subjects(data_dir, settings, store_uri))
    if ready is None:
        return EXIT_START_ERROR
    settings, (store, subjects) = ready
    assert settings.enrichment is not None  # the supervisor starts this process only then
    try:
        embedder = embedder_of(settings.enrichment)
        if not isinstance(store, SqliteStore):
            store.vectors.ensure()  # type: ignore[attr-defined]
    except (ValueError, RuntimeError) as error:
        log.error("enrichment cannot start: %s", error)
        store.close()
        return EXIT_START_ERROR
    wake = bind_unix(socket.SOCK_DGRAM, enrich_notify_path(socket_dir))
    wake.setblocking(False)
    calm_the_collector()
    opener = EventOpener(subjects) if subjects is not None else None
    threadpool_limits(ENRICH_THREADS)  # numpy's BLAS: one core, whatever the machine has
    metrics = Metrics()
    lease = lease_for(settings, args.store or settings.store, "enrich", args.url, metrics)
    try:
        asyncio.run(_follow(store, data_dir, embedder, settings.enrichment, opener,
                            writes_path(socket_dir), wake, args.ready_fd, lease, metrics))
    finally:
        store.close()
        wake.close()
    return 0


def idle() -> None:
    """The calling (embedding) thread under ``SCHED_IDLE``: the kernel runs it only on a core
    nothing else wants."""
    _schedule(0, os.SCHED_IDLE)


def _schedule(thread: int, policy: int) -> None:
    try:
        if os.sched_getscheduler(thread) != policy:
            os.sched_setscheduler(thread, policy, os.sched_param(0))
    except OSError as error:  # not Linux, refused, or the thread is gone: the niceness holds
        log.debug("the enricher's scheduling policy stays: %s", error)


async def _unstarve(enricher: Enricher) -> None:
    """Every ``WATCH_EVERY_S``: a round starved under ``SCHED_IDLE`` (entries waiting
    ``STARVED_AFTER_S`` without progress) goes on under the normal policy at the process's
    niceness, so a machine busy for good still sees the enricher move."""
    while True:
        await asyncio.sleep(WATCH_EVERY_S)
        thread = enricher.embedding_thread
        if thread is not None and enricher.starved():
            _schedule(thread, os.SCHED_OTHER)


def embedder_of(config: EnrichmentConfig) -> Embedder:
    embedder = config.embedder
    return open_embedder(embedder.kind, embedder.model, embedder.url, embedder.api_key_env)


async def _follow(store: Store, data_dir: Path, embedder: Embedder, config: EnrichmentConfig,
                  opener: Opening | None, writer_at: Path, wake: socket.socket, ready_fd: int,
                  lease: Lease, metrics: Metrics) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    writes = RemoteWrites(writer_at)
    indexes = IndexedNeighbours(store, data_dir) if isinstance(store, SqliteStore) else None

    def follow_index(rows: list[VectorRow]) -> None:
        if indexes is not None:
            for tenant in {row.tenant for row in rows}:
                indexes.fresh(tenant)

    enricher = Enricher(store, embedder, config.fields, writes, opener,
                        on_stored=follow_index, metrics=metrics, pace=idle)
    os.write(ready_fd, READY_MESSAGE)  # ready as a standby too: it waits for the lease
    os.close(ready_fd)
    try:
        await until_stopped(stop, lease.hold(lambda: _embed(enricher, store, indexes, wake)))
    finally:
        if enricher.embedding_thread is not None:  # a round under way ends, and lets go of the index
            _schedule(enricher.embedding_thread, os.SCHED_OTHER)
        if indexes is not None:
            await asyncio.to_thread(indexes.save_changed)
        await writes.remote.close()


async def _embed(enricher: Enricher, store: Store, indexes: IndexedNeighbours | None,
                 wake: socket.socket) -> None:
    """While the lease is held: the cursor read from the store (another instance may have
    embedded since), then every round to the ledger's head."""
    while True:
        try:
            await enricher.load(await asyncio.to_thread(store.last_seq))
            break
        except Exception as error:  # the store or the writer is unreachable: try again
            log.warning("cannot read the enricher's cursor: %s", error)
            await asyncio.sleep(QUIET_CHECK_S)
    watchdog = asyncio.ensure_future(_unstarve(enricher))
    try:
        await _wake_and_embed(enricher, store, indexes, wake)
    finally:
        watchdog.cancel()
        if enricher.metrics is not None:  # the next holder shows its lag
            enricher.metrics.enrich_lag.set(0)


async def _wake_and_embed(enricher: Enricher, store: Store, indexes: IndexedNeighbours | None,
                          wake: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    saved_at = time.monotonic()
    while True:
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(loop.sock_recv(wake, MAX_DATAGRAM_BYTES), QUIET_CHECK_S)
            drain(wake)
            head = await asyncio.to_thread(store.last_seq)
            await enricher.catch_up(head)
            if enricher.cursor >= head:  # the live entries first, then an asked backfill
                await enricher.backfill_if_asked()
            if indexes is not None and time.monotonic() - saved_at >= SAVE_EVERY_S:
                await asyncio.to_thread(indexes.save_changed)
                saved_at = time.monotonic()
        except Exception as error:  # the store or the writer is unreachable: try again
            log.warning("cannot embed the ledger's new entries: %s", error)
            await asyncio.sleep(QUIET_CHECK_S)

