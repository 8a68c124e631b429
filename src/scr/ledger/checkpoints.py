"""Signed checkpoints: kept apart from the ledger, issued on a rhythm and on demand.

Every checkpoint ever issued is kept in ``checkpoints.db``, a SQLite file of its own beside the
ledger database: a ledger truncated or rolled back to an older copy is then caught against the
newest checkpoint, which it no longer matches. Only durable state is signed: heads reach the
``Checkpointer`` from the committer's commit hook (after fsync) or from a write the committer
has made durable. Before signing, the tree must hold the newest checkpoint's root at its size
(checked on the stored tree once per in-memory tree load; a head from the same load extends it
by construction): scr never signs a tree that does not extend what it signed before.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from scr.errors import Unavailable
from scr.ledger.upkeep import Head
from scr.log.checkpoint import Checkpoint, Signer, origin_for
from scr.log.commit import utc_now
from scr.log.nodes import MerkleTree
from scr.store.sql import PgSql, Sql
from scr.store.sqlite import BUSY_TIMEOUT_MS
from scr.store.wal import use_wal

log = logging.getLogger("scr.ledger")

CHECKPOINTS_FILE = "checkpoints.db"
KEY_FILE = "ledger-key.pem"
LIVENESS_POLL_S = 0.5  # how often the rhythm thread looks whether the writer still runs
IDLE_GRACE_S = 1.0  # after a tick, how long the writer has to offer its heads before they are read

SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    tenant TEXT NOT NULL,
    tree_size INTEGER NOT NULL,
    root_hash BLOB NOT NULL,
    note TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    PRIMARY KEY (tenant, tree_size)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signer (
    verifier_key TEXT PRIMARY KEY,
    first_used TEXT NOT NULL
) WITHOUT ROWID;
"""
_COLUMNS = "tenant, tree_size, root_hash, note, issued_at"
# pg_advisory_xact_lock key of checkpoint signing: the ASCII of "scrckpt".
CHECKPOINT_LOCK = 0x736372636B7074

PgConnection = psycopg.Connection[tuple[Any, ...]]


class LedgerDiverged(RuntimeError):
    """The ledger no longer extends the newest checkpoint: truncated, rolled back or rewritten."""


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """One issued checkpoint: the signed note and what it states."""

    tenant: str
    tree_size: int
    root_hash: bytes
    note: str
    issued_at: str


T = TypeVar("T")


class Checkpoints:
    """Every checkpoint issued, per tenant, by tree size, and the keys that signed them.

    The queries of both logs: ``CheckpointLog`` (a SQLite file beside the ledger) and
    ``PgCheckpointLog`` (tables of a PostgreSQL store, shared by a cluster's instances).
    """

    CHECKPOINTS, SIGNERS = "checkpoints", "signer"

    def _run(self, work: Callable[[Sql], T], transaction: bool = False) -> T:
        """Run ``work`` on the log's connection (in one transaction when asked)."""
        raise NotImplementedError

    def signing(self) -> contextlib.AbstractContextManager[Checkpoints]:
        """The log as its one signer at a time sees it: read the newest, then ``add_many``."""
        return contextlib.nullcontext(self)

    def close(self) -> None:
        """Close the log's connections."""

    def record_signer(self, verifier_key: str) -> None:
        """Remember the verifier key checkpoints are signed with (for offline verification)."""
        self._run(lambda conn: conn.execute(
            f"INSERT INTO {self.SIGNERS} VALUES (?, ?) ON CONFLICT DO NOTHING", (verifier_key, utc_now())
        ))

    def verifier_keys(self) -> list[str]:
        """Every verifier key this log's checkpoints were signed with, oldest first."""
        rows = self._run(lambda conn: conn.execute(
            f"SELECT verifier_key FROM {self.SIGNERS} ORDER BY first_used, verifier_key"
        ).fetchall())
        return [row[0] for row in rows]

    def add_many(self, checkpoints: list[StoredCheckpoint]) -> None:
        """Keep newly signed checkpoints, in one transaction, before anyone is given them."""
        if checkpoints:
            self._run(lambda conn: conn.executemany(
                f"INSERT INTO {self.CHECKPOINTS} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(c.tenant, c.tree_size, c.root_hash, c.note, c.issued_at) for c in checkpoints],
            ), transaction=True)

    def newest(self, tenant: str) -> StoredCheckpoint | None:
        """The tenant's checkpoint of the largest tree size."""
        row = self._run(lambda conn: conn.execute(
            f"SELECT {_COLUMNS} FROM {self.CHECKPOINTS} WHERE tenant = ? ORDER BY tree_size DESC LIMIT 1",
            (tenant,),
        ).fetchone())
        return _checkpoint(row) if row else None

    def since(self, tenant: str, tree_size: int, limit: int) -> list[StoredCheckpoint]:
        """The tenant's checkpoints of tree size ``tree_size`` or more, smallest first."""
        rows = self._run(lambda conn: conn.execute(
            f"SELECT {_COLUMNS} FROM {self.CHECKPOINTS} WHERE tenant = ? AND tree_size >= ? "
            "ORDER BY tree_size LIMIT ?",
            (tenant, tree_size, limit),
        ).fetchall())
        return [_checkpoint(row) for row in rows]

    def all(self) -> list[StoredCheckpoint]:
        """Every checkpoint, by tenant then tree size."""
        rows = self._run(lambda conn: conn.execute(
            f"SELECT {_COLUMNS} FROM {self.CHECKPOINTS} ORDER BY tenant, tree_size"
        ).fetchall())
        return [_checkpoint(row) for row in rows]

    def newest_sizes(self) -> dict[str, int]:
        """Every tenant's newest checkpointed tree size."""
        rows = self._run(lambda conn: conn.execute(
            f"SELECT tenant, MAX(tree_size) FROM {self.CHECKPOINTS} GROUP BY tenant"
        ).fetchall())
        return {tenant: int(size) for tenant, size in rows}


class CheckpointLog(Checkpoints):
    """The checkpoints file of a data folder. Its one signer is the writer process."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        if read_only:
            self._conn = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not read_only:
            use_wal(self._conn)
            # NORMAL (no fsync per commit, still atomic and crash-safe): a checkpoint only ever
            # covers entries already durable, and Ed25519 and the tree are deterministic, so a
            # checkpoint lost to power loss is re-issued byte for byte from the durable ledger.
            # An fsync per issue competed with the ledger's own for the disk (measured: -10%).
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._conn.close()

    def _run(self, work: Callable[[Sql], T], transaction: bool = False) -> T:
        with self._lock:
            if not transaction:
                return work(self._conn)
            self._conn.execute("BEGIN")
            try:
                result = work(self._conn)
                self._conn.execute("COMMIT")
                return result
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")


class PgCheckpointLog(Checkpoints):
    """The checkpoints of a PostgreSQL store (migration 11), shared by a cluster's instances.

    Any instance may sign a tenant's tree (its partition's owner on the rhythm, any instance
    on demand), so signing holds a transaction-scoped advisory lock from reading the newest
    checkpoint to storing the new ones: one signer at a time, and never two checkpoints of one
    size. A dead signer's lock ends with its connection.
    """

    CHECKPOINTS, SIGNERS = "ledger_checkpoints", "ledger_signers"

    def __init__(self, connect: Callable[[], PgConnection]) -> None:
        self._connect = connect
        self._conn: PgConnection | None = None
        self._lock = threading.Lock()
        self._signing_lock = threading.Lock()
        self._signing_conn: PgConnection | None = None

    def close(self) -> None:
        """Close the log's connections."""
        with self._lock, self._signing_lock:
            for conn in (self._conn, self._signing_conn):
                if conn is not None:
                    conn.close()
            self._conn = self._signing_conn = None

    def _run(self, work: Callable[[Sql], T], transaction: bool = False) -> T:
        with self._lock, _reachable():
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = self._connect()
            if not transaction:
                return work(PgSql(self._conn))
            with self._conn.transaction():
                return work(PgSql(self._conn))

    @contextlib.contextmanager
    def signing(self) -> Iterator[Checkpoints]:
        with self._signing_lock, _reachable():
            conn = self._signing_conn
            if conn is None or conn.closed or conn.broken:
                conn = self._signing_conn = self._connect()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHECKPOINT_LOCK,))
                yield _InTransaction(conn)


class _InTransaction(PgCheckpointLog):
    """The PostgreSQL log inside the signer's open transaction."""

    def __init__(self, conn: PgConnection) -> None:
        super().__init__(lambda: conn)
        self._tx_conn = conn

    def _run(self, work: Callable[[Sql], T], transaction: bool = False) -> T:
        return work(PgSql(self._tx_conn))


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    """PostgreSQL unreachable: a 503 for the API, a logged failure for the rhythm (it retries)."""
    try:
        yield
    except psycopg.OperationalError as error:
        raise Unavailable(f"the checkpoints cannot be read or written now: {error}") from None


def _checkpoint(row: tuple[str, int, bytes, str, str]) -> StoredCheckpoint:
    tenant, size, root, note, issued_at = row
    return StoredCheckpoint(tenant, int(size), bytes(root), note, issued_at)


TreeOf = Callable[[str], MerkleTree]
"""``tree_of(tenant)``: the tenant's tree as committed now."""


class Checkpointer:
    """Signs tenants' durable tree heads into the checkpoint log, on a rhythm and on demand.

    The commit hook reports each group's durable tenant sizes (``wanted``) and hands over the
    writer's heads of the tenants that are due (``offer``): ``every_entries`` unsigned entries,
    or any unsigned entry once ``every_s`` has passed. A background thread signs them, a batch
    per transaction. Heads the writer does not hold (an idle server, a tenant not in memory)
    are computed from the stored tree after a short grace. The thread follows the committer's
    writer thread (``start(writer)``): when the writer stops, it signs what is left and stops.
    """

    def __init__(
        self, log_: Checkpoints, signer: Signer, tree_of: TreeOf, every_entries: int, every_s: float,
        durable_sizes: dict[str, int],
    ) -> None:
        self.log = log_
        self.signer = signer
        self._tree_of = tree_of
        self._every_entries = every_entries
        self._every_s = every_s
        self._signed = log_.newest_sizes()
        self._durable = dict(durable_sizes)
        self._verified: dict[str, int] = {}  # tenant -> writer tree load its newest checkpoint extends
        self._offered: dict[str, Head] = {}
        self._timer_due = False
        self._refused: set[str] = set()
        self._condition = threading.Condition()
        self._issue_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.owns: Callable[[str], bool] = lambda tenant: True
        """Whether the rhythm signs a tenant (in a cluster: its partition is owned here)."""

    # ----- rhythm (the commit hook's side) ------------------------------------------------------

    def wanted(self, sizes: dict[str, int]) -> set[str]:
        """Record durable sizes (after a group's fsync); the tenants whose heads to ``offer``."""
        with self._condition:
            durable, signed = self._durable, self._signed
            for tenant, size in sizes.items():
                if size > durable.get(tenant, 0):
                    durable[tenant] = size
            due = {t for t, s in sizes.items() if s - signed.get(t, 0) >= self._every_entries}
            if self._timer_due:  # once per tick; what this group cannot offer is read after the grace
                due.update(t for t, s in durable.items() if s > signed.get(t, 0) and self.owns(t))
                self._timer_due = False
            return due

    def offer(self, heads: dict[str, Head]) -> None:
        """Durable heads to sign, from the writer's trees."""
        if heads:
            with self._condition:
                self._offered.update(heads)
                self._condition.notify()

    def start(self, writer: threading.Thread) -> None:
        """Run the rhythm in a thread for as long as ``writer`` (the committer's thread) runs."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, args=(writer,), name="scr-checkpoints", daemon=True
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the rhythm thread was started and still runs."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout_s: float | None = None) -> None:
        """Wait until the rhythm thread has signed what was left and stopped (after the writer).
        The thread is woken to see that the writer ended, rather than at its next look (every
        ``LIVENESS_POLL_S``: each stop of a server waited most of it)."""
        if self._thread is not None:
            with self._condition:
                self._condition.notify()
            self._thread.join(timeout_s)

    def _run(self, writer: threading.Thread) -> None:
        next_tick = time.monotonic() + self._every_s
        ticked_at: float | None = None
        grace_s = min(IDLE_GRACE_S, self._every_s)
        while True:
            with self._condition:
                if not self._offered and writer.is_alive():  # (join wakes a wait for a writer that ended)
                    until = next_tick if ticked_at is None else ticked_at + grace_s
                    self._condition.wait(min(LIVENESS_POLL_S, max(0.0, until - time.monotonic())))
                alive = writer.is_alive()
                now = time.monotonic()
                if now >= next_tick:
                    self._timer_due, next_tick = True, now + self._every_s
                    ticked_at = now if ticked_at is None else ticked_at
                offered, self._offered = self._offered, {}
                # After the grace (or at the end), heads the writer did not offer come from the store.
                late = ticked_at is not None and now - ticked_at >= grace_s
                leftover: dict[str, int] = {}
                if late or not alive:
                    signed = self._signed
                    leftover = {
                        t: s for t, s in self._durable.items()
                        if s > signed.get(t, 0) and t not in offered and self.owns(t)
                    }
                    self._timer_due, ticked_at = False, None
            if offered or leftover:
                self._sign_quietly([*offered.items(), *leftover.items()])
            if not alive:
                return

    def _sign_quietly(self, heads: list[tuple[str, Head | int]]) -> None:
        try:
            self._sign(heads)
        except Exception:  # the rhythm keeps going; the next round retries what is unsigned
            log.exception("could not issue checkpoints")

    # ----- issuing ------------------------------------------------------------------------------

    def issue(self, tenant: str, head: Head | int) -> StoredCheckpoint:
        """Sign one tenant's durable head now (or a durable size, rooted from the stored tree).

        Returns the newest checkpoint instead when it is as large; raises ``LedgerDiverged``
        when the tree no longer holds the newest checkpoint's root.
        """
        issued = self._sign([(tenant, head)], quietly=False)
        newest = issued.get(tenant) or self.log.newest(tenant)
        assert newest is not None
        return newest

    def _sign(self, heads: list[tuple[str, Head | int]], quietly: bool = True) -> dict[str, StoredCheckpoint]:
        with self._issue_lock, self.log.signing() as signing:
            batch: dict[str, StoredCheckpoint] = {}
            verified: dict[str, int] = {}
            for tenant, head in heads:
                try:
                    stored = self._checkpoint(signing, tenant, head)
                except LedgerDiverged as error:
                    if not quietly:
                        raise
                    if tenant not in self._refused:  # once, not at every round
                        log.error("not signing tenant %s: %s; run `scr ledger verify`", tenant, error)
                        self._refused.add(tenant)
                    continue
                self._refused.discard(tenant)
                if isinstance(head, Head):
                    verified[tenant] = head.load
                if stored is not None:
                    batch[tenant] = stored
            signing.add_many(list(batch.values()))
        with self._condition:
            for tenant, stored in batch.items():
                self._signed[tenant] = max(stored.tree_size, self._signed.get(tenant, 0))
            self._verified.update(verified)
        return batch

    def _checkpoint(self, log_: Checkpoints, tenant: str, head: Head | int) -> StoredCheckpoint | None:
        """The new checkpoint of a head, ``None`` if the newest one is as large; checks consistency."""
        newest = log_.newest(tenant)
        size = head.size if isinstance(head, Head) else head
        trusted = isinstance(head, Head) and self._verified.get(tenant) == head.load
        tree: MerkleTree | None = None
        if newest is not None and not trusted:
            tree = self._tree_of(tenant)
            if tree.size < newest.tree_size:
                raise LedgerDiverged(
                    f"the ledger holds {tree.size} entries but checkpoint {newest.tree_size} was issued: "
                    "it was truncated or rolled back"
                )
            if tree.root(newest.tree_size) != newest.root_hash:
                raise LedgerDiverged(
                    f"the ledger's first {newest.tree_size} entries no longer have the root of checkpoint "
                    f"{newest.tree_size}: they were rewritten or rolled back"
                )
        if newest is not None and size <= newest.tree_size:
            if isinstance(head, Head) and size == newest.tree_size and head.root != newest.root_hash:
                raise LedgerDiverged(f"the tree of {size} entries no longer has the checkpoint's root")
            return None
        root = head.root if isinstance(head, Head) else (tree or self._tree_of(tenant)).root(size)
        checkpoint = Checkpoint(origin_for(self.signer.name, tenant), size, root)
        return StoredCheckpoint(tenant, size, root, self.signer.sign(checkpoint), utc_now())


def load_signer(data_dir: Path, name: str, key_file: str | None = None) -> Signer:
    """The checkpoint signer: ``key_file``, else the data folder's ``ledger-key.pem`` (each
    created 0600 on first use)."""
    return Signer.load_or_create(Path(key_file) if key_file else data_dir / KEY_FILE, name)
