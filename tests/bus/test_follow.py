"""A cluster instance hears of other instances' appends through PostgreSQL's LISTEN/NOTIFY,
not by polling: a commit that appends notifies at once; one that appends nothing, or rolls
back, notifies no one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from test_commit import committer_for, submission

from scr.log import tail as tail_module
from scr.log.commit import Committer, Outcome
from scr.log.tail import LedgerTail, follow_ledger
from scr.store import postgres
from scr.store.postgres import PostgresStore

HEARD_WITHIN_S = 2.0  # far below the waits below: a notification, not a timeout, ended them


@pytest.fixture
def writing(postgres_uri: str) -> Iterator[Committer]:
    """Another instance's writer."""
    store = PostgresStore(postgres_uri)
    committer = committer_for(store)
    yield committer
    committer.close()
    store.close()


@pytest.fixture
def listening(postgres_uri: str) -> Iterator[PostgresStore]:
    """This instance's store, already listening (a notification sent before LISTEN is lost)."""
    store = PostgresStore(postgres_uri)
    store.wait_for_appends(0.01)
    yield store
    store.close()


def test_a_commit_that_appends_wakes_the_other_instances_at_once(
    writing: Committer, listening: PostgresStore,
) -> None:
    started = time.monotonic()
    asyncio.run(writing.append_events([submission("evt_heard")]))
    assert listening.wait_for_appends(20)  # the notification waited on the listening connection
    assert time.monotonic() - started < HEARD_WITHIN_S


def test_commits_that_append_nothing_or_roll_back_wake_no_one(
    writing: Committer, listening: PostgresStore,
) -> None:
    def cursor_only(tx: object) -> None:
        writing.store.set_cursor(tx, "billing", 7)  # type: ignore[arg-type]

    def appends_then_fails(tx: object) -> None:
        writing.append_events_in(tx, [submission("evt_rolled_back")])  # type: ignore[arg-type]
        raise RuntimeError("this write fails after appending")

    asyncio.run(writing.run(cursor_only, durable=False))
    with pytest.raises(RuntimeError):
        asyncio.run(writing.run(appends_then_fails))
    started = time.monotonic()
    assert not listening.wait_for_appends(1.0)
    assert time.monotonic() - started >= 1.0
    assert writing.store.last_seq() == 0


def test_the_follower_wakes_the_destinations_for_another_instances_append(
    writing: Committer, listening: PostgresStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # with the unasked look once a minute, only a notification can wake it in time
    monkeypatch.setattr(tail_module, "FOLLOW_LEDGER_S", 60.0)
    heads: list[tuple[int, float]] = []

    async def follow_and_append() -> None:
        tail = LedgerTail(listening)
        # the follower alone, as BusInstance runs it
        follower = asyncio.create_task(follow_ledger(
            listening, tail, [lambda head: heads.append((head, time.monotonic()))]))
        while not heads:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the follower waits for appends now
        appended_at = time.monotonic()
        await writing.append_events([submission("evt_followed")])
        while heads[-1][0] == 0 and time.monotonic() - appended_at < 10:
            await asyncio.sleep(0.01)
        follower.cancel()
        assert heads[-1][0] == 1 and heads[-1][1] - appended_at < HEARD_WITHIN_S
        assert tail.head_seq == 1
        # the follower's thread still waits (up to the minute) in wait_for_appends, and
        # asyncio.run waits for it: one more notification lets it go now
        await writing.append_events([submission("evt_wakes_the_thread")])

    asyncio.run(follow_and_append())


def test_a_notification_that_fails_after_the_commit_leaves_the_commit_standing(
    writing: Committer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # PostgreSQL refuses an empty channel name: the notify fails for real, after the commit
    monkeypatch.setattr(postgres, "APPENDS_CHANNEL", "")
    outcomes = asyncio.run(writing.append_events([submission("evt_kept"), submission("evt_kept_too")]))
    assert [outcome for outcome, _ in outcomes] == [Outcome.ACCEPTED, Outcome.ACCEPTED]
    assert writing.store.last_seq() == 2 and writing.healthy
    assert [outcome for outcome, _ in asyncio.run(writing.append_events([submission("evt_kept")]))] == [
        Outcome.DUPLICATE]
