"""The PostgreSQL store: the same protocol as SQLite, shared by every instance of a cluster.

psycopg 3: the writer holds one connection of its own (each group commit is one transaction,
ledger rows written with COPY); reads borrow connections from a ``psycopg_pool`` pool.
Exact dedup is the unique index on ``(tenant, event_id)``. A ledger row carries its
partition, ``partition_of(tenant, partitions)``, indexed with its seq.

Writers side by side: a write takes the lock of each partition it appends to
(``(PARTITION_WRITE_LOCKS, partition)``, held to the end of its transaction, taken in order
within a write) before it looks up duplicates or reads chain heads. A tenant's chain lives in
one partition, so the owners of different partitions commit in parallel, and a writer that
finds a partition moved since it last looked (another instance's or ``scr keys create``'s
append) reloads the chain heads. Seqs therefore commit out of order across partitions: a
reader reads only up to the safe seq, below every range still in flight (migration 13,
``scr_safe_seq``), so a reader past seq N has seen every entry up to N.

Schema: ``scr.store.migrations`` (applied when the store opens, and by ``scr db migrate``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from scr.config import StorePoolConfig
from scr.errors import ConfigError, Unavailable
from scr.retention.tiers import ArchiveTier
from scr.store import holds, segments, usage, vectors
from scr.store.migrations import migrate
from scr.store.paging import delivery_filter, tenant_pages
from scr.store.protocol import Rewrap, Transaction
from scr.store.records import (
    ENTRY_TIME_FORMAT,
    USAGE_CURSOR,
    AttemptRow,
    DeliveryRow,
    DurationRow,
    EventKey,
    Hit,
    KeyRecord,
    LegalHold,
    NewEntry,
    SegmentRow,
    StoredEntry,
    UsageRow,
    UsageSum,
)
from scr.store.sql import PgSql

log = logging.getLogger("scr.store.postgres")

DEFAULT_PARTITIONS = 16
PARTITIONS_SETTING = "partitions"  # its row in store_settings (agreed_partitions)
# The first key of a partition's write lock (pg_advisory_xact_lock(key, partition)): "scrl".
PARTITION_WRITE_LOCKS = 0x7363726C
# After each commit that appended entries the writer notifies this channel with its newest seq
# (never for a write rolled back): other instances follow the ledger by it.
APPENDS_CHANNEL = "scr_ledger_appends"
URI_SCHEMES = ("postgresql://", "postgres://")

Connection = psycopg.Connection[tuple[Any, ...]]

_ENTRY_COLUMNS = "seq, tenant, tenant_seq, kind, ts, event_id, entry, hash"
_DELIVERY_COLUMNS = (
    "destination, seq, tenant, event_id, session_key, webhook_id, status, attempts, "
    "next_attempt_ms, last_status, last_error, updated_at"
)


def is_postgres_uri(value: str) -> bool:
    return value.startswith(URI_SCHEMES)


@functools.lru_cache(maxsize=65_536)  # asked per entry and per lock on the ingest path
def partition_of(tenant: str, partitions: int) -> int:
    """The tenant's partition: the first 8 bytes of SHA-256(tenant, UTF-8), big-endian,
    modulo ``partitions``. Stable across processes, versions and languages."""
    digest = hashlib.sha256(tenant.encode()).digest()
    return int.from_bytes(digest[:8], "big") % partitions


def agreed_partitions(conn: Connection, asked: int | None) -> int:
    """The ledger's partition count. The first instance that opens the store with
    ``cluster.partitions`` records it, and every later one must ask the same: a write locks
    its tenant's partition, so writers that number them differently could append to one
    chain at once. ``asked`` None (a command such as ``scr keys create --store`` that reads
    no config) takes the recorded count, or the default before any instance recorded one."""
    if asked is not None:
        conn.execute("INSERT INTO store_settings VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                     (PARTITIONS_SETTING, str(asked)))
    row = conn.execute("SELECT value FROM store_settings WHERE name = %s", (PARTITIONS_SETTING,)).fetchone()
    if row is None:
        return DEFAULT_PARTITIONS
    recorded = int(row[0])
    if asked is not None and asked != recorded:
        raise ConfigError(
            f"cluster.partitions is {asked}, but this store's ledger is in {recorded} partitions "
            f"(recorded by the first instance that used it); start every instance with "
            f"cluster.partitions: {recorded}")
    return recorded


def redact(uri: str) -> str:
    """The URI without its password, for logs and messages."""
    scheme, sep, rest = uri.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return uri
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in credentials else uri


def _connect(uri: str, pool: StorePoolConfig, application_name: str = "") -> Connection:
    if application_name:  # only when asked: the URI may name one of its own
        return psycopg.connect(uri, autocommit=True, connect_timeout=pool.connect_timeout_s,
                               application_name=application_name)
    return psycopg.connect(uri, autocommit=True, connect_timeout=pool.connect_timeout_s)


class PostgresWriter:
    """The one writer's connection (a ``Transaction``), reconnected when it was lost."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._conn: Connection | None = None
        # per partition, its newest seq as this writer last saw it committed (a partition
        # missing is unknown: the chain heads are read again when it is locked)
        self._seen: dict[int, int] = {}
        self._locked: set[int] = set()  # partitions the open transaction holds
        self._appended: dict[int, int] = {}  # per partition, the newest seq the open transaction appended
        self._at_savepoint: tuple[set[int], dict[int, int]] = (set(), {})

    @property
    def conn(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                log.warning("the writer's PostgreSQL connection was lost: reconnecting")
            self._conn = _connect(self._store.uri, self._store.pool)
        return self._conn

    def begin(self, durable: bool) -> None:
        conn = self.conn
        conn.execute("BEGIN")
        if not durable:  # state whose loss costs only a redelivery: no wait for the WAL flush
            conn.execute("SET LOCAL synchronous_commit = off")
        self._locked, self._appended = set(), {}

    def lock_partitions(self, partitions: Iterable[int]) -> bool:
        """Take the write locks of those partitions the open transaction does not hold yet (in
        order); whether another writer appended to one of them since this writer last saw it."""
        new = sorted(set(partitions) - self._locked)
        if not new:
            return False
        conn = self.conn
        try:
            conn.execute("SELECT pg_advisory_xact_lock(%s, p) FROM unnest(%s::integer[]) AS p",
                         (PARTITION_WRITE_LOCKS, new))
        except psycopg.errors.DeadlockDetected:
            # two writes that each hold a partition the other wants (writes across partitions:
            # alerts, canon, keys): PostgreSQL broke the cycle here; this write alone fails
            raise Unavailable("two ledger writers waited for each other's partitions; retry") from None
        self._locked.update(new)
        rows = conn.execute(
            "SELECT p, (SELECT coalesce(max(seq), 0) FROM ledger WHERE partition = p) "
            "FROM unnest(%s::integer[]) AS p", (new,),
        ).fetchall()
        moved = False
        for partition, newest in rows:
            moved = moved or self._seen.get(partition) != newest
            self._seen[partition] = int(newest)
        return moved

    def savepoint(self) -> None:
        self.conn.execute("SAVEPOINT work")
        self._at_savepoint = (set(self._locked), dict(self._appended))

    def release(self) -> None:
        self.conn.execute("RELEASE SAVEPOINT work")

    def rollback_to_savepoint(self) -> None:
        self.conn.execute("ROLLBACK TO SAVEPOINT work")
        self.conn.execute("RELEASE SAVEPOINT work")
        # what the write appended is gone, and so are the locks it took (PostgreSQL releases
        # a lock taken after a savepoint when the savepoint is rolled back)
        locked, appended = self._at_savepoint
        self._locked, self._appended = set(locked), dict(appended)

    def commit(self) -> None:
        self.conn.execute("COMMIT")
        self._seen.update(self._appended)
        if self._appended:
            # after the commit, in a statement of its own: a NOTIFY inside the transaction
            # would hold PostgreSQL's database-wide notify lock through the commit's WAL flush.
            # One lost (a crash or a cut connection just here) is made up by the followers'
            # look once a second; the commit itself stands, so its callers are answered.
            try:
                newest = max(self._appended.values())
                self.conn.execute("SELECT pg_notify(%s, %s)", (APPENDS_CHANNEL, str(newest)))
            except psycopg.Error as error:
                log.warning("committed, but could not notify the other instances: %s", error)

    def rollback(self) -> None:
        self._seen.clear()  # what landed is unknown: read every partition again
        self._locked, self._appended = set(), {}
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            return
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error as error:
            log.warning("rollback failed: %s", error)

    def changed_elsewhere(self) -> bool:
        return False  # asked per partition, as each is locked (``lock_partitions``)

    def appended(self, partition: int, seq: int) -> None:
        if partition not in self._locked:
            raise RuntimeError(f"appending to partition {partition} without its write lock")
        self._appended[partition] = max(self._appended.get(partition, 0), seq)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _conn(tx: Transaction) -> Connection:
    return _writer(tx).conn


def _writer(tx: Transaction) -> PostgresWriter:
    if not isinstance(tx, PostgresWriter):
        raise TypeError(f"a PostgreSQL store cannot write in {type(tx).__name__}")
    return tx


class PostgresStore:
    """A PostgreSQL database holding the ledger of one scr instance or of a whole cluster."""

    dedup_in_memory = False
    commits_in_order = False

    def __init__(
        self, uri: str, partitions: int | None = None, apply_migrations: bool = True,
        pool: StorePoolConfig | None = None,
    ) -> None:
        """``partitions``: the config's ``cluster.partitions`` (None: a command that does not
        say, which takes the store's; ``agreed_partitions``)."""
        if partitions is not None and partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.uri = uri
        self.pool = pool or StorePoolConfig()
        self.partitions = partitions or DEFAULT_PARTITIONS
        self._listener: Connection | None = None  # LISTENs for appends (wait_for_appends)
        if apply_migrations:
            with _connect(uri, self.pool) as conn:
                migrate(conn)
                self.partitions = agreed_partitions(conn, partitions)
        self._pool = ConnectionPool(
            uri, min_size=self.pool.min_connections, max_size=self.pool.max_connections,
            kwargs={"autocommit": True, "connect_timeout": self.pool.connect_timeout_s},
            timeout=self.pool.wait_ms / 1000, open=True, name="scr-readers",
            # a connection cut while idle in the pool is replaced, not handed to a reader
            check=ConnectionPool.check_connection,
        )
        self.vectors = vectors.PostgresVectors(self._read, _conn, self._pool.connection)
        self.tier = ArchiveTier(self.archive_segments)

    def __repr__(self) -> str:
        return f"PostgresStore({redact(self.uri)!r})"

    def writer(self) -> PostgresWriter:
        return PostgresWriter(self)

    def connect(self, application_name: str = "") -> Connection:
        """A connection of its own (autocommit), outside the readers' pool, named as given
        (``pg_stat_activity.application_name``)."""
        return _connect(self.uri, self.pool, application_name)

    def close(self) -> None:
        self._pool.close()  # a wait_for_appends in flight ends now (its listener is closed below)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def wait_for_appends(self, timeout_s: float) -> bool:
        """Wait until a commit (of any instance) appends entries; whether one did before
        ``timeout_s``. One thread at a time calls it (the instance's ledger follower)."""
        listener = self._listener
        if self._pool.closed:
            return False
        try:
            if listener is None or listener.closed or listener.broken:
                listener = self._listener = _connect(self.uri, self.pool)
                listener.execute(f"LISTEN {APPENDS_CHANNEL}")
            for _ in listener.notifies(timeout=timeout_s, stop_after=1):
                return True
        except psycopg.Error as error:  # the server went away: the caller looks at the head anyway
            log.debug("cannot listen for appends: %s", error)
            if listener is not None:
                listener.close()
            if not self._pool.closed:  # a closed store's waiter would hold up its event loop's end
                time.sleep(timeout_s)
        return False

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._pool.connection() as conn:
                return conn.execute(sql.encode(), params).fetchall()
        except (psycopg.OperationalError, PoolTimeout) as error:  # the server is unreachable
            raise Unavailable(f"the store cannot be read now: {error}") from None

    # ----- the ledger: appends --------------------------------------------------------------

    def chain_heads(self, tx: Transaction) -> dict[str, tuple[int, bytes]]:
        # Called whenever another writer moved the ledger (in a cluster: nearly every group
        # commit), so it must not read the whole ledger, as DISTINCT ON does (PostgreSQL 16 has
        # no skip scan). This walks the (tenant, tenant_seq) index instead: one probe for the
        # next tenant and one for its newest entry, O(tenants · log entries).
        rows = _conn(tx).execute(
            "WITH RECURSIVE tenants(tenant) AS ("
            " (SELECT tenant FROM ledger ORDER BY tenant LIMIT 1)"
            " UNION ALL"
            " SELECT (SELECT l.tenant FROM ledger l WHERE l.tenant > t.tenant ORDER BY l.tenant LIMIT 1)"
            " FROM tenants t WHERE t.tenant IS NOT NULL) "
            "SELECT head.tenant, head.tenant_seq, head.hash FROM tenants t CROSS JOIN LATERAL"
            " (SELECT l.tenant, l.tenant_seq, l.hash FROM ledger l WHERE l.tenant = t.tenant"
            "  ORDER BY l.tenant_seq DESC LIMIT 1) head"
        ).fetchall()
        return {tenant: (int(tenant_seq) + 1, bytes(h)) for tenant, tenant_seq, h in rows}

    def lock_tenants(self, tx: Transaction, tenants: Iterable[str]) -> bool:
        """Take the write locks of the tenants' partitions (``PostgresWriter.lock_partitions``);
        whether the chain heads must be read again."""
        partitions = self.partitions
        return _writer(tx).lock_partitions({partition_of(tenant, partitions) for tenant in tenants})

    def reserve_seqs(self, tx: Transaction, count: int) -> list[int]:
        if count == 0:
            return []
        # in flight until the transaction ends: no reader passes them (scr_safe_seq)
        rows = _conn(tx).execute("SELECT scr_reserve_seqs(%s)", (count,)).fetchall()
        return [int(row[0]) for row in rows]

    def find_events(self, tx: Transaction, keys: Sequence[EventKey]) -> dict[EventKey, Hit]:
        if not keys:
            return {}
        # Never prepared: a cached generic plan made while the ledger was small (a seq scan)
        # outlived its growth (the cluster benchmark saw 40k-row scans per group commit).
        rows = _conn(tx).execute(
            "SELECT l.tenant, l.event_id, l.seq, l.payload_digest FROM ledger l "
            "JOIN unnest(%s::text[], %s::text[]) AS k(tenant, event_id) "
            "ON l.tenant = k.tenant AND l.event_id = k.event_id WHERE l.event_id IS NOT NULL",
            ([k[0] for k in keys], [k[1] for k in keys]), prepare=False,
        ).fetchall()
        return {(tenant, event_id): Hit(int(seq), bytes(digest)) for tenant, event_id, seq, digest in rows}

    def append(self, tx: Transaction, entries: Sequence[NewEntry]) -> None:
        if not entries:
            return
        writer = _writer(tx)
        partitions = self.partitions
        newest: dict[int, int] = {}  # per partition, the newest seq appended
        with writer.conn.cursor() as cur, cur.copy(
            "COPY ledger (seq, partition, tenant, tenant_seq, kind, ts, event_id, session_id, "
            "payload_digest, entry, hash) FROM STDIN"
        ) as copy:
            for e in entries:
                partition = partition_of(e.tenant, partitions)
                newest[partition] = max(newest.get(partition, 0), e.seq)
                copy.write_row((
                    e.seq, partition, e.tenant, e.tenant_seq, e.kind,
                    e.ts, e.event_id, e.session_id, e.payload_digest, e.entry, e.hash,
                ))
        for partition, seq in newest.items():
            writer.appended(partition, seq)

    # ----- the ledger: reads ----------------------------------------------------------------

    def last_seq(self, tx: Transaction | None = None) -> int:
        """The newest entry at or below the safe seq: no seq below it is still in flight, so
        a reader that read up to it has seen every entry up to it (in a transaction: the
        newest seq it sees)."""
        if tx is not None:
            row = _conn(tx).execute("SELECT coalesce(max(seq), 0) FROM ledger").fetchone()
            return int(row[0]) if row else 0
        return int(self._read(
            "SELECT coalesce((SELECT max(seq) FROM ledger WHERE seq <= s.safe), 0) "
            "FROM (SELECT scr_safe_seq() AS safe) AS s")[0][0])

    def entries_after(self, after_seq: int, limit: int) -> list[StoredEntry]:
        """Entries after ``after_seq`` up to the safe seq, in order."""
        safe = self.last_seq()
        if safe <= after_seq:
            return []
        return self.tier.fill(_entries(self._read(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger WHERE seq > %s AND seq <= %s ORDER BY seq LIMIT %s",
            (after_seq, safe, limit),
        )))

    def partition_entries_after(self, partition: int, after_seq: int, limit: int) -> list[StoredEntry]:
        """One partition's entries with seq > after_seq, in order (for the partition's owner)."""
        return self.tier.fill(_entries(self._read(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger WHERE partition = %s AND seq > %s "
            "ORDER BY seq LIMIT %s",
            (partition, after_seq, limit),
        )))

    def entries_by_seq(self, seqs: Sequence[int]) -> dict[int, StoredEntry]:
        if not seqs:
            return {}
        rows = self._read(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger WHERE seq = ANY(%s)", (list(seqs),)
        )
        return {entry.seq: entry for entry in self.tier.fill(_entries(rows))}

    def tenant_entries(
        self, tenant: str, start: int, end: int, kinds: Sequence[str] | None = None
    ) -> list[StoredEntry]:
        entries = _entries(self._read(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger WHERE tenant = %s AND tenant_seq >= %s "
            "AND tenant_seq < %s ORDER BY tenant_seq",
            (tenant, start, end),
        ))
        return self.tier.fill(entries if kinds is None else [e for e in entries if e.kind in kinds])

    def tenant_entries_between(
        self, tenant: str, low_seq: int, high_seq: int, limit: int
    ) -> list[StoredEntry]:
        return self.tier.fill(_entries(self._read(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger WHERE tenant = %s AND seq > %s AND seq <= %s "
            "ORDER BY seq LIMIT %s",
            (tenant, low_seq, high_seq, limit),
        )))

    def tenant_entries_after(self, tenant: str, after_seq: int) -> Iterator[StoredEntry]:
        start = 0
        if after_seq > 0:  # seq and tenant_seq grow together
            rows = self._read(
                "SELECT tenant_seq FROM ledger WHERE tenant = %s AND seq <= %s "
                "ORDER BY tenant_seq DESC LIMIT 1",
                (tenant, after_seq),
            )
            start = int(rows[0][0]) + 1 if rows else 0
        yield from tenant_pages(lambda low, high: self.tenant_entries(tenant, low, high), start, after_seq)

    def tenant_entries_of_kinds(
        self, tenant: str, kinds: Sequence[str], after_seq: int
    ) -> list[StoredEntry]:
        return _entries(self._read(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger WHERE tenant = %s AND kind = ANY(%s) "
            "AND seq > %s AND kind <> 'SESSION_COMPLETION' ORDER BY seq",
            (tenant, list(kinds), after_seq),
        ))

    def tenants(self) -> list[str]:
        # a loose index scan over (tenant, tenant_seq): one probe per tenant, not per entry
        rows = self._read(
            "WITH RECURSIVE t(tenant) AS ("
            " (SELECT tenant FROM ledger ORDER BY tenant LIMIT 1)"
            " UNION ALL SELECT (SELECT l.tenant FROM ledger l WHERE l.tenant > t.tenant "
            "ORDER BY l.tenant LIMIT 1) FROM t WHERE t.tenant IS NOT NULL"
            ") SELECT tenant FROM t WHERE tenant IS NOT NULL"
        )
        return [row[0] for row in rows]

    def accepted_events(self, tenant: str) -> list[tuple[str, int]]:
        rows = self._read(
            "SELECT event_id, seq FROM ledger WHERE tenant = %s AND event_id IS NOT NULL",
            (tenant,),
        )
        return [(event_id, int(seq)) for event_id, seq in rows]

    def find_event(self, tenant: str, event_id: str) -> StoredEntry | None:
        rows = self._read(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger WHERE tenant = %s AND event_id = %s",
            (tenant, event_id),
        )
        filled = self.tier.fill(_entries(rows))
        return filled[0] if filled else None

    def index_sessions(self) -> Callable[[], None]:
        return _nothing  # PostgreSQL keeps its session index in the committing transaction

    def session_entries(self, tenant: str, session_id: str) -> list[StoredEntry]:
        return self.tier.fill(_entries(self._read(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger WHERE tenant = %s AND session_id = %s "
            "ORDER BY seq",
            (tenant, session_id),
        )))

    def first_session_entries(
        self, tenant: str, session_ids: Sequence[str], before_seq: int
    ) -> list[StoredEntry]:
        return self.tier.fill(_entries(self._read(
            f"SELECT DISTINCT ON (session_id) {_ENTRY_COLUMNS} FROM ledger WHERE tenant = %s "
            "AND session_id = ANY(%s) AND seq < %s AND kind = 'SESSION_COMPLETION' "
            "ORDER BY session_id, seq",
            (tenant, list(set(session_ids)), before_seq),
        )))

    def entry_time(self, seq: int) -> float | None:
        rows = self._read("SELECT ts FROM ledger WHERE seq >= %s ORDER BY seq LIMIT 1", (seq,))
        if not rows:
            return None
        return datetime.strptime(rows[0][0], ENTRY_TIME_FORMAT).replace(tzinfo=UTC).timestamp()

    def seq_at_time(self, ts: str) -> int:
        rows = self._read("SELECT coalesce(max(seq), 0) FROM ledger WHERE ts < %s", (ts,))
        return int(rows[0][0])

    # ----- keys -----------------------------------------------------------------------------

    def insert_key(
        self, tx: Transaction, key_hash: bytes, key_id: str, tenant: str, role: str, label: str,
        created_at: str,
    ) -> None:
        _conn(tx).execute(
            "INSERT INTO api_keys (key_hash, key_id, tenant, role, label, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (key_hash, key_id, tenant, role, label, created_at),
        )

    def revoke_key(self, tx: Transaction, key_id: str, revoked_at: str) -> str | None:
        row = _conn(tx).execute(
            "UPDATE api_keys SET revoked_at = %s WHERE key_id = %s AND revoked_at IS NULL "
            "RETURNING tenant",
            (revoked_at, key_id),
        ).fetchone()
        return None if row is None else str(row[0])

    def find_key(self, key_hash: bytes) -> KeyRecord | None:
        rows = self._read(
            "SELECT key_id, tenant, role, label, created_at, revoked_at FROM api_keys "
            "WHERE key_hash = %s",
            (key_hash,),
        )
        return KeyRecord(*rows[0]) if rows else None

    def insert_key_origins(self, tx: Transaction, key_id: str, origins: Iterable[str]) -> None:
        values = [(key_id, origin) for origin in origins]
        if values:
            with _conn(tx).cursor() as cur:
                cur.executemany("INSERT INTO key_origins VALUES (%s, %s)", values)

    def find_key_origins(self, key_id: str) -> frozenset[str]:
        rows = self._read("SELECT origin FROM key_origins WHERE key_id = %s", (key_id,))
        return frozenset(row[0] for row in rows)

    # ----- destinations ---------------------------------------------------------------------

    # ----- usage aggregates (scr.store.usage) ------------------------------------------------

    def add_usage(self, tx: Transaction, rows: Sequence[UsageRow], after_seq: int, seq: int,
                  durations: Sequence[DurationRow] = ()) -> bool:
        conn = _conn(tx)
        ensure, move = usage.cursor_statements("%s")
        conn.execute(ensure, (USAGE_CURSOR,))
        if conn.execute(move, (seq, USAGE_CURSOR, after_seq)).rowcount != 1:
            return False
        with conn.cursor() as cur:
            cur.executemany(usage.MINUTES.upsert("postgres"), usage.as_values(rows, Decimal))
            for table, rolled in usage.rollup_values(rows, Decimal):
                cur.executemany(table.upsert("postgres"), rolled)
            cur.executemany(usage.durations_upsert("postgres"), usage.durations_values(durations))
        return True

    def usage_sums(self, tenant: str | None, from_minute: int, to_minute: int, bucket_minutes: int,
                   keys: Sequence[str]) -> list[UsageSum]:
        table = usage.table_for(keys, from_minute, bucket_minutes)
        sql = usage.sums_query(table, keys, "%s", "postgres", tenant is not None)
        params = (from_minute, bucket_minutes, *([tenant] if tenant is not None else []),
                  from_minute, to_minute)
        rows = self._read(sql, params)
        return [usage.as_sum(row, len(keys)) for row in rows]

    def usage_durations(self, tenant: str, from_minute: int, to_minute: int) -> list[tuple[str, int, int]]:
        rows = self._read(usage.durations_query("%s"), (tenant, from_minute, to_minute))
        return [(user_id, int(bucket), int(sessions)) for user_id, bucket, sessions in rows]

    def cursor(self, destination: str) -> int | None:
        rows = self._read("SELECT seq FROM cursors WHERE destination = %s", (destination,))
        return int(rows[0][0]) if rows else None

    def set_cursor(self, tx: Transaction, destination: str, seq: int) -> None:
        _conn(tx).execute(
            "INSERT INTO cursors VALUES (%s, %s) ON CONFLICT (destination) DO UPDATE SET "
            "seq = GREATEST(cursors.seq, excluded.seq)",
            (destination, seq),
        )

    def destination_state(self, destination: str) -> tuple[str, str]:
        rows = self._read(
            "SELECT state, reason FROM destination_state WHERE destination = %s", (destination,)
        )
        return (rows[0][0], rows[0][1]) if rows else ("active", "")

    def set_destination_state(
        self, tx: Transaction, destination: str, state: str, reason: str, now: str
    ) -> None:
        _conn(tx).execute(
            "INSERT INTO destination_state VALUES (%s, %s, %s, %s) ON CONFLICT (destination) "
            "DO UPDATE SET state = excluded.state, reason = excluded.reason, "
            "changed_at = excluded.changed_at",
            (destination, state, reason, now),
        )

    def upsert_deliveries(self, tx: Transaction, rows: Iterable[DeliveryRow]) -> None:
        values = [
            (r.destination, r.seq, r.tenant, r.event_id, r.session_key, r.webhook_id, r.status,
             r.attempts, r.next_attempt_ms, r.last_status, r.last_error, r.updated_at)
            for r in rows
        ]
        if not values:
            return
        with _conn(tx).cursor() as cur:
            cur.executemany(
                f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (destination, seq) DO UPDATE SET webhook_id = excluded.webhook_id, "
                "status = excluded.status, attempts = excluded.attempts, "
                "next_attempt_ms = excluded.next_attempt_ms, last_status = excluded.last_status, "
                "last_error = excluded.last_error, updated_at = excluded.updated_at",
                values,
            )

    def open_deliveries(self, destination: str, limit: int) -> list[DeliveryRow]:
        rows = self._read(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE destination = %s "
            "AND status IN ('pending', 'retrying') ORDER BY seq LIMIT %s",
            (destination, limit),
        )
        return [DeliveryRow(*row) for row in rows]

    def make_due(self, tx: Transaction, destination: str, now_ms: int) -> int:
        cur = _conn(tx).execute(
            "UPDATE deliveries SET next_attempt_ms = %s WHERE destination = %s "
            "AND status IN ('pending', 'retrying')",
            (now_ms, destination),
        )
        return cur.rowcount

    def list_deliveries(
        self, tenant: str | None, destination: str | None, status: str | None, limit: int
    ) -> list[DeliveryRow]:
        where, params = delivery_filter(tenant, destination, status, "%s")
        rows = self._read(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries {where} ORDER BY seq DESC LIMIT %s",
            (*params, limit),
        )
        return [DeliveryRow(*row) for row in rows]

    def delivery_rows_for(self, destination: str, seqs: Sequence[int]) -> dict[int, DeliveryRow]:
        if not seqs:
            return {}
        rows = self._read(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE destination = %s AND seq = ANY(%s)",
            (destination, list(seqs)),
        )
        return {int(row[1]): DeliveryRow(*row) for row in rows}

    def insert_attempts(self, tx: Transaction, rows: Iterable[AttemptRow]) -> None:
        values = [
            (r.destination, r.webhook_id, list(r.seqs), r.attempt, r.status, r.error,
             r.latency_ms, r.response_excerpt, r.ts)
            for r in rows
        ]
        if not values:
            return
        with _conn(tx).cursor() as cur:
            cur.executemany(
                "INSERT INTO attempts (destination, webhook_id, seqs, attempt, status, error, "
                "latency_ms, response_excerpt, ts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                values,
            )

    def recent_attempts(self, destination: str | None, limit: int) -> list[AttemptRow]:
        where, params = ("WHERE destination = %s", (destination,)) if destination else ("", ())
        rows = self._read(
            "SELECT destination, webhook_id, seqs, attempt, status, error, latency_ms, "
            f"response_excerpt, ts FROM attempts {where} ORDER BY id DESC LIMIT %s",
            (*params, limit),
        )
        return [AttemptRow(d, w, [int(s) for s in seqs], a, st, e, lat, r, ts)
                for d, w, seqs, a, st, e, lat, r, ts in rows]


    # ----- privacy (scr.privacy) ------------------------------------------------------------

    def privacy_value(self, name: str, tx: Transaction | None = None) -> bytes | None:
        if tx is not None:  # held until the writer commits: a rotation waits for it
            rows = _conn(tx).execute("SELECT value FROM privacy WHERE name = %s FOR SHARE",
                                     (name,)).fetchall()
        else:
            rows = self._read("SELECT value FROM privacy WHERE name = %s", (name,))
        return bytes(rows[0][0]) if rows else None

    def set_privacy_values(self, values: dict[str, bytes]) -> None:
        """Record values not yet recorded (a value once written is kept)."""
        with self._pool.connection() as conn, conn.transaction():
            for name, value in values.items():
                conn.execute("INSERT INTO privacy VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                             (name, value))

    def rewrap_subject_keys(self, tx: Transaction, rewrap: Rewrap, values: dict[str, bytes]) -> int:
        conn = _conn(tx)
        # the privacy values first: a writer making a key holds them (FOR SHARE) until it
        # commits, so every key made under the old master key is committed, and seen below
        for name, value in values.items():
            conn.execute("INSERT INTO privacy VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
                         "SET value = excluded.value", (name, value))
        rows = conn.execute("SELECT tenant, subject, generation, wrapped FROM subject_keys "
                            "WHERE wrapped IS NOT NULL FOR UPDATE").fetchall()
        with conn.cursor() as cursor:
            cursor.executemany(
                "UPDATE subject_keys SET wrapped = %s WHERE tenant = %s AND subject = %s "
                "AND generation = %s",
                [(rewrap(t, s, bytes(w)), t, s, g) for t, s, g, w in rows],
            )
        return len(rows)

    def subject_keys(
        self, tenant: str, subject: str, tx: Transaction | None = None
    ) -> dict[int, bytes | None]:
        sql = "SELECT generation, wrapped FROM subject_keys WHERE tenant = %s AND subject = %s"
        rows = (_conn(tx).execute(sql, (tenant, subject)).fetchall() if tx is not None
                else self._read(sql, (tenant, subject)))
        return {g: None if w is None else bytes(w) for g, w in rows}

    def add_subject_key(self, tx: Transaction, tenant: str, subject: str, generation: int,
                        wrapped: bytes) -> None:
        _conn(tx).execute(
            "INSERT INTO subject_keys (tenant, subject, generation, wrapped) VALUES (%s, %s, %s, %s)",
            (tenant, subject, generation, wrapped),
        )

    def erase_subject_keys(self, tx: Transaction, tenant: str, subject: str, erased_at: str) -> int:
        cursor = _conn(tx).execute(
            "UPDATE subject_keys SET wrapped = NULL, erased_at = %s "
            "WHERE tenant = %s AND subject = %s AND wrapped IS NOT NULL",
            (erased_at, tenant, subject),
        )
        return cursor.rowcount

    def scrub(self) -> bool:
        """Vacuum the subjects' keys: the row versions an erasure replaced are removed (the
        server's own WAL and backups are the operator's to age out)."""
        with self._pool.connection() as conn:
            conn.execute("VACUUM subject_keys")
        return True

    def add_subject_entries(self, tx: Transaction, rows: Sequence[tuple[str, str, int]]) -> None:
        with _conn(tx).cursor() as cursor:
            cursor.executemany("INSERT INTO subject_entries VALUES (%s, %s, %s)", rows)

    def subject_entries(self, tenant: str, subject: str) -> list[int]:
        rows = self._read(
            "SELECT seq FROM subject_entries WHERE tenant = %s AND subject = %s ORDER BY seq",
            (tenant, subject),
        )
        return [int(seq) for (seq,) in rows]

    # ----- retention: archive segments (scr.retention) ----------------------------------------

    def archive_segments(self, tenant: str | None = None) -> list[SegmentRow]:
        sql, params = segments.select(tenant)
        return [segments.as_segment(row) for row in self._read(sql.replace("?", "%s"), params)]

    def stub_limit(self, tenant: str) -> int:
        """Every leaf: this store keeps no tree tiles that read entries back."""
        rows = self._read("SELECT max(tenant_seq) FROM ledger WHERE tenant = %s", (tenant,))
        return 0 if rows[0][0] is None else int(rows[0][0]) + 1

    def add_segment(self, tx: Transaction, segment: SegmentRow) -> bool:
        sql = _sql(tx)
        sql.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 7))", (segment.tenant,))
        return segments.add(sql, segment)

    def stub_entries(self, tx: Transaction, tenant: str, first_leaf: int, end: int) -> int:
        return segments.stub(_sql(tx), tenant, first_leaf, end, "''::bytea")

    def purge_segment(self, tx: Transaction, tenant: str, first_leaf: int, end: int,
                      purged_at: str) -> int:
        sql = _sql(tx)
        (vectors_table,) = sql.execute("SELECT to_regclass('session_vectors')", ()).fetchone()
        tables = ("subject_entries", "session_vectors") if vectors_table else ("subject_entries",)
        # the dedup keys are the ledger's own unique index: they go with the rows
        return segments.purge(sql, tenant, first_leaf, end, purged_at, tables, lambda rows: None)

    # ----- retention: legal holds (scr.store.holds) -----------------------------------------

    def add_legal_hold(self, tx: Transaction, hold: LegalHold) -> None:
        _conn(tx).execute(holds.insert("%s"), holds.values(hold))

    def release_legal_hold(self, tx: Transaction, tenant: str, hold_id: str,
                           released_at: str) -> LegalHold | None:
        row = _conn(tx).execute(holds.release("%s"), (released_at, tenant, hold_id)).fetchone()
        return None if row is None else holds.as_hold(row)

    def legal_holds(self, tenant: str | None, active: bool = True,
                    tx: Transaction | None = None) -> list[LegalHold]:
        sql, params = holds.select("%s", tenant, active)
        rows = self._read(sql, params) if tx is None else _conn(tx).execute(sql.encode(), params).fetchall()
        return [holds.as_hold(row) for row in rows]


def _sql(tx: Transaction) -> PgSql:
    """The writer's transaction, for SQL written with ``?``."""
    return PgSql(_conn(tx))


def _entry(row: Sequence[Any]) -> StoredEntry:
    seq, tenant, tenant_seq, kind, ts, event_id, entry, digest = row
    return StoredEntry(int(seq), tenant, int(tenant_seq), kind, ts, event_id, bytes(entry), bytes(digest))


def _entries(rows: Iterable[Sequence[Any]]) -> list[StoredEntry]:
    return [_entry(row) for row in rows]


def _nothing() -> None:
    pass
