"""The events of stored entries as a reader hands them on undecoded (``event_lines``).

For every entry the writer makes, the line is the event's stored bytes exactly; a sealed
entry (``null`` seal included) and damaged bytes give ``None``, which ``from_store`` then
reads (and refuses, for damage) as it always did.
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from native.test_transforms_differential import events

from scr.log.entry import LedgerEntry, Provenance, entry_bytes, event_lines
from scr.log.tail import from_store, from_store_rows
from scr.schema import Event, canonical_bytes
from scr.store.records import StoredEntry


def stored(event: Event, seq: int = 7, seal: object = None) -> bytes:
    """An event's entry as the committer writes it."""
    return entry_bytes(LedgerEntry(
        seq, "2026-12-07T10:00:00.000000Z", "key:k1", "org_a", "SESSION_COMPLETION",
        msgspec.Raw(canonical_bytes(event)), Provenance("http", event.event_id, "key:k1"), seal,
    ))


def row(seq: int, entry: bytes, kind: str = "SESSION_COMPLETION", event_id: str | None = "e") -> StoredEntry:
    return StoredEntry(seq, "org_a", seq, kind, "", event_id, entry, bytes(32))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(events(), st.booleans()), min_size=1, max_size=4))
def test_an_unsealed_event_line_is_its_stored_bytes(drawn: list[tuple[Event, bool]]) -> None:
    entries = [stored(event, seal={"v": 1, "sealed": "AAAA"} if sealed else None) for event, sealed in drawn]
    assert event_lines(entries) == [None if sealed else canonical_bytes(event) for event, sealed in drawn]


def test_a_seal_of_null_still_counts_as_sealed_and_damage_gives_none() -> None:
    assert event_lines([b'{"id":1,"payload":{"a":1},"seal":null}']) == [None]
    assert event_lines([b'{"id":1}', b'{"payload":{"a":1}', b"", b"[]"]) == [None] * 4


@settings(max_examples=30, deadline=None)
@given(st.lists(events(), min_size=1, max_size=4))
def test_rows_read_in_one_pass_are_the_rows_read_one_by_one(drawn: list[Event]) -> None:
    rows = [row(seq, stored(event, seq), event_id=event.event_id) for seq, event in enumerate(drawn, start=1)]
    decision = b'{"id":9,"kind":"DECIDE","payload":{"inputs":{}}}'
    rows.append(row(len(rows) + 1, decision, kind="DECIDE", event_id=None))
    assert from_store_rows(rows, decode=False) == [from_store(r, decode=False) for r in rows]
    assert from_store_rows(rows) == [from_store(r) for r in rows]


def test_a_damaged_event_entry_is_refused_as_from_store_refuses_it() -> None:
    with pytest.raises(msgspec.DecodeError):
        from_store_rows([row(1, b'{"payload":{"a":1}')], decode=False)
