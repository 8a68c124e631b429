"""Putting a SQLite database file in WAL mode while other connections may be doing the same.

SQLite answers ``PRAGMA journal_mode = WAL`` with "database is locked" at once, without waiting
out the connection's busy timeout, when another connection holds the file for the same switch
(seen when an index file is new and a reader attaches it as the indexer creates it). The switch
is made once per file and kept in it, so a short retry is all it takes: for as long as the
connection's own busy timeout would have waited (none without one).
"""

from __future__ import annotations

import sqlite3
import time

RETRY_EVERY_S = 0.005


def use_wal(conn: sqlite3.Connection, schema: str = "main") -> None:
    """Put ``schema``'s file (``main``, or an attached database's name) in WAL mode."""
    (busy_ms,) = conn.execute("PRAGMA busy_timeout").fetchone()
    deadline = time.monotonic() + busy_ms / 1000
    while True:
        try:
            conn.execute(f"PRAGMA {schema}.journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "database is locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(RETRY_EVERY_S)
