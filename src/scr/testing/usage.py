"""A month of usage aggregates written straight into a data folder's store, as the usage
process writes them (``Store.add_usage``): counting a month of real events would take far
longer than a test or a benchmark may."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from scr.log.commit import Committer
from scr.store import open_store
from scr.store.records import UsageRow

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
    store = open_store(data, store_uri)
    committer = Committer(store, buffer_size=1)
    committer.start()
    try:
        assert committer.run_sync(lambda tx: store.add_usage(tx, rows, 0, 0)), "the usage cursor moved"
    finally:
        committer.close()
        store.close()
