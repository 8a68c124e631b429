"""A month of usage aggregates written straight into a data folder's store, as the usage
process writes them (``Store.add_usage``): counting a month of real events would take far
longer than a test or a benchmark may. And an ANOMALY entry as the usage process ledgers it
(its judge needs weeks of counted history first)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from scr.log.commit import Committer, utc_now, writing_alone
from scr.log.entry import Kind
from scr.store import Transaction, open_store
from scr.store.records import UsageRow
from scr.usage.budgets import USAGE_ACTOR, USAGE_SOURCE
from scr.usage.judging import ALERT_TYPE, anomaly_id, anomaly_key, window_text

T = TypeVar("T")

MINUTES_PER_HOUR = 60
HOURS_PER_MONTH = 30 * 24


def month_of_usage(tenant: str, models: Sequence[str], last_hour_minute: int,
                   cost_per_token: str = "0.000002") -> list[UsageRow]:
    """One row per hour and model for the 30 days up to ``last_hour_minute`` (Unix minutes of an
    hour's start): a daily tide of tokens, each model its own share; cost exact to the row."""
    rows = []
    for hour in range(HOURS_PER_MONTH):
        minute = last_hour_minute - (HOURS_PER_MONTH - 1 - hour) * MINUTES_PER_HOUR
        for rank, model in enumerate(models, start=1):
            tokens = 1000 * rank + 500 * rank * (hour % 24 < 12)
            cost = format(Decimal(cost_per_token) * tokens, "f")
            rows.append(UsageRow(
                tenant, minute, model, "user_1", "chat", "success", "pro", "", 1, 1, tokens // 2,
                tokens - tokens // 2, tokens, 0, 0, 0, 1000, 0, 0, cost, cost,
            ))
    return rows


def write_usage(data: Path, rows: Sequence[UsageRow], store_uri: str | None = None) -> None:
    """Add ``rows`` to the aggregates of the store in ``data`` (no server may run on it)."""
    taken = _write(data, store_uri, lambda committer, tx: committer.store.add_usage(tx, rows, 0, 0))
    assert taken, "the usage cursor moved"


def write_anomaly(data: Path, tenant: str, metric: str, window_start_minute: int, value: str,
                  expected: str) -> str:
    """Ledger an ANOMALY entry of ``tenant`` in the store of ``data`` (no server may run on
    it), shaped as the usage process's; its id."""
    window_start = window_text(window_start_minute)
    key = anomaly_key(tenant, metric, window_start)
    payload = {
        "type": ALERT_TYPE, "timestamp": utc_now(),
        "data": {"id": anomaly_id(key), "metric": metric, "window_start": window_start, "value": value,
                 "expected": expected, "low": "0", "high": expected, "breakdown": [], "tenant": tenant},
        "destinations": [],
    }
    _write(data, None, lambda committer, tx: committer.append_entry(
        tx, tenant, Kind.ANOMALY, payload, USAGE_ACTOR, USAGE_SOURCE, key))
    return anomaly_id(key)


def _write(data: Path, store_uri: str | None, change: Callable[[Committer, Transaction], T]) -> T:
    """Run ``change`` in a write transaction of the store in ``data`` (with the committer
    that runs it), then close the store."""
    with writing_alone(open_store(data, store_uri)) as committer:
        return committer.run_sync(lambda tx: change(committer, tx))
