"""Archive segments in the hot store (``scr.retention``), the same on both stores.

``archive_segments`` lists each tenant's segments; the writes below run in the writer's
transaction through ``Sql`` (``scr.store.sql``: SQL written with ``?`` placeholders). What
differs between the stores is passed in: how an entry's bytes are emptied, and what else a
purge deletes (SQLite's dedup keys are a table of their own; PostgreSQL's are the ledger's
unique index).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from scr.store import ledger_rows
from scr.store.records import SegmentRow

if TYPE_CHECKING:  # scr.store.sql imports the SQLite store, which imports this
    from scr.store.sql import Sql

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS archive_segments (
    tenant TEXT NOT NULL, first_leaf INTEGER NOT NULL, last_leaf INTEGER NOT NULL,
    first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, folder TEXT NOT NULL, name TEXT NOT NULL,
    manifest_sha256 BLOB NOT NULL, max_ts TEXT NOT NULL, created_at TEXT NOT NULL,
    stubbed_to INTEGER NOT NULL DEFAULT 0, purged_at TEXT,
    PRIMARY KEY (tenant, first_leaf)
) WITHOUT ROWID;
"""
POSTGRES_SCHEMA = """
CREATE TABLE archive_segments (
    tenant text NOT NULL, first_leaf bigint NOT NULL, last_leaf bigint NOT NULL,
    first_seq bigint NOT NULL, last_seq bigint NOT NULL, folder text NOT NULL, name text NOT NULL,
    manifest_sha256 bytea NOT NULL, max_ts text NOT NULL, created_at text NOT NULL,
    stubbed_to bigint NOT NULL DEFAULT 0, purged_at text,
    PRIMARY KEY (tenant, first_leaf)
)
"""
SEGMENT_COLUMNS = ("tenant, first_leaf, last_leaf, first_seq, last_seq, folder, name, manifest_sha256, "
                   "max_ts, created_at, stubbed_to, purged_at")
_THE_SEGMENT = "FROM archive_segments WHERE tenant = ? AND first_leaf = ?"


def select(tenant: str | None) -> tuple[str, tuple[str, ...]]:
    """The query listing a tenant's segments (every tenant's: None), and its parameters."""
    where, params = (" WHERE tenant = ?", (tenant,)) if tenant is not None else ("", ())
    return f"SELECT {SEGMENT_COLUMNS} FROM archive_segments{where} ORDER BY tenant, first_leaf", params


def as_segment(row: Sequence[Any]) -> SegmentRow:
    values = list(row)
    values[7] = bytes(values[7])
    return SegmentRow(*values)


def add(conn: Sql, segment: SegmentRow) -> bool:
    (last,) = conn.execute("SELECT max(last_leaf) FROM archive_segments WHERE tenant = ?",
                  (segment.tenant,)).fetchone()
    if segment.first_leaf != (0 if last is None else last + 1):
        return False
    conn.execute(f"INSERT INTO archive_segments ({SEGMENT_COLUMNS}) VALUES ({', '.join('?' * 12)})", (
        segment.tenant, segment.first_leaf, segment.last_leaf, segment.first_seq, segment.last_seq,
        segment.folder, segment.name, segment.manifest_sha256, segment.max_ts, segment.created_at,
        segment.stubbed_to, segment.purged_at))
    return True


def stub(conn: Sql, tenant: str, first_leaf: int, end: int, empty: str) -> int:
    """Empty (``empty``: the store's empty bytes literal) the bytes of the segment's session
    completions below ``end``; the segment's ``stubbed_to`` moves there."""
    start, last = conn.execute(
        f"SELECT stubbed_to, last_leaf {_THE_SEGMENT}", (tenant, first_leaf)).fetchone()
    start, end = max(start, first_leaf), min(end, last + 1)
    if end <= start:
        return 0
    stubbed = ledger_rows.empty_completions(conn, tenant, start, end, empty)
    conn.execute("UPDATE archive_segments SET stubbed_to = ? WHERE tenant = ? AND first_leaf = ?",
        (end, tenant, first_leaf))
    return int(stubbed)


def purge(conn: Sql, tenant: str, first_leaf: int, end: int, purged_at: str, tables: Sequence[str],
          before: Callable[[list[tuple[int, str | None]]], None]) -> int:
    """Delete the segment's rows below ``end`` (never the tenant's newest: it holds the chain's
    head) and their rows in ``tables`` (by seq: the sealed events' index, session vectors),
    and mark it purged; ``before(rows)`` deletes what else the store keys by the rows'
    (seq, event id)."""
    (last,) = conn.execute(f"SELECT last_leaf {_THE_SEGMENT}", (tenant, first_leaf)).fetchone()
    newest = ledger_rows.newest_tenant_seq(conn, tenant)
    end = min(end, last + 1, newest if newest is not None else 0)
    rows = ledger_rows.event_ids_between(conn, tenant, first_leaf, end)
    if rows:
        before(rows)
        low, high = min(seq for seq, _ in rows), max(seq for seq, _ in rows)
        for table in tables:
            conn.execute(f"DELETE FROM {table} WHERE tenant = ? AND seq BETWEEN ? AND ?", (tenant, low, high))
        ledger_rows.delete_between(conn, tenant, first_leaf, end)
    conn.execute("UPDATE archive_segments SET purged_at = ? WHERE tenant = ? AND first_leaf = ?",
        (purged_at, tenant, first_leaf))
    return len(rows)
