"""The embedded store: one SQLite database (WAL, synchronous=FULL) in the data folder.

Write methods take the writer's connection and run inside the transaction the committer
opens (``scr.log.commit``); they never commit themselves. Read methods open their own
connection per thread, so readers never wait for the writer (WAL).

Exact dedup is indexed on a 64-bit hash of ``(tenant, event_id)`` in ``event_keys``, an
INTEGER PRIMARY KEY table: a random 8-byte key keeps the B-tree small where a text unique
index on random ids was the ingest bottleneck. The hash only finds the candidate; equality
is decided on the stored tenant and event id, and a true 64-bit collision goes to
``event_keys_overflow`` keyed by the exact text, so dedup stays exact.
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DATABASE_FILE = "scr.db"
BUSY_TIMEOUT_MS = 10_000
READ_CACHE_KIB = 65_536
WRITE_CACHE_KIB = 262_144
# Keeps each IN (...) query under SQLite's bound-parameter limit.
MAX_QUERY_PARAMS = 900
READ_PAGE_ENTRIES = 1000
ENTRY_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # entry times as scr.log.commit.utc_now writes them

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    tenant_seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    ts TEXT NOT NULL,
    event_id TEXT,
    session_key INTEGER,
    payload_digest BLOB,
    entry BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_tenant ON ledger (tenant, tenant_seq);
CREATE INDEX IF NOT EXISTS ledger_session ON ledger (session_key) WHERE session_key IS NOT NULL;
-- The canon reads its own kinds often; partial, so event appends never touch it.
CREATE INDEX IF NOT EXISTS ledger_kind ON ledger (tenant, kind, seq)
    WHERE kind != 'SESSION_COMPLETION';
CREATE TABLE IF NOT EXISTS event_keys (key INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS event_keys_overflow (
    tenant TEXT NOT NULL, event_id TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash BLOB PRIMARY KEY,
    key_id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    role TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    revoked_at TEXT
) WITHOUT ROWID;
-- The web origins a publishable key is accepted from (scr.capture.browser).
CREATE TABLE IF NOT EXISTS key_origins (
    key_id TEXT NOT NULL, origin TEXT NOT NULL, PRIMARY KEY (key_id, origin)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursors (destination TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS destination_state (
    destination TEXT PRIMARY KEY, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    changed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    destination TEXT NOT NULL,
    seq INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    event_id TEXT NOT NULL,
    session_key INTEGER NOT NULL,
    webhook_id TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    last_status INTEGER,
    last_error TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL,
    PRIMARY KEY (destination, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (destination, status, next_attempt_ms);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    seqs BLOB NOT NULL,
    attempt INTEGER NOT NULL,
    status INTEGER,
    error TEXT NOT NULL DEFAULT '',
    latency_ms REAL NOT NULL,
    response_excerpt TEXT NOT NULL DEFAULT '',
    ts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_destination ON attempts (destination, id);
"""


def event_key(tenant: str, event_id: str) -> int:
    """The signed 64-bit dedup key of ``(tenant, event_id)``."""
    digest = hashlib.blake2b(f"{tenant}\0{event_id}".encode(), digest_size=8).digest()
    return int(struct.unpack("<q", digest)[0])


def session_key(tenant: str, session_id: str) -> int:
    """The signed 64-bit lookup key of ``(tenant, session_id)``."""
    digest = hashlib.blake2b(f"{tenant}\0{session_id}".encode(), digest_size=8).digest()
    return -int(struct.unpack("<q", digest)[0]) - 1  # a different key space from event_key


def pack_seqs(seqs: Sequence[int]) -> bytes:
    """Pack ledger sequence numbers for the attempts log."""
    return struct.pack(f"<{len(seqs)}q", *seqs)


def unpack_seqs(blob: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(blob) // 8}q", blob))


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """A ledger row as read back."""

    seq: int
    tenant: str
    tenant_seq: int
    kind: str
    ts: str
    event_id: str | None
    entry: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    tenant: str
    role: str
    label: str
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    destination: str
    seq: int
    tenant: str
    event_id: str
    session_key: int
    webhook_id: str
    status: str
    attempts: int
    next_attempt_ms: int
    last_status: int | None
    last_error: str
    updated_at: str


_ENTRY_COLUMNS = "seq, tenant, tenant_seq, kind, ts, event_id, entry, hash"
_DELIVERY_COLUMNS = (
    "destination, seq, tenant, event_id, session_key, webhook_id, status, attempts, "
    "next_attempt_ms, last_status, last_error, updated_at"
)


def _chunks(values: Sequence[Any], size: int = MAX_QUERY_PARAMS) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class SqliteStore:
    """The SQLite database of one data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DATABASE_FILE
        self._local = threading.local()
        with self._open(write=True) as conn:
            conn.executescript(SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _open(self, write: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed group survives power loss, not only a process crash.
        conn.execute("PRAGMA synchronous = FULL")
        cache = WRITE_CACHE_KIB if write else READ_CACHE_KIB
        conn.execute(f"PRAGMA cache_size = -{cache}")
        return conn

    def writer_connection(self) -> sqlite3.Connection:
        """A connection for the one writer thread."""
        return self._open(write=True)

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open(write=False)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ----- ledger ---------------------------------------------------------------------------

    def chain_heads(self, conn: sqlite3.Connection) -> dict[str, tuple[int, bytes]]:
        """Per tenant: (number of entries, hash of the newest entry)."""
        rows = conn.execute(
            "SELECT l.tenant, l.tenant_seq, l.hash FROM ledger l "
            "JOIN (SELECT tenant, MAX(tenant_seq) AS top FROM ledger GROUP BY tenant) m "
            "ON l.tenant = m.tenant AND l.tenant_seq = m.top"
        ).fetchall()
        return {tenant: (tenant_seq + 1, bytes(h)) for tenant, tenant_seq, h in rows}

    def last_seq(self, conn: sqlite3.Connection | None = None) -> int:
        row = (conn or self._reader()).execute("SELECT MAX(seq) FROM ledger").fetchone()
        return int(row[0] or 0)

    def find_keys(
        self, conn: sqlite3.Connection, keys: Sequence[int]
    ) -> dict[int, tuple[int, str, str, bytes]]:
        """For the dedup keys present: key → (seq, tenant, event_id, payload digest)."""
        found: dict[int, tuple[int, str, str, bytes]] = {}
        for part in _chunks(list(keys)):
            marks = ",".join("?" * len(part))
            rows = conn.execute(
                f"SELECT k.key, l.seq, l.tenant, l.event_id, l.payload_digest "
                f"FROM event_keys k JOIN ledger l ON l.seq = k.seq WHERE k.key IN ({marks})",
                part,
            ).fetchall()
            for key, seq, tenant, event_id, digest in rows:
                found[key] = (seq, tenant, event_id, bytes(digest))
        return found

    def find_overflow(
        self, conn: sqlite3.Connection, tenant: str, event_id: str
    ) -> tuple[int, bytes] | None:
        row = conn.execute(
            "SELECT o.seq, l.payload_digest FROM event_keys_overflow o "
            "JOIN ledger l ON l.seq = o.seq WHERE o.tenant = ? AND o.event_id = ?",
            (tenant, event_id),
        ).fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    def insert_entries(self, conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows of (seq, tenant, tenant_seq, kind, ts, event_id, session_key, digest, entry, hash)."""
        conn.executemany("INSERT INTO ledger VALUES (?,?,?,?,?,?,?,?,?,?)", rows)

    def insert_keys(self, conn: sqlite3.Connection, keys: Iterable[tuple[int, int]]) -> None:
        conn.executemany("INSERT INTO event_keys VALUES (?, ?)", keys)

    def insert_overflow(
        self, conn: sqlite3.Connection, tenant: str, event_id: str, seq: int
    ) -> None:
        conn.execute("INSERT INTO event_keys_overflow VALUES (?, ?, ?)", (tenant, event_id, seq))

    def entries_after(self, after_seq: int, limit: int) -> list[StoredEntry]:
        """Ledger rows with seq > after_seq, in order."""
        rows = self._reader().execute(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [_entry(row) for row in rows]

    def entries_by_seq(self, seqs: Sequence[int]) -> dict[int, StoredEntry]:
        found: dict[int, StoredEntry] = {}
        for part in _chunks(list(seqs)):
            marks = ",".join("?" * len(part))
            for row in self._reader().execute(
                f"SELECT {_ENTRY_COLUMNS} FROM ledger WHERE seq IN ({marks})", part
            ):
                found[row[0]] = _entry(row)
        return found

    def tenant_entries(
        self, tenant: str, start: int, end: int, kinds: Sequence[str] | None = None
    ) -> list[StoredEntry]:
        """A tenant's entries with start <= tenant_seq < end, in order."""
        rows = self._reader().execute(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger WHERE tenant = ? AND tenant_seq >= ? "
            f"AND tenant_seq < ? ORDER BY tenant_seq",
            (tenant, start, end),
        ).fetchall()
        entries = [_entry(row) for row in rows]
        if kinds is not None:
            entries = [e for e in entries if e.kind in kinds]
        return entries

    def tenant_entries_between(
        self, tenant: str, low_seq: int, high_seq: int, limit: int
    ) -> list[StoredEntry]:
        """A tenant's entries with low_seq < seq <= high_seq, oldest first."""
        rows = self._reader().execute(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger WHERE tenant = ? AND seq > ? AND seq <= ? "
            f"ORDER BY seq LIMIT ?",
            (tenant, low_seq, high_seq, limit),
        ).fetchall()
        return [_entry(row) for row in rows]

    def tenant_entries_after(self, tenant: str, after_seq: int) -> Iterator[StoredEntry]:
        """A tenant's entries with seq > after_seq, oldest first, read lazily in pages."""
        reader = self._reader()
        start = 0
        if after_seq > 0:
            # seq and tenant_seq grow together: find the tenant's position at after_seq
            row = reader.execute(
                "SELECT tenant_seq FROM ledger WHERE seq <= ? AND tenant = ? "
                "ORDER BY seq DESC LIMIT 1",
                (after_seq, tenant),
            ).fetchone()
            start = int(row[0]) + 1 if row else 0
        while True:
            page = self.tenant_entries(tenant, start, start + READ_PAGE_ENTRIES)
            yield from (entry for entry in page if entry.seq > after_seq)
            if len(page) < READ_PAGE_ENTRIES:
                return
            start += READ_PAGE_ENTRIES

    def tenant_entries_of_kinds(
        self, tenant: str, kinds: Sequence[str], after_seq: int
    ) -> list[StoredEntry]:
        """A tenant's entries of these kinds (never SESSION_COMPLETION) after a seq, in order."""
        marks = ",".join("?" * len(kinds))
        rows = self._reader().execute(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger WHERE tenant = ? AND kind IN ({marks}) "
            f"AND seq > ? AND kind != 'SESSION_COMPLETION' ORDER BY seq",
            (tenant, *kinds, after_seq),
        ).fetchall()
        return [_entry(row) for row in rows]

    def tenants(self) -> list[str]:
        return [row[0] for row in self._reader().execute("SELECT DISTINCT tenant FROM ledger")]

    def accepted_events(self, tenant: str) -> list[tuple[str, int]]:
        """(event id, seq) of every event the dedup index holds for a tenant.

        A key whose entry is gone cannot name its tenant (it is a hash), so it is reported
        to every tenant's audit: the index and the ledger disagree, whoever owned it.
        """
        rows = self._reader().execute(
            "SELECT l.event_id, k.seq FROM event_keys k JOIN ledger l ON l.seq = k.seq "
            "WHERE l.tenant = ? "
            "UNION ALL SELECT 'dedup key ' || k.key, k.seq FROM event_keys k "
            "WHERE NOT EXISTS (SELECT 1 FROM ledger l WHERE l.seq = k.seq) "
            "UNION ALL SELECT event_id, seq FROM event_keys_overflow WHERE tenant = ?",
            (tenant, tenant),
        ).fetchall()
        return [(event_id, int(seq)) for event_id, seq in rows]

    def find_event(self, tenant: str, event_id: str) -> StoredEntry | None:
        """The SESSION_COMPLETION entry of a tenant's event id, exactly."""
        row = self._reader().execute(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger WHERE seq = "
            f"(SELECT seq FROM event_keys WHERE key = ?)",
            (event_key(tenant, event_id),),
        ).fetchone()
        if row is not None and row[1] == tenant and row[5] == event_id:
            return _entry(row)
        row = self._reader().execute(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger WHERE seq = "
            f"(SELECT seq FROM event_keys_overflow WHERE tenant = ? AND event_id = ?)",
            (tenant, event_id),
        ).fetchone()
        return _entry(row) if row is not None else None

    def session_entries(self, tenant: str, session_id: str) -> list[StoredEntry]:
        """Entries of one session, by its lookup key; callers check the session id itself."""
        rows = self._reader().execute(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger WHERE session_key = ? AND tenant = ? "
            f"ORDER BY seq",
            (session_key(tenant, session_id), tenant),
        ).fetchall()
        return [_entry(row) for row in rows]

    def entry_time(self, seq: int) -> float | None:
        """When the entry at ``seq`` (or the next one) was committed, as a Unix time."""
        row = self._reader().execute(
            "SELECT ts FROM ledger WHERE seq >= ? ORDER BY seq LIMIT 1", (seq,)
        ).fetchone()
        if row is None:
            return None
        return datetime.strptime(row[0], ENTRY_TIME_FORMAT).replace(tzinfo=UTC).timestamp()

    def seq_at_time(self, ts: str) -> int:
        """The last seq whose entry time is before ``ts`` (entry times grow with seq)."""
        row = self._reader().execute(
            "SELECT MAX(seq) FROM ledger WHERE ts < ?", (ts,)
        ).fetchone()
        return int(row[0] or 0)

    # ----- keys -----------------------------------------------------------------------------

    def insert_key(
        self,
        conn: sqlite3.Connection,
        key_hash: bytes,
        key_id: str,
        tenant: str,
        role: str,
        label: str,
        created_at: str,
    ) -> None:
        conn.execute(
            "INSERT INTO api_keys (key_hash, key_id, tenant, role, label, created_at) "
            "VALUES (?,?,?,?,?,?)",
            (key_hash, key_id, tenant, role, label, created_at),
        )

    def find_key(self, key_hash: bytes) -> KeyRecord | None:
        row = self._reader().execute(
            "SELECT key_id, tenant, role, label, created_at, revoked_at FROM api_keys "
            "WHERE key_hash = ?",
            (key_hash,),
        ).fetchone()
        return KeyRecord(*row) if row else None

    def insert_key_origins(
        self, conn: sqlite3.Connection, key_id: str, origins: Iterable[str]
    ) -> None:
        conn.executemany(
            "INSERT INTO key_origins VALUES (?, ?)", [(key_id, origin) for origin in origins]
        )

    def find_key_origins(self, key_id: str) -> frozenset[str]:
        rows = self._reader().execute(
            "SELECT origin FROM key_origins WHERE key_id = ?", (key_id,)
        ).fetchall()
        return frozenset(row[0] for row in rows)

    # ----- destinations ---------------------------------------------------------------------

    def cursor(self, destination: str) -> int | None:
        row = self._reader().execute(
            "SELECT seq FROM cursors WHERE destination = ?", (destination,)
        ).fetchone()
        return int(row[0]) if row else None

    def set_cursor(self, conn: sqlite3.Connection, destination: str, seq: int) -> None:
        conn.execute(
            "INSERT INTO cursors VALUES (?, ?) ON CONFLICT (destination) DO UPDATE SET "
            "seq = MAX(seq, excluded.seq)",
            (destination, seq),
        )

    def destination_state(self, destination: str) -> tuple[str, str]:
        row = self._reader().execute(
            "SELECT state, reason FROM destination_state WHERE destination = ?", (destination,)
        ).fetchone()
        return (row[0], row[1]) if row else ("active", "")

    def set_destination_state(
        self, conn: sqlite3.Connection, destination: str, state: str, reason: str, now: str
    ) -> None:
        conn.execute(
            "INSERT INTO destination_state VALUES (?,?,?,?) ON CONFLICT (destination) DO UPDATE "
            "SET state = excluded.state, reason = excluded.reason, changed_at = excluded.changed_at",
            (destination, state, reason, now),
        )

    def upsert_deliveries(self, conn: sqlite3.Connection, rows: Iterable[DeliveryRow]) -> None:
        conn.executemany(
            f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (destination, seq) DO UPDATE SET webhook_id = excluded.webhook_id, "
            "status = excluded.status, attempts = excluded.attempts, "
            "next_attempt_ms = excluded.next_attempt_ms, last_status = excluded.last_status, "
            "last_error = excluded.last_error, updated_at = excluded.updated_at",
            [
                (
                    r.destination, r.seq, r.tenant, r.event_id, r.session_key, r.webhook_id,
                    r.status, r.attempts, r.next_attempt_ms, r.last_status, r.last_error,
                    r.updated_at,
                )
                for r in rows
            ],
        )

    def open_deliveries(self, destination: str, limit: int) -> list[DeliveryRow]:
        """Pending and retrying deliveries of a destination, oldest entry first."""
        rows = self._reader().execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE destination = ? "
            "AND status IN ('pending', 'retrying') ORDER BY seq LIMIT ?",
            (destination, limit),
        ).fetchall()
        return [DeliveryRow(*row) for row in rows]

    def make_due(self, conn: sqlite3.Connection, destination: str, now_ms: int) -> int:
        """Bring every open delivery of a destination forward to now (after re-enabling)."""
        cur = conn.execute(
            "UPDATE deliveries SET next_attempt_ms = ? WHERE destination = ? "
            "AND status IN ('pending', 'retrying')",
            (now_ms, destination),
        )
        return cur.rowcount

    def list_deliveries(
        self, tenant: str | None, destination: str | None, status: str | None, limit: int
    ) -> list[DeliveryRow]:
        clauses, params = [], []
        for column, value in (("tenant", tenant), ("destination", destination), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._reader().execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries {where} ORDER BY seq DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [DeliveryRow(*row) for row in rows]

    def delivery_rows_for(self, destination: str, seqs: Sequence[int]) -> dict[int, DeliveryRow]:
        found: dict[int, DeliveryRow] = {}
        for part in _chunks(list(seqs)):
            marks = ",".join("?" * len(part))
            for row in self._reader().execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE destination = ? "
                f"AND seq IN ({marks})",
                (destination, *part),
            ):
                found[row[1]] = DeliveryRow(*row)
        return found

    def insert_attempts(self, conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows of (destination, webhook_id, seqs, attempt, status, error, latency_ms,
        response_excerpt, ts)."""
        conn.executemany(
            "INSERT INTO attempts (destination, webhook_id, seqs, attempt, status, error, "
            "latency_ms, response_excerpt, ts) VALUES (?,?,?,?,?,?,?,?,?)",
            rows,
        )

    def recent_attempts(
        self, destination: str | None, limit: int
    ) -> list[tuple[str, str, list[int], int, int | None, str, float, str, str]]:
        where, params = ("WHERE destination = ?", (destination,)) if destination else ("", ())
        rows = self._reader().execute(
            "SELECT destination, webhook_id, seqs, attempt, status, error, latency_ms, "
            f"response_excerpt, ts FROM attempts {where} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [(d, w, unpack_seqs(s), a, st, e, lat, r, ts) for d, w, s, a, st, e, lat, r, ts in rows]


def _entry(row: Sequence[Any]) -> StoredEntry:
    seq, tenant, tenant_seq, kind, ts, event_id, entry, digest = row
    return StoredEntry(seq, tenant, tenant_seq, kind, ts, event_id, bytes(entry), bytes(digest))
