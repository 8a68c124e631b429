"""The embedded store: one SQLite database (WAL, synchronous=FULL) in the data folder.

Write methods take the writer's connection and run inside the transaction the committer
opens (``scr.log.commit``); they never commit themselves. Read methods open their own
connection per thread, so readers never wait for the writer (WAL).

Exact dedup finds a key by its 64-bit hash of ``(tenant, event_id)`` in memory, kept durable
by an append-only log beside the database (``scr.store.keylog``): the commit path neither
queries for a new key nor inserts into a random-key index. The hash only finds the
candidate; equality is decided on the stored tenant and event id, and a true 64-bit
collision goes to ``event_keys_overflow`` keyed by the exact text, so dedup stays exact.
(``event_keys``, the index table of earlier versions, is no longer written; the log is
rebuilt from the ledger the first time a data folder is opened by this version.)
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scr.log.keys import event_key
from scr.native import event_keys
from scr.retention.tiers import ArchiveTier
from scr.store import holds, packs, segments, sessions, usage, vectors
from scr.store.keylog import event_rows, key_log
from scr.store.ledger_rows import NO_BOUND
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
    pack_seqs,
    session_key,
    unpack_seqs,
)
from scr.store.wal import use_wal

log = logging.getLogger("scr.store.sqlite")

DATABASE_FILE = "scr.db"
TILE_LEAVES = 256  # leaves in a full level-0 tile (scr.ledger.tiles.TILE_WIDTH; tiles import this module)
BUSY_TIMEOUT_MS = 10_000
# Page caches per connection: the writer's holds the hot index pages of the commit path;
# every process has reader connections (one per thread), and the WAL checkpoint and the
# ledger's trees a side connection each. All of them come out of the 1 GiB an instance may
# hold (bench/bench_memory.py); the writer's was 256 MiB and the readers' 64.
WRITE_CACHE_KIB = 65_536
READ_CACHE_KIB = 16_384
SIDE_CACHE_KIB = 8_192
# Keeps each IN (...) query under SQLite's bound-parameter limit.
MAX_QUERY_PARAMS = 900
WAL_CHECKPOINT_S = 1.0
SCRUB_TRIES, SCRUB_PAUSE_S = 50, 0.1  # an erasure's WAL truncation waits up to 5 s for readers
# A checkpoint round is repeated (at most CATCH_UP_ROUNDS times) until the writer has added no
# more than TRAILING_FRAMES pages during it; the writer copies those itself.
CATCH_UP_ROUNDS = 4
TRAILING_FRAMES = 64
# After a checkpoint or WAL restart, a WAL file longer than this is cut back to it.
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024

SCHEMA_VERSION = 1
SCHEMA = """
-- The ledger is packed (scr.store.packs); the row-an-event table of earlier versions is
-- packed and dropped when this version first opens the folder. Its random-key session index
-- of still earlier versions goes first (sessions.v2.db, scr.store.sessions, replaced it).
DROP INDEX IF EXISTS ledger_session;
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
-- Privacy (scr.privacy): the master key's check value and the wrapped hash key; the
-- subjects' wrapped data keys (NULL once erased); the sealed events of each subject.
CREATE TABLE IF NOT EXISTS privacy (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subject_keys (
    tenant TEXT NOT NULL, subject TEXT NOT NULL, generation INTEGER NOT NULL,
    wrapped BLOB, created_at TEXT NOT NULL, erased_at TEXT,
    PRIMARY KEY (tenant, subject, generation)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subject_entries (
    tenant TEXT NOT NULL, subject TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, subject, seq)
) WITHOUT ROWID;
"""


_DELIVERY_COLUMNS = (
    "destination, seq, tenant, event_id, session_key, webhook_id, status, attempts, "
    "next_attempt_ms, last_status, last_error, updated_at"
)


def _chunks(values: Sequence[Any], size: int = MAX_QUERY_PARAMS) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class SqliteWriter:
    """The one writer's connection (a ``Transaction``): WAL, synchronous=FULL per durable group.

    It hands out ledger sequence numbers from memory (the writer is the only appender while
    it holds the write lock), and checkpoints the WAL on a thread of its own.
    """

    def __init__(self, store: SqliteStore) -> None:
        self.conn = store._open(WRITE_CACHE_KIB)
        # what the writer deletes or overwrites is zeroed in the file (an erased subject's
        # wrapped data key, scr.privacy), not left in free pages
        self.conn.execute("PRAGMA secure_delete = ON")
        # WAL checkpoints run on their own thread, off the commit path (see _checkpoint_wal).
        self.conn.execute("PRAGMA wal_autocheckpoint = 0")
        self.conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
        usage.prepare_sqlite_writer(self.conn)
        self._store = store
        self._synchronous_full = True  # as the store opens the connection
        self._data_version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        self.next_seq = store.last_seq(self) + 1
        self._seq_at_begin = self._seq_at_savepoint = self.next_seq
        self._keys_at_savepoint = 0
        store.keys.open_writer(event_rows(self.conn), self.next_seq - 1)
        # dedup hashes of this transaction taken by another (tenant, event_id): see find_events
        self.taken: set[int] = set()
        # hashes find_events computed, for append to reuse (an event is looked up, then added)
        self.hashes: dict[EventKey, int] = {}
        # hashes of the keys filed by their text after a collision (a handful, if ever one)
        self.overflow: set[int] = {event_key(tenant, event_id) for tenant, event_id in self.conn.execute(
            "SELECT tenant, event_id FROM event_keys_overflow")}
        self._stopping = threading.Event()
        self._restart_due = threading.Event()
        self._wal_thread = threading.Thread(
            target=self._checkpoint_wal, name="scr-wal-checkpoint", daemon=True
        )
        self._wal_thread.start()

    def begin(self, durable: bool) -> None:
        self._finish_checkpoint()
        if durable != self._synchronous_full:
            self.conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._synchronous_full = durable
        self.conn.execute("BEGIN IMMEDIATE")
        self.taken.clear()
        self.hashes.clear()
        self._store.keys.discard()
        self._seq_at_begin = self.next_seq

    def _finish_checkpoint(self) -> None:
        """Let the WAL start over once the checkpoint thread has copied it back.

        SQLite rewinds the WAL only when a write begins with every frame already copied to
        the database, which never happens while writes keep coming: the WAL then grows
        without end, and every commit's fsync also flushes the file's new size. So once the
        checkpoint thread has caught up, the writer checkpoints the few frames added since
        (PASSIVE: it never waits) before it begins, and that write starts the WAL over.
        """
        if not self._restart_due.is_set():
            return
        self._restart_due.clear()
        try:
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as error:  # the next round tries again
            log.warning("WAL checkpoint failed: %s", error)

    def savepoint(self) -> None:
        self.conn.execute("SAVEPOINT work")
        self._seq_at_savepoint = self.next_seq
        self._keys_at_savepoint = self._store.keys.mark()

    def release(self) -> None:
        self.conn.execute("RELEASE work")

    def rollback_to_savepoint(self) -> None:
        self.conn.execute("ROLLBACK TO work")
        self.conn.execute("RELEASE work")
        self.next_seq = self._seq_at_savepoint
        self._store.keys.restore(self._keys_at_savepoint)

    def commit(self) -> None:
        self._store.keys.flush(self.next_seq - 1)  # while the write lock keeps the log in order
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.rollback()
            except sqlite3.Error as error:
                log.warning("rollback failed: %s", error)
        self.next_seq = self._seq_at_begin
        self._store.keys.discard()

    def changed_elsewhere(self) -> bool:
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return False
        self._data_version = version
        self.next_seq = self._store.last_seq(self) + 1
        self._store.keys.catch_up(event_rows(self.conn), self.next_seq - 1)
        return True

    def close(self) -> None:
        self._stopping.set()
        if self._wal_thread.is_alive():
            self._wal_thread.join()
        self.conn.close()

    def _checkpoint_wal(self) -> None:
        """Copy the WAL back into the database every WAL_CHECKPOINT_S, beside the writer.

        SQLite's automatic checkpoint runs inside the commit that crosses its threshold,
        adding the database file's writes and fsync to that request's latency. A PASSIVE
        checkpoint from another connection never blocks the writer.
        """
        conn = self._store._open(SIDE_CACHE_KIB)
        try:
            while not self._stopping.wait(WAL_CHECKPOINT_S):
                try:
                    if _catch_up(conn):
                        self._restart_due.set()
                except sqlite3.Error as error:  # busy or failing disk: the next round retries
                    log.warning("WAL checkpoint failed: %s", error)
        finally:
            conn.close()


def _catch_up(conn: sqlite3.Connection) -> bool:
    """Checkpoint the WAL, again while the writer adds to it, until it trails by a few frames.

    True when the writer may finish the job (``SqliteWriter._finish_checkpoint``): what it
    then copies and flushes is what it wrote during the last round, not a whole round's worth.
    """
    before = None
    for _ in range(CATCH_UP_ROUNDS):
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if busy or copied != frames or frames <= 0:
            return False
        if before is not None and frames - before <= TRAILING_FRAMES:
            return True
        before = frames
    return True


def _writer(tx: Transaction) -> SqliteWriter:
    if not isinstance(tx, SqliteWriter):
        raise TypeError(f"a SQLite store cannot write in {type(tx).__name__}")
    return tx


def _conn(tx: Transaction) -> sqlite3.Connection:
    return _writer(tx).conn


class SqliteStore:
    """The SQLite database of one data folder."""

    dedup_in_memory = True  # scr.store.keylog
    commits_in_order = True

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DATABASE_FILE
        self._local = threading.local()
        self.vectors = vectors.SqliteVectors(self._reader, _conn)
        self.tier = ArchiveTier(self.archive_segments)
        self.keys = key_log(self.data_dir)
        self._indexer: sessions.SessionIndexer | None = None
        with self._open(SIDE_CACHE_KIB) as conn:
            conn.executescript(SCHEMA)
            conn.executescript(packs.SCHEMA)
            conn.executescript(usage.SQLITE_SCHEMA)
            conn.executescript(vectors.SQLITE_SCHEMA)
            conn.executescript(segments.SQLITE_SCHEMA)
            conn.executescript(holds.SCHEMA)
            usage.add_sqlite_hours(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            moved = packs.migrate(conn)
            if moved:
                log.info("packed the %d ledger rows of an earlier version (scr.store.packs)", moved)

    def _open(self, cache_kib: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        use_wal(conn)
        # FULL: a committed group survives power loss, not only a process crash.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA cache_size = -{cache_kib}")
        usage.prepare_sqlite_reader(conn)
        return conn

    def writer(self) -> SqliteWriter:
        """The connection of the one writer thread."""
        return SqliteWriter(self)

    def connection(self) -> sqlite3.Connection:
        """A new connection to the database file (for the ledger's trees; close it)."""
        return self._open(SIDE_CACHE_KIB)

    def _reader(self) -> sqlite3.Connection:
        """This thread's reader connection, with the session index attached."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open(READ_CACHE_KIB)
            sessions.attach(conn, self.data_dir)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        if self._indexer is not None:
            self._indexer.stop()
            self._indexer = None
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ----- ledger (packed: scr.store.packs) -----------------------------------------------------

    def chain_heads(self, tx: Transaction) -> dict[str, tuple[int, bytes]]:
        """Per tenant: (number of entries, hash of the newest entry)."""
        return packs.chain_heads(_conn(tx))

    def lock_tenants(self, tx: Transaction, tenants: Iterable[str]) -> bool:
        return False  # the write transaction (BEGIN IMMEDIATE) holds the whole database

    def reserve_seqs(self, tx: Transaction, count: int) -> list[int]:
        writer = _writer(tx)
        first = writer.next_seq
        writer.next_seq = first + count
        return list(range(first, first + count))

    def last_seq(self, tx: Transaction | None = None) -> int:
        return packs.last_seq(self._reader() if tx is None else _conn(tx))

    def find_events(self, tx: Transaction, keys: Sequence[EventKey]) -> dict[EventKey, Hit]:
        """Dedup lookup by the 64-bit hash in memory (``scr.store.keylog``); equality is decided
        on the stored text, so only the keys the index knows read an entry.

        A hash held by another (tenant, event id) with the same hash is remembered for the
        transaction, so ``append`` files the new event under the exact-text overflow table.
        """
        writer = _writer(tx)
        hashed = event_keys([tenant for tenant, _ in keys], [event_id for _, event_id in keys])
        writer.hashes.update(zip(keys, hashed, strict=True))
        known: dict[int, list[tuple[EventKey, int]]] = {}
        for key, hash_, seq in zip(keys, hashed, self.keys.seqs(hashed), strict=True):
            if seq:
                known.setdefault(seq, []).append((key, hash_))
        found: dict[EventKey, Hit] = {}
        collided = [key for key, hash_ in zip(keys, hashed, strict=True) if hash_ in writer.overflow]
        conn = writer.conn
        for seq, held in packs.rows_at(conn, known).items():
            for key, hash_ in known[seq]:
                if key == (held.tenant, held.event_id):
                    found[key] = Hit(seq, held.digest or b"")
                elif held.event_id is not None and event_key(held.tenant, held.event_id) == hash_:
                    writer.taken.add(hash_)  # a true collision; else a rolled-back group's record
                    collided.append(key)
        for tenant, event_id in collided:
            filed = conn.execute("SELECT seq FROM event_keys_overflow WHERE tenant = ? AND event_id = ?",
                                 (tenant, event_id)).fetchone()
            row = None if filed is None else packs.rows_at(conn, [filed[0]]).get(filed[0])
            if row is not None:
                found[(tenant, event_id)] = Hit(row.seq, row.digest or b"")
        return found

    def append(self, tx: Transaction, entries: Sequence[NewEntry]) -> None:
        """The entries as packs (``scr.store.packs``), and their dedup keys."""
        if not entries:
            return
        writer = _writer(tx)
        hashes, taken = writer.hashes, writer.taken
        keys: list[int] = []
        seqs: list[int] = []
        seen: set[int] = set()
        overflow: list[tuple[str, str, int]] = []
        rows: list[packs.Row] = []
        for (seq, tenant, tenant_seq, kind, ts, event_id, _, digest, entry, chained), session in zip(
            entries, _session_keys(entries), strict=True
        ):
            rows.append((seq, tenant, tenant_seq, kind, ts, event_id, entry, chained, session, digest))
            if event_id is None:
                continue
            hashed = hashes.pop((tenant, event_id), None)
            if hashed is None:
                hashed = event_key(tenant, event_id)
            if hashed in taken or hashed in seen:  # a true 64-bit collision: exact text
                overflow.append((tenant, event_id, seq))
                writer.overflow.add(hashed)
            else:
                seen.add(hashed)
                keys.append(hashed)
                seqs.append(seq)
        conn = writer.conn
        packs.insert(conn, rows)
        self.keys.stage(keys, seqs)  # canon and key entries have no event id
        if overflow:
            conn.executemany("INSERT INTO event_keys_overflow VALUES (?, ?, ?)", overflow)

    def entries_after(self, after_seq: int, limit: int) -> list[StoredEntry]:
        """Ledger entries with seq > after_seq, in order."""
        return self.tier.fill(packs.entries_after(self._reader(), after_seq, limit))

    def entries_by_seq(self, seqs: Sequence[int]) -> dict[int, StoredEntry]:
        found = packs.rows_at(self._reader(), seqs)
        return self.tier.fill_by_seq({seq: _stored(row) for seq, row in found.items()})

    def tenant_entries(
        self, tenant: str, start: int, end: int, kinds: Sequence[str] | None = None
    ) -> list[StoredEntry]:
        """A tenant's entries with start <= tenant_seq < end, in order."""
        rows = packs.tenant_range(self._reader(), tenant, start, end)
        return self.tier.fill([_stored(row) for row in rows if kinds is None or row.kind in kinds])

    def tenant_entries_between(
        self, tenant: str, low_seq: int, high_seq: int, limit: int
    ) -> list[StoredEntry]:
        """A tenant's entries with low_seq < seq <= high_seq, oldest first."""
        conn = self._reader()
        found: list[StoredEntry] = []
        if limit <= 0:
            return found
        for row in packs.tenant_rows(conn, tenant, packs.chain_length(conn, tenant, low_seq)):
            if row.seq > high_seq:
                break
            found.append(_stored(row))
            if len(found) >= limit:
                break
        return self.tier.fill(found)

    def tenant_entries_after(self, tenant: str, after_seq: int) -> Iterator[StoredEntry]:
        """A tenant's entries with seq > after_seq, oldest first, read lazily in pages."""
        # seq and tenant_seq grow together: the tenant's position at after_seq
        start = packs.chain_length(self._reader(), tenant, after_seq) if after_seq > 0 else 0
        yield from tenant_pages(lambda low, high: self.tenant_entries(tenant, low, high), start, after_seq)

    def tenant_entries_of_kinds(
        self, tenant: str, kinds: Sequence[str], after_seq: int
    ) -> list[StoredEntry]:
        """A tenant's entries of these kinds (never SESSION_COMPLETION) after a seq, in order."""
        conn = self._reader()
        found = packs.rows_at(conn, packs.kind_seqs(conn, tenant, kinds, after_seq))
        return [_stored(found[seq]) for seq in sorted(found)]

    def tenants(self) -> list[str]:
        return packs.tenants(self._reader())

    def accepted_events(self, tenant: str) -> list[tuple[str, int]]:
        """(event id, seq) of every event the dedup index holds for a tenant.

        A key whose entry is gone cannot name its tenant (it is a hash), so it is reported
        to every tenant's audit: the index and the ledger disagree, whoever owned it. A record
        pointing at another tenant's entry, or at an entry of another key (a rolled-back
        group's), is not this tenant's.
        """
        conn = self._reader()
        records = sorted((seq, key) for key, seq in self.keys.records().items())
        events = {row.seq: row.event_id for row in packs.tenant_rows(conn, tenant, 0)
                  if row.event_id is not None}
        held = [(events[seq], seq) for seq, key in records
                if seq in events and event_key(tenant, events[seq]) == key]
        present = packs.present(conn, [seq for seq, _ in records if seq not in events])
        held += [(f"dedup key {key}", seq) for seq, key in records
                 if seq not in events and seq not in present]
        held += [(event_id, int(seq)) for event_id, seq in conn.execute(
            "SELECT event_id, seq FROM event_keys_overflow WHERE tenant = ?", (tenant,))]
        return held

    def find_event(self, tenant: str, event_id: str) -> StoredEntry | None:
        """The SESSION_COMPLETION entry of a tenant's event id, exactly: by the dedup index,
        then the collisions' table, then the entries past the key log's end (a writer's group
        whose records a crash lost, until it opens again)."""
        covered = self.keys.refresh()
        [seq] = self.keys.seqs([event_key(tenant, event_id)])
        conn = self._reader()
        filed = conn.execute("SELECT seq FROM event_keys_overflow WHERE tenant = ? AND event_id = ?",
                             (tenant, event_id)).fetchone()
        held = packs.rows_at(conn, [seq] if filed is None else [seq, filed[0]])
        for row in held.values():
            if row.tenant == tenant and row.event_id == event_id:
                return self._filled(row)
        for rows in packs.rows_after(conn, covered, NO_BOUND):
            for row in rows:
                if row.tenant == tenant and row.event_id == event_id:
                    return self._filled(row)
        return None

    def session_entries(self, tenant: str, session_id: str) -> list[StoredEntry]:
        """Entries of one session, by its lookup key; callers check the session id itself."""
        rows = self._session_rows(tenant, [session_key(tenant, session_id)], NO_BOUND)
        return self.tier.fill([_stored(row) for row in rows])

    def first_session_entries(
        self, tenant: str, session_ids: Sequence[str], before_seq: int
    ) -> list[StoredEntry]:
        """By 64-bit session key; callers check the session id itself (as for session_entries).

        Most sessions are new: the keys are looked up in the session runs and the packs'
        unindexed tail (``scr.store.sessions``), and only the seqs found there read entries.
        """
        keys = sorted({session_key(tenant, session_id) for session_id in session_ids})
        first: dict[int | None, packs.PackedRow] = {}
        for row in self._session_rows(tenant, keys, before_seq):
            if row.kind == "SESSION_COMPLETION":
                first.setdefault(row.session_key, row)
        return self.tier.fill([_stored(row) for row in first.values()])

    def _session_rows(self, tenant: str, keys: Sequence[int], before_seq: int) -> list[packs.PackedRow]:
        """The tenant's entries under these session keys below ``before_seq``, in seq order."""
        conn = self._reader()
        params = {"keys": json.dumps(keys), "before": before_seq}
        seqs = sessions.session_seqs(conn, lambda seqs: seqs, params)
        found = packs.rows_at(conn, [seq for (seq,) in seqs])
        return [found[seq] for seq in sorted(found) if found[seq].tenant == tenant]

    def wait_for_appends(self, timeout_s: float) -> bool:
        """One instance writes the embedded store: nothing to hear of; waits ``timeout_s``."""
        time.sleep(timeout_s)
        return False

    def index_sessions(self) -> Callable[[], None]:
        """Start the session indexer (``scr.store.sessions``) for the life of this store;
        call what it returns after each durable commit."""
        if self._indexer is None:
            self._indexer = sessions.SessionIndexer(lambda: self._open(SIDE_CACHE_KIB), self.data_dir)
            self._indexer.start()
        return self._indexer.wake

    def _filled(self, row: packs.PackedRow) -> StoredEntry | None:
        filled = self.tier.fill([_stored(row)])
        return filled[0] if filled else None

    def entry_time(self, seq: int) -> float | None:
        """When the entry at ``seq`` (or the next one) was committed, as a Unix time."""
        ts = packs.entry_time(self._reader(), seq)
        if ts is None:
            return None
        return datetime.strptime(ts, ENTRY_TIME_FORMAT).replace(tzinfo=UTC).timestamp()

    def seq_at_time(self, ts: str) -> int:
        """The last seq whose entry time is before ``ts`` (entry times grow with seq)."""
        return packs.seq_at_time(self._reader(), ts)

    # ----- keys -----------------------------------------------------------------------------

    def insert_key(
        self, tx: Transaction, key_hash: bytes, key_id: str, tenant: str, role: str, label: str,
        created_at: str,
    ) -> None:
        _conn(tx).execute(
            "INSERT INTO api_keys (key_hash, key_id, tenant, role, label, created_at) "
            "VALUES (?,?,?,?,?,?)",
            (key_hash, key_id, tenant, role, label, created_at),
        )

    def revoke_key(self, tx: Transaction, key_id: str, revoked_at: str) -> str | None:
        row = _conn(tx).execute(
            "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL "
            "RETURNING tenant",
            (revoked_at, key_id),
        ).fetchone()
        return None if row is None else str(row[0])

    def find_key(self, key_hash: bytes) -> KeyRecord | None:
        row = self._reader().execute(
            "SELECT key_id, tenant, role, label, created_at, revoked_at FROM api_keys "
            "WHERE key_hash = ?",
            (key_hash,),
        ).fetchone()
        return KeyRecord(*row) if row else None

    def insert_key_origins(self, tx: Transaction, key_id: str, origins: Iterable[str]) -> None:
        _conn(tx).executemany(
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

    def set_cursor(self, tx: Transaction, destination: str, seq: int) -> None:
        _conn(tx).execute(
            "INSERT INTO cursors VALUES (?, ?) ON CONFLICT (destination) DO UPDATE SET "
            "seq = MAX(seq, excluded.seq)",
            (destination, seq),
        )

    # ----- usage aggregates (scr.store.usage) ------------------------------------------------

    def add_usage(self, tx: Transaction, rows: Sequence[UsageRow], after_seq: int, seq: int,
                  durations: Sequence[DurationRow] = ()) -> bool:
        conn = _conn(tx)
        ensure, move = usage.cursor_statements("?")
        conn.execute(ensure, (USAGE_CURSOR,))
        if conn.execute(move, (seq, USAGE_CURSOR, after_seq)).rowcount != 1:
            return False
        conn.executemany(usage.MINUTES.upsert("sqlite"), usage.as_values(rows))
        for table, rolled in usage.rollup_values(rows):
            conn.executemany(table.upsert("sqlite"), rolled)
        conn.executemany(usage.durations_upsert("sqlite"), usage.durations_values(durations))
        return True

    def usage_sums(self, tenant: str | None, from_minute: int, to_minute: int, bucket_minutes: int,
                   keys: Sequence[str]) -> list[UsageSum]:
        table = usage.table_for(keys, from_minute, bucket_minutes)
        sql = usage.sums_query(table, keys, "?", "sqlite", tenant is not None)
        params = (from_minute, bucket_minutes, *([tenant] if tenant is not None else []),
                  from_minute, to_minute)
        rows = self._reader().execute(sql, params).fetchall()
        return [usage.as_sum(row, len(keys)) for row in rows]

    def usage_durations(self, tenant: str, from_minute: int, to_minute: int) -> list[tuple[str, int, int]]:
        rows = self._reader().execute(usage.durations_query("?"), (tenant, from_minute, to_minute))
        return [(user_id, int(bucket), int(sessions)) for user_id, bucket, sessions in rows]

    def destination_state(self, destination: str) -> tuple[str, str]:
        row = self._reader().execute(
            "SELECT state, reason FROM destination_state WHERE destination = ?", (destination,)
        ).fetchone()
        return (row[0], row[1]) if row else ("active", "")

    def set_destination_state(
        self, tx: Transaction, destination: str, state: str, reason: str, now: str
    ) -> None:
        _conn(tx).execute(
            "INSERT INTO destination_state VALUES (?,?,?,?) ON CONFLICT (destination) DO UPDATE "
            "SET state = excluded.state, reason = excluded.reason, changed_at = excluded.changed_at",
            (destination, state, reason, now),
        )

    def upsert_deliveries(self, tx: Transaction, rows: Iterable[DeliveryRow]) -> None:
        _conn(tx).executemany(
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

    def make_due(self, tx: Transaction, destination: str, now_ms: int) -> int:
        """Bring every open delivery of a destination forward to now (after re-enabling)."""
        cur = _conn(tx).execute(
            "UPDATE deliveries SET next_attempt_ms = ? WHERE destination = ? "
            "AND status IN ('pending', 'retrying')",
            (now_ms, destination),
        )
        return cur.rowcount

    def list_deliveries(
        self, tenant: str | None, destination: str | None, status: str | None, limit: int
    ) -> list[DeliveryRow]:
        where, params = delivery_filter(tenant, destination, status, "?")
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

    def insert_attempts(self, tx: Transaction, rows: Iterable[AttemptRow]) -> None:
        _conn(tx).executemany(
            "INSERT INTO attempts (destination, webhook_id, seqs, attempt, status, error, "
            "latency_ms, response_excerpt, ts) VALUES (?,?,?,?,?,?,?,?,?)",
            [(r.destination, r.webhook_id, pack_seqs(r.seqs), r.attempt, r.status, r.error,
              r.latency_ms, r.response_excerpt, r.ts) for r in rows],
        )

    def recent_attempts(self, destination: str | None, limit: int) -> list[AttemptRow]:
        where, params = ("WHERE destination = ?", (destination,)) if destination else ("", ())
        rows = self._reader().execute(
            "SELECT destination, webhook_id, seqs, attempt, status, error, latency_ms, "
            f"response_excerpt, ts FROM attempts {where} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [AttemptRow(d, w, unpack_seqs(s), a, st, e, lat, r, ts)
                for d, w, s, a, st, e, lat, r, ts in rows]


    # ----- privacy (scr.privacy) ------------------------------------------------------------

    def privacy_value(self, name: str, tx: Transaction | None = None) -> bytes | None:
        conn = _conn(tx) if tx is not None else self._reader()
        row = conn.execute("SELECT value FROM privacy WHERE name = ?", (name,)).fetchone()
        return bytes(row[0]) if row else None

    def set_privacy_values(self, values: dict[str, bytes]) -> None:
        """Record values not yet recorded (a value once written is kept), in a transaction
        of their own (at start-up, before the writer runs)."""
        conn = self._open(SIDE_CACHE_KIB)
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT OR IGNORE INTO privacy VALUES (?, ?)", list(values.items()))
        finally:
            conn.close()

    def rewrap_subject_keys(self, tx: Transaction, rewrap: Rewrap, values: dict[str, bytes]) -> int:
        conn = _conn(tx)
        conn.executemany("INSERT OR REPLACE INTO privacy VALUES (?, ?)", list(values.items()))
        rows = conn.execute("SELECT tenant, subject, generation, wrapped FROM subject_keys "
                            "WHERE wrapped IS NOT NULL").fetchall()
        conn.executemany(
            "UPDATE subject_keys SET wrapped = ? WHERE tenant = ? AND subject = ? AND generation = ?",
            [(rewrap(t, s, bytes(w)), t, s, g) for t, s, g, w in rows],
        )
        return len(rows)

    def subject_keys(
        self, tenant: str, subject: str, tx: Transaction | None = None
    ) -> dict[int, bytes | None]:
        conn = _conn(tx) if tx is not None else self._reader()
        rows = conn.execute(
            "SELECT generation, wrapped FROM subject_keys WHERE tenant = ? AND subject = ?",
            (tenant, subject),
        ).fetchall()
        return {g: None if w is None else bytes(w) for g, w in rows}

    def add_subject_key(self, tx: Transaction, tenant: str, subject: str, generation: int,
                        wrapped: bytes) -> None:
        _conn(tx).execute(
            "INSERT INTO subject_keys (tenant, subject, generation, wrapped, created_at) "
            "VALUES (?, ?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            (tenant, subject, generation, wrapped),
        )

    def erase_subject_keys(self, tx: Transaction, tenant: str, subject: str, erased_at: str) -> int:
        cursor = _conn(tx).execute(
            "UPDATE subject_keys SET wrapped = NULL, erased_at = ? "
            "WHERE tenant = ? AND subject = ? AND wrapped IS NOT NULL",
            (erased_at, tenant, subject),
        )
        return cursor.rowcount

    def scrub(self) -> bool:
        """Copy the WAL into the database and empty it, so that no older copy of an
        overwritten page (an erased key) stays in a file; False if readers kept it busy."""
        conn = self._open(SIDE_CACHE_KIB)
        try:
            for _ in range(SCRUB_TRIES):
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    return True
                time.sleep(SCRUB_PAUSE_S)
            return False
        finally:
            conn.close()

    def add_subject_entries(self, tx: Transaction, rows: Sequence[tuple[str, str, int]]) -> None:
        _conn(tx).executemany("INSERT INTO subject_entries VALUES (?, ?, ?)", rows)

    def subject_entries(self, tenant: str, subject: str) -> list[int]:
        rows = self._reader().execute(
            "SELECT seq FROM subject_entries WHERE tenant = ? AND subject = ? ORDER BY seq",
            (tenant, subject),
        ).fetchall()
        return [seq for (seq,) in rows]

    # ----- retention: archive segments (scr.retention) ----------------------------------------

    def archive_segments(self, tenant: str | None = None) -> list[SegmentRow]:
        return read_segments(self._reader(), tenant)

    def stub_limit(self, tenant: str) -> int:
        """The leaves of full tiles: a partial tile's leaf hashes are read from its entries."""
        row = self._reader().execute(
            "SELECT MAX(idx) FROM ledger_tiles WHERE tenant = ? AND level = 0", (tenant,)
        ).fetchone() if self._has_tiles() else None
        return 0 if row is None or row[0] is None else (int(row[0]) + 1) * TILE_LEAVES

    def _has_tiles(self) -> bool:
        return self._reader().execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ledger_tiles'"
        ).fetchone() is not None

    def add_segment(self, tx: Transaction, segment: SegmentRow) -> bool:
        return segments.add(_conn(tx), segment)

    def stub_entries(self, tx: Transaction, tenant: str, first_leaf: int, end: int) -> int:
        return segments.stub(_conn(tx), tenant, first_leaf, end, "X''")

    def purge_segment(self, tx: Transaction, tenant: str, first_leaf: int, end: int,
                      purged_at: str) -> int:
        conn = _conn(tx)

        def forget_dedup_keys(rows: list[tuple[int, str | None]]) -> None:
            keyed = [(event_key(tenant, event_id), seq) for seq, event_id in rows if event_id is not None]
            self.keys.stage([key for key, _ in keyed], [0] * len(keyed))  # 0: removed
            conn.executemany("DELETE FROM event_keys_overflow WHERE tenant = ? AND seq = ?",
                             [(tenant, seq) for _, seq in keyed])

        return segments.purge(conn, tenant, first_leaf, end, purged_at,
                              ("subject_entries", "session_vectors"), forget_dedup_keys)

    # ----- retention: legal holds (scr.store.holds) -----------------------------------------

    def add_legal_hold(self, tx: Transaction, hold: LegalHold) -> None:
        _conn(tx).execute(holds.insert("?"), holds.values(hold))

    def release_legal_hold(self, tx: Transaction, tenant: str, hold_id: str,
                           released_at: str) -> LegalHold | None:
        row = _conn(tx).execute(holds.release("?"), (released_at, tenant, hold_id)).fetchone()
        return None if row is None else holds.as_hold(row)

    def legal_holds(self, tenant: str | None, active: bool = True,
                    tx: Transaction | None = None) -> list[LegalHold]:
        sql, params = holds.select("?", tenant, active)
        conn = self._reader() if tx is None else _conn(tx)
        return [holds.as_hold(row) for row in conn.execute(sql, params).fetchall()]


def _session_keys(entries: Sequence[NewEntry]) -> list[int | None]:
    """Each entry's ``session_key`` (None without a session), hashed in one call: the keys of
    ``event_keys``, moved as ``session_key`` moves them."""
    sessions = [(e.tenant, e.session_id) for e in entries if e.session_id is not None]
    hashed = iter(event_keys([tenant for tenant, _ in sessions], [session for _, session in sessions]))
    return [-next(hashed) - 1 if e.session_id is not None else None for e in entries]


def read_segments(conn: sqlite3.Connection, tenant: str | None = None) -> list[SegmentRow]:
    """The archive segments of a tenant (every tenant: None) listed in the database."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'archive_segments'").fetchone() is None:
        return []  # a database written before retention existed, opened read-only
    sql, params = segments.select(tenant)
    return [segments.as_segment(row) for row in conn.execute(sql, params).fetchall()]


def _stored(row: packs.PackedRow) -> StoredEntry:
    return StoredEntry(row.seq, row.tenant, row.tenant_seq, row.kind, row.ts, row.event_id, row.entry,
                       row.hash)
