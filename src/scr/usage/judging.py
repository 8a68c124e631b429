"""Judging closed windows: the usage reader's side of anomaly detection.

After a round that reached the ledger's head, the reader judges each window that has closed
by its clock (``GRACE_MINUTES`` after its end, so events committed just after the hour still
count) and that was not judged before: the judged mark (``ANOMALY_MARK`` in the cursors
table, the start minute of the next window to judge) moves in the same write as the ANOMALY
entries, so a window is judged once. Events that arrive later for a judged window are counted
by the aggregates but never judged again. With no mark yet, judging starts
``MAX_WINDOWS_PER_PASS`` windows back, once anything has been counted.

An ANOMALY entry's payload is the delivered document plus its destinations; its numbers are
decimal strings (the ledger's canonical JSON holds no floats; money is never a float). With
encryption on, users in ``breakdown`` are subjects (``subject:<keyed hash>``), as the
aggregates keep them; ``GET /v1/anomalies`` shows the user ids they stand for.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

from scr.config import AnomalyConfig
from scr.store.protocol import Store
from scr.store.records import USAGE_COUNT_COLUMNS, UsageSum
from scr.usage.anomalies import (
    LEVEL_WINDOWS,
    MAX_WEEKS,
    MINUTES_PER_WEEK,
    WINDOW_MINUTES,
    Counts,
    Series,
    Verdict,
    contributors,
    judge,
)

ALERT_TYPE = "usage.anomaly"
ANOMALY_MARK = "usage:anomalies"  # a cursors-table name no destination can take (it has ':')
DATA_FIELDS = ("id", "metric", "window_start", "value", "expected", "low", "high", "breakdown", "tenant")
GRACE_MINUTES = 2  # a window is judged this long after its end
MAX_WINDOWS_PER_PASS = 48  # windows judged in one pass at most (a reader down longer judges the newest)
SIGNIFICANT_DIGITS = 6  # of the expected value and the band's ends
_EVENTS, _ERRORS, _TOKENS = (USAGE_COUNT_COLUMNS.index(n) for n in ("events", "errors", "total_tokens"))
_encode_body = msgspec.json.Encoder().encode


def anomaly_key(tenant: str, metric: str, window_start: str) -> str:
    """An anomaly's identity: one per tenant, metric and window."""
    return f"{tenant}/anomaly/{metric}/{window_start}"


def anomaly_id(key: str) -> str:
    """The id ``GET /v1/anomalies`` shows for the anomaly of ``key``."""
    return "anom_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def window_text(start_minute: int) -> str:
    """A window's start (Unix minutes) as RFC 3339 UTC text."""
    return datetime.fromtimestamp(start_minute * 60, UTC).isoformat().replace("+00:00", "Z")


def key_of(payload: dict[str, Any]) -> str:
    data = payload["data"]
    return anomaly_key(data["tenant"], data["metric"], data["window_start"])


def alert_body(payload: dict[str, Any]) -> bytes:
    """The delivered document of an ANOMALY payload, its keys in one order."""
    given = payload["data"]
    return _encode_body({"type": payload["type"], "timestamp": payload["timestamp"],
                         "data": {name: given[name] for name in DATA_FIELDS}})


def windows_due(mark: int | None, now_s: float, window: str) -> list[int]:
    """The start minutes of the closed windows not judged yet (``mark``: the next one)."""
    size = WINDOW_MINUTES[window]
    last = (int(now_s) // 60 - GRACE_MINUTES) // size * size - size
    first = last - (MAX_WINDOWS_PER_PASS - 1) * size if mark is None else mark
    return list(range(max(first, last - (MAX_WINDOWS_PER_PASS - 1) * size), last + size, size))


def judge_windows(store: Store, config: AnomalyConfig, starts: list[int], now: str) -> list[dict[str, Any]]:
    """The ANOMALY payloads of the windows starting at ``starts`` (minutes), every tenant."""
    if not starts:
        return []
    size = WINDOW_MINUTES[config.window]
    week = MINUTES_PER_WEEK // size
    origin = starts[0] - (MAX_WEEKS * week + LEVEL_WINDOWS) * size
    length = (starts[-1] - origin) // size + 1
    counts: dict[str, list[Counts]] = {}
    for found in store.usage_sums(None, origin, starts[-1] + size, size, []):
        windows = counts.setdefault(found.tenant, [Counts()] * length)
        windows[found.bucket] = _counts(found)
    series = Series(week, counts)
    alerts = []
    for start in starts:
        for metric in config.metrics:
            for verdict in judge(series, (start - origin) // size, metric):
                if verdict.anomalous:
                    alerts.append(_alert(store, config, verdict, start, now))
    return alerts


def _counts(found: UsageSum) -> Counts:
    return Counts(found.counts[_EVENTS], found.counts[_ERRORS], found.counts[_TOKENS],
                  float(found.cost_usd))


def _alert(store: Store, config: AnomalyConfig, verdict: Verdict, start: int, now: str) -> dict[str, Any]:
    window_start = window_text(start)
    key = anomaly_key(verdict.tenant, verdict.metric, window_start)
    return {
        "type": ALERT_TYPE, "timestamp": now,
        "data": {
            "id": anomaly_id(key),
            "metric": verdict.metric, "window_start": window_start,
            "value": _decimal(verdict.value), "expected": _decimal(verdict.expected),
            "low": _decimal(verdict.low), "high": _decimal(verdict.high),
            "breakdown": breakdown(store, verdict.tenant, verdict.metric, start,
                                   WINDOW_MINUTES[config.window]),
            "tenant": verdict.tenant,
        },
        "destinations": list(config.destinations),
    }


def breakdown(store: Store, tenant: str, metric: str, start: int, size: int) -> list[dict[str, str]]:
    """The models and users whose share of the window's metric moved most from their share
    of the week before (for the error rate: of the errors)."""
    rows: list[dict[str, str]] = []
    usual_from = start - MINUTES_PER_WEEK
    for dimension in ("model", "user_id"):
        window = _by_key(store.usage_sums(tenant, start, start + size, size, [dimension]), metric)
        usual = _by_key(store.usage_sums(tenant, usual_from, start, start - usual_from, [dimension]), metric)
        rows.extend({"dimension": dimension, "key": str(found["key"]),
                     "value": _decimal(float(found["value"])), "share": str(found["share"]),
                     "usual_share": str(found["usual_share"])}
                    for found in contributors(window, usual, MINUTES_PER_WEEK // size))
    return rows


def _by_key(sums: list[UsageSum], metric: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for found in sums:
        counts = _counts(found)
        amount = counts.errors if metric == "error_rate" else getattr(counts, metric)
        totals[found.keys[0]] = totals.get(found.keys[0], 0.0) + float(amount)
    return totals


def _decimal(value: float) -> str:
    """A detector's number as decimal text (never an exponent)."""
    return format(Decimal(f"{value:.{SIGNIFICANT_DIGITS}g}").normalize(), "f")
