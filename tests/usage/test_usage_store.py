"""The usage aggregates in each store: exact sums, the cursor's compare-and-set."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from decimal import Decimal

import psycopg
from store import test_store

from conftest import StoreAt
from scr.log.commit import Committer
from scr.store import Store, usage
from scr.store.records import USAGE_COUNT_COLUMNS, USAGE_CURSOR, DurationRow, UsageRow, UsageSum
from scr.store.sqlite import DATABASE_FILE

MINUTE = 29_000_000
committer = test_store.committer  # the store tests' fixture: a running Committer


def row(tokens: int, cost: str, estimated: str, minute: int = MINUTE, model: str = "gpt-4o") -> UsageRow:
    return UsageRow("org_acme", minute, model, "user_1", "chat", "success", "pro", "", 1, 1, tokens,
                    0, tokens, 0, 0, 0, 10, 0, 0, cost, estimated)


def test_a_write_from_a_stale_cursor_adds_nothing(store: Store, committer: Committer) -> None:
    first = [row(10**15, "999999999.9999999999", "999999999.999999999999999999")]
    assert committer.run_sync(lambda tx: store.add_usage(tx, first, 0, 5))
    assert committer.run_sync(lambda tx: store.add_usage(tx, first, 5, 9))
    # a killed reader's write that arrives after its successor's: refused whole
    assert not committer.run_sync(lambda tx: store.add_usage(tx, first, 5, 9))
    assert store.cursor(USAGE_CURSOR) == 9
    [summed] = store.usage_sums("org_acme", MINUTE, MINUTE + 1, 1, ["model"])
    assert summed.keys == ("gpt-4o",)
    assert summed.counts[USAGE_COUNT_COLUMNS.index("total_tokens")] == 2 * 10**15
    assert summed.cost_usd == "1999999999.9999999998"
    assert summed.estimated_cost_usd == "1999999999.999999999999999998"


def test_sums_by_bucket_and_key_across_rows(store: Store, committer: Committer) -> None:
    rows = [row(1, "0.1000000000", "0.1", MINUTE + n % 4, ("a", "b")[n % 2]) for n in range(8)]
    assert committer.run_sync(lambda tx: store.add_usage(tx, rows, 0, 1))
    sums = store.usage_sums("org_acme", MINUTE, MINUTE + 4, 2, ["model"])
    assert sorted((s.bucket, s.keys, s.counts[0], s.cost_usd) for s in sums) == [
        (0, ("a",), 2, "0.2000000000"), (0, ("b",), 2, "0.2000000000"),
        (1, ("a",), 2, "0.2000000000"), (1, ("b",), 2, "0.2000000000"),
    ]
    assert store.usage_sums("org_other", MINUTE, MINUTE + 4, 4, []) == []
    [whole] = store.usage_sums(None, MINUTE, MINUTE + 4, 4, [])
    assert (whole.tenant, whole.counts[0], whole.estimated_cost_usd) == ("org_acme", 8, "0.8")


def test_duration_histograms_add_up_and_a_stale_write_adds_none(store: Store, committer: Committer) -> None:
    quarter = MINUTE - MINUTE % 15
    first = [DurationRow("org_acme", quarter, "user_1", 7, 2),
             DurationRow("org_acme", quarter, "user_2", 7, 1)]
    later = [DurationRow("org_acme", quarter + 15, "user_1", 7, 3),
             DurationRow("org_acme", quarter, "user_1", 9, 1)]
    assert committer.run_sync(lambda tx: store.add_usage(tx, [], 0, 5, first))
    assert committer.run_sync(lambda tx: store.add_usage(tx, [], 5, 9, later))
    assert not committer.run_sync(lambda tx: store.add_usage(tx, [], 5, 9, later))  # refused whole
    assert sorted(store.usage_durations("org_acme", quarter, quarter + 30)) == [
        ("user_1", 7, 5), ("user_1", 9, 1), ("user_2", 7, 1)]
    assert sorted(store.usage_durations("org_acme", quarter + 15, quarter + 30)) == [("user_1", 7, 3)]
    assert store.usage_durations("org_other", quarter, quarter + 30) == []


def _an_hour_of_rows() -> list[UsageRow]:
    """Rows in every minute of two hours, two models, costs that differ by the minute."""
    hour = MINUTE - MINUTE % 60
    return [row(n, f"0.{n:010d}", f"0.{n:04d}", hour + n, ("a", "b")[n % 2]) for n in range(120)]


def _by_model(sums: list[UsageSum]) -> dict[str, tuple[int, Decimal, Decimal]]:
    """The sums of each model over every bucket: (events, cost, estimated cost)."""
    totals: dict[str, tuple[int, Decimal, Decimal]] = {}
    for summed in sums:
        events, cost, estimated = totals.get(summed.keys[0], (0, Decimal(0), Decimal(0)))
        totals[summed.keys[0]] = (events + summed.counts[0], cost + Decimal(summed.cost_usd),
                                  estimated + Decimal(summed.estimated_cost_usd))
    return totals


def test_hours_quarters_and_minutes_answer_alike(store: Store, committer: Committer) -> None:
    rows = _an_hour_of_rows()
    assert committer.run_sync(lambda tx: store.add_usage(tx, rows, 0, 1))
    hour = rows[0].minute
    answers = {bucket: store.usage_sums("org_acme", hour, hour + 120, bucket, ["model"])
               for bucket in (60, 15, 5)}  # read from the hours, the quarters, the minutes
    assert [usage.table_for(["model"], hour, bucket) for bucket in answers] == [
        usage.HOURS, usage.QUARTERS, usage.MINUTES]
    assert sorted((s.bucket, s.keys[0], s.counts[0]) for s in answers[60]) == [
        (0, "a", 30), (0, "b", 30), (1, "a", 30), (1, "b", 30)]
    expected = {model: (60, sum(Decimal(f"0.{n:010d}") for n in range(parity, 120, 2)),
                        sum(Decimal(f"0.{n:04d}") for n in range(parity, 120, 2)))
                for parity, model in enumerate("ab")}
    assert {bucket: _by_model(sums) for bucket, sums in answers.items()} == dict.fromkeys(answers, expected)


def test_a_store_from_before_the_hours_fills_them_from_its_quarters(
    store: Store, committer: Committer, store_at: StoreAt,
) -> None:
    rows = _an_hour_of_rows()
    hour = rows[0].minute
    assert committer.run_sync(lambda tx: store.add_usage(tx, rows, 0, 1))
    expected = store.usage_sums("org_acme", hour, hour + 120, 60, ["model"])
    _forget_the_hours(store_at)
    reopened = store_at.open()
    try:
        assert sorted(reopened.usage_sums("org_acme", hour, hour + 120, 60, ["model"])) == sorted(expected)
    finally:
        reopened.close()


def _forget_the_hours(store_at: StoreAt) -> None:
    """The store as the commits before ``usage_hours`` left it: no such table (PostgreSQL:
    and no migration 8)."""
    if store_at.uri is None:
        with closing(sqlite3.connect(store_at.data / DATABASE_FILE)) as conn:
            conn.execute("DROP TABLE usage_hours")
            conn.commit()
        return
    with psycopg.connect(store_at.uri, autocommit=True) as conn:
        conn.execute("DROP TABLE usage_hours")
        conn.execute("DELETE FROM schema_migrations WHERE version = 8")
