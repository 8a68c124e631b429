"""One arriving event judged whole, as the edge needs it: valid schema v1.2
(``scr.schema.decode_event``) with no repeated key (``scr.jsontext.duplicate_key``), then its
canonical bytes and their digest.

``check_events`` is the pure-Python reference of the native core's ``check_events``
(``scr.native`` binds one or the other): one call per request's batch of raw events, each
answered with ``(event_id, tenant, canonical bytes, digest)`` when it is accepted, or ``None``.
``None`` says nothing of why: the caller asks the Python path for the problems, which is also
what the native core answers ``None`` for, so both bindings lead to the same answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from scr.jsontext import duplicate_key
from scr.schema import MAX_AHEAD_OF_CLOCK, MAX_EVENT_BYTES, InvalidEvent, canonical_bytes, decode_event

DIGEST_BYTES = 16  # BLAKE2b's output, compared on duplicates
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)

Verdict = tuple[str, str, bytes, bytes] | None
"""An accepted event's ``(event_id, tenant, canonical bytes, digest)``, or ``None``."""


def event_digest(payload: bytes) -> bytes:
    """The digest of an event's canonical bytes (BLAKE2b, ``DIGEST_BYTES`` long)."""
    return hashlib.blake2b(payload, digest_size=DIGEST_BYTES).digest()


def latest_epoch_us(now: datetime | None = None) -> int:
    """The latest time an event arriving at ``now`` (default: the clock) may carry, in
    microseconds since 1970: what ``check_events`` takes."""
    return ((now or datetime.now(UTC)) + MAX_AHEAD_OF_CLOCK - EPOCH) // ONE_MICROSECOND


def check_events(raws: Sequence[bytes], latest_epoch_us: int) -> list[Verdict]:
    """Each raw event accepted (its times no later than ``latest_epoch_us``) or ``None``."""
    now = EPOCH + latest_epoch_us * ONE_MICROSECOND - MAX_AHEAD_OF_CLOCK
    return [_check_event(raw, now) for raw in raws]


def _check_event(raw: bytes, now: datetime) -> Verdict:
    if len(raw) > MAX_EVENT_BYTES:
        return None
    try:
        event = decode_event(raw, now=now)
    except InvalidEvent:
        return None
    if duplicate_key(raw) is not None:
        return None
    payload = canonical_bytes(event)
    return event.event_id, event.tenant, payload, event_digest(payload)
