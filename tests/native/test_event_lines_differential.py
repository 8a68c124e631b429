"""The events of stored entries, found by the native core against the Python reference.

A reader that hands events on undecoded takes each entry's payload bytes as they are stored
(``event_lines``). For every entry the writer makes, sealed or not, the core gives exactly
what the reference gives; for damaged or adversarial bytes it gives the reference's answer or
leaves the entry to Python (``None``), never another line. Bounded: 100 to 200 examples a
property.
"""

from __future__ import annotations

from types import ModuleType

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from native.test_transforms_differential import events
from scr.log import entry as ledger_entry
from scr.log.entry import LedgerEntry, Provenance, entry_bytes
from scr.schema import Event, canonical_bytes


def stored(event: Event, seq: int = 7, seal: object = None) -> bytes:
    """An event's entry as the committer writes it."""
    return entry_bytes(LedgerEntry(
        seq, "2026-12-07T10:00:00.000000Z", "key:k1", "org_a", "SESSION_COMPLETION",
        msgspec.Raw(canonical_bytes(event)), Provenance("http", event.event_id, "key:k1"), seal,
    ))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(events(), st.booleans()), min_size=1, max_size=8))
def test_the_core_finds_the_lines_the_reference_finds(
    core: ModuleType, drawn: list[tuple[Event, bool]]
) -> None:
    entries = [stored(event, seal={"v": 1, "sealed": "AAAA"} if sealed else None) for event, sealed in drawn]
    expected = ledger_entry.event_lines(entries)
    assert core.event_lines(entries) == expected
    for (event, sealed), line in zip(drawn, expected, strict=True):
        assert line == (None if sealed else canonical_bytes(event))


def test_a_seal_of_null_still_counts_as_sealed(core: ModuleType) -> None:
    entry = b'{"id":1,"payload":{"a":1},"seal":null}'
    assert ledger_entry.event_lines([entry]) == core.event_lines([entry]) == [None]


def test_an_entry_read_two_ways_is_left_to_python(core: ModuleType) -> None:
    """A repeated payload: msgspec keeps the last; the core refuses to choose."""
    entry = b'{"payload":{"a":1},"payload":{"a":2}}'
    assert ledger_entry.event_lines([entry]) == [b'{"a":2}']
    assert core.event_lines([entry]) == [None]


@settings(max_examples=200, deadline=None)
@given(events(), st.data())
def test_damaged_entries_give_the_reference_line_or_none(
    core: ModuleType, event: Event, data: st.DataObject
) -> None:
    """Truncated, spliced or random bytes: never a line the reference would not give."""
    whole = stored(event)
    cut = data.draw(st.integers(0, len(whole)))
    damaged = [
        whole[:cut],
        whole[:cut] + data.draw(st.binary(max_size=8)) + whole[cut:],
        data.draw(st.binary(max_size=64)),
        whole.replace(b'"payload":', b'"payload" :\n ', 1),
    ]
    for entry, line in zip(damaged, core.event_lines(damaged), strict=True):
        if line is not None:
            assert [line] == ledger_entry.event_lines([entry])
