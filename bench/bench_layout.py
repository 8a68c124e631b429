"""The ledger's layout: one SQLite row per event (today's ``ledger`` table, its primary key and
tenant index, built as the writer builds its rows) against one packed row per 1,000-event
group, in the same run, on the same disk, with the same durable commits.

It measures what a packed layout would save the writer per event (CPU, from the process's own
clock), not a feature: the packed layout is not built (every reader of the ledger reads rows
by SQL). Each layout is measured twice as the ledger grows, over its first and its last
``GROUPS // 2`` groups.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from scr.store.sqlite import SCHEMA

GROUPS = int(os.environ.get("SCR_BENCH_LAYOUT_GROUPS", "400"))
GROUP_EVENTS = 1000
ENTRY_BYTES = 900  # about a stored SESSION_COMPLETION entry of the bench's events


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA cache_size = -65536")
    return conn


def _rows(conn: sqlite3.Connection, first_seq: int, entry: bytes) -> None:
    rows = [(seq, "org_bench", seq - 1, "SESSION_COMPLETION", "2026-12-06T00:00:00.000000Z", f"evt_{seq}",
             seq * 0x9E3779B97F4A7C15 % 2**63, b"d" * 16, entry, b"h" * 32)
            for seq in range(first_seq, first_seq + GROUP_EVENTS)]
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO ledger VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    conn.execute("COMMIT")


def _packed(conn: sqlite3.Connection, first_seq: int, entry: bytes) -> None:
    packed = b"".join(entry for _ in range(GROUP_EVENTS))
    conn.execute("BEGIN")
    last_seq = first_seq + GROUP_EVENTS - 1
    conn.execute("INSERT INTO ledger_groups VALUES (?, ?, ?)", (first_seq, last_seq, packed))
    conn.execute("COMMIT")


def _measure(conn: sqlite3.Connection, append: Any, entry: bytes) -> dict[str, float]:
    halves = []
    for half in range(2):
        started = time.process_time()
        for group in range(GROUPS // 2):
            append(conn, 1 + (half * GROUPS // 2 + group) * GROUP_EVENTS, entry)
        halves.append((time.process_time() - started) / (GROUPS // 2 * GROUP_EVENTS) * 1e6)
    return {"cpu_us_per_event_first_half": round(halves[0], 2),
            "cpu_us_per_event_second_half": round(halves[1], 2)}


def main() -> dict[str, Any]:
    entry = b"x" * ENTRY_BYTES
    with tempfile.TemporaryDirectory(prefix="scr-bench-layout-") as tmp:
        rows = _connect(Path(tmp) / "rows.db")
        rows.executescript(SCHEMA)
        packed = _connect(Path(tmp) / "packed.db")
        packed.execute(
            "CREATE TABLE ledger_groups (first_seq INTEGER PRIMARY KEY, last_seq INTEGER, entries BLOB)")
        figures = {"events": GROUPS * GROUP_EVENTS, "row_per_event": _measure(rows, _rows, entry),
                   "row_per_group": _measure(packed, _packed, entry)}
        rows.close()
        packed.close()
    figures["saved_us_per_event"] = round(
        figures["row_per_event"]["cpu_us_per_event_second_half"]
        - figures["row_per_group"]["cpu_us_per_event_second_half"], 2)
    return figures
