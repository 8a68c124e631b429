"""The verifiable ledger of one running scr: tree upkeep, checkpoints and proofs, wired together."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from scr.errors import BadRequest, NotFound, Unavailable
from scr.ledger.checkpoints import (
    CHECKPOINTS_FILE,
    Checkpointer,
    CheckpointLog,
    Checkpoints,
    LedgerDiverged,
    PgCheckpointLog,
    StoredCheckpoint,
    load_signer,
)
from scr.ledger.proofs import TreeReader
from scr.ledger.tiles import create_schema, open_database, tree_sizes
from scr.ledger.upkeep import Head, SizedKeeper, TreeKeeper
from scr.log.commit import Committed
from scr.log.merkle import ProofError
from scr.runtime import Runtime
from scr.store.postgres import PostgresStore, partition_of
from scr.store.protocol import Store, Transaction
from scr.store.records import StoredEntry
from scr.store.sql import PgSql, Sql, sql_of
from scr.store.sqlite import SqliteStore

log = logging.getLogger("scr.ledger")

MAX_ENTRIES_PER_CALL = 1000
CHECKPOINT_SIGNER_NAME = "scr checkpoints"
T = TypeVar("T")


class LedgerService:
    """Attaches tree upkeep to the committer and answers the ledger API's questions."""

    def __init__(self, runtime: Runtime) -> None:
        self.store = runtime.store
        self.committer = runtime.committer
        settings = runtime.config.ledger
        # PostgreSQL's writers commit side by side: tree sizes per tenant (SizedKeeper)
        self.keeper = SizedKeeper() if isinstance(self.store, PostgresStore) else TreeKeeper()
        sizes = _prepare_trees(self.store, self.keeper)
        self.signer = load_signer(runtime.data_dir, settings.key_name, settings.key_file)
        self.checkpoints, self.reader = _checkpoints_and_reader(self.store, Path(runtime.data_dir))
        self._record_signer()
        self.checkpointer = Checkpointer(
            self.checkpoints, self.signer, self.reader.tree,
            settings.checkpoint_every_entries, settings.checkpoint_every_s, sizes,
        )
        if runtime.bus is not None and runtime.bus.clustered:
            self._sign_owned_only(runtime)
        for tenant, signed in self.checkpoints.newest_sizes().items():
            if sizes.get(tenant, 0) < signed:
                log.error(
                    "tenant %s: the ledger holds %d entries but checkpoint %d was issued: it was "
                    "truncated or rolled back; run `scr ledger verify`", tenant, sizes.get(tenant, 0), signed,
                )
        self.committer.append_hooks.append(self._on_append)
        self.committer.commit_hooks.append(self._on_commit)
        self.committer.failure_hooks.append(self.keeper.forget)

    def _record_signer(self) -> None:
        """Record this instance's verifier key; warn when the store's checkpoints name others
        (a cluster whose instances hold different keys: each answers its own public key)."""
        mine = self.signer.verifier_key()
        others = [key for key in self.checkpoints.verifier_keys() if key != mine]
        self.checkpoints.record_signer(mine)
        if others and isinstance(self.store, PostgresStore):
            log.warning(
                "this instance signs checkpoints with %s, and the store's checkpoints were also "
                "signed with %s: give every instance of a cluster the same ledger.key_file "
                "(a rotated key is expected to show here too)", mine, ", ".join(others),
            )

    def _sign_owned_only(self, runtime: Runtime) -> None:
        """In a cluster the rhythm signs the tenants of the partitions this instance owns (any
        instance still signs on demand, one at a time: ``PgCheckpointLog.signing``)."""
        assert runtime.bus is not None
        owned = [frozenset[int]()]  # replaced whole after each ownership poll: the rhythm thread reads it
        partitions = runtime.config.cluster.partitions

        def on_owned(now: set[int]) -> None:
            owned[0] = frozenset(now)

        runtime.bus.on_owned.append(on_owned)
        self.checkpointer.owns = lambda tenant: partition_of(tenant, partitions) in owned[0]

    # ----- committer hooks (writer thread) ------------------------------------------------------

    def _on_append(self, tx: Transaction, committed: list[Committed]) -> None:
        if not self.checkpointer.running:
            self.checkpointer.start(threading.current_thread())
        self.keeper.append_hook(sql_of(tx), committed)

    def _on_commit(self, committed: list[Committed]) -> None:
        try:
            self._offer_heads(committed)
        except Exception:  # never let the rhythm break the writer: the timer signs later
            log.exception("could not offer checkpoint heads")

    def _offer_heads(self, committed: list[Committed]) -> None:
        sizes = {c.tenant: c.tenant_seq + 1 for c in committed}
        for tenant, size in self.keeper.caught_up.items():
            sizes[tenant] = max(size, sizes.get(tenant, 0))
        self.keeper.caught_up.clear()
        wanted = self.checkpointer.wanted(sizes)
        if wanted:  # the group is durable: the writer's trees are exactly what is on disk
            self.checkpointer.offer(self.keeper.held_heads(wanted))

    def _caught_up(self, tx: Transaction, tenant: str) -> Head:
        """Inside a write: the tenant's head with every committed entry in its tree."""
        self.committer.lock_tenants(tx, (tenant,))
        return self.keeper.catch_up(sql_of(tx), tenant)

    # ----- answers ------------------------------------------------------------------------------

    def verifier_key(self) -> str:
        """The public key this instance signs checkpoints with."""
        return self.signer.verifier_key()

    async def newest_checkpoint(self, tenant: str) -> StoredCheckpoint:
        """The tenant's newest checkpoint, issuing the first one if there is none yet."""
        await self._ensure_rhythm()
        newest = await _read(self.checkpoints.newest, tenant)
        return newest if newest is not None else await self.issue_now(tenant)

    async def issue_now(self, tenant: str) -> StoredCheckpoint:
        """Sign the tenant's tree as it is now (after a durable commit that brings it up to date)."""
        head = await self.committer.run(lambda tx: self._caught_up(tx, tenant))
        if head.size == 0:
            raise NotFound(f"tenant {tenant!r} has no ledger entries yet")
        try:
            return await asyncio.to_thread(self.checkpointer.issue, tenant, head)
        except LedgerDiverged as error:
            raise Unavailable(
                f"refusing to sign a checkpoint for {tenant!r}: {error}; run `scr ledger verify`"
            ) from None

    async def _ensure_rhythm(self) -> None:
        # The rhythm thread starts with the first group commit; an empty write makes one.
        if not self.checkpointer.running:
            await self.committer.run(lambda tx: None, durable=False)

    async def checkpoints_since(self, tenant: str, tree_size: int, limit: int) -> list[StoredCheckpoint]:
        """The tenant's checkpoints of at least ``tree_size`` entries, smallest first."""
        return await _read(self.checkpoints.since, tenant, tree_size, limit)

    async def entries(self, tenant: str, start: int, end: int) -> list[StoredEntry]:
        """Leaves ``[start, end)`` of the tenant's tree (at most 1,000; fewer past its end)."""
        end = min(end, start + MAX_ENTRIES_PER_CALL)

        def read() -> list[StoredEntry]:
            size = self.reader.size(tenant)
            return self.store.tenant_entries(tenant, start, min(end, size)) if start < size else []

        return await _read(read)

    async def entry_at(self, tenant: str, event_id: str | None, index: int | None) -> tuple[int, str | None]:
        """The (leaf index, event id) of an entry named by its event id or its index."""
        if event_id is not None:
            stored = await asyncio.to_thread(self.store.find_event, tenant, event_id)
            if stored is None:
                raise NotFound(f"no event {event_id!r}")
            return stored.tenant_seq, event_id
        assert index is not None
        rows = await asyncio.to_thread(self.store.tenant_entries, tenant, index, index + 1)
        if not rows:
            if await asyncio.to_thread(self._purged, tenant, index):
                return index, None  # its entry is gone; the tiles still prove its leaf hash
            raise NotFound(f"no ledger entry at index {index}")
        return index, rows[0].event_id

    def _purged(self, tenant: str, index: int) -> bool:
        return any(s.first_leaf <= index <= s.last_leaf and s.purged_at is not None
                   for s in self.store.archive_segments(tenant))

    async def inclusion_proof(self, tenant: str, index: int, tree_size: int) -> list[bytes]:
        """The inclusion proof of leaf ``index`` in the tenant's tree of ``tree_size`` leaves."""

        def prove() -> list[bytes]:
            tree = self.reader.tree(tenant)
            _check_size("tree_size", tree_size, tree.size)
            if index >= tree_size:
                raise BadRequest(
                    f"entry {index} is not in the tree of size {tree_size}; ask for a larger tree_size"
                )
            return tree.inclusion_proof(index, tree_size)

        return await _read(_proof, prove)

    async def consistency_proof(self, tenant: str, first: int, second: int) -> list[bytes]:
        """The proof that the tenant's tree of ``first`` leaves is a prefix of that of ``second``."""

        def prove() -> list[bytes]:
            tree = self.reader.tree(tenant)
            _check_size("second", second, tree.size)
            if first > second:
                raise BadRequest(f"first ({first}) must not be larger than second ({second})")
            return tree.consistency_proof(first, second)

        return await _read(_proof, prove)


async def _read(read: Callable[..., T], *args: Any) -> T:
    """``read(*args)`` on a thread; a PostgreSQL store out of reach is a ``503``."""
    try:
        return await asyncio.to_thread(read, *args)
    except psycopg.OperationalError as error:
        raise Unavailable(f"the ledger cannot be read now: {error}") from None


def _check_size(name: str, size: int, log_size: int) -> None:
    if size > log_size:
        raise BadRequest(f"{name} {size} is beyond the log (its tree has {log_size} entries)")


def _proof(prove: Callable[[], list[bytes]]) -> list[bytes]:
    try:
        return prove()
    except ProofError as error:
        raise BadRequest(str(error)) from None


def _checkpoints_and_reader(store: Store, data_dir: Path) -> tuple[Checkpoints, TreeReader]:
    """Where the checkpoints live and how the trees are read: beside a SQLite ledger (the
    checkpoints in a file of their own), or in the PostgreSQL store every instance shares."""
    if isinstance(store, SqliteStore):
        database = store.path
        return CheckpointLog(data_dir / CHECKPOINTS_FILE), TreeReader(lambda: open_database(database))
    if isinstance(store, PostgresStore):
        signer = f"{CHECKPOINT_SIGNER_NAME} {os.getpid()}"  # which process signs, in pg_stat_activity
        reader = TreeReader(lambda: PgSql(store.connect()), _open)
        return PgCheckpointLog(lambda: store.connect(signer)), reader
    raise TypeError(f"the ledger's trees cannot be kept in {store!r}")


def _open(conn: Sql) -> bool:
    return isinstance(conn, PgSql) and not (conn.conn.closed or conn.conn.broken)


def _prepare_trees(store: Store, keeper: TreeKeeper) -> dict[str, int]:
    """Create the tile tables (SQLite: PostgreSQL's come with its migrations) and hash in any
    entries the trees lack; every tenant's tree size.

    Done before the committer starts, so a backlog (a ledger from before the trees existed, or
    entries appended by another process) never stalls the first group commit. It holds the
    store's write lock (PostgreSQL: each partition's in turn), so instances starting together
    take turns.
    """
    if isinstance(store, SqliteStore):
        conn = open_database(store.path)
        try:
            create_schema(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                keeper.append_hook(conn, [])
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            keeper.forget()  # the writer reloads on its own connection
            return tree_sizes(conn)
        finally:
            conn.close()
    if not isinstance(store, PostgresStore) or not isinstance(keeper, SizedKeeper):
        raise TypeError(f"the ledger's trees cannot be kept in {store!r} by {type(keeper).__name__}")
    tx = store.writer()
    try:
        tx.begin(durable=True)
        counts = {tenant: count for tenant, (count, _) in store.chain_heads(tx).items()}
        tx.commit()
        # one partition at a time, each under its lock alone: holding several, it could wait
        # for a writer that waits for it (another instance's group, locking in its own order)
        by_partition: dict[int, dict[str, int]] = {}
        for tenant, count in counts.items():
            by_partition.setdefault(partition_of(tenant, store.partitions), {})[tenant] = count
        for partition, tenants in sorted(by_partition.items()):
            tx.begin(durable=True)
            tx.lock_partitions([partition])
            keeper.catch_up_all(sql_of(tx), tenants)
            tx.commit()
        keeper.forget()
        return tree_sizes(sql_of(tx))
    except BaseException:
        tx.rollback()
        raise
    finally:
        tx.close()
