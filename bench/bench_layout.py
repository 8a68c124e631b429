"""The ledger's layout: the packs of today's embedded store (``scr.store.packs``: rows of up
to 64 entries of a group, their tenant runs, their sessions) against the row an event of
earlier versions (the ``ledger`` table as 0b91bdc kept it, its primary key and tenant index),
in the same run, on the same disk, with the same durable commits, and both read back.

Each side builds its rows from the same 1,000 entries a group as the writer hands them over,
and is measured twice as the ledger grows, over its first and its last ``GROUPS // 2``
groups (CPU from the process's own clock). Reading back is what a destinations' reader does:
every entry after a seq, 1,000 at a time, as ``StoredEntry``s. A lookup is one entry by its
seq, as a duplicate's dedup check or an event read by id finds it (``LOOKUPS`` of them, spread
over the ledger). ``SCR_BENCH_LAYOUT_PACK_ENTRIES`` sets the entries a pack holds (the
store's ``PACK_ENTRIES`` by default), to weigh other sizes.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from scr.store import packs
from scr.store.records import StoredEntry

GROUPS = int(os.environ.get("SCR_BENCH_LAYOUT_GROUPS", "400"))
PACK_ENTRIES = int(os.environ.get("SCR_BENCH_LAYOUT_PACK_ENTRIES", str(packs.PACK_ENTRIES)))
LOOKUPS = 300
GROUP_EVENTS = 1000
ENTRY_BYTES = 900  # about a stored SESSION_COMPLETION entry of the bench's events

ROW_AN_EVENT = """
CREATE TABLE ledger (
    seq INTEGER PRIMARY KEY, tenant TEXT NOT NULL, tenant_seq INTEGER NOT NULL, kind TEXT NOT NULL,
    ts TEXT NOT NULL, event_id TEXT, session_key INTEGER, payload_digest BLOB, entry BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE INDEX ledger_tenant ON ledger (tenant, tenant_seq);
CREATE INDEX ledger_kind ON ledger (tenant, kind, seq) WHERE kind != 'SESSION_COMPLETION';
"""
ROW_COLUMNS = "seq, tenant, tenant_seq, kind, ts, event_id, entry, hash"


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA cache_size = -65536")
    return conn


def _group(first_seq: int, entry: bytes) -> list[packs.Row]:
    return [(seq, "org_bench", seq - 1, "SESSION_COMPLETION", "2026-12-06T00:00:00.000000Z", f"evt_{seq}",
             entry, b"h" * 32, seq * 0x9E3779B97F4A7C15 % 2**63, b"d" * 16)
            for seq in range(first_seq, first_seq + GROUP_EVENTS)]


def _rows(conn: sqlite3.Connection, group: list[packs.Row]) -> None:
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO ledger VALUES (?,?,?,?,?,?,?,?,?,?)",
                     [(seq, tenant, tenant_seq, kind, ts, event_id, session, digest, entry, chained)
                      for seq, tenant, tenant_seq, kind, ts, event_id, entry, chained, session, digest
                      in group])
    conn.execute("COMMIT")


def _packed(conn: sqlite3.Connection, group: list[packs.Row]) -> None:
    conn.execute("BEGIN")
    with mock.patch.object(packs, "PACK_ENTRIES", PACK_ENTRIES):
        packs.insert(conn, group)
    conn.execute("COMMIT")


def _read_rows(conn: sqlite3.Connection, after: int) -> list[StoredEntry]:
    return [StoredEntry(seq, tenant, tenant_seq, kind, ts, event_id, bytes(entry), bytes(chained))
            for seq, tenant, tenant_seq, kind, ts, event_id, entry, chained in conn.execute(
                f"SELECT {ROW_COLUMNS} FROM ledger WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, GROUP_EVENTS))]


def _read_packed(conn: sqlite3.Connection, after: int) -> list[StoredEntry]:
    return packs.entries_after(conn, after, GROUP_EVENTS)


def _look_up_row(conn: sqlite3.Connection, seq: int) -> object:
    return conn.execute(f"SELECT {ROW_COLUMNS}, payload_digest FROM ledger WHERE seq = ?", (seq,)).fetchone()


def _look_up_packed(conn: sqlite3.Connection, seq: int) -> object:
    return packs.rows_at(conn, [seq])[seq]


def _measure(conn: sqlite3.Connection, append: Callable[[sqlite3.Connection, list[packs.Row]], None],
             read: Callable[[sqlite3.Connection, int], list[StoredEntry]],
             look_up: Callable[[sqlite3.Connection, int], object], entry: bytes) -> dict[str, float]:
    figures = {}
    half_events = GROUPS // 2 * GROUP_EVENTS
    for half in ("first_half", "second_half"):
        first = 1 + (0 if half == "first_half" else half_events)
        started = time.process_time()
        for group in range(GROUPS // 2):
            append(conn, _group(first + group * GROUP_EVENTS, entry))
        spent = time.process_time() - started
        figures[f"append_cpu_us_per_event_{half}"] = round(spent / half_events * 1e6, 2)
    started, after, read_back = time.process_time(), 0, 0
    while entries := read(conn, after):
        after, read_back = entries[-1].seq, read_back + len(entries)
    assert read_back == GROUPS * GROUP_EVENTS, read_back
    figures["read_cpu_us_per_event"] = round((time.process_time() - started) / read_back * 1e6, 2)
    started = time.process_time()
    for lookup in range(LOOKUPS):
        assert look_up(conn, 1 + lookup * 7919 % read_back) is not None
    figures["lookup_cpu_us"] = round((time.process_time() - started) / LOOKUPS * 1e6, 1)
    return figures


def main() -> dict[str, Any]:
    entry = b"x" * ENTRY_BYTES
    with tempfile.TemporaryDirectory(prefix="scr-bench-layout-") as tmp:
        rows = _connect(Path(tmp) / "rows.db")
        rows.executescript(ROW_AN_EVENT)
        packed = _connect(Path(tmp) / "packed.db")
        packed.executescript(packs.SCHEMA)
        figures: dict[str, Any] = {"events": GROUPS * GROUP_EVENTS,
                                   "pack_entries": PACK_ENTRIES,
                                   "row_an_event": _measure(rows, _rows, _read_rows, _look_up_row, entry),
                                   "packed": _measure(packed, _packed, _read_packed, _look_up_packed, entry)}
        rows.close()
        packed.close()
    before, now = figures["row_an_event"], figures["packed"]
    figures["append_saved_us_per_event"] = round(
        before["append_cpu_us_per_event_second_half"] - now["append_cpu_us_per_event_second_half"], 2)
    figures["read_saved_us_per_event"] = round(
        before["read_cpu_us_per_event"] - now["read_cpu_us_per_event"], 2)
    return figures
