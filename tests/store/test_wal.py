"""Several connections putting one new file in WAL mode at once all succeed (scr.store.wal).

SQLite answers the losers of that race "database is locked" at once, busy timeout or not; the
session index's new file met it when a lookup attached it as the indexer created it.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from scr.store.wal import use_wal

ROUNDS = 200  # without the retry, 1-5% of rounds of 3 connections failed here
CONNECTIONS = 3


def switch_together(main: Path, attached: Path) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(CONNECTIONS)

    def switch() -> None:
        conn = sqlite3.connect(main, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("ATTACH DATABASE ? AS side", (str(attached),))
            start.wait()
            use_wal(conn, "side")
            conn.execute("CREATE TABLE IF NOT EXISTS side.t (a INTEGER)")
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=switch) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_connections_switching_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        folder = tmp_path / str(round_)
        folder.mkdir()
        assert switch_together(folder / "main.db", folder / "side.db") == []
        with sqlite3.connect(folder / "side.db") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_an_error_other_than_a_lock_is_raised_at_once(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "main.db")
    try:
        with pytest.raises(sqlite3.OperationalError, match="unknown database"):
            use_wal(conn, "missing")
    finally:
        conn.close()
