"""The embedded store's session index, built off the commit path as sorted runs (LSM-style).

A random-key B-tree on the ledger's ``session_key`` cost each commit a random insert that grew
dearer as the ledger grew. Instead each of the ledger's packs lists its entries' (session key,
seq) pairs unindexed (``sessions``, ``scr.store.packs``), and the ``SessionIndexer`` (a thread
beside the one writer, woken after each durable group) copies the new entries' pairs into
``sessions.v2.db`` as one sorted run per step: a table of its own, ``run_<n>``, keyed by
(key, seq), listed in ``runs``. Runs are merged in levels: when
``FANOUT`` runs share a level they become one run of the next, so each (key, seq) is rewritten
about log_FANOUT(n / run size) times and a lookup searches at most ``FANOUT - 1`` runs a level.
A merge reads its runs in key order side by side (SQLite's merge of ordered selects: nothing
to sort) and drops their tables (freed by the page, not deleted row by row): a rewrite costs
about half of what it did when every run shared one table. Every step and merge runs in
SQLite's C code, without the GIL.

``sessions.v2.db`` is derived data: ``indexed.through`` names the last ledger seq the runs hold,
and a lookup reads the runs and then the packs past ``through`` (the unindexed tail, a range
of the packs' primary key), all at one snapshot (``session_seqs``), so an answer is exact
however far the indexer trails. A missing file is built again from the ledger (delete a damaged
one: it holds nothing else); the single-table ``sessions.db`` of earlier versions is deleted
and built again this way. Entries purged by retention keep their (key, seq) in the runs;
lookups read entries from the ledger, which no longer has them.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scr.store.wal import use_wal

log = logging.getLogger("scr.store.sessions")

SESSIONS_FILE = "sessions.v2.db"
EARLIER_FILES = ("sessions.db", "sessions.db-wal", "sessions.db-shm")  # one table for every run
ALIAS = "sessions"  # the schema name the file is attached under
FANOUT = 4
MAX_STEP_ROWS = 500_000  # ledger seqs read in one step (bounds a catch-up's transaction)
SETTLE_S = 0.05  # after a wake, wait this long so that one step takes several groups
IDLE_CHECK_S = 1.0  # look at the ledger's head this often without a wake (other writers)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {ALIAS}.runs (
    run INTEGER PRIMARY KEY, level INTEGER NOT NULL, rows INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS {ALIAS}.indexed (
    one INTEGER PRIMARY KEY CHECK (one = 1), through INTEGER NOT NULL
);
"""


def run_table(run: int) -> str:
    return f"{ALIAS}.run_{int(run)}"


def seqs_of_keys(runs: list[int]) -> str:
    """The seqs of a set of session keys (``:keys``, a JSON array) below ``:before``: the
    ``runs`` (their tables), then the ledger's tail past what they hold, each read once for all
    the keys. Run it in the read transaction ``runs`` were listed in (``session_seqs``)."""
    arms = [f"SELECT seq FROM {run_table(run)} WHERE key IN wanted AND seq < :before" for run in runs]
    through = f"(SELECT coalesce(max(through), 0) FROM {ALIAS}.indexed)"
    arms.append(f"SELECT seq FROM ({packed_sessions(through)}) WHERE key IN wanted AND seq < :before")
    return "WITH wanted(key) AS (SELECT value FROM json_each(:keys)) " + " UNION ALL ".join(arms)


def packed_sessions(after: str, through: str | None = None) -> str:
    """The (key, seq) of the packs' entries with a session and ``after < seq`` (and ``seq <=
    through``; SQL values, each used twice), from the ``sessions`` of each pack that may hold
    one (``scr.store.packs``)."""
    sql = ("SELECT s.value ->> 0 AS key, s.value ->> 1 AS seq "
           "FROM main.ledger_packs p, json_each(p.sessions) s WHERE p.first_seq >= "
           f"coalesce((SELECT max(first_seq) FROM main.ledger_packs WHERE first_seq <= {after}), 0) "
           f"AND s.value ->> 1 > {after}")
    if through is not None:
        sql += f" AND p.first_seq <= {through} AND s.value ->> 1 <= {through}"
    return sql


def session_seqs(conn: sqlite3.Connection, query: Callable[[str], str], params: dict[str, Any]) -> list[Any]:
    """The rows of ``query(seqs_of_keys(runs))``, the runs listed and read at one snapshot (a
    merge that drops a run's table after the listing is not seen). ``conn`` is in autocommit
    mode (a transaction it is in already is that snapshot)."""
    began = not conn.in_transaction
    if began:
        conn.execute("BEGIN")
    try:
        runs = [run for (run,) in conn.execute(f"SELECT run FROM {ALIAS}.runs ORDER BY run")]
        return conn.execute(query(seqs_of_keys(runs)), params).fetchall()
    finally:
        if began:
            conn.execute("COMMIT")  # a read: nothing to keep or undo


def attach(conn: sqlite3.Connection, data_dir: Path) -> None:
    """Attach ``sessions.v2.db`` to a connection of the ledger's database (made when missing; in
    WAL mode like the ledger's, so a step's commit never waits for a lookup to end). Its
    commits are not synced (``synchronous = NORMAL``): derived data, which a power cut may
    set back by a few steps (``through`` with them) but never leaves inconsistent."""
    conn.execute(f"ATTACH DATABASE ? AS {ALIAS}", (str(Path(data_dir) / SESSIONS_FILE),))
    use_wal(conn, ALIAS)
    conn.execute(f"PRAGMA {ALIAS}.synchronous = NORMAL")
    conn.executescript(SCHEMA)


def forget_earlier_index(data_dir: Path) -> None:
    """Delete the ``sessions.db`` of earlier versions (the indexer builds the new one)."""
    for name in EARLIER_FILES:
        (Path(data_dir) / name).unlink(missing_ok=True)


class SessionIndexer:
    """Keeps ``sessions.db`` at the ledger's head from a thread of its own.

    ``wake()`` is cheap (a commit hook calls it after every durable group); the thread then
    waits ``SETTLE_S`` and indexes everything committed meanwhile, then merges full levels.
    """

    def __init__(self, open_ledger: Callable[[], sqlite3.Connection], data_dir: Path) -> None:
        self._open_ledger = open_ledger
        self._data_dir = Path(data_dir)
        self._woken = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="scr-sessions", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._woken.set()

    def stop(self) -> None:
        self._stopping = True
        self._woken.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        conn = self._open_ledger()
        try:
            forget_earlier_index(self._data_dir)
            attach(conn, self._data_dir)
            while not self._stopping:
                if self._woken.wait(IDLE_CHECK_S):
                    self._woken.clear()
                    if self._stopping:
                        break
                    time.sleep(SETTLE_S)
                try:
                    while index_step(conn) and not self._stopping:
                        pass
                    while merge_level(conn) and not self._stopping:
                        pass
                except sqlite3.Error as error:  # another indexer's step, a full disk: retry later
                    log.warning("session index step failed (it is retried): %s", error)
                    if conn.in_transaction:
                        conn.rollback()
        finally:
            conn.close()


def index_step(conn: sqlite3.Connection) -> bool:
    """Copy the ledger's rows past ``through`` (at most ``MAX_STEP_ROWS`` seqs) as one run;
    whether there were any."""
    conn.execute("BEGIN")  # deferred: only sessions.v2.db is written, the ledger is only read
    try:
        [through] = conn.execute(
            f"SELECT coalesce(max(through), 0) FROM {ALIAS}.indexed").fetchone()
        [head] = conn.execute("SELECT coalesce(max(last_seq), 0) FROM (SELECT last_seq "
                              "FROM main.ledger_packs ORDER BY first_seq DESC LIMIT 1)").fetchone()
        if head <= through:
            conn.rollback()
            return False
        upto = min(head, through + MAX_STEP_ROWS)
        [run] = conn.execute(f"SELECT coalesce(max(run), 0) + 1 FROM {ALIAS}.runs").fetchone()
        _create_run(conn, run)
        rows = conn.execute(
            f"INSERT INTO {run_table(run)} SELECT key, seq FROM ({packed_sessions('?', '?')}) "
            "ORDER BY key, seq",
            (through, through, upto, upto),
        ).rowcount
        if rows > 0:
            conn.execute(f"INSERT INTO {ALIAS}.runs VALUES (?, 0, ?)", (run, rows))
        else:
            conn.execute(f"DROP TABLE {run_table(run)}")
        conn.execute(f"INSERT OR REPLACE INTO {ALIAS}.indexed VALUES (1, ?)", (upto,))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return True


def merge_level(conn: sqlite3.Connection) -> bool:
    """Merge the ``FANOUT`` oldest runs of the lowest full level into one run of the next;
    whether a level was full."""
    conn.execute("BEGIN")
    try:
        full = conn.execute(
            f"SELECT level FROM {ALIAS}.runs GROUP BY level HAVING count(*) >= ? "
            "ORDER BY level LIMIT 1", (FANOUT,)).fetchone()
        if full is None:
            conn.rollback()
            return False
        merged = [run for (run,) in conn.execute(
            f"SELECT run FROM {ALIAS}.runs WHERE level = ? ORDER BY run LIMIT ?", (full[0], FANOUT))]
        [run] = conn.execute(f"SELECT max(run) + 1 FROM {ALIAS}.runs").fetchone()
        _create_run(conn, run)
        # each run read in its key order, merged as read: SQLite's merge of ordered selects
        arms = " UNION ALL ".join(f"SELECT key, seq FROM {run_table(old)}" for old in merged)
        rows = conn.execute(
            f"INSERT INTO {run_table(run)} SELECT key, seq FROM ({arms}) ORDER BY key, seq").rowcount
        for old in merged:
            conn.execute(f"DROP TABLE {run_table(old)}")
        marks = ",".join("?" * len(merged))
        conn.execute(f"DELETE FROM {ALIAS}.runs WHERE run IN ({marks})", merged)
        conn.execute(f"INSERT INTO {ALIAS}.runs VALUES (?, ?, ?)", (run, full[0] + 1, rows))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return True


def _create_run(conn: sqlite3.Connection, run: int) -> None:
    conn.execute(f"CREATE TABLE {run_table(run)} (key INTEGER NOT NULL, seq INTEGER NOT NULL, "
                 "PRIMARY KEY (key, seq)) WITHOUT ROWID")
