"""Where the tree hashes live: C2SP-style tiles in the ledger's database (SQLite or PostgreSQL).

The geometry is c2sp.org/tlog-tiles: tile level ``L`` holds the hashes of tree level ``8·L``,
and tile ``N`` of a level covers the node indexes ``[256·N, 256·N + 256)``. Tree levels between
two tile levels are not stored: a node at level ``8·L + k`` is the root of ``2^k`` consecutive
hashes of one tile, recomputed on read (a tile is expanded once, at most 255 hashes, and cached
while full).

What is written, and when (``bench/bench_ledger.py`` measures the alternatives):

* A level-0 tile (256 leaf hashes, 8 KiB) is written once, when its last entry is committed.
  The leaves of a tenant's partial right-edge tile are *not* stored: they are recomputed from
  the ledger's own entries (at most 255 rows, read by the ``(tenant, tenant_seq)`` index). A
  group commit therefore writes no tile row at all for a tenant whose edge tile did not fill:
  with many tenants per group, per-tenant edge rows would dirty one page per tenant per group.
* A tile of level 1 or more is rewritten (full or partial) when a node below fills it: once per
  256 entries of the tenant at level 1, once per 65,536 at level 2.

A tenant's tree holds every entry whose ``seq`` is at most ``ledger_tree_state.covered_seq``,
written in the same transaction as the tiles. On PostgreSQL, whose writers commit side by
side, each tenant's tree size is its own row of ``ledger_tree_sizes`` instead.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from scr.log.merkle import HASH_SIZE, LEAF_PREFIX
from scr.log.nodes import MemoryNodeStore
from scr.store import ledger_rows
from scr.store.sql import PgSql, Sql
from scr.store.sqlite import BUSY_TIMEOUT_MS
from scr.store.wal import use_wal

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # hashes in a full tile
TILE_MASK = TILE_WIDTH - 1
FULL_TILE_BYTES = TILE_WIDTH * HASH_SIZE

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_tiles (
    tenant TEXT NOT NULL,
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hashes BLOB NOT NULL,
    PRIMARY KEY (tenant, level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_tree_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    covered_seq INTEGER NOT NULL
);
INSERT OR IGNORE INTO ledger_tree_state VALUES (1, 0);
"""

_WRITE = ("INSERT INTO ledger_tiles VALUES (?, ?, ?, ?) "
          "ON CONFLICT (tenant, level, idx) DO UPDATE SET hashes = excluded.hashes")


class TileError(RuntimeError):
    """Stored tiles or entries that cannot be read as the tree (damaged or missing rows)."""


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tile tables (idempotent) on a connection to a SQLite ledger database."""
    conn.executescript(SCHEMA)


def covered_seq(conn: Sql) -> int:
    """The ledger sequence number up to which every entry is in its tenant's tree."""
    row = conn.execute("SELECT covered_seq FROM ledger_tree_state WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def tree_size(conn: Sql, tenant: str, covered: int | None = None) -> int:
    """How many entries a tenant's tree holds: its entries with ``seq <= covered_seq``
    (PostgreSQL: ``ledger_tree_sizes``, written under the tenant's partition lock)."""
    if isinstance(conn, PgSql):
        return stored_tree_sizes(conn, [tenant]).get(tenant, 0)
    return ledger_rows.chain_length(conn, tenant, covered_seq(conn) if covered is None else covered)


def stored_tree_sizes(conn: Sql, tenants: list[str]) -> dict[str, int]:
    """The tree sizes of these tenants as ``ledger_tree_sizes`` holds them (PostgreSQL; a
    tenant without a row is missing)."""
    rows = conn.execute("SELECT tenant, size FROM ledger_tree_sizes WHERE tenant = ANY(?)", (tenants,))
    return {tenant: int(size) for tenant, size in rows.fetchall()}


def store_tree_sizes(conn: Sql, sizes: dict[str, int]) -> None:
    """Record tenants' new tree sizes (PostgreSQL), under their partition locks."""
    if sizes:
        conn.executemany(
            "INSERT INTO ledger_tree_sizes (tenant, size) VALUES (?, ?) "
            "ON CONFLICT (tenant) DO UPDATE SET size = excluded.size", list(sizes.items()))


def tree_sizes(conn: Sql) -> dict[str, int]:
    """Every tenant's tree size (a scan of the ledger's tenant index: for startup)."""
    if isinstance(conn, PgSql):
        return {tenant: int(size) for tenant, size in conn.execute(
            "SELECT tenant, size FROM ledger_tree_sizes WHERE size > 0").fetchall()}
    return ledger_rows.chain_lengths(conn, covered_seq(conn))


def leaf_hashes(conn: Sql, tenant: str, start: int, end: int) -> bytes:
    """The packed leaf hashes of a tenant's entries ``[start, end)``, from their stored bytes."""
    rows = ledger_rows.tenant_entries(conn, tenant, start, end)
    if len(rows) != end - start or (rows and (rows[0].tenant_seq, rows[-1].tenant_seq) != (start, end - 1)):
        raise TileError(f"entries {start}..{end - 1} of {tenant!r} are not all in the ledger")
    sha256 = hashlib.sha256
    return b"".join(sha256(LEAF_PREFIX + row.stored).digest() for row in rows)


def read_tile(conn: Sql, tenant: str, level: int, index: int) -> bytes:
    """The stored hashes of tile ``index`` at tile level ``level`` (empty if none are stored)."""
    row = conn.execute(
        "SELECT hashes FROM ledger_tiles WHERE tenant = ? AND level = ? AND idx = ?", (tenant, level, index)
    ).fetchone()
    if row is None:
        return b""
    hashes = bytes(row[0])
    if len(hashes) % HASH_SIZE or len(hashes) > FULL_TILE_BYTES:
        raise TileError(f"tile {level}/{index} of {tenant!r} is damaged")
    return hashes


def edge_width(size: int, level: int) -> int:
    """How many hashes the right-edge tile at tile level ``level`` holds in a tree of ``size``."""
    return (size >> (TILE_HEIGHT * level)) & TILE_MASK


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
    """The write side of one tenant's tiles, kept by the committer's writer thread.

    ``MerkleTree.extend`` hands every completed node to ``put_many``; those on tile levels (tree
    level a multiple of 8) go to the right-edge tile of their level, kept in memory. ``rows``
    gives, for the open transaction, each tile that filled and each upper edge tile that grew.
    """

    def __init__(self, conn: Sql, tenant: str, size: int) -> None:
        self.tenant = tenant
        self._counts: list[int] = []  # per tile level: how many hashes it holds
        self._edges: list[bytearray] = []  # per tile level: the right-edge tile's hashes
        self._full: list[tuple[int, int, bytes]] = []  # (level, index, hashes) to write
        self._grown: set[int] = set()  # upper levels whose edge tile grew
        level = 0
        while level == 0 or size >> (TILE_HEIGHT * level):
            count = size >> (TILE_HEIGHT * level)
            width, tile = count & TILE_MASK, count >> TILE_HEIGHT
            if level == 0:
                edge = leaf_hashes(conn, tenant, size - width, size) if width else b""
            else:
                edge = read_tile(conn, tenant, level, tile)
                if len(edge) != width * HASH_SIZE:
                    raise TileError(f"tile {level}/{tile} of {tenant!r} holds {len(edge) // HASH_SIZE} "
                                    f"hashes; a tree of {size} entries needs {width}")
            self._counts.append(count)
            self._edges.append(bytearray(edge))
            level += 1

        def fetch(tile_level: int, index: int) -> MemoryNodeStore:
            if index == self._counts[tile_level] >> TILE_HEIGHT:
                return expand(bytes(self._edges[tile_level]))
            return expand(read_tile(conn, tenant, tile_level, index))

        super().__init__(fetch, size)

    def put_many(self, items: Iterable[tuple[int, int, bytes]]) -> None:
        """Take the nodes on tile levels; they must arrive in order, as the tree appends."""
        # Most completed nodes are between tile levels: drop them before the loop.
        for level, index, value in [node for node in items if not node[0] & (TILE_HEIGHT - 1)]:
            tile_level = level >> 3
            if tile_level == len(self._counts):
                self._counts.append(0)
                self._edges.append(bytearray())
            count = self._counts[tile_level]
            if index != count:
                raise TileError(f"tree of {self.tenant!r} expects node {count} at level {level}, got {index}")
            self._counts[tile_level] = count + 1
            edge = self._edges[tile_level]
            edge += value
            if len(edge) == FULL_TILE_BYTES:
                self._full.append((tile_level, index >> TILE_HEIGHT, bytes(edge)))
                edge.clear()
                self._grown.discard(tile_level)
            elif tile_level:
                self._grown.add(tile_level)
        self._size = self._counts[0]

    def rows(self) -> list[tuple[str, int, int, bytes]]:
        """The tile rows to write for what was appended since the last call."""
        if not self._full and not self._grown:
            return []
        rows = [(self.tenant, level, index, hashes) for level, index, hashes in self._full]
        for level in sorted(self._grown):
            rows.append((self.tenant, level, self._counts[level] >> TILE_HEIGHT, bytes(self._edges[level])))
        self._full.clear()
        self._grown.clear()
        return rows


def write_rows(conn: Sql, rows: list[tuple[str, int, int, bytes]]) -> None:
    """Write tile rows (a full tile replaces the partial one it grew from)."""
    if rows:
        conn.executemany(_WRITE, rows)


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


def tile_view(conn: Sql, tenant: str, cache: TileCache, size: int | None = None) -> TileNodes:
    """A read view of a tenant's committed tree (of ``size`` entries, default: all of it)."""
    if size is None:
        size = tree_size(conn, tenant)
    edges: dict[int, MemoryNodeStore] = {}

    def fetch(level: int, index: int) -> MemoryNodeStore:
        count = size >> (TILE_HEIGHT * level)
        if index == count >> TILE_HEIGHT:  # the right edge: partial, so never cached
            tile = edges.get(level)
            if tile is None:
                first = index << TILE_HEIGHT
                width = count - first
                if level == 0:
                    hashes = leaf_hashes(conn, tenant, first, count)
                else:  # the stored edge may have grown since the size was read: take its prefix
                    hashes = read_tile(conn, tenant, level, index)[: width * HASH_SIZE]
                    if len(hashes) != width * HASH_SIZE:
                        raise TileError(f"tile {level}/{index} of {tenant!r} is missing hashes")
                tile = edges[level] = expand(hashes)
            return tile
        key = (tenant, level, index)
        tile = cache.get(key)
        if tile is None:
            hashes = read_tile(conn, tenant, level, index)
            if len(hashes) != FULL_TILE_BYTES:
                raise TileError(f"tile {level}/{index} of {tenant!r} is missing or incomplete")
            tile = expand(hashes)
            cache.put(key, tile)
        return tile

    return TileNodes(fetch, size)


def open_database(path: Path, read_only: bool = False) -> sqlite3.Connection:
    """A connection to the ledger database for tile reads and writes (or read-only, offline)."""
    if read_only:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not read_only:
        use_wal(conn)
        conn.execute("PRAGMA synchronous = FULL")
    return conn
