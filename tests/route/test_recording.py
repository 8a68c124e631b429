"""A destination's delivery records: written in order, tried again while the store is out of
reach (so nothing delivered meanwhile is sent again), and counted when a stop gives up.

The real embedded store and committer; the outage is injected at the store's cursor write,
because no real part here can take the writer away for a chosen number of writes (the
processes' test, ``serve/test_readers.py``, kills the real writer).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from scr.log.commit import Committer
from scr.route import recording
from scr.route.recording import ChunkOutcome, Recorder
from scr.store.protocol import Transaction
from scr.store.records import AttemptRow, DeliveryRow
from scr.store.sqlite import SqliteStore


def outcome(last_seq: int, failed: bool = False) -> ChunkOutcome:
    """A chunk ending at ``last_seq``: one attempt, and a failed delivery to retry if asked."""
    attempt = AttemptRow("hook", f"msg_{last_seq}", [last_seq], 1, 500 if failed else 200, "", 1.0, "",
                         "2026-12-07T00:00:00Z")
    rows = [DeliveryRow("hook", last_seq, "org_a", f"evt_{last_seq}", 1, f"msg_{last_seq}", "retrying",
                        1, 0, 500, "500", "2026-12-07T00:00:00Z")] if failed else []
    return ChunkOutcome(last_seq, rows, [attempt])


class Outage:
    """The store's cursor write fails ``times`` times (the writer away), then works."""

    def __init__(self, store: SqliteStore, times: int) -> None:
        self.left, self.write = times, store.set_cursor

    def __call__(self, tx: Transaction, destination: str, seq: int) -> None:
        if self.left:
            self.left -= 1
            raise ConnectionError("the writer is away")
        self.write(tx, destination, seq)


@pytest.fixture
def parts(tmp_path: Path) -> Any:
    store = SqliteStore(tmp_path / "data")
    committer = Committer(store, buffer_size=100)
    committer.start()
    yield store, committer
    committer.close()
    store.close()


def test_records_wait_out_an_outage_and_are_written_once_in_order(
    parts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, committer = parts
    monkeypatch.setattr(recording, "RETRY_S", 0.01)
    monkeypatch.setattr(store, "set_cursor", Outage(store, times=3))
    errors: list[str] = []
    woken: list[int] = []

    async def record() -> int:
        recorder = Recorder("hook", store, committer, 0, lambda: woken.append(1), errors.append)
        for last_seq in (10, 20, 30):
            recorder.add(outcome(last_seq, failed=last_seq == 20))
            await asyncio.sleep(0.005)
        while recorder.written_seq != 30:
            await recorder.progressed()
        return await recorder.stop(1.0)

    assert asyncio.run(record()) == 0
    assert store.cursor("hook") == 30
    assert sorted(a.webhook_id for a in store.recent_attempts("hook", 10)) == ["msg_10", "msg_20", "msg_30"]
    assert [row.seq for row in store.list_deliveries(None, "hook", None, 10)] == [20]
    assert errors and all("the writer is away" in error for error in errors)
    assert woken  # the retrier hears of the failed delivery


def test_a_full_recorder_holds_reading_back_and_a_stop_counts_what_it_could_not_write(
    parts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, committer = parts
    monkeypatch.setattr(recording, "RETRY_S", 0.01)
    monkeypatch.setattr(store, "set_cursor", Outage(store, times=10**6))

    async def record() -> tuple[bool, bool, int]:
        recorder = Recorder("hook", store, committer, 5, lambda: None, lambda _: None)
        for n in range(1, recording.MAX_WAITING):
            recorder.add(outcome(5 + 10 * n))
        almost = recorder.full
        recorder.add(outcome(5 + 10 * recording.MAX_WAITING))
        return almost, recorder.full, await recorder.stop(0.1)

    almost, full, unrecorded = asyncio.run(record())
    assert (almost, full) == (False, True)
    assert unrecorded == 10 * recording.MAX_WAITING  # delivered past the stored cursor, 5
    assert store.cursor("hook") is None
