"""Archive segments in the hot store (``scr.retention``), the same on both stores.

``archive_segments`` lists each tenant's segments; the writes below run in the writer's
transaction through ``Run`` (the store's cursor, SQL written with ``?`` placeholders). What
differs between the stores is passed in: how an entry's bytes are emptied, and what else a
purge deletes (SQLite's dedup keys are a table of their own; PostgreSQL's are the ledger's
unique index).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from scr.store.records import SegmentRow

Run = Callable[[str, Sequence[Any]], Any]
"""``run(sql, params)``: execute in the writer's transaction; the cursor."""

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


def add(run: Run, segment: SegmentRow) -> bool:
    (last,) = run("SELECT max(last_leaf) FROM archive_segments WHERE tenant = ?",
                  (segment.tenant,)).fetchone()
    if segment.first_leaf != (0 if last is None else last + 1):
        return False
    run(f"INSERT INTO archive_segments ({SEGMENT_COLUMNS}) VALUES ({', '.join('?' * 12)})", (
        segment.tenant, segment.first_leaf, segment.last_leaf, segment.first_seq, segment.last_seq,
        segment.folder, segment.name, segment.manifest_sha256, segment.max_ts, segment.created_at,
        segment.stubbed_to, segment.purged_at))
    return True


def stub(run: Run, tenant: str, first_leaf: int, end: int, empty: str) -> int:
    """Empty (``empty``: the store's empty bytes literal) the bytes of the segment's session
    completions below ``end``; the segment's ``stubbed_to`` moves there."""
    start, last = run(f"SELECT stubbed_to, last_leaf {_THE_SEGMENT}", (tenant, first_leaf)).fetchone()
    start, end = max(start, first_leaf), min(end, last + 1)
    if end <= start:
        return 0
    stubbed = run(f"UPDATE ledger SET entry = {empty} WHERE tenant = ? AND tenant_seq >= ? "
                  "AND tenant_seq < ? AND kind = 'SESSION_COMPLETION'", (tenant, start, end)).rowcount
    run("UPDATE archive_segments SET stubbed_to = ? WHERE tenant = ? AND first_leaf = ?",
        (end, tenant, first_leaf))
    return int(stubbed)


def purge(run: Run, tenant: str, first_leaf: int, end: int, purged_at: str, tables: Sequence[str],
          before: Callable[[list[tuple[int, str | None]]], None]) -> int:
    """Delete the segment's rows below ``end`` (never the tenant's newest: it holds the chain's
    head) and their rows in ``tables`` (by seq: the sealed events' index, session vectors),
    and mark it purged; ``before(rows)`` deletes what else the store keys by the rows'
    (seq, event id)."""
    (last,) = run(f"SELECT last_leaf {_THE_SEGMENT}", (tenant, first_leaf)).fetchone()
    (newest,) = run("SELECT max(tenant_seq) FROM ledger WHERE tenant = ?", (tenant,)).fetchone()
    end = min(end, last + 1, newest)
    rows = [(int(seq), event_id) for seq, event_id in run(
        "SELECT seq, event_id FROM ledger WHERE tenant = ? AND tenant_seq >= ? AND tenant_seq < ?",
        (tenant, first_leaf, end)).fetchall()]
    if rows:
        before(rows)
        low, high = min(seq for seq, _ in rows), max(seq for seq, _ in rows)
        for table in tables:
            run(f"DELETE FROM {table} WHERE tenant = ? AND seq BETWEEN ? AND ?", (tenant, low, high))
        run("DELETE FROM ledger WHERE tenant = ? AND tenant_seq >= ? AND tenant_seq < ?",
            (tenant, first_leaf, end))
    run("UPDATE archive_segments SET purged_at = ? WHERE tenant = ? AND first_leaf = ?",
        (purged_at, tenant, first_leaf))
    return len(rows)
