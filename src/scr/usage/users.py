"""``GET /v1/usage/users``: each user's sessions, events, success rate, cost per session and
median session duration over a range, as a top list.

The counters are the minute aggregates summed by ``user_id`` over the range (the same sums
as ``GET /v1/usage?group_by=user_id``); the medians come from the users' histograms of
session durations (``scr.usage.durations``), summed over the range's quarter hours. A
session is counted once, at its first event, with that event's ``session.duration_ms``.

Rounding: ``success_rate`` = (events − errors) / events and ``cost_per_session_usd`` =
``cost_usd`` / sessions are rounded half-even, to ``RATE_PLACES`` decimals and to the
10 places of ``cost_usd``; ``median_duration_ms`` is the lower median, within 1%.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from scr.store.protocol import Store
from scr.store.records import USAGE_COUNT_COLUMNS
from scr.store.usage import ROLLUP_MINUTES
from scr.usage.counting import COST_PLACES, SECONDS_PER_MINUTE, scaled, unscaled
from scr.usage.durations import median_ms
from scr.usage.query import bad_parameter, parse_range, time_text, zone_of
from scr.usage.windows import utc_minute

ORDERS = ("cost_usd", "sessions", "events", "total_tokens", "errors")
DEFAULT_ORDER = "cost_usd"
DEFAULT_LIMIT = 10
MAX_LIMIT = 1000
RANGE_WINDOW = "hour"  # from and to are local hour starts (so any day, week or month start)
RATE_PLACES = 4  # success_rate: 0.9875
QUARTER_SECONDS = ROLLUP_MINUTES * SECONDS_PER_MINUTE  # the histograms' quarter hours
# the counters a user's line shows, each summed from the aggregates' column of that name
COUNTED = ("sessions", "events", "errors", "total_tokens")
_POSITIONS = [USAGE_COUNT_COLUMNS.index(name) for name in COUNTED]


@dataclass
class _Usage:
    """One user's sums (or every user's, for the totals)."""

    sessions: int = 0
    events: int = 0
    errors: int = 0
    total_tokens: int = 0
    cost: int = 0  # in 10^-COST_PLACES USD
    durations: list[tuple[int, int]] = field(default_factory=list)  # (bucket, sessions)

    def order_value(self, order_by: str) -> int:
        return self.cost if order_by == "cost_usd" else int(getattr(self, order_by))

    def shown(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions, "events": self.events, "errors": self.errors,
            "success_rate": _rate(self.events - self.errors, self.events),
            "total_tokens": self.total_tokens, "cost_usd": unscaled(self.cost, COST_PLACES),
            "cost_per_session_usd": (unscaled(_divide_half_even(self.cost, self.sessions), COST_PLACES)
                                     if self.sessions else None),
            "median_duration_ms": median_ms(self.durations),
        }


@dataclass(frozen=True, slots=True)
class UsersQuery:
    """A checked ``GET /v1/usage/users`` request."""

    start: datetime
    end: datetime
    tz: ZoneInfo
    order_by: str
    limit: int

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> UsersQuery:
        """The query of these parameters; ``BadRequest`` naming the first wrong one."""
        tz = zone_of(params)
        order_by = params.get("order_by", DEFAULT_ORDER)
        if order_by not in ORDERS:
            raise bad_parameter("order_by", f"must be one of {', '.join(ORDERS)}")
        limit = _limit(params.get("limit"))
        start, end = parse_range(params, RANGE_WINDOW, tz)
        for name, instant in (("from", start), ("to", end)):
            if int(instant.timestamp()) % QUARTER_SECONDS:  # only zones' old local mean times
                raise bad_parameter(name, "must be a quarter hour in UTC")
        return cls(start, end, tz, order_by, limit)

    def answer(self, store: Store, tenant: str) -> dict[str, Any]:
        """The answer body: the top ``limit`` users by ``order_by`` (ties by user id), and
        the totals of every user."""
        first, end = utc_minute(self.start), utc_minute(self.end)
        users: dict[str, _Usage] = {}
        for found in store.usage_sums(tenant, first, end, end - first, ["user_id"]):
            usage = users.setdefault(found.keys[0], _Usage())
            for name, position in zip(COUNTED, _POSITIONS, strict=True):
                setattr(usage, name, getattr(usage, name) + found.counts[position])
            usage.cost += scaled(Decimal(found.cost_usd), COST_PLACES)
        totals = _Usage()
        for user_id, bucket, sessions in store.usage_durations(tenant, first, end):
            users.setdefault(user_id, _Usage()).durations.append((bucket, sessions))
            totals.durations.append((bucket, sessions))
        for usage in users.values():
            for name in (*COUNTED, "cost"):
                setattr(totals, name, getattr(totals, name) + getattr(usage, name))
        top = sorted(users.items(), key=lambda item: (-item[1].order_value(self.order_by), item[0]))
        return {
            "from": time_text(self.start), "to": time_text(self.end), "tz": self.tz.key,
            "order_by": self.order_by, "limit": self.limit,
            "users": [{"user_id": user_id, **usage.shown()} for user_id, usage in top[: self.limit]],
            "totals": {"users": len(users), **totals.shown()},
        }


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    # ASCII digits only (no sign, spaces or other scripts' digits), and few of them
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(MAX_LIMIT))) \
            or not 1 <= int(text) <= MAX_LIMIT:
        raise bad_parameter("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def _divide_half_even(dividend: int, divisor: int) -> int:
    """``dividend / divisor`` rounded half-even (both non-negative, divisor > 0)."""
    quotient, remainder = divmod(dividend, divisor)
    if 2 * remainder > divisor or (2 * remainder == divisor and quotient % 2):
        quotient += 1
    return quotient


def _rate(part: int, whole: int) -> float | None:
    """``part / whole`` rounded half-even to ``RATE_PLACES`` decimals (None: nothing to rate)."""
    if whole <= 0:
        return None
    return float(Decimal(_divide_half_even(part * 10**RATE_PLACES, whole)).scaleb(-RATE_PLACES))
