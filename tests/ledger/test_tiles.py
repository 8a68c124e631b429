"""The tile store: a tree kept as C2SP-style tiles in SQLite equals the pure RFC 6962 tree."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scr.ledger.tiles import (
    TILE_WIDTH,
    TileCache,
    TileError,
    TileWriter,
    create_schema,
    open_database,
    read_tile,
    stored_size,
    stored_sizes,
    tile_view,
)
from scr.log import merkle
from scr.log.merkle import leaf_hash
from scr.log.nodes import MerkleTree


def leaves(count: int, start: int = 0) -> list[bytes]:
    return [leaf_hash(f"entry {i}".encode()) for i in range(start, start + count)]


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    opened = open_database(tmp_path / "tiles.db")
    create_schema(opened)
    yield opened
    opened.close()


def grow(conn: sqlite3.Connection, tenant: str, batches: list[list[bytes]]) -> MerkleTree:
    """Append batches as group commits do: one extend and one flush per batch."""
    writer = TileWriter(conn, tenant)
    tree = MerkleTree(writer)
    for batch in batches:
        tree.extend(batch)
        writer.flush(conn)
    return tree


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=8))
def test_tiles_in_any_batch_sizes_give_the_rfc_tree(tmp_path_factory: pytest.TempPathFactory,
                                                      sizes: list[int]) -> None:
    conn = open_database(tmp_path_factory.mktemp("tiles") / "tiles.db")
    create_schema(conn)
    everything = leaves(sum(sizes))
    batches, offset = [], 0
    for size in sizes:
        batches.append(everything[offset : offset + size])
        offset += size
    grow(conn, "t", batches)
    view = MerkleTree(tile_view(conn, "t", TileCache(8)))
    assert view.size == stored_size(conn, "t") == len(everything)
    total = len(everything)
    for size in sorted({0, min(1, total), total // 3, max(total - 1, 0), total}):
        assert view.root(size) == merkle.root(everything[:size])
    reopened = MerkleTree(TileWriter(conn, "t"))  # the writer's right edge, reloaded from the rows
    assert reopened.root() == merkle.root(everything)
    conn.close()


def test_proofs_from_tiles_verify_against_the_pure_root(conn: sqlite3.Connection) -> None:
    everything = leaves(1000)
    grow(conn, "t", [everything[:1], everything[1:513], everything[513:]])
    view = MerkleTree(tile_view(conn, "t", TileCache(8)))
    for index, size in [(0, 1), (5, 1000), (511, 513), (999, 1000), (256, 700)]:
        proof = view.inclusion_proof(index, size)
        merkle.verify_inclusion(everything[index], index, size, proof, merkle.root(everything[:size]))
    for first, second in [(1, 1000), (256, 512), (300, 999), (513, 1000)]:
        proof = view.consistency_proof(first, second)
        merkle.verify_consistency(first, second, merkle.root(everything[:first]),
                                  merkle.root(everything[:second]), proof)


def test_a_tile_is_one_row_once_full_and_fragments_before(conn: sqlite3.Connection) -> None:
    grow(conn, "t", [leaves(1, i) for i in range(TILE_WIDTH + 3)])  # one leaf per group
    rows = conn.execute(
        "SELECT level, start, length(hashes) / 32 FROM ledger_tiles WHERE tenant = 't' ORDER BY level, start"
    ).fetchall()
    # The full tile was merged into one row; the three leaves after it are fragments; level 1
    # holds the full tile's root.
    assert rows == [(0, 0, 256), (0, 256, 1), (0, 257, 1), (0, 258, 1), (1, 0, 1)]
    assert read_tile(conn, "t", 0, 1) == b"".join(leaves(3, TILE_WIDTH))


def test_tenants_have_separate_trees(conn: sqlite3.Connection) -> None:
    grow(conn, "a", [leaves(10)])
    grow(conn, "b", [leaves(3, 100)])
    assert stored_sizes(conn) == {"a": 10, "b": 3}
    assert MerkleTree(tile_view(conn, "b", TileCache(8))).root() == merkle.root(leaves(3, 100))
    assert stored_size(conn, "nobody") == 0


def test_a_damaged_tile_is_reported_not_misread(conn: sqlite3.Connection) -> None:
    grow(conn, "t", [leaves(5), leaves(5, 5)])
    conn.execute("DELETE FROM ledger_tiles WHERE tenant = 't' AND start = 0")  # a gap at the start
    with pytest.raises(TileError, match="damaged"):
        read_tile(conn, "t", 0, 0)


def test_the_writer_refuses_nodes_out_of_order(conn: sqlite3.Connection) -> None:
    writer = TileWriter(conn, "t")
    with pytest.raises(TileError, match="expects node 0"):
        writer.put_many([(0, 1, hashlib.sha256(b"x").digest())])


def test_the_cache_keeps_only_full_tiles(conn: sqlite3.Connection) -> None:
    grow(conn, "t", [leaves(TILE_WIDTH + 10)])
    cache = TileCache(8)
    view = MerkleTree(tile_view(conn, "t", cache))
    view.inclusion_proof(3, view.size)
    assert cache.get(("t", 0, 0)) is not None  # full: cached
    assert cache.get(("t", 0, 1)) is None  # partial: it grows, so never cached
