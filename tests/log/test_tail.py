"""The ledger tail: what consumers read near the head, and what it does not keep."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest
from test_commit import submission

from scr.log.commit import Committed, Committer, event_of, session_id_of
from scr.log.tail import LedgerTail, from_store
from scr.store.sqlite import SqliteStore


def test_the_tail_keeps_positions_and_events_but_no_payload_objects(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data")
    committer = Committer(store, buffer_size=100)
    committed: list[Committed] = []
    committer.commit_hooks.append(committed.extend)
    committer.start()
    decision = {"inputs": {"candidates": [[f"step_{n}"] for n in range(100)]}}
    try:
        committer.run_sync(lambda conn: committer.append_entry(
            conn, "org_a", "DECIDE", decision, actor="agent:a", source="canon", ref="a"
        ))
        asyncio.run(committer.append_events([submission("evt_tail")]))
    finally:
        committer.close()

    async def read_back() -> list[Committed]:
        tail = LedgerTail(store)
        tail.extend(committed)
        return await tail.read(0, 10)

    entries = asyncio.run(read_back())
    store.close()
    assert [(e.seq, e.kind) for e in entries] == [(1, "DECIDE"), (2, "SESSION_COMPLETION")]
    assert entries[1].event is not None and entries[1].event.event_id == "evt_tail"
    assert [e.entry_hash for e in entries] == [c.entry_hash for c in committed]
    # A long tail of decisions must not keep their payloads' lists and dicts alive.
    assert all(e.payload is None and e.stored == b"" for e in entries)
    assert not any(gc.is_tracked(e) for e in entries)


def test_events_read_undecoded_carry_their_ids_and_ledgered_line(tmp_path: Path) -> None:
    """A reader whose destinations take the ledgered line reads events without decoding them:
    each keeps its id, session id and line, and decodes to the event read the usual way."""
    store = SqliteStore(tmp_path / "data")
    committer = Committer(store, buffer_size=100)
    committer.start()
    try:
        asyncio.run(committer.append_events([submission("evt_lazy", **{"session.session_id": "s_lazy"})]))
        committer.run_sync(lambda conn: committer.append_entry(
            conn, "org_a", "DECIDE", {"inputs": {}}, actor="agent:a", source="canon", ref="a"
        ))
    finally:
        committer.close()
    rows = store.entries_after(0, 10)
    store.close()

    decoded = [from_store(row) for row in rows]
    undecoded = [from_store(row, decode=False) for row in rows]
    event, decision = undecoded
    assert event.event is None and event.line == decoded[0].line != b""
    assert (event.event_id, event.session_id) == ("evt_lazy", "")  # read from the line when asked
    assert (event.event_id, session_id_of(event)) == ("evt_lazy", "s_lazy")
    assert (decoded[0].event_id, decoded[0].session_id) == ("evt_lazy", "s_lazy")
    assert session_id_of(decoded[0]) == "s_lazy"
    assert event_of(event) == decoded[0].event == event_of(decoded[0])
    facts = [(e.seq, e.kind, e.entry_hash) for e in decoded]
    assert [(e.seq, e.kind, e.entry_hash) for e in undecoded] == facts
    assert decision.event is None and decision.event_id == "" and decision.line == b""
    with pytest.raises(ValueError, match="is not an event"):
        event_of(decision)
