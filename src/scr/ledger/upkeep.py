"""Tree upkeep: every tenant's Merkle tree follows the ledger inside the committing transaction.

``TreeKeeper.append_hook`` is a committer append hook: after a group's writes it hashes each
new entry's stored bytes into its tenant's tree (leaf index = the entry's per-tenant position)
and writes the new tile hashes in the same transaction, so the ledger and its trees are always
committed together.

The trees in memory are a cache of the store. ``ledger_tree_state.covered_seq`` names the last
ledger entry the trees include and is written with them; at every call the keeper compares it
with its own: if a group failed (the transaction rolled back, taking the tile rows with it) they
differ, and the trees are reloaded from the store. Entries appended by another process (``scr
keys create`` writes with its own committer, without hooks) are found the same way: their
sequence numbers lie between ``covered_seq`` and the group's first entry, and are caught up
before the group's own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from scr.ledger.tiles import TileWriter, covered_seq
from scr.log.commit import Committed
from scr.log.merkle import leaf_hash
from scr.log.nodes import MerkleTree

CATCH_UP_ROWS = 50_000  # entries hashed per step while catching up (bounds memory)

Leaf = tuple[str, int, int, bytes]
"""``(tenant, tenant_seq, seq, leaf hash)`` of one entry."""


class LedgerMismatch(RuntimeError):
    """The ledger's entries do not follow the stored tree (rows deleted or moved): refuse to extend."""


class _TenantTree:
    __slots__ = ("tree", "writer")

    def __init__(self, conn: sqlite3.Connection, tenant: str) -> None:
        self.writer = TileWriter(conn, tenant)
        self.tree = MerkleTree(self.writer)


class TreeKeeper:
    """The writer side of the per-tenant trees. Used only on the committer's writer thread."""

    def __init__(self) -> None:
        self._trees: dict[str, _TenantTree] = {}
        self._covered = -1  # unknown: read from the store at the next call
        # ``covered_seq`` when the open transaction began, once a write in it caught up.
        self._floor: int | None = None
        self.caught_up: dict[str, int] = {}
        """Tenants whose trees took entries written by another process, with the new sizes."""

    def append_hook(self, conn: sqlite3.Connection, committed: list[Committed]) -> None:
        """Add a group's new entries (and any others not yet in the trees) to the trees."""
        try:
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
            self._add(conn, [(c.tenant, c.tenant_seq, c.seq, leaf_hash(c.stored)) for c in fresh])
        except BaseException:
            self.forget()  # the transaction is lost: reload from the store next time
            raise

    def catch_up(self, conn: sqlite3.Connection, tenant: str) -> int:
        """Inside a write: take every committed entry into the trees; ``tenant``'s tree size."""
        try:
            self._sync(conn)
            if self._floor is None:
                self._floor = self._covered
            self._catch_up(conn, None)
            return self._tree(conn, tenant).tree.size
        except BaseException:
            self.forget()
            raise

    def forget(self) -> None:
        """Drop the cached trees; the next call reloads them from the store."""
        self._trees.clear()
        self._covered = -1
        self._floor = None
        self.caught_up.clear()

    def _sync(self, conn: sqlite3.Connection) -> None:
        stored = covered_seq(conn)
        if stored != self._covered:
            self._trees.clear()
            self.caught_up.clear()
            self._covered = stored
            self._floor = None

    def _tree(self, conn: sqlite3.Connection, tenant: str) -> _TenantTree:
        kept = self._trees.get(tenant)
        if kept is None:
            kept = self._trees[tenant] = _TenantTree(conn, tenant)
        return kept

    def _catch_up(self, conn: sqlite3.Connection, before: int | None) -> None:
        """Take the entries after ``covered_seq`` (and before ``before``) into the trees."""
        if before is None:
            cursor = conn.execute(
                "SELECT tenant, tenant_seq, seq, entry FROM ledger WHERE seq > ? ORDER BY seq",
                (self._covered,),
            )
        else:
            cursor = conn.execute(
                "SELECT tenant, tenant_seq, seq, entry FROM ledger WHERE seq > ? AND seq < ? "
                "ORDER BY seq",
                (self._covered, before),
            )
        while rows := cursor.fetchmany(CATCH_UP_ROWS):
            sizes = self._add(conn, [(t, ts, seq, leaf_hash(entry)) for t, ts, seq, entry in rows])
            self.caught_up.update(sizes)

    def _add(self, conn: sqlite3.Connection, leaves: Iterable[Leaf]) -> dict[str, int]:
        """Append leaves (in ledger order) to their tenants' trees and write the new tiles."""
        by_tenant: dict[str, list[bytes]] = {}
        trees: dict[str, _TenantTree] = {}
        last_seq = self._covered
        for tenant, tenant_seq, seq, leaf in leaves:
            hashes = by_tenant.get(tenant)
            if hashes is None:
                hashes = by_tenant[tenant] = []
                trees[tenant] = self._tree(conn, tenant)
            expected = trees[tenant].tree.size + len(hashes)
            if tenant_seq != expected:
                raise LedgerMismatch(
                    f"ledger entry seq {seq} is index {tenant_seq} of tenant {tenant!r}, but its "
                    f"tree expects index {expected}: entries were removed or moved; run "
                    f"`scr ledger verify`"
                )
            hashes.append(leaf)
            last_seq = seq
        sizes: dict[str, int] = {}
        for tenant, hashes in by_tenant.items():
            kept = trees[tenant]
            kept.tree.extend(hashes)
            kept.writer.flush(conn)
            sizes[tenant] = kept.tree.size
        if last_seq != self._covered:
            conn.execute("UPDATE ledger_tree_state SET covered_seq = ? WHERE id = 1", (last_seq,))
            self._covered = last_seq
        return sizes
