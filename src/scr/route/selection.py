"""Which events a destination takes: its filter, then its sampling.

Both are pure and deterministic, so a replay or a restart chooses exactly the same events.

Filter: each condition is a list of accepted values, or ``None`` (no condition). An event
passes when it meets every condition given, and it meets a condition when its value is one
of the listed ones (conditions AND, values within one condition OR). An empty list is treated
as no condition, like ``None``, so an empty YAML list never silently drops every event. The
conditions and the event field each one reads:

    session_type    session.session_type
    outcome_status  outcome.status
    tier            user.tier
    model           usage.model   (values may use shell wildcards: "gpt-4o*", "claude-*")
    provider        usage.provider (an event without a provider never meets this condition)
    tenant          user.organization_id

Sampling: SHA-256 of ``destination`` NUL ``event_id`` is read as a number uniform in [0, 1);
the event is taken when that number is below the rate. The same event is always taken or
always left by a destination, while different destinations sample independently.

``select_events`` judges a batch of events as the ledger holds them (JSON lines) with a
destination's ``Selection``: the reference of the native core's, which reads only the six
fields and the event id of each line instead of decoding it (``scr.route.choices``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import Protocol

import msgspec

from scr.schema import Event, read_stored_event

# A float holds 53 bits exactly: the point is a 53-bit SHA-256 prefix over 2**53, so < 1.0.
_SAMPLE_BITS = 53
_SAMPLE_SPACE = 1 << _SAMPLE_BITS

# A verdict of select_events, one byte an event.
CHOSEN, FILTERED_OUT, SAMPLED_OUT = 0, 1, 2
UNDECIDED = 3
"""The line is not an event this reader reads: the caller decides it (the core leaves a
line it cannot read to Python; the reference, a line that is not a stored event)."""


class FilterLike(Protocol):
    """A destination's filter: each attribute a list of accepted values or ``None``."""

    @property
    def session_type(self) -> Sequence[str] | None: ...
    @property
    def outcome_status(self) -> Sequence[str] | None: ...
    @property
    def tier(self) -> Sequence[str] | None: ...
    @property
    def model(self) -> Sequence[str] | None: ...
    @property
    def provider(self) -> Sequence[str] | None: ...
    @property
    def tenant(self) -> Sequence[str] | None: ...


def _meets(accepted: Sequence[str] | None, value: str | None) -> bool:
    return not accepted or (value is not None and value in accepted)


def _meets_pattern(patterns: Iterable[str] | None, value: str) -> bool:
    if not patterns:
        return True
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


def filters_anything(filter: FilterLike | None) -> bool:
    """Whether ``filter`` sets any condition (else every event passes it)."""
    return filter is not None and any((
        filter.session_type, filter.outcome_status, filter.tier, filter.model, filter.provider,
        filter.tenant,
    ))


def passes_filter(filter: FilterLike | None, event: Event) -> bool:
    """Whether ``event`` meets every condition of ``filter`` (``None``: no filter)."""
    if filter is None:
        return True
    return (
        _meets(filter.session_type, event.session.session_type)
        and _meets(filter.outcome_status, event.outcome.status)
        and _meets(filter.tier, event.user.tier)
        and _meets_pattern(filter.model, event.usage.model)
        and _meets(filter.provider, event.usage.provider)
        and _meets(filter.tenant, event.user.organization_id)
    )


def sample_point(destination: str, event_id: str) -> float:
    """The event's deterministic point in [0, 1) for ``destination``."""
    digest = hashlib.sha256(f"{destination}\0{event_id}".encode()).digest()
    prefix: int = int.from_bytes(digest[:8], "big") >> (64 - _SAMPLE_BITS)
    return prefix / _SAMPLE_SPACE


def sampled_in(rate: float, destination: str, event_id: str) -> bool:
    """Whether ``destination`` samples this event at ``rate`` (1.0: all, 0.0: none)."""
    if math.isnan(rate) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"a sampling rate is between 0.0 and 1.0, not {rate}")
    if rate >= 1.0:
        return True
    return sample_point(destination, event_id) < rate


class Selection:
    """A destination's filter conditions (each a list of accepted values; empty: no
    condition) and sampling rate, for ``select_events``."""

    def __init__(
        self, destination: str, rate: float, session_type: Sequence[str], outcome_status: Sequence[str],
        tier: Sequence[str], model: Sequence[str], provider: Sequence[str], tenant: Sequence[str],
    ) -> None:
        if math.isnan(rate) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"a sampling rate is between 0.0 and 1.0, not {rate}")
        self.destination, self.rate = destination, rate
        self.session_type, self.outcome_status, self.tier = session_type, outcome_status, tier
        self.model, self.provider, self.tenant = model, provider, tenant


def select_events(selection: Selection, events: bytes) -> bytes:
    """The verdict of each event of ``events`` (JSON lines, each a stored event)."""
    lines = events.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if any(not line for line in lines):
        raise ValueError("the events are not JSON lines")
    return bytes(_verdict(selection, line) for line in lines)


def _verdict(selection: Selection, line: bytes) -> int:
    try:
        event = read_stored_event(line)
    except msgspec.DecodeError:
        return UNDECIDED
    if not passes_filter(selection, event):
        return FILTERED_OUT
    if not sampled_in(selection.rate, selection.destination, event.event_id):
        return SAMPLED_OUT
    return CHOSEN
