"""The ledger's rows as the code beside the stores reads and rewrites them.

The trees and their proofs (``scr.ledger``), the verifier, the dedup key log and the archive
segments read ledger entries by seq, by (tenant, tenant_seq) and by event id. Every such
statement is here, so the table's layout is known in two places only: this room and the
stores' own methods. PostgreSQL keeps a row an event (``?`` placeholders, ``scr.store.sql``);
the embedded store packs its entries, up to 64 a row (``scr.store.packs``), which these
functions read and rewrite for it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from scr.store import packs

NO_BOUND = 2**63 - 1  # a seq no entry reaches

if TYPE_CHECKING:  # scr.store.sql imports the SQLite store, which reads its keys through here
    from scr.store.sql import Rows, Sql


class LedgerRow(NamedTuple):
    """An entry with its places in the ledger and in its tenant's chain."""

    tenant: str
    tenant_seq: int
    seq: int
    event_id: str | None
    stored: bytes  # the entry's bytes; empty once they moved to an archive segment


def seq_bounds(conn: Sql) -> tuple[int | None, int | None]:
    """The lowest and highest seq the ledger holds (None, None when it is empty)."""
    if isinstance(conn, sqlite3.Connection):
        return packs.seq_bounds(conn)
    low, high = conn.execute("SELECT MIN(seq), MAX(seq) FROM ledger").fetchone()
    return low, high


def chained_entries(conn: Sql, low: int, high: int) -> Iterator[tuple[Any, ...]]:
    """The (seq, tenant, tenant_seq, entry, hash) of the entries with ``low <= seq < high``, in
    seq order; entry and hash as stored (a hand-edited row may hold text)."""
    if isinstance(conn, sqlite3.Connection):
        return ((row.seq, row.tenant, row.tenant_seq, row.entry, row.hash)
                for rows in packs.rows_after(conn, low - 1, high) for row in rows)
    rows = conn.execute(
        "SELECT seq, tenant, tenant_seq, entry, hash FROM ledger WHERE seq >= ? AND seq < ? ORDER BY seq",
        (low, high),
    )
    return _each(rows)


def entries_after(conn: Sql, after: int, before: int | None, batch: int) -> Iterator[list[LedgerRow]]:
    """The entries with ``after < seq`` (and ``seq < before``), in seq order, ``batch`` at a time."""
    if isinstance(conn, sqlite3.Connection):  # a pack at a time
        for packed in packs.rows_after(conn, after, NO_BOUND if before is None else before):
            yield [LedgerRow(row.tenant, row.tenant_seq, row.seq, row.event_id, row.entry) for row in packed]
        return
    rows = conn.execute(
        "SELECT tenant, tenant_seq, seq, event_id, entry FROM ledger WHERE seq > ? AND seq < ? ORDER BY seq",
        (after, NO_BOUND if before is None else before))
    while fetched := rows.fetchmany(batch):
        yield [LedgerRow(tenant, int(tenant_seq), int(seq), event_id, bytes(entry))
               for tenant, tenant_seq, seq, event_id, entry in fetched]


def tenant_entries(conn: Sql, tenant: str, start: int, end: int, limit: int | None = None) -> list[LedgerRow]:
    """The tenant's entries with ``start <= tenant_seq < end`` (the first ``limit``), in order."""
    if isinstance(conn, sqlite3.Connection):
        return [LedgerRow(tenant, row.tenant_seq, row.seq, row.event_id, row.entry)
                for row in packs.tenant_range(conn, tenant, start, end, limit)]
    sql = ("SELECT tenant_seq, seq, event_id, entry FROM ledger WHERE tenant = ? AND tenant_seq >= ? "
           "AND tenant_seq < ? ORDER BY tenant_seq")
    params: tuple[object, ...] = (tenant, start, end)
    if limit is not None:
        sql, params = sql + " LIMIT ?", (*params, limit)
    return [LedgerRow(tenant, int(tenant_seq), int(seq), event_id, bytes(stored))
            for tenant_seq, seq, event_id, stored in conn.execute(sql, params).fetchall()]


def event_id_at(conn: Sql, seq: int) -> str | None:
    """The event id of the entry at ``seq`` (None: no such entry, or one without an id)."""
    if isinstance(conn, sqlite3.Connection):
        held = packs.rows_at(conn, [seq]).get(seq)
        return None if held is None else held.event_id
    row = conn.execute("SELECT event_id FROM ledger WHERE seq = ?", (seq,)).fetchone()
    return row[0] if row else None


def locate(conn: Sql, tenant: str, tenant_seq: int) -> tuple[str | None, int | None]:
    """The event id and seq of a tenant's entry (None, None when it is not stored)."""
    if isinstance(conn, sqlite3.Connection):
        found = packs.tenant_range(conn, tenant, tenant_seq, tenant_seq + 1)
        return (found[0].event_id, found[0].seq) if found else (None, None)
    row = conn.execute(
        "SELECT event_id, seq FROM ledger WHERE tenant = ? AND tenant_seq = ?", (tenant, tenant_seq)
    ).fetchone()
    return (row[0], int(row[1])) if row else (None, None)


def tenants_between(conn: Sql, after: int, through: int) -> list[str]:
    """The tenants with an entry in ``after < seq <= through``."""
    if isinstance(conn, sqlite3.Connection):
        return packs.tenants_between(conn, after, through)
    rows = conn.execute("SELECT DISTINCT tenant FROM ledger WHERE seq > ? AND seq <= ?", (after, through))
    return [tenant for (tenant,) in rows.fetchall()]


def chain_length(conn: Sql, tenant: str, through: int) -> int:
    """How many entries the tenant's chain holds up to ``seq <= through`` (its next tenant_seq)."""
    if isinstance(conn, sqlite3.Connection):
        return packs.chain_length(conn, tenant, through)
    # Walks the (tenant, tenant_seq) index from its end; entries past ``through`` are rare.
    row = conn.execute(
        "SELECT tenant_seq FROM ledger WHERE tenant = ? AND seq <= ? ORDER BY tenant_seq DESC LIMIT 1",
        (tenant, through),
    ).fetchone()
    return 0 if row is None else int(row[0]) + 1


def chain_lengths(conn: Sql, through: int) -> dict[str, int]:
    """Every tenant's ``chain_length`` up to ``seq <= through``."""
    if isinstance(conn, sqlite3.Connection):
        lengths = {tenant: packs.chain_length(conn, tenant, through) for tenant in packs.tenants(conn)}
        return {tenant: length for tenant, length in lengths.items() if length}
    rows = conn.execute(
        "SELECT tenant, MAX(tenant_seq) FROM ledger WHERE seq <= ? GROUP BY tenant", (through,)
    ).fetchall()
    return {tenant: int(top) + 1 for tenant, top in rows}


def newest_tenant_seq(conn: Sql, tenant: str) -> int | None:
    """The tenant_seq of the tenant's newest entry (its chain's head)."""
    if isinstance(conn, sqlite3.Connection):
        return packs.newest_tenant_seq(conn, tenant)
    (newest,) = conn.execute("SELECT max(tenant_seq) FROM ledger WHERE tenant = ?", (tenant,)).fetchone()
    return None if newest is None else int(newest)


def event_keys_after(conn: Sql, after: int, limit: int) -> list[tuple[int, str, str]]:
    """The (seq, tenant, event id) of the first ``limit`` entries past ``after`` that carry an
    event id, but for those filed by their text after a hash collision (embedded store)."""
    if isinstance(conn, sqlite3.Connection):
        filed = {seq for (seq,) in conn.execute("SELECT seq FROM event_keys_overflow")}
        found: list[tuple[int, str, str]] = []
        for rows in packs.rows_after(conn, after, NO_BOUND):
            found += [(row.seq, row.tenant, row.event_id) for row in rows
                      if row.event_id is not None and row.seq not in filed]
            if len(found) >= limit:
                break
        return found[:limit]
    return conn.execute(
        "SELECT seq, tenant, event_id FROM ledger WHERE seq > ? AND event_id IS NOT NULL "
        "AND seq NOT IN (SELECT seq FROM event_keys_overflow) ORDER BY seq LIMIT ?",
        (after, limit),
    ).fetchall()


def event_ids_between(conn: Sql, tenant: str, start: int, end: int) -> list[tuple[int, str | None]]:
    """The (seq, event id) of the tenant's entries with ``start <= tenant_seq < end``."""
    if isinstance(conn, sqlite3.Connection):
        return [(row.seq, row.event_id) for row in packs.tenant_range(conn, tenant, start, end)]
    return [(int(seq), event_id) for seq, event_id in conn.execute(
        "SELECT seq, event_id FROM ledger WHERE tenant = ? AND tenant_seq >= ? AND tenant_seq < ?",
        (tenant, start, end)).fetchall()]


def empty_completions(conn: Sql, tenant: str, start: int, end: int, empty: str) -> int:
    """Empty the bytes of the tenant's session completions with ``start <= tenant_seq < end``
    (``empty``: the store's empty bytes literal); how many were emptied."""
    if isinstance(conn, sqlite3.Connection):
        return packs.edit_tenant_range(conn, tenant, start, end, remove=False)
    return int(conn.execute(
        f"UPDATE ledger SET entry = {empty} WHERE tenant = ? AND tenant_seq >= ? "
        "AND tenant_seq < ? AND kind = 'SESSION_COMPLETION'", (tenant, start, end)).rowcount)


def delete_between(conn: Sql, tenant: str, start: int, end: int) -> None:
    """Delete the tenant's entries with ``start <= tenant_seq < end``."""
    if isinstance(conn, sqlite3.Connection):
        packs.edit_tenant_range(conn, tenant, start, end, remove=True)
        return
    conn.execute("DELETE FROM ledger WHERE tenant = ? AND tenant_seq >= ? AND tenant_seq < ?",
                 (tenant, start, end))


def _each(rows: Rows, batch: int = 1_000) -> Iterator[tuple[Any, ...]]:
    while fetched := rows.fetchmany(batch):
        yield from fetched
