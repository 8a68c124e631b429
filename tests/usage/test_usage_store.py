"""The usage aggregates in each store: exact sums, the cursor's compare-and-set."""

from __future__ import annotations

from store import test_store

from scr.log.commit import Committer
from scr.store import Store
from scr.store.records import USAGE_COUNT_COLUMNS, USAGE_CURSOR, DurationRow, UsageRow

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
