"""The read side: tenants' trees as committed, for roots and proofs, from any thread."""

from __future__ import annotations

import threading
from collections.abc import Callable

from scr.ledger.tiles import TileCache, tile_view, tree_size
from scr.log.nodes import MerkleTree
from scr.store.sql import Sql

TILE_CACHE_TILES = 4096  # expanded full tiles kept (~20 KiB each with their inner levels)


class TreeReader:
    """Views trees through a read connection of each thread, opened by ``connect``.

    ``usable(conn)`` says whether a thread's connection still works (a PostgreSQL connection
    cut with its server is opened again at the next read).
    """

    def __init__(
        self, connect: Callable[[], Sql], usable: Callable[[Sql], bool] = lambda conn: True,
        cache_tiles: int = TILE_CACHE_TILES,
    ) -> None:
        self._connect = connect
        self._usable = usable
        self._local = threading.local()
        self.cache = TileCache(cache_tiles)

    def _conn(self) -> Sql:
        conn: Sql | None = getattr(self._local, "conn", None)
        if conn is None or not self._usable(conn):
            conn = self._local.conn = self._connect()
        return conn

    def tree(self, tenant: str) -> MerkleTree:
        """The tenant's tree as committed now (size 0 for an unknown tenant)."""
        return MerkleTree(tile_view(self._conn(), tenant, self.cache))

    def size(self, tenant: str) -> int:
        """How many entries the tenant's committed tree has."""
        return tree_size(self._conn(), tenant)
