"""Tree upkeep: every tenant's Merkle tree follows the ledger inside the committing transaction.

``TreeKeeper.append_hook`` is a committer append hook: after a group's writes it hashes each
new entry's stored bytes into its tenant's tree (leaf index = the entry's per-tenant position).
Whatever the stored tree needs is written in the same transaction (a leaf tile that filled, the
upper tiles it changed, ``covered_seq``), so the ledger and its trees are always committed
together; the leaves of a partial tile are read back from the entries (``scr.ledger.tiles``).

The trees in memory are a cache of the store, true as of the keeper's last committed group.
A group that failed (the transaction rolled back, taking the tile rows with it) makes the
keeper ``forget`` them all (the committer's failure hook). ``ledger_tree_state.covered_seq``
names the last ledger entry the stored trees include and is written with them; at every call
the keeper compares it with its own. When another writer moved it (another instance of a
cluster on PostgreSQL, whose keeper wrote its own tenants' tiles), only the trees of the
tenants that writer appended to are reloaded. Entries appended by a process without a keeper
(``scr keys create`` writes with its own committer, without hooks) are found as a gap: their
sequence numbers lie between ``covered_seq`` and the group's first entry, and are caught up
before the group's own.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from scr.ledger.tiles import (
    TILE_MASK,
    TILE_WIDTH,
    TileWriter,
    covered_seq,
    store_tree_sizes,
    stored_tree_sizes,
    tree_size,
    write_rows,
)
from scr.log.commit import Committed
from scr.log.nodes import MerkleTree
from scr.native import leaf_hashes
from scr.store import ledger_rows
from scr.store.sql import Sql

CATCH_UP_ROWS = 50_000  # entries hashed per step while catching up (bounds memory)
TREES_IN_MEMORY = 10_000  # tenants whose right edge is kept; others are reloaded when they write
# Entries appended elsewhere past which the keeper drops every tree instead of asking which
# tenants they belong to (a long scan of the ledger for an instance that was idle).
MOVED_ELSEWHERE_SCAN = 100_000

class Appended(Protocol):
    """What the keeper reads of an appended entry (a ``Committed``, or a ``LedgerRow`` another
    process wrote, read back)."""

    @property
    def tenant(self) -> str: ...
    @property
    def tenant_seq(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def stored(self) -> bytes: ...


class LedgerMismatch(RuntimeError):
    """The ledger's entries do not follow the stored tree (rows deleted or moved): refuse to extend."""


_loads = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Head:
    """A tenant's tree head as the writer holds it: size, root, and which load of the tree.

    Two heads with the same ``load`` come from one in-memory tree that only ever appended
    committed entries, so the later one extends the earlier one by construction.
    """

    size: int
    root: bytes
    load: int


class _TenantTree:
    """One tenant's tree on the writer side, with leaves not yet appended to it.

    Leaf hashes wait in ``pending`` until they would fill a leaf tile (the only moment a tile
    row must be written: the partial edge is read back from the entries) or a head is asked
    for. A tenant gaining a few entries per group so costs a list append per entry, not a
    tree append per group.
    """

    __slots__ = ("load", "pending", "tree", "writer")

    def __init__(self, conn: Sql, tenant: str, size: int) -> None:
        self.writer = TileWriter(conn, tenant, size)
        self.tree = MerkleTree(self.writer)
        self.pending: list[bytes] = []
        self.load = next(_loads)

    @property
    def size(self) -> int:
        """Entries taken, appended to the tree or pending."""
        return self.tree.size + len(self.pending)

    def settle(self) -> list[tuple[str, int, int, bytes]]:
        """Append the pending leaves to the tree; the tile rows that makes due."""
        if self.pending:
            self.tree.extend(self.pending)
            self.pending = []
        return self.writer.rows()

    def head(self) -> Head:
        """The head with every taken leaf in the tree."""
        if self.pending:
            raise RuntimeError("settle the tree before asking for its head")
        return Head(self.tree.size, self.tree.root(), self.load)


class TreeKeeper:
    """The writer side of the per-tenant trees. Used only on the committer's writer thread."""

    def __init__(self) -> None:
        self._trees: dict[str, _TenantTree] = {}
        self._covered = -1  # unknown: read from the store at the next call
        # ``covered_seq`` when the open transaction began, once a write in it caught up.
        self._floor: int | None = None
        self.caught_up: dict[str, int] = {}
        """Tenants whose trees took entries written by another process, with the new sizes."""

    def append_hook(self, conn: Sql, committed: list[Committed]) -> None:
        """Add a group's new entries (and any others not yet in the trees) to the trees."""
        with self._forgetting():
            self._sync(conn)
            floor, self._floor = self._floor, None
            fresh: Sequence[Committed] = committed
            if committed and committed[0].seq <= self._covered:
                if floor is None or committed[0].seq <= floor:
                    raise LedgerMismatch(
                        f"ledger seq {committed[0].seq} is being appended again, but the trees already "
                        f"hold entries up to seq {self._covered}: entries were removed; run "
                        "`scr ledger verify`"
                    )
                # A write earlier in this group caught up (``catch_up``) and took some already.
                fresh = [c for c in committed if c.seq > self._covered]
            if not fresh:
                self._catch_up(conn, None)
                return
            if fresh[0].seq != self._covered + 1:
                self._catch_up(conn, fresh[0].seq)
            self._add(conn, fresh)

    def catch_up(self, conn: Sql, tenant: str) -> Head:
        """Inside a write: take every committed entry into the trees; ``tenant``'s head."""
        with self._forgetting():
            self._sync(conn)
            if self._floor is None:
                self._floor = self._covered
            self._catch_up(conn, None)
            return self.head(conn, tenant)

    @contextlib.contextmanager
    def _forgetting(self) -> Iterator[None]:
        """A failure inside loses the transaction: reload everything from the store next time."""
        try:
            yield
        except BaseException:
            self.forget()
            raise

    def head(self, conn: Sql, tenant: str) -> Head:
        """The tenant's head as of the open transaction (writer thread only)."""
        kept = self._tree(conn, tenant)
        write_rows(conn, kept.settle())
        return kept.head()

    def held_heads(self, tenants: Iterable[str]) -> dict[str, Head]:
        """Heads of those tenants whose trees are in memory (writer thread, after a commit).

        Settling here writes nothing: leaves that fill a tile are settled in their own
        transaction, so the pending ones never do, and the stored tiles match the settled tree.
        """
        heads = {}
        for tenant in tenants:
            kept = self._trees.get(tenant)
            if kept is not None and (kept.tree.size & TILE_MASK) + len(kept.pending) < TILE_WIDTH:
                kept.settle()
                heads[tenant] = kept.head()
        return heads

    def forget(self) -> None:
        """Drop the cached trees; the next call reloads them from the store."""
        self._trees.clear()
        self._covered = -1
        self._floor = None
        self.caught_up.clear()

    def _sync(self, conn: Sql) -> None:
        stored = covered_seq(conn)
        if stored == self._covered:
            return
        if 0 <= self._covered < stored <= self._covered + MOVED_ELSEWHERE_SCAN:
            # Another writer appended (and hashed) entries since this keeper's last commit.
            for tenant in ledger_rows.tenants_between(conn, self._covered, stored):
                self._trees.pop(tenant, None)
        else:
            self._trees.clear()
        self.caught_up.clear()
        self._covered = stored
        self._floor = None

    def _tree(self, conn: Sql, tenant: str) -> _TenantTree:
        kept = self._trees.get(tenant)
        if kept is None:
            kept = self._trees[tenant] = _TenantTree(conn, tenant, tree_size(conn, tenant, self._covered))
        return kept

    def _catch_up(self, conn: Sql, before: int | None) -> None:
        """Take the entries after ``covered_seq`` (and before ``before``) into the trees."""
        for rows in ledger_rows.entries_after(conn, self._covered, before, CATCH_UP_ROWS):
            sizes = self._add(conn, rows)
            self.caught_up.update(sizes)

    def _add(self, conn: Sql, entries: Sequence[Appended]) -> dict[str, int]:
        """Hash entries (in ledger order) into their tenants' trees, write the new tiles and
        move ``covered_seq`` past them."""
        sizes = self._take(conn, entries)
        last_seq = entries[-1].seq if entries else self._covered
        if last_seq != self._covered:
            conn.execute("UPDATE ledger_tree_state SET covered_seq = ? WHERE id = 1", (last_seq,))
            self._covered = last_seq
        return sizes

    def _take(self, conn: Sql, entries: Sequence[Appended]) -> dict[str, int]:
        """Hash entries (each tenant's in order) into their tenants' trees and write the new
        tiles; each tenant's new size."""
        by_tenant: dict[str, list[bytes]] = {}
        trees: dict[str, _TenantTree] = {}
        next_index: dict[str, int] = {}
        for entry in entries:
            tenant, tenant_seq = entry.tenant, entry.tenant_seq
            if tenant not in by_tenant:
                by_tenant[tenant] = []
                kept = trees[tenant] = self._tree(conn, tenant)
                expected = kept.size
            else:
                expected = next_index[tenant]
            if tenant_seq != expected:
                raise LedgerMismatch(
                    f"ledger entry seq {entry.seq} is index {tenant_seq} of tenant {tenant!r}, but its "
                    f"tree expects index {expected}: entries were removed or moved; run "
                    f"`scr ledger verify`"
                )
            next_index[tenant] = expected + 1
        # every leaf of the batch in one call (native when built), then to its tenant's tree
        for entry, leaf in zip(entries, leaf_hashes([entry.stored for entry in entries]), strict=True):
            by_tenant[entry.tenant].append(leaf)
        sizes: dict[str, int] = {}
        rows = []
        for tenant, hashes in by_tenant.items():
            kept = trees[tenant]
            kept.pending += hashes
            if (kept.tree.size & TILE_MASK) + len(kept.pending) >= TILE_WIDTH:
                rows += kept.settle()  # a leaf tile fills: it must be written now
            sizes[tenant] = next_index[tenant]
        write_rows(conn, rows)
        if len(self._trees) > TREES_IN_MEMORY:  # only now, with every tree's rows written
            self._evict(keep=by_tenant.keys())
        return sizes

    def _evict(self, keep: Iterable[str]) -> None:
        """Drop the longest-held trees (except ``keep``) down to ``TREES_IN_MEMORY``."""
        kept = set(keep)
        excess = len(self._trees) - TREES_IN_MEMORY
        for tenant in [t for t in self._trees if t not in kept][:excess]:
            del self._trees[tenant]


class SizedKeeper(TreeKeeper):
    """The keeper of a store whose writers commit side by side (PostgreSQL).

    Seqs commit out of order there, so ``covered_seq`` cannot name what the trees hold, and one
    row written by every group would make the writers wait for each other. Each tenant's tree
    size is a row of ``ledger_tree_sizes`` instead, written with its tiles while the writer
    holds the tenant's partition lock (``Committer.lock_tenants``). At each group the keeper
    compares the stored size of each tenant it appends to with its cached tree: another writer
    extended it (drop the cache), or a writer without a keeper (``scr keys create``) left
    entries before the group's (hash them in first).
    """

    def __init__(self) -> None:
        super().__init__()
        self._caught_in_tx: dict[str, int] = {}  # sizes ``catch_up`` reached in the open transaction

    def forget(self) -> None:
        super().forget()
        self._caught_in_tx.clear()

    def append_hook(self, conn: Sql, committed: list[Committed]) -> None:
        caught, self._caught_in_tx = self._caught_in_tx, {}
        if not committed:
            return
        with self._forgetting():
            firsts: dict[str, int] = {}
            for entry in committed:
                firsts.setdefault(entry.tenant, entry.tenant_seq)
            stored = stored_tree_sizes(conn, list(firsts))
            fresh: Sequence[Committed] = committed
            for tenant, first in firsts.items():
                size = self._align(tenant, stored.get(tenant, 0))
                if size > first and caught.get(tenant) == size:  # a write of this group caught up
                    fresh = [e for e in fresh if e.tenant != tenant or e.tenant_seq >= size]
                elif size > first:
                    raise LedgerMismatch(
                        f"entry {first} of tenant {tenant!r} is being appended, but its tree already "
                        f"holds {size} entries: entries were removed; run `scr ledger verify`")
                elif size < first:  # appended by a writer without a keeper
                    self.caught_up.update(self._take_range(conn, tenant, size, first))
            store_tree_sizes(conn, self._take(conn, fresh))

    def catch_up(self, conn: Sql, tenant: str) -> Head:
        """Inside a write holding the tenant's partition lock: take its every committed entry
        into its tree; its head."""
        with self._forgetting():
            size = self._align(tenant, stored_tree_sizes(conn, [tenant]).get(tenant, 0))
            taken = self._take_range(conn, tenant, size, None)
            self.caught_up.update(taken)
            if taken:
                store_tree_sizes(conn, taken)
                self._caught_in_tx[tenant] = taken[tenant]
            return self.head(conn, tenant)

    def catch_up_all(self, conn: Sql, counts: dict[str, int]) -> None:
        """Hash in every entry the trees lack: ``counts`` holds each tenant's number of entries
        (the writer holds those tenants' partition locks)."""
        with self._forgetting():
            stored = stored_tree_sizes(conn, list(counts))
            for tenant, count in counts.items():
                if stored.get(tenant, 0) < count:
                    store_tree_sizes(conn, self._take_range(conn, tenant, stored.get(tenant, 0), count))

    def _align(self, tenant: str, size: int) -> int:
        """The tenant's stored tree size, its cached tree dropped if another writer extended it."""
        kept = self._trees.get(tenant)
        if kept is not None and kept.size != size:
            del self._trees[tenant]
        return size

    def _take_range(self, conn: Sql, tenant: str, start: int, end: int | None) -> dict[str, int]:
        """Take the tenant's entries ``[start, end)`` (to its newest without ``end``), in
        steps of ``CATCH_UP_ROWS``; its new size (nothing when there were none)."""
        sizes: dict[str, int] = {}
        while end is None or start < end:
            stop = start + CATCH_UP_ROWS if end is None else min(end, start + CATCH_UP_ROWS)
            rows = ledger_rows.tenant_entries(conn, tenant, start, stop)
            if not rows:
                break
            sizes.update(self._take(conn, rows))
            start = sizes[tenant]
        return sizes
