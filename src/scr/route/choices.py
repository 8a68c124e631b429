"""Which entries of a chunk a destination sends, and why it skips each other one.

A budget alert goes to the destinations it names; any other entry that is not an event is
skipped; an event goes through the destination's filter, then its sampling
(``scr.route.selection``). The events a reader keeps undecoded (their ledgered lines) are
judged by the native core, a chunk in one call that reads six fields and the event id of each
line; every other event, and every event with the core off, by the Python reference.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from scr import native
from scr.log.commit import Committed, event_of
from scr.log.entry import Kind
from scr.route.selection import (
    FILTERED_OUT,
    SAMPLED_OUT,
    UNDECIDED,
    FilterLike,
    Selection,
    filters_anything,
    passes_filter,
    sampled_in,
)
from scr.route.transforms import json_lines
from scr.usage.alerts import KIND_VALUES as ALERT_KINDS

log = logging.getLogger(__name__)

SESSION_COMPLETION = Kind.SESSION_COMPLETION.value
_REASONS = {FILTERED_OUT: "filtered_out", SAMPLED_OUT: "sampled_out"}


class Chooser:
    """A destination's choice of entries: ``None`` for an entry it sends, else the reason
    it skips it (``not_an_event``, ``filtered_out``, ``sampled_out``)."""

    def __init__(self, destination: str, filter: FilterLike | None, rate: float) -> None:
        self.destination, self.filter, self.rate = destination, filter, rate
        self.filtering = filters_anything(filter)
        self.sampling = not rate >= 1.0  # NaN included: sampled_in refuses it
        self.selection = native_selection(destination, filter, rate) \
            if self.filtering or rate < 1.0 else None

    def reason(self, entry: Committed) -> str | None:
        """Why the destination skips ``entry``; ``None``: it sends it."""
        if entry.kind in ALERT_KINDS:  # a budget alert goes to the destinations it names, as it is
            return None if self.destination in entry.payload["destinations"] else "not_an_event"
        if entry.kind != SESSION_COMPLETION or not entry.event_id:
            return "not_an_event"
        if self.filtering and not passes_filter(self.filter, event_of(entry)):
            return "filtered_out"
        if self.sampling and not sampled_in(self.rate, self.destination, entry.event_id):
            return "sampled_out"
        return None

    def reasons(self, entries: Sequence[Committed]) -> list[str | None]:
        """``reason`` of each entry; the undecoded events' in one native call."""
        if self.selection is None:
            return [self.reason(entry) for entry in entries]
        undecoded = [i for i, entry in enumerate(entries) if self._judged_natively(entry)]
        if not undecoded:
            return [self.reason(entry) for entry in entries]
        verdicts = native.select_events(self.selection, json_lines([entries[i].line for i in undecoded]))
        reasons: list[str | None] = [None] * len(entries)
        judged = dict(zip(undecoded, verdicts, strict=True))
        for i, entry in enumerate(entries):
            verdict = judged.get(i, UNDECIDED)
            reasons[i] = self.reason(entry) if verdict == UNDECIDED else _REASONS.get(verdict)
        return reasons

    def _judged_natively(self, entry: Committed) -> bool:
        return (self.selection is not None and entry.event is None and bool(entry.line)
                and entry.kind == SESSION_COMPLETION and bool(entry.event_id))


def native_selection(destination: str, filter: FilterLike | None, rate: float) -> Selection | None:
    """The destination's filter and sampling as the core reads them; ``None`` with the core off
    or where it leaves a model wildcard to Python's fnmatch (then every event is decoded)."""
    if not native.NATIVE:
        return None
    conditions = [list(getattr(filter, name) or ()) if filter is not None else []
                  for name in ("session_type", "outcome_status", "tier", "model", "provider", "tenant")]
    try:
        return native.Selection(destination, rate, *conditions)
    except ValueError as error:
        log.info("destination %s: its filter runs in Python (%s)", destination, error)
        return None
