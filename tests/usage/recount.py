"""The usage tests' reference: a full recount of the ledger with a plain loop, and a way to
run the usage reader to the ledger's head in-process."""

from __future__ import annotations

import asyncio
import decimal
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from scr.log.tail import from_store
from scr.metrics import Metrics
from scr.route.price_file import live_prices
from scr.route.transforms import EntryRef, billing_transform
from scr.runtime import Runtime
from scr.serve.writes import AddUsage, add_usage
from scr.store.protocol import Store
from scr.store.records import DurationRow, UsageRow
from scr.usage.reader import UsageReader

EXACT = decimal.Context(prec=100, traps=[decimal.Inexact])
COUNTS = ("events", "sessions", "input_tokens", "output_tokens", "total_tokens",
          "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "unpriced_events", "errors")


def count_to_head(runtime: Runtime, clock: Callable[[], float] | None = None) -> UsageReader:
    """Run the usage reader over the whole ledger, writing through the runtime's committer
    (``clock``: the reader's, which judges closed windows for anomalies)."""
    store = runtime.store

    async def write(rows: list[UsageRow], after_seq: int, seq: int, alerts: list[dict[str, Any]],
                    durations: list[DurationRow], judged: int) -> bool:
        operation = AddUsage(rows, after_seq, seq, alerts, durations, judged)
        return bool(await runtime.committer.run(lambda tx: add_usage(runtime.committer, tx, operation)))

    reader = UsageReader(store, live_prices(runtime.data_dir), write, Metrics(),
                         runtime.config.usage.budgets, runtime.config.usage.anomalies,
                         clock or time.time)
    reader.load()
    asyncio.run(reader.catch_up(store.last_seq()))
    return reader


def window_of(instant: datetime, window: str, tz: ZoneInfo) -> datetime:
    """The local start of the window holding ``instant``, computed the plain way."""
    local = instant.astimezone(tz)
    if window == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.date()
    if window == "week":
        day -= timedelta(days=day.weekday())
    if window == "month":
        day = day.replace(day=1)
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def recount(store: Store, data_dir: Path, tenant: str, window: str, tz: str, group_by: list[str]
            ) -> dict[str, Any]:
    """What ``GET /v1/usage`` must answer (rows and totals, windows and money as compared
    values), from every ledger entry of ``tenant``: billing_v1's own cost, a session counted
    at its first event."""
    zone = ZoneInfo(tz)
    billing = billing_transform(live_prices(data_dir))
    seen_sessions: set[str] = set()
    rows: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(_zeros)
    totals = _zeros()
    with decimal.localcontext(EXACT):
        for stored in store.entries_after(0, 10**9):
            _count(stored, tenant, window, zone, group_by, billing, seen_sessions, rows, totals)
    return {"rows": dict(rows), "totals": totals}


def _count(stored: Any, tenant: str, window: str, zone: ZoneInfo, group_by: list[str], billing: Any,
           seen_sessions: set[str], rows: dict[tuple[Any, ...], dict[str, Any]],
           totals: dict[str, Any]) -> None:
    """Add one ledger entry to its row and to the totals."""
    entry = from_store(stored)
    if entry.event is None or stored.tenant != tenant:
        return
    event = entry.event
    billed = billing(event, EntryRef(stored.seq, stored.tenant_seq, stored.hash))
    values = {
        "model": event.usage.model, "user_id": event.user.user_id,
        "session_type": event.session.session_type, "status": event.outcome.status,
        "tier": event.user.tier, "provider": event.usage.provider,
    }
    start = window_of(event.timestamp, window, zone)
    key = (start.timestamp(), *(values[name] for name in group_by))
    for counters in (rows[key], totals):
        counters["events"] += 1
        if event.session.session_id not in seen_sessions:
            counters["sessions"] += 1
        counters["input_tokens"] += event.usage.input_tokens
        counters["output_tokens"] += event.usage.output_tokens
        counters["total_tokens"] += event.usage.total_tokens
        counters["cache_read_tokens"] += event.usage.cache_read_tokens or 0
        counters["cache_write_tokens"] += event.usage.cache_write_tokens or 0
        counters["reasoning_tokens"] += event.usage.reasoning_tokens or 0
        counters["unpriced_events"] += billed["cost_usd"] is None
        counters["errors"] += event.outcome.status != "success"
        counters["cost_usd"] += Decimal(billed["cost_usd"] or 0)
        counters["estimated_cost_usd"] += event.usage.estimated_cost_usd
    seen_sessions.add(event.session.session_id)


def _zeros() -> dict[str, Any]:
    return {**dict.fromkeys(COUNTS, 0), "cost_usd": Decimal(0), "estimated_cost_usd": Decimal(0)}


def as_compared(answer: dict[str, Any], group_by: list[str]) -> dict[str, Any]:
    """An answer of ``GET /v1/usage`` in the recount's shape (money as Decimal)."""

    def counters(row: dict[str, Any]) -> dict[str, Any]:
        money = {name: Decimal(row[name]) for name in ("cost_usd", "estimated_cost_usd")}
        return {**{name: row[name] for name in COUNTS}, **money}

    rows = {
        (datetime.fromisoformat(row["window_start"]).timestamp(), *(row[name] for name in group_by)):
            counters(row)
        for row in answer["rows"]
    }
    return {"rows": rows, "totals": counters(answer["totals"])}


def recount_users(store: Store, data_dir: Path, tenant: str, start: datetime, end: datetime
                  ) -> dict[str, dict[str, Any]]:
    """What ``GET /v1/usage/users`` must count per user in [start, end), from every ledger
    entry of ``tenant``: each session once, at its first event (its user, time and
    ``duration_ms``), cost as billing_v1's own. Durations are the exact list, unsorted."""
    billing = billing_transform(live_prices(data_dir))
    seen_sessions: set[str] = set()
    users: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"sessions": 0, "events": 0, "errors": 0, "total_tokens": 0,
                 "cost_usd": Decimal(0), "durations": []})
    with decimal.localcontext(EXACT):
        for stored in store.entries_after(0, 10**9):
            entry = from_store(stored)
            if entry.event is None or stored.tenant != tenant:
                continue
            event = entry.event
            first = event.session.session_id not in seen_sessions
            seen_sessions.add(event.session.session_id)
            if not start <= event.timestamp < end:
                continue
            counted = users[event.user.user_id]
            billed = billing(event, EntryRef(stored.seq, stored.tenant_seq, stored.hash))
            counted["events"] += 1
            counted["errors"] += event.outcome.status != "success"
            counted["total_tokens"] += event.usage.total_tokens
            counted["cost_usd"] += Decimal(billed["cost_usd"] or 0)
            if first:
                counted["sessions"] += 1
                counted["durations"].append(event.session.duration_ms)
    return dict(users)
