"""Budgets: when a tenant's exact cost in a UTC day or month crosses a share of its limit.

After each round the usage reader adds the round's cost (``cost_usd`` of its rows, as
``GET /v1/usage`` sums it) to what the aggregates already hold for each period the round
touched, and raises one alert per share of the limit reached. An alert is a BUDGET_ALERT
ledger entry written with the round's rows and cursor (``scr.serve.writes.AddUsage``); its
identity (tenant, period, period_start, threshold) is checked in that write, so an alert is
ledgered once per threshold and period, whatever restarts or replays come later.

The entry's payload is the delivered document plus the destinations it goes to; the
threshold is kept as decimal text in the ledger (its canonical JSON holds no floats) and
delivered as a JSON number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Context, Decimal, Inexact, localcontext
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from scr.config import BudgetConfig
from scr.store.protocol import Store
from scr.store.records import UsageRow
from scr.usage.windows import next_start, utc_minute, window_start

ALERT_TYPE = "budget.threshold_crossed"
USAGE_ACTOR = "scr: usage"  # the actor and source of BUDGET_ALERT entries
USAGE_SOURCE = "usage"
DATA_FIELDS = ("tenant", "period", "period_start", "threshold", "spent_usd", "limit_usd")
_UTC = ZoneInfo("UTC")
# Wide enough for any limit times any share (12 + 18 digits by 18 decimals): never rounds.
_EXACT = Context(prec=80, traps=[Inexact])

# spent(tenant, from_minute, to_minute): the tenant's committed cost in [from, to)
SpentBefore = Callable[[str, int, int], Decimal]

_encode_body = msgspec.json.Encoder(decimal_format="number").encode


def period_of(minute: int, period: str) -> tuple[datetime, datetime]:
    """The UTC day or month holding ``minute`` (Unix time // 60): its start and end."""
    start = window_start(datetime.fromtimestamp(minute * 60, UTC), period, _UTC)
    return start, next_start(start, period, _UTC)


def spent(store: Store, tenant: str, from_minute: int, to_minute: int) -> Decimal:
    """A tenant's exact committed cost in the minutes [from, to) (a ``SpentBefore``)."""
    sums = store.usage_sums(tenant, from_minute, to_minute, to_minute - from_minute, [])
    return sum((Decimal(found.cost_usd) for found in sums), Decimal(0))


def spent_now(store: Store, budget: BudgetConfig, now: datetime) -> tuple[datetime, datetime, Decimal]:
    """The budget's current UTC period (start, end) and the exact cost spent in it."""
    start, end = period_of(utc_minute(now), budget.period)
    return start, end, spent(store, budget.tenant, utc_minute(start), utc_minute(end))


def alert_key(tenant: str, period: str, period_start: str, threshold: str) -> str:
    """An alert's identity: one per tenant, period and share of the limit (1.0 and 1 alike)."""
    share = format(Decimal(threshold).normalize(), "f")
    return f"{tenant}/{period}/{period_start}/{share}"


def key_of(payload: dict[str, Any]) -> str:
    """The identity of a BUDGET_ALERT entry's payload."""
    data = payload["data"]
    return alert_key(data["tenant"], data["period"], data["period_start"], data["threshold"])


def alert_body(payload: dict[str, Any]) -> bytes:
    """The delivered document of a BUDGET_ALERT payload (the threshold as a JSON number), its
    keys in one order whether the payload was just appended or read back from the ledger."""
    given = payload["data"]
    data = {name: given[name] for name in DATA_FIELDS}
    data["threshold"] = Decimal(given["threshold"])
    return _encode_body({"type": payload["type"], "timestamp": payload["timestamp"], "data": data})


def crossings(
    budgets: Sequence[BudgetConfig], rows: Sequence[UsageRow], spent_before: SpentBefore,
    sent: set[str], now: str,
) -> list[dict[str, Any]]:
    """The alerts a round of rows raises: payloads of BUDGET_ALERT entries not in ``sent``."""
    alerts: list[dict[str, Any]] = []
    raised = set(sent)  # ``sent`` grows only once the round's write is taken
    with localcontext(_EXACT):
        for budget in budgets:
            round_cost: dict[datetime, Decimal] = {}
            ends: dict[datetime, datetime] = {}
            for row in rows:
                if row.tenant == budget.tenant:
                    start, ends[start] = period_of(row.minute, budget.period)
                    round_cost[start] = round_cost.get(start, Decimal(0)) + Decimal(row.cost_usd)
            for start, cost in sorted(round_cost.items()):
                spent = spent_before(budget.tenant, utc_minute(start), utc_minute(ends[start])) + cost
                alerts.extend(_reached(budget, start, spent, raised, now))
    return alerts


def _reached(budget: BudgetConfig, start: datetime, spent: Decimal, raised: set[str],
             now: str) -> list[dict[str, Any]]:
    period_start = start.isoformat().replace("+00:00", "Z")
    alerts = []
    for share in budget.alert_at:
        key = alert_key(budget.tenant, budget.period, period_start, share)
        if key in raised or spent < budget.limit * Decimal(share):
            continue
        raised.add(key)
        alerts.append({
            "type": ALERT_TYPE, "timestamp": now,
            "data": {
                "tenant": budget.tenant, "period": budget.period, "period_start": period_start,
                "threshold": share, "spent_usd": format(spent, "f"), "limit_usd": budget.limit_usd,
            },
            "destinations": list(budget.destinations),
        })
    return alerts
