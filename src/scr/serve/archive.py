"""The archiver's process (``scr: archive``): runs an archiver pass (``scr.retention.archiver``)
every ``retention.check_every_s``, at nice ``ARCHIVE_NICENESS``.

Its writes (a segment listed, rows shrunk, a purge) go to the one writer. A pass that fails (a
full disk, an unreadable segment) changes nothing it has not finished: the state
``retention.archiver`` turns ``failing`` with the reason (``scr archive list`` shows it, and the
log says it at error level), and the next pass tries again.

In a cluster every instance runs it, and it makes passes only while it holds the archive
lease (``scr.bus.leases``): one archiver per cluster, whichever instance holds the lease. The
segments go to ``retention.archive_dir``, which a cluster's config must name (a directory
every instance reaches at that path, ``scr.config``), so that any instance reads what any
other archived; the segments' listings are in the shared store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from datetime import UTC, datetime
from pathlib import Path

from scr.bus.leases import Lease, lease_for
from scr.config import Config
from scr.metrics import Metrics
from scr.retention.archiver import AnotherArchiver, Archiver
from scr.retention.cli import archive_folder, open_checkpoints
from scr.retention.writes import RemoteArchiveWrites
from scr.serve.child import EXIT_START_ERROR, calm_the_collector, prepared, until_stopped
from scr.serve.readers import writes_path
from scr.serve.supervisor import READY_MESSAGE, ChildArgs
from scr.store import Store, open_store

log = logging.getLogger("scr.serve.archive")

ARCHIVE_NICENESS = 19  # the lowest: archiving is never urgent, and catches up when ingest pauses
TITLE = "scr: archive"


def run_archive(args: ChildArgs) -> int:
    """Archive and purge on the retention's rhythm until SIGTERM."""
    os.nice(ARCHIVE_NICENESS)
    data_dir = Path(args.data)
    ready = prepared(args, lambda settings, store_uri: open_store(
        data_dir, store_uri, settings.cluster.partitions, settings.store_pool))
    if ready is None:
        return EXIT_START_ERROR
    settings, store = ready
    calm_the_collector()
    lease = lease_for(settings, args.store or settings.store, "archive", args.url, Metrics())
    try:
        asyncio.run(_follow(store, settings, data_dir, writes_path(Path(args.socket_dir)), args.ready_fd,
                            lease))
    finally:
        store.close()
    return 0


async def _follow(store: Store, settings: Config, data_dir: Path, writer_at: Path, ready_fd: int,
                  lease: Lease) -> None:
    retention = settings.retention
    assert retention is not None  # the supervisor starts this process only then
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    writes = RemoteArchiveWrites(writer_at)
    archiver = Archiver(store, retention, archive_folder(settings, data_dir), writes,
                        open_checkpoints(store, data_dir))
    os.write(ready_fd, READY_MESSAGE)  # ready as a standby too: it waits for the lease
    os.close(ready_fd)
    try:
        await until_stopped(stop, lease.hold(lambda: _passes(archiver, writes, retention.check_every_s)))
    finally:
        await writes.close()


async def _passes(archiver: Archiver, writes: RemoteArchiveWrites, every_s: float) -> None:
    while True:
        try:
            report = await archiver.run(datetime.now(UTC), read=asyncio.to_thread)
            problem = "; ".join(report.errors)
            if report.archived or report.purged:
                log.info("retention: archived %d entries in %d segment(s), purged %d rows",
                         report.archived, report.segments, report.purged)
        except AnotherArchiver as error:
            problem = str(error)
        except Exception as error:  # the store or the writer is unreachable: the next pass retries
            log.exception("retention: the pass failed")
            problem = str(error)
        with contextlib.suppress(Exception):  # the state is a report; the next pass writes it again
            await writes.report(problem)
        await asyncio.sleep(every_s)
