"""The archiver: a tenant's old entries move into archive segments; old segments are purged.

A pass (``Archiver.run``) does, for each tenant, with its own ``hot_days`` and ``cold_days``:

1. **Archive.** From where the tenant's last segment ended, the entries committed before
   ``now - hot_days`` are taken in leaf order, up to the first younger one (a clock set back
   makes a younger entry stop the run, never an older one pass it), and cut at the largest
   signed checkpoint's tree size within them (at most ``segment_entries``, unless the first
   checkpoint lies further): the segment's root must be that checkpoint's root, or nothing is
   written. Its files are durable before the writer lists it (``AddSegment``).
2. **Shrink the hot store.** A listed segment's SESSION_COMPLETION rows drop their entry bytes
   (``StubEntries``, ``STUB_CHUNK`` rows a write, so ingest never waits long), up to the
   store's ``stub_limit``; reads fill them from the segment (``scr.retention.tiers``).
3. **Purge.** A segment whose newest entry is older than ``now - cold_days`` is purged: its
   rows leave the hot store and a SEGMENT_PURGED entry is ledgered in the same write, then its
   files are deleted. A legal hold on the tenant stops its purges; one on a subject keeps the
   segments that hold the subject's events (``scr.retention.holds``).

One archiver runs at a time per archive directory (a lock file); the writes go to the one
writer (``scr.serve.writes``) or, from the CLI, to a committer of its own.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from scr.config import RetentionConfig
from scr.fsync import fsync_path
from scr.log.commit import utc_now
from scr.log.entry import GENESIS_HASH
from scr.retention.holds import HELD, segment_holds
from scr.retention.segments import (
    DATA_SUFFIX,
    MANIFEST_SUFFIX,
    Archived,
    ArchiveError,
    Frontier,
    Manifest,
    left_unlisted,
    read_manifest,
    tenant_folder,
    write_segment,
)
from scr.store.protocol import Store
from scr.store.records import ENTRY_TIME_FORMAT, SegmentRow

log = logging.getLogger("scr.retention")

ARCHIVER_STATE = "retention.archiver"  # the server's archiver's state row (scr archive list)
LOCK_FILE = ".lock"
READ_PAGE = 10_000  # entries read from the hot store at a time
STUB_CHUNK = 1_000  # archived rows shrunk per write (about 6 ms of the writer's time)


class Checkpoints(Protocol):
    """The signed checkpoints of the ledger (``scr.ledger.checkpoints.CheckpointLog``)."""

    def since(self, tenant: str, tree_size: int, limit: int) -> list[Any]: ...


class ArchiveWrites(Protocol):
    """The archiver's writes (``scr.serve.writes`` operations, through the writer or not)."""

    async def add_segment(self, segment: SegmentRow) -> bool: ...
    async def stub_entries(self, tenant: str, first_leaf: int, end: int) -> int: ...
    async def purge_segment(self, segment: SegmentRow, end: int, purged_at: str,
                            details: dict[str, Any]) -> int:
        """Rows purged; ``HELD`` when a legal hold keeps the segment."""

Progress = Callable[[str, int], None]
"""``progress(tenant, entries)``: called as entries are archived (the CLI's bar)."""


@dataclass
class PassReport:
    """What one pass did."""

    archived: int = 0
    segments: int = 0
    stubbed: int = 0
    purged: int = 0
    held: list[str] = field(default_factory=list)  # "<tenant> <segment>: <hold ids>"
    errors: list[str] = field(default_factory=list)


class AnotherArchiver(RuntimeError):
    """Another archiver holds the archive directory's lock."""


class ArchiveLock:
    """The archive directory's lock: one archiver at a time (released on close, or when the
    process dies)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._file = open(folder / LOCK_FILE, "a+b")  # noqa: SIM115 (held until release)

    def acquire(self) -> None:
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AnotherArchiver("another archiver is running on this archive directory") from None

    def close(self) -> None:
        self._file.close()


class Archiver:
    def __init__(self, store: Store, retention: RetentionConfig, folder: Path, writes: ArchiveWrites,
                 checkpoints: Checkpoints | None) -> None:
        self.store = store
        self.retention = retention
        self.folder = folder.resolve()
        self.writes = writes
        self.checkpoints = checkpoints

    async def run(self, now: datetime, progress: Progress | None = None,
                  read: Callable[[Callable[[], Any]], Awaitable[Any]] | None = None) -> PassReport:
        """One pass over every tenant at time ``now`` (``read`` runs blocking reads elsewhere)."""
        report = PassReport()
        lock = ArchiveLock(self.folder)
        try:
            lock.acquire()
            for tenant in await _call(read, self.store.tenants):
                hot, cold = self.retention.days(tenant)
                try:
                    await self._archive(tenant, _cutoff(now, hot), report, progress, read)
                    await self._stub(tenant, report, read)
                    await self._purge(tenant, _cutoff(now, cold), report, read)
                except (ArchiveError, OSError) as error:
                    report.errors.append(f"{tenant}: {error}")
                    log.error("retention: tenant %s: %s", tenant, error)
        finally:
            lock.close()
        return report

    # ----- archive ---------------------------------------------------------------------------

    async def _archive(self, tenant: str, cutoff: str, report: PassReport, progress: Progress | None,
                       read: Any) -> None:
        while True:
            start, chain, frontier = await _call(read, partial(self._resume, tenant))
            self._remove_unlisted(tenant, start)
            signed = await _call(read, partial(self._checkpoints_after, tenant, start))
            taken = await _call(read, partial(self._old_entries, tenant, start, cutoff, signed))
            end, checkpoint = self._cut(start, len(taken), signed)
            if end == start:
                return
            taken = taken[: end - start]
            manifest = write_segment(self.folder / tenant_folder(tenant), tenant, taken, chain,
                                     frontier, checkpoint.note if checkpoint else None, utc_now())
            if checkpoint is not None and bytes.fromhex(manifest.root_hash) != checkpoint.root_hash:
                raise ArchiveError(f"entries {start}..{end - 1} do not have the root of checkpoint "
                                   f"{end}: refusing to archive them; run `scr ledger verify`")
            _, digest = read_manifest(self.folder / tenant_folder(tenant) / (manifest.name + MANIFEST_SUFFIX))
            if not await self.writes.add_segment(_listed(manifest, self.folder, digest)):
                raise ArchiveError(f"segment {manifest.name} was listed by another archiver")
            report.archived += len(taken)
            report.segments += 1
            if progress is not None:
                progress(tenant, len(taken))

    def _resume(self, tenant: str) -> tuple[int, bytes, Frontier]:
        """Where the tenant's next segment starts: its first leaf, chain hash and frontier."""
        segments = self.store.archive_segments(tenant)
        if not segments:
            return 0, GENESIS_HASH, Frontier()
        last = segments[-1]
        manifest = self.store.tier.manifest(last)
        frontier = Frontier(last.last_leaf + 1, [bytes.fromhex(h) for h in manifest.frontier_after])
        return last.last_leaf + 1, bytes.fromhex(manifest.chain_last), frontier

    def _checkpoints_after(self, tenant: str, start: int) -> list[Any] | None:
        """The tenant's signed checkpoints past leaf ``start``, smallest first; None on a store
        that keeps none."""
        return None if self.checkpoints is None else self.checkpoints.since(tenant, start + 1, 1_000_000)

    def _old_entries(self, tenant: str, start: int, cutoff: str, signed: list[Any] | None) -> list[Archived]:
        """The tenant's entries from ``start`` committed before ``cutoff``, up to the first
        younger one; at most what a segment may hold, or up to the first checkpoint."""
        first = signed[0].tree_size - start if signed else 0
        wanted = max(self.retention.segment_entries, first)
        taken: list[Archived] = []
        while len(taken) < wanted:
            low = start + len(taken)
            asked = min(READ_PAGE, wanted - len(taken))
            page = self.store.tenant_entries(tenant, low, low + asked)
            for offset, entry in enumerate(page):
                if entry.tenant_seq != low + offset:
                    raise ArchiveError(f"leaf {low + offset} of {tenant!r} is missing from the hot "
                                       "store; run `scr ledger verify`")
                if entry.ts >= cutoff:
                    return taken
                taken.append(Archived(entry.seq, entry.tenant_seq, entry.ts, entry.entry))
            if len(page) < asked:
                break
        return taken

    def _cut(self, start: int, available: int, signed: list[Any] | None) -> tuple[int, Any]:
        """The segment's end (exclusive) and its checkpoint: the largest checkpoint within the
        available entries and the segment limit, else the first one within them; without
        checkpoints (a store that keeps none), every available entry."""
        if signed is None:
            return start + min(available, self.retention.segment_entries), None
        within = [c for c in signed if c.tree_size <= start + available]
        if not within:
            return start, None
        fitting = [c for c in within if c.tree_size <= start + self.retention.segment_entries]
        chosen = fitting[-1] if fitting else within[0]
        return chosen.tree_size, chosen

    def _remove_unlisted(self, tenant: str, start: int) -> None:
        """Files a crashed pass left from ``start`` on: never listed, so never read."""
        folder = self.folder / tenant_folder(tenant)
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            if left_unlisted(path.name, start):
                log.info("retention: removing %s, left unlisted by an interrupted pass", path)
                path.unlink(missing_ok=True)

    # ----- shrink the hot store --------------------------------------------------------------

    async def _stub(self, tenant: str, report: PassReport, read: Any) -> None:
        segments = await _call(read, lambda: self.store.archive_segments(tenant))
        limit = await _call(read, lambda: self.store.stub_limit(tenant))
        for segment in segments:
            if segment.purged_at is not None:
                continue
            position = max(segment.stubbed_to, segment.first_leaf)
            end = min(segment.last_leaf + 1, limit)
            while position < end:
                step = min(end, position + STUB_CHUNK)
                report.stubbed += await self.writes.stub_entries(tenant, segment.first_leaf, step)
                position = step

    # ----- purge -----------------------------------------------------------------------------

    async def _purge(self, tenant: str, cutoff: str, report: PassReport, read: Any) -> None:
        segments = await _call(read, lambda: self.store.archive_segments(tenant))
        self._delete_purged_files(segments)
        due = [s for s in segments if s.purged_at is None and s.max_ts < cutoff]
        if not due:
            return
        holds = await _call(read, partial(self.store.legal_holds, tenant))
        limit = await _call(read, partial(self.store.stub_limit, tenant))
        for segment in due:
            blocking = await _call(read, partial(segment_holds, self.store, tenant, segment.first_seq,
                                                 segment.last_seq, holds))
            if blocking:
                report.held.append(f"{tenant} {segment.name}: {', '.join(blocking)}")
                continue
            manifest = self.store.tier.manifest(segment)
            details = {"segment": segment.name, "first_leaf": segment.first_leaf,
                       "last_leaf": segment.last_leaf, "entries": manifest.entries,
                       "root_hash": manifest.root_hash, "file_sha256": manifest.file_sha256,
                       "max_ts": manifest.max_ts}
            purged = await self.writes.purge_segment(segment, min(limit, segment.last_leaf + 1), utc_now(),
                                                     details)
            if purged == HELD:  # a hold placed since the look above: the writer saw it
                report.held.append(f"{tenant} {segment.name}: a legal hold placed during the pass")
                continue
            report.purged += purged
            self._delete_files(segment)

    def _delete_purged_files(self, segments: list[SegmentRow]) -> None:
        """A purge whose files outlived it (the pass stopped after its write) is finished."""
        for segment in segments:
            if segment.purged_at is not None:
                self._delete_files(segment)

    def _delete_files(self, segment: SegmentRow) -> None:
        base = Path(segment.folder) / segment.name
        data = base.with_name(base.name + DATA_SUFFIX)
        if data.exists():
            data.unlink()
            fsync_path(data.parent)


def _listed(manifest: Manifest, folder: Path, digest: bytes) -> SegmentRow:
    return SegmentRow(
        manifest.tenant, manifest.first_leaf, manifest.last_leaf, manifest.first_seq, manifest.last_seq,
        str(folder), f"{tenant_folder(manifest.tenant)}/{manifest.name}", digest, manifest.max_ts,
        manifest.created_at,
    )


def _cutoff(now: datetime, days: int) -> str:
    return (now - timedelta(days=days)).strftime(ENTRY_TIME_FORMAT)


async def _call(read: Any, function: Callable[[], Any]) -> Any:
    return function() if read is None else await read(function)
