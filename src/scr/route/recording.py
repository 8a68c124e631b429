"""A destination's delivery records: written in ledger order, and tried again until stored.

Each settled chunk leaves its attempts, its delivery rows (retries, dead letters) and the
cursor past it (``ChunkOutcome``). The recorder writes every chunk waiting, in order, in one
transaction behind the one before. A write that fails (the writer restarting, the store out
of reach) is tried again every ``RETRY_S`` with the chunks settled since, so what was
delivered meanwhile is recorded once the store is back instead of being sent again. The
destination reads no further while ``MAX_WAITING`` chunks wait (``full``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scr.log.commit import Committer
from scr.store.protocol import Store, Transaction
from scr.store.records import AttemptRow, DeliveryRow

log = logging.getLogger("scr.route")

RETRY_S = 0.5
MAX_WAITING = 16  # chunks of up to 1,000 entries each


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    """What a delivered chunk leaves to record: its last seq, delivery rows, attempt rows."""

    last_seq: int
    rows: list[DeliveryRow]
    attempt_rows: list[AttemptRow]


class Recorder:
    """Writes a destination's chunk outcomes; ``on_rows`` is called after a write that stored
    delivery rows (the retrier has work), ``on_error`` with what a failed write said."""

    def __init__(self, destination: str, store: Store, committer: Committer, cursor: int,
                 on_rows: Callable[[], None], on_error: Callable[[str], None]) -> None:
        self.destination, self.store, self.committer = destination, store, committer
        self.on_rows, self.on_error = on_rows, on_error
        self.written_seq = cursor  # the cursor the store holds
        self._failing = False
        self._waiting: deque[ChunkOutcome] = deque()
        self._added = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def full(self) -> bool:
        return len(self._waiting) >= MAX_WAITING

    def add(self, outcome: ChunkOutcome) -> None:
        """Record ``outcome`` after every chunk added before it."""
        self._waiting.append(outcome)
        self._added.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"scr-record-{self.destination}")

    async def progressed(self) -> None:
        """Until the next write is stored."""
        await self._progress.wait()

    async def stop(self, grace_s: float) -> int:
        """Write what waits (for up to ``grace_s``), then stop; returns how many entries past
        the stored cursor were delivered but not recorded (a restart sends them again)."""
        if self._task is None:
            return 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                while self._waiting:
                    await self.progressed()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        unrecorded = self._waiting[-1].last_seq - self.written_seq if self._waiting else 0
        self._waiting.clear()
        return unrecorded

    async def _run(self) -> None:
        while True:
            await self._added.wait()
            chunks = list(self._waiting)
            if not chunks:  # a stop cleared them
                self._added.clear()
                continue
            try:
                await self.committer.run(self._write(chunks), size=max(1, sum(len(c.rows) for c in chunks)),
                                         durable=False)
            except Exception as error:  # the store is away: the same chunks, and any new ones, again
                if not self._failing:
                    log.error("destination %s: recording deliveries failed (%s); trying again every %.1f s",
                              self.destination, error, RETRY_S)
                self._failing = True
                self.on_error(f"recording deliveries failed: {error}")
                await asyncio.sleep(RETRY_S)
                continue
            for _ in chunks:
                self._waiting.popleft()
            if not self._waiting:
                self._added.clear()
            if self._failing:
                log.info("destination %s: deliveries recorded again", self.destination)
                self._failing = False
            self.written_seq = chunks[-1].last_seq
            self._progress.set()
            self._progress = asyncio.Event()
            if any(chunk.rows for chunk in chunks):
                self.on_rows()

    def _write(self, chunks: Sequence[ChunkOutcome]) -> Callable[[Transaction], None]:
        def write(tx: Transaction) -> None:
            for chunk in chunks:
                self.store.insert_attempts(tx, chunk.attempt_rows)
                self.store.upsert_deliveries(tx, chunk.rows)
            self.store.set_cursor(tx, self.destination, chunks[-1].last_seq)
        return write
