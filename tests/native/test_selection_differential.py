"""A destination's filter and sampling in the native core against the Python reference.

The core reads six fields and the event id of each stored line; the reference decodes the
event and runs ``passes_filter`` and ``sampled_in``. Both must give the same verdict for every
event, filter and rate, and the core's shell wildcards must match as ``fnmatch.fnmatchcase``
does, awkward sets and all (or refuse the wildcards Python's ``re`` refuses too). Events are
generated as in ``test_transforms_differential``. Bounded: 100 to 300 examples a property.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
from collections.abc import Sequence
from types import ModuleType

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native.test_transforms_differential import events
from scr.route import selection
from scr.schema import Event, canonical_bytes

CONDITIONS = ("session_type", "outcome_status", "tier", "model", "provider", "tenant")
# Characters that make fnmatch's sets awkward: ranges, negations, escapes, set operators.
WILDCARD_CHARACTERS = "ab-[]!^\\*?&~|é\n"
WILDCARDS = ["gpt-4o*", "*mini", "GPT-?o", "[gG]pt-*", "*", "[!g]*", "claude-[a-z]*", "gpt-4[!o]*"]


def line(event_id: str = "evt_1", model: str = "m", session_type: str = "chat") -> bytes:
    """A stored event's line with only what a selection reads (the core skips the rest)."""
    return msgspec.json.encode({
        "event_id": event_id, "session": {"session_type": session_type},
        "user": {"organization_id": "org_a", "tier": "pro"},
        "usage": {"model": model}, "outcome": {"status": "success"},
    }) + b"\n"


def conditions_of(event: Event) -> dict[str, str | None]:
    return {"session_type": event.session.session_type, "outcome_status": event.outcome.status,
            "tier": event.user.tier, "model": event.usage.model, "provider": event.usage.provider,
            "tenant": event.user.organization_id}


@st.composite
def selections(draw: st.DrawFn, drawn: Sequence[Event]) -> tuple[float, list[list[str]]]:
    """A rate and conditions, each empty (no condition) or drawn from the events' own values
    and others (the model's with wildcards too)."""
    conditions = []
    for name in CONDITIONS:
        seen = sorted({value for event in drawn if (value := conditions_of(event)[name]) is not None})
        values = seen + ["other"] + (WILDCARDS if name == "model" else [])
        conditions.append(draw(st.one_of(st.just([]), st.lists(st.sampled_from(values), max_size=3))))
    rate = draw(st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0)))
    return rate, conditions


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_the_core_selects_what_the_reference_selects(core: ModuleType, data: st.DataObject) -> None:
    drawn = data.draw(st.lists(events(), min_size=1, max_size=8))
    rate, conditions = data.draw(selections(drawn))
    lines = b"".join(canonical_bytes(event) + b"\n" for event in drawn)  # as the ledger holds them
    expected = selection.select_events(selection.Selection("d", rate, *conditions), lines)
    assert core.select_events(core.Selection("d", rate, *conditions), lines) == expected
    assert selection.UNDECIDED not in expected


@settings(max_examples=300, deadline=None)
@given(st.text(WILDCARD_CHARACTERS, max_size=8),
       st.lists(st.text(WILDCARD_CHARACTERS, min_size=1, max_size=6), min_size=1, max_size=5))
def test_wildcards_match_as_fnmatchcase_matches(core: ModuleType, pattern: str, models: list[str]) -> None:
    lines = b"".join(line(f"evt_{n}", model) for n, model in enumerate(models))
    try:
        chosen = core.Selection("d", 1.0, [], [], [], [pattern], [], [])
    except ValueError:
        with pytest.raises(re.error):  # refused only where Python cannot match it either
            fnmatch.fnmatchcase(models[0], pattern)
        return
    expected = bytes(selection.CHOSEN if fnmatch.fnmatchcase(model, pattern) else selection.FILTERED_OUT
                     for model in models)
    assert core.select_events(chosen, lines) == expected


def test_every_short_wildcard_matches_as_fnmatchcase_matches(core: ModuleType) -> None:
    """Every wildcard of up to four characters of sets, ranges, negations and escapes."""
    models = ["a", "-", "z", "b", "]", "[", "!", "az", "a-z", "\\", "^", "ab", "ba", "[!]", "zz", "-a", "b-"]
    lines = b"".join(line(f"evt_{n}", model) for n, model in enumerate(models))
    for size in range(1, 5):
        for pattern in map("".join, itertools.product("a-[]!zb\\^", repeat=size)):
            expected = bytes(selection.CHOSEN if fnmatch.fnmatchcase(model, pattern)
                             else selection.FILTERED_OUT for model in models)
            chosen = core.select_events(core.Selection("d", 1.0, [], [], [], [pattern], [], []), lines)
            assert chosen == expected, pattern


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=20), st.floats(0.0, 1.0))
def test_sampling_takes_the_same_events(core: ModuleType, event_ids: list[str], rate: float) -> None:
    lines = b"".join(line(event_id) for event_id in event_ids)
    assert core.select_events(core.Selection("analytics", rate, [], [], [], [], [], []), lines) == bytes(
        selection.CHOSEN if selection.sampled_in(rate, "analytics", event_id) else selection.SAMPLED_OUT
        for event_id in event_ids)


def test_a_line_the_core_cannot_read_is_left_to_python(core: ModuleType) -> None:
    lines = line() + b'{"event_id": "evt_2"}\n' + b"[1, 2]\n" + line("evt_3", session_type="api")
    verdicts = core.select_events(core.Selection("d", 1.0, ["chat"], [], [], [], [], []), lines)
    assert verdicts == bytes((selection.CHOSEN, selection.UNDECIDED, selection.UNDECIDED,
                              selection.FILTERED_OUT))


@pytest.mark.parametrize("events_bytes", [b"\n", line() + b"\n" + line()])
def test_an_empty_line_is_refused_by_both(core: ModuleType, events_bytes: bytes) -> None:
    for module in (core, selection):
        with pytest.raises(ValueError, match="not JSON lines"):
            module.select_events(module.Selection("d", 1.0, [], [], [], [], [], []), events_bytes)


@pytest.mark.parametrize("rate", [-0.1, 1.01, float("nan"), float("inf")])
def test_a_rate_outside_zero_to_one_is_refused_by_both(core: ModuleType, rate: float) -> None:
    for module in (core, selection):
        with pytest.raises(ValueError, match=r"between 0\.0 and 1\.0"):
            module.Selection("d", rate, [], [], [], [], [], [])
