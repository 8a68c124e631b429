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

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scr.ledger.upkeep import Head
from scr.log.checkpoint import Checkpoint, Signer, origin_for
from scr.log.commit import utc_now
from scr.log.nodes import MerkleTree
from scr.store.sqlite import BUSY_TIMEOUT_MS

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
            # NORMAL (no fsync per commit, still atomic and crash-safe): a checkpoint only ever
            # covers entries already durable, and Ed25519 and the tree are deterministic, so a
            # checkpoint lost to power loss is re-issued byte for byte from the durable ledger.
            # An fsync per issue competed with the ledger's own for the disk (measured: -10%).
            self._conn.execute("PRAGMA synchronous = NORMAL")
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

    def add_many(self, checkpoints: list[StoredCheckpoint]) -> None:
        """Keep newly signed checkpoints, in one transaction, before anyone is given them."""
        if not checkpoints:
            return
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(
                    f"INSERT OR IGNORE INTO checkpoints ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                    [(c.tenant, c.tree_size, c.root_hash, c.note, c.issued_at) for c in checkpoints],
                )
                self._conn.execute("COMMIT")
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")

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

    The commit hook reports each group's durable tenant sizes (``wanted``) and hands over the
    writer's heads of the tenants that are due (``offer``): ``every_entries`` unsigned entries,
    or any unsigned entry once ``every_s`` has passed. A background thread signs them, a batch
    per transaction. Heads the writer does not hold (an idle server, a tenant not in memory)
    are computed from the stored tree after a short grace. The thread follows the committer's
    writer thread (``start(writer)``): when the writer stops, it signs what is left and stops.
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
        self._verified: dict[str, int] = {}  # tenant -> writer tree load its newest checkpoint extends
        self._offered: dict[str, Head] = {}
        self._timer_due = False
        self._refused: set[str] = set()
        self._condition = threading.Condition()
        self._issue_lock = threading.Lock()
        self._thread: threading.Thread | None = None

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
                due.update(t for t, s in durable.items() if s > signed.get(t, 0))
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
        """Wait until the rhythm thread has signed what was left and stopped (after the writer)."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self, writer: threading.Thread) -> None:
        next_tick = time.monotonic() + self._every_s
        ticked_at: float | None = None
        grace_s = min(IDLE_GRACE_S, self._every_s)
        while True:
            with self._condition:
                if not self._offered:
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
                        t: s for t, s in self._durable.items() if s > signed.get(t, 0) and t not in offered
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
        with self._issue_lock:
            batch: dict[str, StoredCheckpoint] = {}
            verified: dict[str, int] = {}
            for tenant, head in heads:
                try:
                    stored = self._checkpoint(tenant, head)
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
            self.log.add_many(list(batch.values()))
        with self._condition:
            for tenant, stored in batch.items():
                self._signed[tenant] = max(stored.tree_size, self._signed.get(tenant, 0))
            self._verified.update(verified)
        return batch

    def _checkpoint(self, tenant: str, head: Head | int) -> StoredCheckpoint | None:
        """The new checkpoint of a head, ``None`` if the newest one is as large; checks consistency."""
        newest = self.log.newest(tenant)
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


def load_signer(data_dir: Path, name: str) -> Signer:
    """The data folder's checkpoint signer (``ledger-key.pem``, created 0600 on first use)."""
    return Signer.load_or_create(data_dir / KEY_FILE, name)
