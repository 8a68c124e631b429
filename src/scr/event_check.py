"""One arriving event judged whole, as the edge needs it: valid schema v1.2
(``scr.schema.decode_event``) with no repeated key (``scr.jsontext.duplicate_key``), then its
canonical bytes and their digest.

``judge_event`` is the Python path, which names every problem of a refused event.
``check_events`` is the pure-Python reference of the native core's ``check_events``
(``scr.native`` binds one or the other): one call per request's batch of raw events, each
answered with ``(event_id, tenant, canonical bytes, digest)`` when it is accepted, or
``None``. ``None`` says nothing of why: the caller asks ``judge_event``, so both bindings
lead to the same answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from scr.jsontext import duplicate_key
from scr.schema import MAX_AHEAD_OF_CLOCK, Event, InvalidEvent, Problem, canonical_bytes, decode_event

DIGEST_BYTES = 16  # BLAKE2b's output, compared on duplicates
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)
MAX_EVENT_ID_HINT_CHARS = 128  # a refused event's id is echoed back only if it could be one

Verdict = tuple[str, str, str, str, bytes, bytes] | None
"""An accepted event's ``(event_id, tenant, session_id, model, canonical bytes, digest)``, or
``None``."""


@dataclass(slots=True)
class Judged:
    """An event found valid: its id, tenant, session id, model, canonical bytes and digest, and
    the decoded ``Event`` when the Python path decoded it (the native core hands none)."""

    event_id: str
    tenant: str
    session_id: str
    model: str
    payload: bytes
    digest: bytes
    event: Event | None = None


@dataclass(slots=True)
class Refused:
    """Why an event was refused, and its id when one can be read (to help the sender)."""

    problems: list[Problem]
    event_id: str | None = None


def event_digest(payload: bytes) -> bytes:
    """The digest of an event's canonical bytes (BLAKE2b, ``DIGEST_BYTES`` long)."""
    return hashlib.blake2b(payload, digest_size=DIGEST_BYTES).digest()


def latest_epoch_us(now: datetime | None = None) -> int:
    """The latest time an event arriving at ``now`` (default: the clock) may carry, in
    microseconds since 1970: what ``check_events`` takes."""
    return ((now or datetime.now(UTC)) + MAX_AHEAD_OF_CLOCK - EPOCH) // ONE_MICROSECOND


def judge_event(raw: bytes, *, now: datetime | None = None) -> Judged | Refused:
    """One raw event judged by the Python path, its times against ``now`` (default: the
    clock): every problem of the schema, or the first repeated key."""
    try:
        event = decode_event(raw, now=now)
    except InvalidEvent as invalid:
        return Refused(invalid.problems, event_id_hint(raw))
    repeated = duplicate_key(raw)
    if repeated is not None:  # the decoder kept its last value: refuse, never guess
        return Refused([Problem(
            "duplicate_key", repeated, "this key appears more than once in its object; send each key once",
        )], event.event_id)
    payload = canonical_bytes(event)
    return Judged(event.event_id, event.tenant, event.session.session_id, event.usage.model, payload,
                  event_digest(payload), event)


def event_id_hint(raw: bytes) -> str | None:
    """The event id of a refused event, when one can be read, to help the sender."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    event_id = value.get("event_id") if isinstance(value, dict) else None
    return event_id if isinstance(event_id, str) and len(event_id) <= MAX_EVENT_ID_HINT_CHARS else None


def check_events(raws: Sequence[bytes], latest_epoch_us: int) -> list[Verdict]:
    """Each raw event accepted (its times no later than ``latest_epoch_us``) or ``None``."""
    now = EPOCH + latest_epoch_us * ONE_MICROSECOND - MAX_AHEAD_OF_CLOCK
    return [_verdict(judge_event(raw, now=now)) for raw in raws]


def _verdict(judged: Judged | Refused) -> Verdict:
    if isinstance(judged, Refused):
        return None
    return (judged.event_id, judged.tenant, judged.session_id, judged.model, judged.payload,
            judged.digest)
