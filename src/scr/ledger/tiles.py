"""Where the tree hashes live: C2SP-style tiles in the ledger's SQLite database.

The geometry is c2sp.org/tlog-tiles: tile level ``L`` holds the hashes of tree level ``8·L``,
and tile ``N`` of a level covers the node indexes ``[256·N, 256·N + 256)``. Tree levels between
two tile levels are not stored: a node at level ``8·L + k`` is the root of ``2^k`` consecutive
hashes of one tile, recomputed on read (a tile is expanded once, 255 hashes, and cached while
full). Storage is about 32 bytes per entry (plus 1/255 for the upper tile levels), written in
the same transaction as the entries.

A row holds a run of consecutive hashes of one level that never crosses a tile boundary. A full
tile is one row. The partial right edge of a level is kept as *fragments*: each group commit
that extends it adds one row with only its new hashes, so a tenant gaining one entry per group
writes 32 bytes, not a rewritten 8 KiB tile (``bench/bench_ledger.py`` measures both shapes of
load). When a tile fills, its fragments are replaced by the one full row.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from scr.log.merkle import HASH_SIZE
from scr.log.nodes import MemoryNodeStore

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # hashes in a full tile
TILE_MASK = TILE_WIDTH - 1
BUSY_TIMEOUT_MS = 10_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_tiles (
    tenant TEXT NOT NULL,
    level INTEGER NOT NULL,
    start INTEGER NOT NULL,
    hashes BLOB NOT NULL,
    PRIMARY KEY (tenant, level, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_tree_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    covered_seq INTEGER NOT NULL
);
INSERT OR IGNORE INTO ledger_tree_state VALUES (1, 0);
"""

_INSERT = "INSERT INTO ledger_tiles VALUES (?, ?, ?, ?)"


class TileError(RuntimeError):
    """Stored tiles that cannot be read as a tree (a gap or a torn row): the store is damaged."""


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tile tables (idempotent) on a connection to the ledger database."""
    conn.executescript(SCHEMA)


def read_tile(conn: sqlite3.Connection, tenant: str, level: int, index: int) -> bytes:
    """The hashes stored so far in tile ``index`` of tile level ``level`` (full or partial)."""
    first = index << TILE_HEIGHT
    rows = conn.execute(
        "SELECT start, hashes FROM ledger_tiles WHERE tenant = ? AND level = ? "
        "AND start >= ? AND start < ? ORDER BY start",
        (tenant, level, first, first + TILE_WIDTH),
    ).fetchall()
    return _joined(rows, first, f"tile {level}/{index} of {tenant!r}")


def _joined(rows: Iterable[tuple[int, bytes]], first: int, what: str) -> bytes:
    expected, parts = first, []
    for start, hashes in rows:
        if start != expected or len(hashes) % HASH_SIZE:
            raise TileError(f"{what} is damaged at node {expected}")
        parts.append(bytes(hashes))
        expected += len(hashes) // HASH_SIZE
    return b"".join(parts)


def stored_size(conn: sqlite3.Connection, tenant: str) -> int:
    """How many leaves a tenant's stored tree has (0 for an unknown tenant)."""
    row = conn.execute(
        "SELECT start, length(hashes) FROM ledger_tiles WHERE tenant = ? AND level = 0 "
        "ORDER BY start DESC LIMIT 1",
        (tenant,),
    ).fetchone()
    return 0 if row is None else int(row[0]) + int(row[1]) // HASH_SIZE


def stored_sizes(conn: sqlite3.Connection) -> dict[str, int]:
    """Every tenant's stored tree size."""
    rows = conn.execute(
        "SELECT t.tenant, t.start + length(t.hashes) / ? FROM ledger_tiles t JOIN "
        "(SELECT tenant, MAX(start) AS top FROM ledger_tiles WHERE level = 0 GROUP BY tenant) m "
        "ON t.tenant = m.tenant AND t.level = 0 AND t.start = m.top",
        (HASH_SIZE,),
    ).fetchall()
    return {tenant: int(size) for tenant, size in rows}


def covered_seq(conn: sqlite3.Connection) -> int:
    """The ledger sequence number up to which every entry is in its tenant's tree."""
    row = conn.execute("SELECT covered_seq FROM ledger_tree_state WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def expand(hashes: bytes) -> MemoryNodeStore:
    """A tile's hashes with every complete node above them inside the tile (levels 0..8)."""
    return MemoryNodeStore.from_packed_leaf_hashes(hashes)


TileFetch = Callable[[int, int], MemoryNodeStore]
"""``fetch(tile level, tile index)``: that tile, expanded."""


class TileNodes:
    """A ``NodeStore`` view of one tenant's tiles (read side): any complete node of the tree."""

    def __init__(self, fetch: TileFetch, size: int) -> None:
        self._fetch = fetch
        self._size = size

    def get(self, level: int, index: int) -> bytes:
        """The hash of node ``(level, index)``; ``KeyError`` if the tiles do not hold it."""
        if level < 0 or index < 0:
            raise KeyError((level, index))
        tile_level, height = divmod(level, TILE_HEIGHT)
        first = index << height  # the node's first hash at the tile level below it
        tile = self._fetch(tile_level, first >> TILE_HEIGHT)
        return tile.get(height, (first & TILE_MASK) >> height)

    def put_many(self, items: Iterable[tuple[int, int, bytes]]) -> None:
        """Read-only: a view never stores nodes."""
        raise TypeError("a tile view is read-only")

    def size(self) -> int:
        """How many leaves the viewed tree has."""
        return self._size


class TileWriter(TileNodes):
    """The write side of one tenant's tiles: buffers the tile-level nodes an append completes.

    ``MerkleTree.extend`` hands every completed node to ``put_many``; only those on tile levels
    (tree level a multiple of 8) are kept, and ``flush`` writes them in the open transaction.
    """

    def __init__(self, conn: sqlite3.Connection, tenant: str) -> None:
        self.tenant = tenant
        size = stored_size(conn, tenant)
        # Tiles read to load the tree's right edge; cleared whenever the tiles change.
        self._read: dict[tuple[int, int], MemoryNodeStore] = {}

        def fetch(level: int, index: int) -> MemoryNodeStore:
            tile = self._read.get((level, index))
            if tile is None:
                tile = self._read[(level, index)] = expand(read_tile(conn, tenant, level, index))
            return tile

        super().__init__(fetch, size)
        # Per tile level: the index of the next node to store there.
        self._next: list[int] = []
        self._pending: dict[int, tuple[int, bytearray]] = {}
        level = 0
        while level == 0 or size >> (TILE_HEIGHT * level):
            self._next.append(size >> (TILE_HEIGHT * level))
            level += 1

    def put_many(self, items: Iterable[tuple[int, int, bytes]]) -> None:
        """Buffer the nodes on tile levels; they must arrive in order, as the tree appends."""
        for level, index, value in items:
            if level & (TILE_HEIGHT - 1):
                continue
            tile_level = level >> 3
            if tile_level == len(self._next):
                self._next.append(0)
            if index != self._next[tile_level]:
                raise TileError(
                    f"tree of {self.tenant!r} expects node {self._next[tile_level]} "
                    f"at level {level}, got {index}"
                )
            self._next[tile_level] = index + 1
            run = self._pending.get(tile_level)
            if run is None:
                self._pending[tile_level] = (index, bytearray(value))
            else:
                run[1].extend(value)
            if tile_level == 0:
                self._size = index + 1

    def flush(self, conn: sqlite3.Connection) -> None:
        """Write the buffered hashes: whole tiles as one row each, the right edge as a fragment."""
        rows: list[tuple[str, int, int, bytes]] = []
        for tile_level, (start, hashes) in self._pending.items():
            end = start + len(hashes) // HASH_SIZE
            position = start
            while position < end:
                tile_start = position & ~TILE_MASK
                piece_end = min(end, tile_start + TILE_WIDTH)
                piece = bytes(hashes[(position - start) * HASH_SIZE : (piece_end - start) * HASH_SIZE])
                if piece_end == tile_start + TILE_WIDTH and position > tile_start:
                    # This piece fills a tile that has fragments: replace them with one row.
                    head = conn.execute(
                        "SELECT start, hashes FROM ledger_tiles WHERE tenant = ? AND level = ? "
                        "AND start >= ? AND start < ? ORDER BY start",
                        (self.tenant, tile_level, tile_start, position),
                    ).fetchall()
                    conn.execute(
                        "DELETE FROM ledger_tiles WHERE tenant = ? AND level = ? AND start >= ? "
                        "AND start < ?",
                        (self.tenant, tile_level, tile_start, position),
                    )
                    what = f"tile {tile_level}/{tile_start >> TILE_HEIGHT} of {self.tenant!r}"
                    piece = _joined(head, tile_start, what) + piece
                    rows.append((self.tenant, tile_level, tile_start, piece))
                else:
                    rows.append((self.tenant, tile_level, position, piece))
                position = piece_end
        self._pending.clear()
        self._read.clear()
        conn.executemany(_INSERT, rows)

    def discard(self) -> None:
        """Forget buffered hashes (their transaction failed)."""
        self._pending.clear()


class TileCache:
    """Expanded full tiles, shared by readers; a full tile never changes, so it never goes stale."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._tiles: OrderedDict[tuple[str, int, int], MemoryNodeStore] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, int]) -> MemoryNodeStore | None:
        """A cached tile, marked as recently used."""
        with self._lock:
            tile = self._tiles.get(key)
            if tile is not None:
                self._tiles.move_to_end(key)
            return tile

    def put(self, key: tuple[str, int, int], tile: MemoryNodeStore) -> None:
        """Cache a full tile, dropping the least recently used beyond the capacity."""
        with self._lock:
            self._tiles[key] = tile
            self._tiles.move_to_end(key)
            while len(self._tiles) > self._capacity:
                self._tiles.popitem(last=False)


def tile_view(conn: sqlite3.Connection, tenant: str, cache: TileCache) -> TileNodes:
    """A read view of a tenant's tree as stored now, through ``cache`` for full tiles."""
    partial: dict[tuple[int, int], MemoryNodeStore] = {}

    def fetch(level: int, index: int) -> MemoryNodeStore:
        key = (tenant, level, index)
        tile = cache.get(key) or partial.get((level, index))
        if tile is None:
            hashes = read_tile(conn, tenant, level, index)
            tile = expand(hashes)
            if len(hashes) == TILE_WIDTH * HASH_SIZE:
                cache.put(key, tile)
            else:  # a partial tile grows: keep it for this view only
                partial[(level, index)] = tile
        return tile

    return TileNodes(fetch, stored_size(conn, tenant))


def open_database(path: Path, read_only: bool = False) -> sqlite3.Connection:
    """A connection to the ledger database for tile reads and writes (or read-only, offline)."""
    if read_only:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn
