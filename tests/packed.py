"""The embedded ledger's packs (``scr.store.packs``) seen as the row-an-event table ``ledger``
of earlier versions, for tests that read stored entries by SQL or edit them by hand, as an
attacker with the data folder or a damaged disk would."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scr.store import packs

_ROW = ("seq INTEGER PRIMARY KEY, tenant TEXT NOT NULL, tenant_seq INTEGER NOT NULL, kind TEXT NOT NULL, "
        "ts TEXT NOT NULL, event_id TEXT, session_key INTEGER, payload_digest BLOB, entry BLOB NOT NULL, "
        "hash BLOB NOT NULL, pack INTEGER")
_COLUMNS = "seq, tenant, tenant_seq, kind, ts, event_id, entry, hash, session_key, payload_digest"


@contextmanager
def ledger_table(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``conn`` with a TEMP table ``ledger`` holding every packed entry (its ``pack`` column
    names the pack); what the block changes in the table is packed back when it ends (rows
    it adds, with no pack, become a new pack)."""
    conn.execute(f"CREATE TEMP TABLE ledger ({_ROW})")
    conn.execute("CREATE INDEX temp.ledger_by_pack ON ledger (pack)")  # each pack compared once
    held: dict[int, list[packs.PackedRow]] = {}
    for first_seq, blob in conn.execute("SELECT first_seq, entries FROM main.ledger_packs").fetchall():
        held[first_seq] = rows = packs.decode_rows(first_seq, blob)
        conn.executemany(f"INSERT INTO temp.ledger ({_COLUMNS}, pack) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                         [(*packs.fields(row), first_seq) for row in rows])
    try:
        yield conn
        conn.execute("SAVEPOINT pack_back")
        for first_seq, old in held.items():
            new = _rows(conn, "pack = ?", (first_seq,))
            if new != old:
                packs.rewrite(conn, first_seq, old, new)
        added = _rows(conn, "pack IS NULL", ())
        if added:
            fields = [packs.fields(row) for row in added]
            packs.insert(conn, fields)
        conn.execute("RELEASE pack_back")
    finally:
        conn.execute("DROP TABLE temp.ledger")


def ledger_rows(database: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """The rows of a query on the ``ledger`` table of a data folder's database."""
    with closing_connection(database) as conn, ledger_table(conn):
        return [tuple(row) for row in conn.execute(sql, params).fetchall()]


@contextmanager
def closing_connection(database: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _rows(conn: sqlite3.Connection, where: str, params: tuple[object, ...]) -> list[packs.PackedRow]:
    return [packs.PackedRow(int(seq), tenant, int(tenant_seq), kind, ts, event_id, _bytes(entry),
                            _bytes(hash_), session, None if digest is None else _bytes(digest))
            for seq, tenant, tenant_seq, kind, ts, event_id, entry, hash_, session, digest in conn.execute(
                f"SELECT {_COLUMNS} FROM temp.ledger WHERE {where} ORDER BY seq", params)]


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)
