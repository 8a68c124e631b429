"""The read side: tenants' trees as committed, for roots and proofs, from any thread."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from scr.ledger.tiles import TileCache, open_database, tile_view, tree_size
from scr.log.nodes import MerkleTree

TILE_CACHE_TILES = 4096  # expanded full tiles kept (~20 KiB each with their inner levels)


class TreeReader:
    """Opens a read connection per thread to the ledger database and views trees through it."""

    def __init__(self, database: Path, cache_tiles: int = TILE_CACHE_TILES) -> None:
        self._database = database
        self._local = threading.local()
        self.cache = TileCache(cache_tiles)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = open_database(self._database)
        return conn

    def tree(self, tenant: str) -> MerkleTree:
        """The tenant's tree as committed now (size 0 for an unknown tenant)."""
        return MerkleTree(tile_view(self._conn(), tenant, self.cache))

    def size(self, tenant: str) -> int:
        """How many entries the tenant's committed tree has."""
        return tree_size(self._conn(), tenant)
