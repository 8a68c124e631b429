"""Signed checkpoints: kept apart from the ledger, issued on a rhythm and on demand.

Every checkpoint ever issued is kept in ``checkpoints.db``, a SQLite file of its own beside the
ledger database: a ledger truncated or rolled back to an older copy is then caught against the
newest checkpoint, which it no longer matches. Only durable state is signed: sizes reach the
``Checkpointer`` from the committer's commit hook (after fsync) or from a write the committer
has made durable, and before signing, the tree must still hold the newest checkpoint's root at
its size: scr never signs a tree that does not extend what it signed before.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scr.log.checkpoint import Checkpoint, Signer, origin_for
from scr.log.commit import utc_now
from scr.log.nodes import MerkleTree

log = logging.getLogger("scr.ledger")

CHECKPOINTS_FILE = "checkpoints.db"
KEY_FILE = "ledger-key.pem"
LIVENESS_POLL_S = 0.5  # how often the rhythm thread looks whether the writer still runs
BUSY_TIMEOUT_MS = 10_000

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


class CheckpointLog:
    """The checkpoints file: every checkpoint issued, per tenant, by tree size."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        if read_only:
            self._conn = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a checkpoint handed out must survive power loss like the entries it covers.
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.executescript(SCHEMA)
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._conn.close()

    def record_signer(self, verifier_key: str) -> None:
        """Remember the verifier key checkpoints are signed with (for offline verification)."""
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO signer VALUES (?, ?)", (verifier_key, utc_now())
            )

    def verifier_keys(self) -> list[str]:
        """Every verifier key this log's checkpoints were signed with, oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT verifier_key FROM signer ORDER BY first_used").fetchall()
        return [row[0] for row in rows]

    def add(self, checkpoint: StoredCheckpoint) -> None:
        """Keep a newly signed checkpoint (durably, before anyone is given it)."""
        with self._lock:
            self._conn.execute(
                f"INSERT OR IGNORE INTO checkpoints ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                (checkpoint.tenant, checkpoint.tree_size, checkpoint.root_hash, checkpoint.note,
                 checkpoint.issued_at),
            )

    def newest(self, tenant: str) -> StoredCheckpoint | None:
        """The tenant's checkpoint of the largest tree size."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM checkpoints WHERE tenant = ? ORDER BY tree_size DESC LIMIT 1",
                (tenant,),
            ).fetchone()
        return _checkpoint(row) if row else None

    def since(self, tenant: str, tree_size: int, limit: int) -> list[StoredCheckpoint]:
        """The tenant's checkpoints of tree size ``tree_size`` or more, smallest first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM checkpoints WHERE tenant = ? AND tree_size >= ? "
                "ORDER BY tree_size LIMIT ?",
                (tenant, tree_size, limit),
            ).fetchall()
        return [_checkpoint(row) for row in rows]

    def all(self) -> list[StoredCheckpoint]:
        """Every checkpoint, by tenant then tree size."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM checkpoints ORDER BY tenant, tree_size"
            ).fetchall()
        return [_checkpoint(row) for row in rows]

    def newest_sizes(self) -> dict[str, int]:
        """Every tenant's newest checkpointed tree size."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT tenant, MAX(tree_size) FROM checkpoints GROUP BY tenant"
            ).fetchall()
        return {tenant: int(size) for tenant, size in rows}


def _checkpoint(row: tuple[str, int, bytes, str, str]) -> StoredCheckpoint:
    tenant, size, root, note, issued_at = row
    return StoredCheckpoint(tenant, int(size), bytes(root), note, issued_at)


TreeOf = Callable[[str], MerkleTree]
"""``tree_of(tenant)``: the tenant's tree as committed now."""


class Checkpointer:
    """Signs tenants' durable tree heads into the checkpoint log, on a rhythm and on demand.

    ``note_durable`` (from the commit hook) tells it how far each tenant's tree is durable; a
    background thread issues a checkpoint once a tenant has ``every_entries`` unsigned entries,
    and every ``every_s`` seconds for any tenant with unsigned entries. The thread follows the
    committer's writer thread (``start(writer)``): when the writer stops, it signs what is
    left and stops too.
    """

    def __init__(
        self, log_: CheckpointLog, signer: Signer, tree_of: TreeOf, every_entries: int, every_s: float,
        durable_sizes: dict[str, int],
    ) -> None:
        self.log = log_
        self.signer = signer
        self._tree_of = tree_of
        self._every_entries = every_entries
        self._every_s = every_s
        self._signed = log_.newest_sizes()
        self._durable = dict(durable_sizes)
        self._due = False
        self._refused: set[str] = set()
        self._condition = threading.Condition()
        self._issue_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ----- rhythm -------------------------------------------------------------------------------

    def note_durable(self, sizes: dict[str, int]) -> None:
        """Tenants' tree sizes that are now durable (called after the group's fsync)."""
        with self._condition:
            for tenant, size in sizes.items():
                if size > self._durable.get(tenant, 0):
                    self._durable[tenant] = size
                if size - self._signed.get(tenant, 0) >= self._every_entries:
                    self._due = True
            if self._due:
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

    def _run(self, writer: threading.Thread) -> None:
        next_tick = time.monotonic() + self._every_s
        while True:
            with self._condition:
                if not self._due:
                    wait_s = min(LIVENESS_POLL_S, max(0.0, next_tick - time.monotonic()))
                    self._condition.wait(wait_s)
                alive = writer.is_alive()
                timer = not alive or time.monotonic() >= next_tick
                due = {
                    tenant: size
                    for tenant, size in self._durable.items()
                    if size > self._signed.get(tenant, 0)
                    and (timer or size - self._signed.get(tenant, 0) >= self._every_entries)
                }
                self._due = False
            if timer:
                next_tick = time.monotonic() + self._every_s
            for tenant, size in due.items():
                self._issue_quietly(tenant, size)
            if not alive:
                return

    def _issue_quietly(self, tenant: str, size: int) -> None:
        try:
            self.issue(tenant, size)
            self._refused.discard(tenant)
        except LedgerDiverged as error:
            if tenant not in self._refused:  # once, not every tick
                log.error("not signing tenant %s: %s", tenant, error)
                self._refused.add(tenant)
        except Exception:
            log.exception("could not issue a checkpoint for tenant %s", tenant)

    # ----- issuing ------------------------------------------------------------------------------

    def issue(self, tenant: str, size: int) -> StoredCheckpoint:
        """Sign the tenant's tree at ``size`` (which must be durable) and keep the checkpoint.

        Returns the newest checkpoint instead when one of that size or larger exists; raises
        ``LedgerDiverged`` when the tree no longer holds the newest checkpoint's root.
        """
        with self._issue_lock:
            newest = self.log.newest(tenant)
            tree = self._tree_of(tenant)
            if newest is not None:
                if tree.size < newest.tree_size:
                    raise LedgerDiverged(
                        f"the ledger holds {tree.size} entries but checkpoint {newest.tree_size} "
                        f"was issued: it was truncated or rolled back"
                    )
                if tree.root(newest.tree_size) != newest.root_hash:
                    raise LedgerDiverged(
                        f"the ledger's first {newest.tree_size} entries no longer have the root "
                        f"of checkpoint {newest.tree_size}: they were rewritten or rolled back"
                    )
                if size <= newest.tree_size:
                    return newest
            checkpoint = Checkpoint(origin_for(self.signer.name, tenant), size, tree.root(size))
            stored = StoredCheckpoint(
                tenant, size, checkpoint.root_hash, self.signer.sign(checkpoint), utc_now()
            )
            self.log.add(stored)
        with self._condition:
            self._signed[tenant] = max(size, self._signed.get(tenant, 0))
        return stored


def load_signer(data_dir: Path, name: str) -> Signer:
    """The data folder's checkpoint signer (``ledger-key.pem``, created 0600 on first use)."""
    return Signer.load_or_create(data_dir / KEY_FILE, name)
