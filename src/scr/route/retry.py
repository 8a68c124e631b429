"""What to do after a delivery attempt, and how long to wait before the next one.

Classification (Standard Webhooks practice):

    2xx                                   DELIVERED
    no response (connection error, timeout), 408, 429, 5xx   RETRY
    410 Gone                              DISABLE  (the destination is switched off)
    3xx (redirects are never followed), every other 4xx      DEAD (dead letter at once)
    any other code (1xx, non-standard)    RETRY    (the receiver did not take the event)

Waiting: exponential backoff with full jitter, a uniform draw in
``[0, min(max_ms, base_ms * 2**(attempt - 1))]``, unless the receiver sent ``Retry-After``;
then exactly that long, because the receiver knows when it will be back and an earlier try
would only be refused again. ``max_ms`` caps the backoff only: a receiver's ``Retry-After`` is
never shortened by it, only capped by ``retry_after_max_s`` (so a receiver cannot park a
delivery for a year).
"""

from __future__ import annotations

import enum
import math
import random
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from scr.config import DEFAULT_RETRY_AFTER_MAX_S

MS_PER_S = 1000
_DELTA_SECONDS = re.compile(r"\d+(\.\d+)?", re.ASCII)
# Beyond this many doublings any realistic base already exceeds any realistic cap.
_MAX_DOUBLINGS = 62

_system_random = random.SystemRandom()


class Verdict(enum.Enum):
    """The outcome of one delivery attempt."""

    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"
    DISABLE = "disable"


def classify(status: int | None, error: BaseException | None = None) -> Verdict:
    """The verdict on an attempt that answered ``status`` (``None``: no response, see ``error``)."""
    if status is None:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status == 410:
        return Verdict.DISABLE
    if status in (408, 429) or 500 <= status < 600:
        return Verdict.RETRY
    if 300 <= status < 500:
        return Verdict.DEAD
    return Verdict.RETRY


def retry_after_seconds(header: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date.

    ``None`` when there is no usable value. A date in the past means 0. ``now`` should be
    aware; a naive one is taken as UTC.
    """
    if header is None:
        return None
    value = header.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_ms(attempt: int, base_ms: int, max_ms: int, rng: random.Random | None = None) -> int:
    """Full-jitter backoff before retry number ``attempt`` (1 = the first retry)."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, not {attempt}")
    if base_ms < 0 or max_ms < 0:
        raise ValueError("backoff_base_ms and backoff_max_ms must be >= 0")
    ceiling = min(max_ms, base_ms << min(attempt - 1, _MAX_DOUBLINGS))
    return (rng or _system_random).randint(0, ceiling)


def next_delay_ms(
    attempt: int,
    base_ms: int,
    max_ms: int,
    retry_after_s: float | None,
    rng: random.Random | None = None,
    *,
    retry_after_max_s: float = DEFAULT_RETRY_AFTER_MAX_S,
) -> int:
    """Milliseconds until the next attempt: ``Retry-After`` when given, else backoff.

    ``Retry-After`` is honoured in full (rounded up, never early) up to ``retry_after_max_s``;
    ``max_ms`` caps only the backoff.
    """
    if retry_after_s is None or math.isnan(retry_after_s):
        return backoff_ms(attempt, base_ms, max_ms, rng)
    wait_ms = retry_after_s * MS_PER_S
    cap_ms = retry_after_max_s * MS_PER_S
    if wait_ms >= cap_ms:  # also catches infinity before ceil() could overflow
        return math.ceil(cap_ms)
    return max(0, math.ceil(wait_ms))
