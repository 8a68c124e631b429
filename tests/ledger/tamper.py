"""What an attacker with write access to a data folder does, one function per trick."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from packed import ledger_table

from scr.log.entry import GENESIS_HASH, chain_hash


def _db(data: Path) -> sqlite3.Connection:
    return sqlite3.connect(data / "scr.db", isolation_level=None)


def entry_row(data: Path, tenant: str, index: int) -> tuple[int, str | None, bytes]:
    """(seq, event id, stored bytes) of a tenant's entry."""
    with _db(data) as conn, ledger_table(conn):
        seq, event_id, entry = conn.execute(
            "SELECT seq, event_id, entry FROM ledger WHERE tenant = ? AND tenant_seq = ?", (tenant, index)
        ).fetchone()
    return seq, event_id, bytes(entry)


def change_byte(data: Path, tenant: str, index: int, old: bytes, new: bytes) -> None:
    """Replace the first ``old`` by ``new`` in one stored entry (its bytes only)."""
    seq, _, entry = entry_row(data, tenant, index)
    assert old in entry
    with _db(data) as conn, ledger_table(conn):
        conn.execute("UPDATE ledger SET entry = ? WHERE seq = ?", (entry.replace(old, new, 1), seq))


def rechain(data: Path, tenant: str) -> None:
    """Recompute a tenant's whole hash chain over the stored bytes (hides an edit from the chain)."""
    with _db(data) as conn, ledger_table(conn):
        rows = conn.execute(
            "SELECT seq, entry FROM ledger WHERE tenant = ? ORDER BY tenant_seq", (tenant,)
        ).fetchall()
        previous = GENESIS_HASH
        for seq, entry in rows:
            previous = chain_hash(previous, bytes(entry))
            conn.execute("UPDATE ledger SET hash = ? WHERE seq = ?", (previous, seq))


def delete_entry(data: Path, tenant: str, index: int) -> None:
    with _db(data) as conn, ledger_table(conn):
        conn.execute("DELETE FROM ledger WHERE tenant = ? AND tenant_seq = ?", (tenant, index))


def swap_entries(data: Path, tenant: str, first: int, second: int) -> None:
    """Exchange the stored bytes and hashes of two entries (each row keeps its position)."""
    with _db(data) as conn, ledger_table(conn):
        rows = {
            index: conn.execute(
                "SELECT seq, event_id, entry, hash FROM ledger WHERE tenant = ? AND tenant_seq = ?",
                (tenant, index),
            ).fetchone()
            for index in (first, second)
        }
        for here, there in ((first, second), (second, first)):
            _, event_id, entry, digest = rows[there]
            conn.execute(
                "UPDATE ledger SET event_id = ?, entry = ?, hash = ? WHERE seq = ?",
                (event_id, entry, digest, rows[here][0]),
            )


def truncate(data: Path, tenant: str, keep: int, cover_tracks: bool = False) -> None:
    """Drop a tenant's entries from index ``keep`` on; ``cover_tracks`` drops its tree tiles too."""
    with _db(data) as conn, ledger_table(conn):
        conn.execute("DELETE FROM ledger WHERE tenant = ? AND tenant_seq >= ?", (tenant, keep))
        if cover_tracks:
            conn.execute("DELETE FROM ledger_tiles WHERE tenant = ?", (tenant,))


def snapshot(data: Path, into: Path) -> Path:
    """A consistent copy of the ledger database (SQLite backup API, safe while a server runs)."""
    into.mkdir(parents=True, exist_ok=True)
    with _db(data) as source, sqlite3.connect(into / "scr.db") as copy:
        source.backup(copy)
    return into / "scr.db"


def restore(copy: Path, data: Path, name: str = "scr.db") -> None:
    """Put an older copy of a database back in place (a rollback), through SQLite's own locks."""
    with sqlite3.connect(copy) as source, sqlite3.connect(data / name) as live:
        source.backup(live)


def snapshot_file(data: Path, name: str, into: Path) -> Path:
    """A consistent copy of any SQLite file of the data folder (e.g. ``checkpoints.db``)."""
    into.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(data / name) as source, sqlite3.connect(into / name) as copy:
        source.backup(copy)
    return into / name
