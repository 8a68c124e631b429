"""The archiver's writes: through the server's one writer (``RemoteArchiveWrites``, in the
``scr: archive`` process) or a committer of its own (``LocalArchiveWrites``, ``scr archive
run`` on a stopped server's data); both carry out the same operations (``scr.serve.writes``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scr.log.commit import Committer, utc_now
from scr.retention.archiver import ARCHIVER_STATE
from scr.serve.writes import (
    AddSegment,
    Op,
    PurgeSegment,
    RecordingTx,
    RemoteCommitter,
    SetState,
    StubEntries,
    apply,
)
from scr.store.records import SegmentRow


class _Writes:
    async def _one(self, op: Op) -> int:
        raise NotImplementedError

    async def add_segment(self, segment: SegmentRow) -> bool:
        return bool(await self._one(AddSegment(segment)))

    async def stub_entries(self, tenant: str, first_leaf: int, end: int) -> int:
        return await self._one(StubEntries(tenant, first_leaf, end))

    async def purge_segment(self, segment: SegmentRow, end: int, purged_at: str,
                            details: dict[str, Any]) -> int:
        return await self._one(PurgeSegment(segment.tenant, segment.first_leaf, segment.first_seq,
                                            segment.last_seq, end, purged_at, details))


class LocalArchiveWrites(_Writes):
    """Each operation in a durable transaction of the committer's own."""

    def __init__(self, committer: Committer) -> None:
        self.committer = committer

    async def _one(self, op: Op) -> int:
        committer = self.committer
        return int(committer.run_sync(lambda tx: apply(committer, tx, op)) or 0)


class RemoteArchiveWrites(_Writes):
    """Each operation in one of the writer's durable group commits."""

    def __init__(self, writer_at: Path) -> None:
        self.remote = RemoteCommitter(writer_at)

    async def _one(self, op: Op, durable: bool = True) -> int:
        def record(tx: RecordingTx) -> int:
            return tx.record(op)

        return int(await self.remote.run(record, durable=durable) or 0)

    async def report(self, problem: str) -> None:
        """The state after a pass (``scr archive list`` prints it): ``failing`` with why, or
        ``active``; not durable (the next pass writes it again)."""
        state = "failing" if problem else "active"
        await self._one(SetState(ARCHIVER_STATE, state, problem, utc_now()), durable=False)

    async def close(self) -> None:
        await self.remote.close()
