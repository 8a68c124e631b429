"""Windows of local time: hour, day, week (from Monday) and month, in an IANA time zone.

A window starts at a local hour or midnight, so across a DST change a day may last 23 or 25
hours and an hour window keeps its 60 minutes (a repeated local hour is two windows). The
boundaries are computed in local time and kept as UTC minutes, the aggregates' unit (every
zone's offset is a whole number of minutes).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

WINDOWS = ("hour", "day", "week", "month")
SECONDS_PER_MINUTE = 60
DAYS_PER_WEEK = 7
MONTHS_PER_YEAR = 12


def window_start(instant: datetime, window: str, tz: ZoneInfo) -> datetime:
    """The start (in ``tz``) of the window that holds ``instant``."""
    local = instant.astimezone(tz)
    if window == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.date()
    if window == "week":
        day -= timedelta(days=day.weekday())
    elif window == "month":
        day = day.replace(day=1)
    return local_midnight(day, tz)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of ``day`` in ``tz`` (a midnight that a DST gap skips: the gap's end)."""
    naive = datetime(day.year, day.month, day.day)
    return naive.replace(tzinfo=tz).astimezone(UTC).astimezone(tz)


def next_start(start: datetime, window: str, tz: ZoneInfo) -> datetime:
    """The start of the window after the one starting at ``start``."""
    if window == "hour":
        return window_start(start.astimezone(UTC) + timedelta(hours=1), "hour", tz)
    day = start.astimezone(tz).date()
    if window == "day":
        return local_midnight(day + timedelta(days=1), tz)
    if window == "week":
        return local_midnight(day + timedelta(days=DAYS_PER_WEEK), tz)
    month = day.month % MONTHS_PER_YEAR + 1
    year = day.year + (1 if month == 1 else 0)
    return local_midnight(date(year, month, 1), tz)


def boundaries(start: datetime, end: datetime, window: str, tz: ZoneInfo) -> list[datetime]:
    """The window starts from ``start`` (a window start) up to and including ``end``."""
    starts = [start]
    while starts[-1] < end:
        starts.append(next_start(starts[-1], window, tz))
    return starts


def utc_minute(instant: datetime) -> int:
    """Unix minutes of an aware instant (the aggregates' ``minute``)."""
    return int(instant.timestamp()) // SECONDS_PER_MINUTE
