"""A destination's choice of a chunk's entries: the events a reader keeps undecoded are
judged in one call (by the native core where it is built), and every entry gets the reason
the one-at-a-time rule gives it."""

from __future__ import annotations

import json

import pytest

from scr import native
from scr.config import FilterConfig
from scr.log.commit import Committed
from scr.log.entry import Kind
from scr.route import selection
from scr.route.choices import Chooser
from scr.schema import canonical_bytes, decode_event
from support import make_event

STATUSES = ("error", "success", "timeout")
MODELS = ("gpt-4o-mini", "claude-3", "gpt-4o")


def chunk() -> list[Committed]:
    """Events kept undecoded and decoded, a budget alert for one destination, a canon entry."""
    entries = []
    for n in range(60):
        event = decode_event(json.dumps(make_event(f"evt_{n}", **{
            "outcome.status": STATUSES[n % 3], "usage.model": MODELS[n // 3 % 3]})).encode())
        decoded = n % 4 == 0
        entries.append(Committed(n + 1, "org_a", n, Kind.SESSION_COMPLETION.value, b"h" * 32,
                                 event if decoded else None, line=canonical_bytes(event),
                                 event_id=event.event_id, session_id=event.session.session_id))
    alert = {"type": "budget_alert", "destinations": ["billing"]}
    entries.append(Committed(61, "org_a", 60, Kind.BUDGET_ALERT.value, b"h" * 32, None, alert))
    entries.append(Committed(62, "org_a", 61, "DECIDE", b"h" * 32, None))
    return entries


@pytest.mark.parametrize("on", [True, False])
def test_a_chunk_is_chosen_as_each_entry_alone_is(on: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not on:  # the reference judges the undecoded lines instead of the core
        monkeypatch.setattr(native, "Selection", selection.Selection)
        monkeypatch.setattr(native, "select_events", selection.select_events)
    monkeypatch.setattr(native, "NATIVE", True)
    chooser = Chooser("billing", FilterConfig(outcome_status=["error", "timeout"], model=["gpt-4o*"]), 0.5)
    assert chooser.selection is not None
    entries = chunk()
    reasons = chooser.reasons(entries)
    assert reasons == [chooser.reason(entry) for entry in entries]
    assert reasons[-2:] == [None, "not_an_event"]
    assert {"filtered_out", "sampled_out", None} <= set(reasons[:60])


def test_without_a_filter_or_sampling_nothing_is_judged_but_the_kind() -> None:
    chooser = Chooser("other", None, 1.0)
    assert chooser.selection is None
    assert chooser.reasons(chunk()) == [None] * 60 + ["not_an_event", "not_an_event"]
