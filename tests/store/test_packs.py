"""The embedded ledger's packs (``scr.store.packs``): every way of reading them gives what a
plain list of the appended entries gives, retention's rewrites keep their indexes true, and a
ledger of an earlier version is packed whole, even when a step of the migration fails."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scr.store import packs
from scr.store.sqlite import SqliteStore

TENANTS = ("org_a", "org_b", "org_c")
NO_BOUND = 2**63 - 1
KILL_AFTER_PACKS = 128  # 8 of the 60 steps that pack an earlier version's 60,000-row ledger
Group = list[tuple[str, str]]  # (tenant, kind) of each entry an append hands over


def packed(groups: list[Group], pack_entries: int = packs.PACK_ENTRIES,
           ) -> tuple[sqlite3.Connection, list[packs.PackedRow]]:
    """A ledger in memory of these appends, in packs of up to ``pack_entries`` (close it), and
    its entries as a list."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(packs.SCHEMA)
    with mock.patch.object(packs, "PACK_ENTRIES", pack_entries):
        return conn, build(conn, groups)


def build(conn: sqlite3.Connection, groups: list[Group]) -> list[packs.PackedRow]:
    """Append each group of (tenant, kind) as a pack, as the writer numbers entries; the
    entries in order, as a list is the reference."""
    appended: list[packs.PackedRow] = []
    next_of = dict.fromkeys(TENANTS, 0)
    seq = 0
    for group in groups:
        rows: list[packs.Row] = []
        for tenant, kind in group:
            seq += 1
            rows.append((seq, tenant, next_of[tenant], kind, f"2026-12-07T00:00:{seq:06d}Z",
                         f"evt_{seq}" if kind == "SESSION_COMPLETION" else None, f"entry {seq}".encode(),
                         seq.to_bytes(32, "big"), seq % 5 if kind == "SESSION_COMPLETION" else None, b"d"))
            next_of[tenant] += 1
        seq += 2  # a gap between groups, as a rolled-back group leaves
        packs.insert(conn, rows)
        appended += [packs.PackedRow(*row) for row in rows]
    return appended


entry_kinds = st.sampled_from(["SESSION_COMPLETION"] * 4 + ["DECIDE"])
pack_sizes = st.sampled_from([1, 3, packs.PACK_ENTRIES])  # a group in several packs, or in one
group_lists = st.lists(st.lists(st.tuples(st.sampled_from(TENANTS), entry_kinds), min_size=1, max_size=12),
                       min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(groups=group_lists, data=st.data())
def test_every_read_gives_what_the_appended_list_gives(groups: list[Group], data: st.DataObject) -> None:
    conn, appended = packed(groups, data.draw(pack_sizes))
    seqs = [row.seq for row in appended]
    after = data.draw(st.integers(0, seqs[-1] + 1))
    limit = data.draw(st.integers(1, 30))
    assert [e.seq for e in packs.entries_after(conn, after, limit)] == [s for s in seqs if s > after][:limit]
    before = data.draw(st.integers(0, seqs[-1] + 2))
    assert [row for rows in packs.rows_after(conn, after, before) for row in rows] == [
        row for row in appended if after < row.seq < before]
    wanted = data.draw(st.lists(st.integers(0, seqs[-1] + 2), max_size=10))
    assert packs.rows_at(conn, wanted) == {row.seq: row for row in appended if row.seq in wanted}
    assert packs.last_seq(conn) == seqs[-1] and packs.seq_bounds(conn) == (seqs[0], seqs[-1])
    assert sorted(packs.tenants(conn)) == sorted({row.tenant for row in appended})
    for tenant in TENANTS:
        mine = [row for row in appended if row.tenant == tenant]
        start, end = data.draw(st.integers(0, len(mine) + 1)), data.draw(st.integers(0, len(mine) + 1))
        assert packs.tenant_range(conn, tenant, start, end) == mine[start:end]
        assert packs.chain_length(conn, tenant, after) == len([row for row in mine if row.seq <= after])
        assert packs.newest_tenant_seq(conn, tenant) == (mine[-1].tenant_seq if mine else None)
        assert packs.kind_seqs(conn, tenant, ["DECIDE"], after) == [
            row.seq for row in mine if row.kind == "DECIDE" and row.seq > after]
    assert sorted(packs.tenants_between(conn, after, before)) == sorted(
        {row.tenant for row in appended if after < row.seq <= before})
    heads = {row.tenant: (row.tenant_seq + 1, row.hash) for row in appended}
    assert packs.chain_heads(conn) == heads
    ts = f"2026-12-07T00:00:{after:06d}Z"
    assert packs.seq_at_time(conn, ts) == max([row.seq for row in appended if row.ts < ts], default=0)
    conn.close()


@settings(max_examples=40, deadline=None)
@given(groups=group_lists, data=st.data())
def test_retention_rewrites_keep_every_index_true(groups: list[Group], data: st.DataObject) -> None:
    conn, appended = packed(groups, data.draw(pack_sizes))
    tenant = data.draw(st.sampled_from(TENANTS))
    mine = [row for row in appended if row.tenant == tenant]
    start = data.draw(st.integers(0, len(mine)))
    end = data.draw(st.integers(start, len(mine) + 1))
    remove = data.draw(st.booleans())
    matched = packs.edit_tenant_range(conn, tenant, start, end, remove)
    touched = [row for row in mine[start:end] if remove or row.kind == "SESSION_COMPLETION"]
    assert matched == len(touched)
    if remove:
        expected = [row for row in appended if row not in touched]
    else:
        emptied = msgspec.structs.replace
        expected = [emptied(row, entry=b"") if row in touched else row for row in appended]
    assert [row for rows in packs.rows_after(conn, 0, NO_BOUND) for row in rows] == expected
    for other in TENANTS:
        theirs = [row for row in expected if row.tenant == other]
        low = theirs[0].tenant_seq if theirs else 0
        assert packs.tenant_range(conn, other, 0, NO_BOUND) == theirs
        assert packs.tenant_range(conn, other, low + 1, low + 3) == [
            row for row in theirs if low + 1 <= row.tenant_seq < low + 3]
        decided = [row.seq for row in theirs if row.kind == "DECIDE"]
        assert packs.kind_seqs(conn, other, ["DECIDE"], 0) == decided
    sessions = sorted(tuple(pair) for (pairs,) in conn.execute("SELECT sessions FROM ledger_packs")
                      for pair in json.loads(pairs))
    assert sessions == sorted((row.session_key, row.seq) for row in expected if row.session_key is not None)
    conn.close()


def old_ledger(path: Path, rows: int) -> list[tuple[object, ...]]:
    """A database with the row-an-event ``ledger`` table of earlier versions, and its rows."""
    written = [(seq, TENANTS[seq % 2], seq // 2, "SESSION_COMPLETION", f"2026-12-01T00:00:{seq:06d}Z",
                f"evt_{seq}", seq % 7, b"d" * 16, f'{{"n":{seq}}}'.encode(), seq.to_bytes(32, "big"))
               for seq in range(1, rows + 1)]
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE ledger (seq INTEGER PRIMARY KEY, tenant TEXT NOT NULL, "
                   "tenant_seq INTEGER NOT NULL, kind TEXT NOT NULL, ts TEXT NOT NULL, event_id TEXT, "
                   "session_key INTEGER, payload_digest BLOB, entry BLOB NOT NULL, hash BLOB NOT NULL)")
        db.executemany("INSERT INTO ledger VALUES (?,?,?,?,?,?,?,?,?,?)", written)
    return written


def test_a_migration_that_fails_midway_leaves_each_row_in_one_place_and_finishes_on_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    written = old_ledger(data / "scr.db", 2_500)
    real_insert, steps = packs.insert, []

    def failing_third_step(conn: sqlite3.Connection, rows: list[packs.Row]) -> None:
        steps.append(len(rows))
        if len(steps) == 3:  # stands in for a full disk or a kill between two statements of a step
            raise sqlite3.OperationalError("disk I/O error")
        real_insert(conn, rows)

    monkeypatch.setattr(packs, "insert", failing_third_step)
    with pytest.raises(sqlite3.OperationalError):
        SqliteStore(data)
    with sqlite3.connect(data / "scr.db") as db:
        [(left,)] = db.execute("SELECT count(*) FROM ledger").fetchall()
        packed = sum(len(packs.decode_rows(first, blob))
                     for first, blob in db.execute("SELECT first_seq, entries FROM ledger_packs"))
    assert (left, packed) == (500, 2_000)
    monkeypatch.setattr(packs, "insert", real_insert)
    store = SqliteStore(data)
    try:
        assert store.last_seq() == 2_500
        assert [(e.seq, e.tenant, e.tenant_seq, e.entry, e.hash) for e in store.entries_after(0, 3_000)] == [
            (row[0], row[1], row[2], row[8], row[9]) for row in written]
        assert store.tenant_entries("org_b", 10, 12)[0].seq == 21
    finally:
        store.close()
    with sqlite3.connect(data / "scr.db") as db:
        assert db.execute("SELECT 1 FROM sqlite_master WHERE name = 'ledger'").fetchone() is None


def test_a_damaged_pack_is_named_not_misread() -> None:
    conn, _ = packed([[("org_a", "SESSION_COMPLETION")] * 3])
    conn.execute("UPDATE ledger_packs SET entries = x'93ff'")
    with pytest.raises(packs.DamagedPack, match="pack at seq 1 cannot be read"):
        packs.entries_after(conn, 0, 10)
    conn.close()


def test_a_migration_killed_midway_loses_no_row_and_finishes_on_the_next_open(tmp_path: Path) -> None:
    """SIGKILL of a process packing an earlier version's ledger (``SqliteStore`` opening it),
    once a few steps are done: each row is in the old table or in a pack, once."""
    data = tmp_path / "data"
    data.mkdir()
    written = old_ledger(data / "scr.db", 60_000)
    opening = subprocess.Popen([sys.executable, "-c", "import sys; from scr.store.sqlite import SqliteStore; "
                                "SqliteStore(sys.argv[1]).close()", str(data)])
    try:
        deadline = time.monotonic() + 60
        while packs_in(data) < KILL_AFTER_PACKS and opening.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        opening.send_signal(signal.SIGKILL)
        opening.wait(timeout=10)
    assert opening.returncode == -signal.SIGKILL, "the migration ended first: make the ledger longer"
    with sqlite3.connect(data / "scr.db") as db:
        left = [seq for (seq,) in db.execute("SELECT seq FROM ledger")]
        packed = [row.seq for first, blob in db.execute("SELECT first_seq, entries FROM ledger_packs")
                  for row in packs.decode_rows(first, blob)]
    assert packed and left and sorted(left + packed) == [row[0] for row in written]
    store = SqliteStore(data)
    try:
        assert [(e.seq, e.tenant, e.tenant_seq, e.entry, e.hash) for e in store.entries_after(0, 70_000)] == [
            (row[0], row[1], row[2], row[8], row[9]) for row in written]
    finally:
        store.close()


def packs_in(data: Path) -> int:
    try:
        with sqlite3.connect(f"file:{data / 'scr.db'}?mode=ro", uri=True, timeout=0.1) as db:
            return int(db.execute("SELECT count(*) FROM ledger_packs").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not there yet, or the file is busy
        return 0
