"""``GET /v1/usage``: a tenant's aggregates summed into windows and groups.

The parameters are checked first, each error naming its parameter (and the window starts
computed, in local time); then the store sums the aggregates by group and by buckets that
never straddle a window (the greatest common divisor of the windows' lengths in minutes: an
hour, a day in UTC), and each bucket is added to its window, found by bisection over the
window starts. Money is summed as integers of its smallest unit and written as decimal
strings; empty windows are omitted.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import reduce
from math import gcd
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from scr.errors import BadRequest, Detail
from scr.store.protocol import Store
from scr.store.records import USAGE_COUNT_COLUMNS, UsageSum
from scr.usage.counting import COST_PLACES, ESTIMATE_PLACES, scaled, unscaled
from scr.usage.windows import WINDOWS, boundaries, utc_minute, window_start

GROUP_KEYS = ("model", "user_id", "session_type", "status", "tier", "provider")
MAX_RANGE_DAYS = 400
DEFAULT_WINDOW = "day"
DEFAULT_TZ = "UTC"
# The counters of a row, in the order the answer lists them (money last).
COUNTERS = ("events", "sessions", "input_tokens", "output_tokens", "total_tokens",
            "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "unpriced_events",
            "errors")
_COUNT_POSITIONS = [USAGE_COUNT_COLUMNS.index(name) for name in COUNTERS]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
_decode_time = msgspec.json.Decoder(AwareTime).decode


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """A checked ``GET /v1/usage`` request."""

    start: datetime
    end: datetime
    window: str
    tz: ZoneInfo
    group_by: tuple[str, ...]
    starts: tuple[datetime, ...]  # the window starts from ``start`` to ``end``

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> UsageQuery:
        """The query of these parameters; ``BadRequest`` naming the first wrong one."""
        window = params.get("window", DEFAULT_WINDOW)
        if window not in WINDOWS:
            raise bad_parameter("window", f"must be one of {', '.join(WINDOWS)}")
        tz = zone_of(params)
        group_by = tuple(dict.fromkeys(k for k in params.get("group_by", "").split(",") if k))
        unknown = [k for k in group_by if k not in GROUP_KEYS]
        if unknown:
            raise bad_parameter("group_by", f"unknown key {unknown[0]!r}; keys: {', '.join(GROUP_KEYS)}")
        start, end = parse_range(params, window, tz)
        try:
            starts = tuple(boundaries(start, end, window, tz))
        except OverflowError:
            raise bad_parameter("to", "out of range") from None
        return cls(start, end, window, tz, group_by, starts)

    def answer(self, store: Store, tenant: str) -> dict[str, Any]:
        """The answer body: rows by window and group, and the totals."""
        starts = self.starts
        start_minutes = [utc_minute(s) for s in starts]
        first = start_minutes[0]
        # buckets that never straddle a window: every window start is a multiple of it
        bucket = reduce(gcd, (m - first for m in start_minutes[1:]))
        sums: dict[tuple[Any, ...], list[int]] = {}
        for found in store.usage_sums(tenant, first, start_minutes[-1], bucket, self.group_by):
            window = bisect_right(start_minutes, first + found.bucket * bucket) - 1
            place: tuple[Any, ...] = (window, *found.keys)
            counters = sums.get(place)
            if counters is None:
                counters = sums[place] = [0] * (len(COUNTERS) + 2)
            _add(counters, found)
        totals = [0] * (len(COUNTERS) + 2)
        rows = []
        for key in sorted(sums):
            counters = sums[key]
            for n, value in enumerate(counters):
                totals[n] += value
            grouped = {name: _group_value(name, value)
                       for name, value in zip(self.group_by, key[1:], strict=True)}
            rows.append({"window_start": time_text(starts[key[0]]), **grouped, **_counters(counters)})
        return {
            "from": time_text(self.start), "to": time_text(self.end), "window": self.window,
            "tz": self.tz.key, "group_by": list(self.group_by), "rows": rows,
            "totals": _counters(totals),
        }


def parse_range(params: Mapping[str, str], window: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """``from`` and ``to``: window starts in ``tz``, ``to`` after ``from``, at most
    ``MAX_RANGE_DAYS`` apart (``BadRequest`` naming the wrong one)."""
    start, end = (_time(params, name, window, tz) for name in ("from", "to"))
    if end <= start:
        raise bad_parameter("to", "must be after from")
    if end - start > timedelta(days=MAX_RANGE_DAYS):
        raise bad_parameter("to", f"a range may span at most {MAX_RANGE_DAYS} days of minute data")
    return start, end


def zone_of(params: Mapping[str, str]) -> ZoneInfo:
    """The ``tz`` parameter's zone (default UTC)."""
    return _zone(params.get("tz", DEFAULT_TZ))


def _add(counters: list[int], found: UsageSum) -> None:
    for n, position in enumerate(_COUNT_POSITIONS):
        counters[n] += found.counts[position]
    counters[-2] += scaled(Decimal(found.cost_usd), COST_PLACES)
    counters[-1] += scaled(Decimal(found.estimated_cost_usd), ESTIMATE_PLACES)


def _counters(counters: list[int]) -> dict[str, Any]:
    answer: dict[str, Any] = dict(zip(COUNTERS, counters[: len(COUNTERS)], strict=True))
    answer["cost_usd"] = unscaled(counters[-2], COST_PLACES)
    answer["estimated_cost_usd"] = _plain(unscaled(counters[-1], ESTIMATE_PLACES))
    return answer


def _plain(amount: str) -> str:
    """A decimal string without trailing zeros after the point ("0.015000" → "0.015")."""
    return amount.rstrip("0").rstrip(".") if "." in amount else amount


def _group_value(name: str, value: str) -> str | None:
    return None if name == "provider" and value == "" else value


def time_text(instant: datetime) -> str:
    """RFC 3339 in the query's zone (UTC as ``Z``)."""
    return instant.isoformat().replace("+00:00", "Z")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # ValueError: not a zone key at all
        raise bad_parameter("tz", f"unknown IANA time zone {name!r}") from None


def _time(params: Mapping[str, str], name: str, window: str, tz: ZoneInfo) -> datetime:
    text = params.get(name)
    if not text:
        raise bad_parameter(name, "required: an RFC 3339 time with an offset")
    try:
        instant = _decode_time(msgspec.json.encode(text))
        local = instant.astimezone(tz)
        on_boundary = window_start(local, window, tz) == local
    except msgspec.ValidationError:
        raise bad_parameter(name, f"{text!r} is not an RFC 3339 time with an offset") from None
    except OverflowError:  # the first or last days of the calendar, shifted out of it
        raise bad_parameter(name, f"{text!r} is out of range") from None
    if not on_boundary:
        raise bad_parameter(name, f"must be the start of a {window} in {tz.key}")
    return local


def bad_parameter(parameter: str, message: str) -> BadRequest:
    return BadRequest(f"{parameter}: {message}", [Detail(parameter, message)])
