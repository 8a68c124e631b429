"""The embedded store's session index (scr.store.sessions): built off the commit path as sorted
runs, merged in levels, and exact at every point of the indexer's progress."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_commit import committer_for, submission

from scr.log.commit import Committer
from scr.store import sessions
from scr.store.sessions import SESSIONS_FILE, index_step, merge_level
from scr.store.sqlite import SqliteStore

TENANT = "org_acme"
OTHER = "org_other"
WRITTEN_BY_644AA85 = Path(__file__).resolve().parent.parent / "data" / "ledger-644aa85"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "data")
    yield opened
    opened.close()


@pytest.fixture
def committer(store: SqliteStore) -> Iterator[Committer]:
    started = committer_for(store)
    yield started
    started.close()


def append(committer: Committer, first: int, count: int, tenant: str = TENANT, sessions_of: int = 7) -> None:
    """Events first..first+count-1; event i belongs to session s{i % sessions_of}."""
    asyncio.run(committer.append_events([
        submission(f"evt_{i}", **{"user.organization_id": tenant,
                                  "session.session_id": f"s{i % sessions_of}"})
        for i in range(first, first + count)
    ]))


def side(store: SqliteStore) -> sqlite3.Connection:
    """A connection of the kind the indexer uses, stepped by hand here."""
    conn = store.connection()
    sessions.attach(conn, store.data_dir)
    return conn


def ids_of(store: SqliteStore, tenant: str, session_id: str) -> list[str | None]:
    return [entry.event_id for entry in store.session_entries(tenant, session_id)]


def firsts(store: SqliteStore, tenant: str, session_ids: list[str], before_seq: int) -> dict[str, str | None]:
    """Each session's first event id before ``before_seq``, by the event's session (as callers check)."""
    found = store.first_session_entries(tenant, session_ids, before_seq)
    return {f"s{int(e.event_id.removeprefix('evt_')) % 7}": e.event_id for e in found if e.event_id}


def expected_ids(session: int, upto: int) -> list[str | None]:
    return [f"evt_{i}" for i in range(upto) if i % 7 == session]


def indexed_through(conn: sqlite3.Connection) -> int:
    return int(conn.execute(f"SELECT coalesce(max(through), 0) FROM {sessions.ALIAS}.indexed").fetchone()[0])


def indexed_pairs(conn: sqlite3.Connection) -> int:
    """The (key, seq) pairs held by every run's table (listed in ``runs`` or not)."""
    tables = [name for (name,) in conn.execute(
        f"SELECT name FROM {sessions.ALIAS}.sqlite_master WHERE type = 'table' "
        "AND name LIKE 'run\\_%' ESCAPE '\\'")]
    listed = {f"run_{run}" for (run,) in conn.execute(f"SELECT run FROM {sessions.ALIAS}.runs")}
    assert set(tables) == listed  # a merge drops the tables of the runs it merged
    return sum(conn.execute(f"SELECT count(*) FROM {sessions.ALIAS}.{table}").fetchone()[0]
               for table in tables)


def runs_by_level(conn: sqlite3.Connection) -> dict[int, int]:
    return dict(conn.execute(f"SELECT level, count(*) FROM {sessions.ALIAS}.runs GROUP BY level").fetchall())


def test_the_commit_path_writes_no_session_index(store: SqliteStore, committer: Committer) -> None:
    append(committer, 0, 50)
    conn = side(store)
    try:
        indexes = [name for (name,) in conn.execute(
            "SELECT name FROM main.sqlite_master WHERE type = 'index'")]
        assert "ledger_session" not in indexes
        assert indexed_through(conn) == 0
        assert indexed_pairs(conn) == 0
    finally:
        conn.close()
    # unindexed, every lookup reads the ledger's tail and is still exact
    assert ids_of(store, TENANT, "s3") == expected_ids(3, 50)


def test_lookups_are_exact_at_every_step_of_the_indexer(
    store: SqliteStore, committer: Committer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sessions, "MAX_STEP_ROWS", 10)  # several runs, some merges
    append(committer, 0, 70)
    append(committer, 70, 30, tenant=OTHER)  # same session ids, another tenant
    conn = side(store)
    try:
        seen_levels: set[int] = set()
        while True:
            assert ids_of(store, TENANT, "s2") == expected_ids(2, 70)
            assert ids_of(store, OTHER, "s2") == [f"evt_{i}" for i in range(70, 100) if i % 7 == 2]
            assert ids_of(store, TENANT, "no-such-session") == []
            # before seq 30 (seqs start at 1): events 0..28
            assert firsts(store, TENANT, ["s0", "s5", "s6", "unknown"], 30) == {
                "s0": "evt_0", "s5": "evt_5", "s6": "evt_6"}
            assert firsts(store, TENANT, ["s0", "s5"], 1) == {}
            stepped = index_step(conn)
            while merge_level(conn):
                pass
            seen_levels |= set(runs_by_level(conn))
            if not stepped:
                break
        assert indexed_through(conn) == 100
        assert seen_levels >= {0, 1}  # runs were written and merged
        assert all(count < sessions.FANOUT for count in runs_by_level(conn).values())
        assert indexed_pairs(conn) == 100  # each (key, seq) once, whatever was merged
        # new entries past the runs are found in the tail, beside the indexed ones
        append(committer, 100, 14)
        assert ids_of(store, TENANT, "s2") == [*expected_ids(2, 114)[:10], "evt_100", "evt_107"]
    finally:
        conn.close()


@contextlib.contextmanager
def indexing(data: Path) -> Iterator[tuple[SqliteStore, Committer]]:
    """A store whose session indexer follows its committer, as the writer process runs them."""
    store = SqliteStore(data)
    committer = committer_for(store)
    wake = store.index_sessions()
    committer.commit_hooks.append(lambda _committed: wake())
    try:
        yield store, committer
    finally:
        committer.close()
        store.close()


def wait_indexed(conn: sqlite3.Connection, through: int) -> None:
    deadline = time.monotonic() + 10
    while indexed_through(conn) < through and time.monotonic() < deadline:
        time.sleep(0.05)
    assert indexed_through(conn) == through


def test_the_indexer_follows_the_writer_and_stops_with_the_store(tmp_path: Path) -> None:
    with indexing(tmp_path / "data") as (store, committer):
        append(committer, 0, 40)
        conn = side(store)
        try:
            wait_indexed(conn, 40)
        finally:
            conn.close()
        assert ids_of(store, TENANT, "s1") == expected_ids(1, 40)
    assert not any(thread.name == "scr-sessions" for thread in threading.enumerate())


def test_a_lost_sessions_file_is_rebuilt_from_the_ledger(
    store: SqliteStore, committer: Committer,
) -> None:
    append(committer, 0, 30)
    conn = side(store)
    while index_step(conn):
        pass
    conn.close()
    store.close()  # its reader holds the sessions file attached
    (store.data_dir / SESSIONS_FILE).unlink()
    assert ids_of(store, TENANT, "s4") == expected_ids(4, 30)  # from the tail, at once
    conn = side(store)
    try:
        while index_step(conn):
            pass
        assert indexed_through(conn) == 30
    finally:
        conn.close()
    assert ids_of(store, TENANT, "s4") == expected_ids(4, 30)


def test_a_data_folder_written_by_644aa85_drops_its_session_index_and_finds_sessions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(WRITTEN_BY_644AA85, data)
    with sqlite3.connect(data / "scr.db") as old:
        assert old.execute("SELECT 1 FROM sqlite_master WHERE name = 'ledger_session'").fetchone()
        [(tenant, session_id, count)] = old.execute(
            "SELECT tenant, json_extract(entry, '$.payload.session.session_id') AS s, count(*) FROM ledger "
            "WHERE kind = 'SESSION_COMPLETION' GROUP BY tenant, s ORDER BY count(*) DESC, s LIMIT 1",
        ).fetchall()
    store = SqliteStore(data)
    try:
        conn = side(store)
        try:
            dropped = "SELECT 1 FROM main.sqlite_master WHERE name = 'ledger_session'"
            assert conn.execute(dropped).fetchone() is None
            before = [e.seq for e in store.session_entries(tenant, session_id)]
            while index_step(conn):
                pass
        finally:
            conn.close()
        after = [e.seq for e in store.session_entries(tenant, session_id)]
        assert len(before) == count > 1
        assert after == before
    finally:
        store.close()


def test_thousands_of_sessions_are_looked_up_in_one_call(store: SqliteStore, committer: Committer) -> None:
    """More keys than SQLite takes as bound parameters: they cross as one JSON array."""
    append(committer, 0, 1500, sessions_of=1500)
    conn = side(store)
    try:
        index_step(conn)
    finally:
        conn.close()
    append(committer, 1500, 500, sessions_of=1500)  # in the tail: sessions s0..s499 again
    asked = [f"s{i}" for i in range(3000)]
    found = store.first_session_entries(TENANT, asked, before_seq=10**9)
    assert sorted(entry.seq for entry in found) == list(range(1, 1501))  # each session's first entry
    earlier = store.first_session_entries(TENANT, asked, before_seq=1001)
    assert sorted(entry.seq for entry in earlier) == list(range(1, 1001))


def test_lookups_stay_exact_while_merges_drop_the_runs_they_read(
    store: SqliteStore, committer: Committer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lookup lists the runs and reads them at one snapshot: a merge that drops a run's table
    meanwhile is not seen (no missing table, no pair lost or counted twice)."""
    monkeypatch.setattr(sessions, "MAX_STEP_ROWS", 3)  # many runs, merged at every level
    append(committer, 0, 400)
    done = threading.Event()
    failures: list[BaseException] = []

    def index_all() -> None:
        conn = side(store)
        try:
            while index_step(conn):
                while merge_level(conn):
                    pass
        except BaseException as error:  # reported by the test's thread
            failures.append(error)
        finally:
            conn.close()
            done.set()

    indexer = threading.Thread(target=index_all)
    indexer.start()
    lookups = 0
    while not done.is_set() or lookups == 0:
        assert ids_of(store, TENANT, "s3") == expected_ids(3, 400)
        assert len(store.first_session_entries(TENANT, [f"s{i}" for i in range(7)], 10**9)) == 7
        lookups += 1
    indexer.join()
    assert not failures
    assert lookups > 1


def test_the_single_table_index_of_earlier_versions_is_deleted_and_built_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "sessions.db") as earlier:  # as dde948f and earlier wrote it
        earlier.execute("CREATE TABLE session_runs (run INTEGER NOT NULL, key INTEGER NOT NULL, "
                        "seq INTEGER NOT NULL, PRIMARY KEY (run, key, seq)) WITHOUT ROWID")
    with indexing(data) as (store, committer):
        append(committer, 0, 40)
        conn = side(store)
        try:
            wait_indexed(conn, 40)
            assert indexed_pairs(conn) == 40
        finally:
            conn.close()
        assert not (data / "sessions.db").exists()
        assert ids_of(store, TENANT, "s5") == expected_ids(5, 40)
