"""The tile store: a tree kept as C2SP-style tiles in SQLite equals the pure RFC 6962 tree."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packed import ledger_table

from scr.ledger.tiles import (
    TILE_WIDTH,
    TileCache,
    TileError,
    TileWriter,
    create_schema,
    open_database,
    read_tile,
    tile_view,
    tree_size,
    tree_sizes,
    write_rows,
)
from scr.log import merkle
from scr.log.merkle import leaf_hash
from scr.log.nodes import MerkleTree
from scr.store import packs
from scr.store.sqlite import SqliteStore


def stored(i: int) -> bytes:
    return f"entry {i}".encode()


def leaves(count: int, start: int = 0) -> list[bytes]:
    return [leaf_hash(stored(i)) for i in range(start, start + count)]


def open_ledger(folder: Path) -> sqlite3.Connection:
    SqliteStore(folder).close()  # the ledger table, as the server creates it
    conn = open_database(folder / "scr.db")
    create_schema(conn)
    return conn


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    opened = open_ledger(tmp_path)
    yield opened
    opened.close()


def grow(conn: sqlite3.Connection, tenant: str, batches: list[int]) -> MerkleTree:
    """Append entries in batches as the writer and the keeper do: each batch's packs, tree,
    tiles and covered_seq in one transaction."""
    writer = TileWriter(conn, tenant, tree_size(conn, tenant))
    tree = MerkleTree(writer)
    for count in batches:
        conn.execute("BEGIN")
        seq = int(conn.execute("SELECT COALESCE(MAX(last_seq), 0) FROM ledger_packs").fetchone()[0])
        start = tree.size
        packs.insert(conn, [(seq + 1 + i, tenant, start + i, "X", "", None, stored(start + i), b"", None,
                             None) for i in range(count)])
        tree.extend(leaves(count, start))
        write_rows(conn, writer.rows())
        conn.execute("UPDATE ledger_tree_state SET covered_seq = ?", (seq + count,))
        conn.execute("COMMIT")
    return tree


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=8))
def test_tiles_in_any_batch_sizes_give_the_rfc_tree(
    tmp_path_factory: pytest.TempPathFactory, batches: list[int]
) -> None:
    conn = open_ledger(tmp_path_factory.mktemp("tiles"))
    grow(conn, "t", batches)
    everything = leaves(sum(batches))
    total = len(everything)
    view = MerkleTree(tile_view(conn, "t", TileCache(8)))
    assert view.size == total
    for size in sorted({0, min(1, total), total // 3, max(total - 1, 0), total}):
        assert view.root(size) == merkle.root(everything[:size])
    reopened = MerkleTree(TileWriter(conn, "t", total))  # the writer's right edge, reloaded
    assert reopened.root() == merkle.root(everything)
    conn.close()


def test_proofs_from_tiles_verify_against_the_pure_root(conn: sqlite3.Connection) -> None:
    grow(conn, "t", [1, 512, 66_000 - 513])  # two tile levels, partial edges on both
    everything = leaves(66_000)
    view = MerkleTree(tile_view(conn, "t", TileCache(64)))
    roots: dict[int, bytes] = {}

    def root(size: int) -> bytes:  # the pure reference's root, each size hashed once
        if size not in roots:
            roots[size] = merkle.root(everything[:size])
        return roots[size]

    for index, size in [(0, 1), (5, 66_000), (511, 513), (65_999, 66_000), (256, 700), (65_536, 65_537)]:
        proof = view.inclusion_proof(index, size)
        merkle.verify_inclusion(everything[index], index, size, proof, root(size))
    for first, second in [(1, 66_000), (256, 512), (300, 65_999), (65_536, 66_000)]:
        proof = view.consistency_proof(first, second)
        merkle.verify_consistency(first, second, root(first), root(second), proof)


def test_only_whole_leaf_tiles_are_written_and_upper_edges_as_they_grow(conn: sqlite3.Connection) -> None:
    grow(conn, "t", [1] * (2 * TILE_WIDTH + 3))  # one entry per group commit
    rows = conn.execute(
        "SELECT level, idx, length(hashes) / 32 FROM ledger_tiles WHERE tenant = 't' ORDER BY level, idx"
    ).fetchall()
    # Two full leaf tiles, one row each; the three leaves after them are only in the ledger;
    # level 1 holds the two full tiles' roots (a partial tile, rewritten when each filled).
    assert rows == [(0, 0, 256), (0, 1, 256), (1, 0, 2)]
    assert read_tile(conn, "t", 1, 0) == merkle.root(leaves(256)) + merkle.root(leaves(256, 256))


def test_tenants_have_separate_trees(conn: sqlite3.Connection) -> None:
    grow(conn, "a", [10])
    grow(conn, "b", [3])
    assert tree_sizes(conn) == {"a": 10, "b": 3}
    assert MerkleTree(tile_view(conn, "b", TileCache(8))).root() == merkle.root(leaves(3))
    assert tree_size(conn, "nobody") == 0


def test_entries_past_covered_seq_are_not_in_the_tree(conn: sqlite3.Connection) -> None:
    grow(conn, "t", [5])
    conn.execute("UPDATE ledger_tree_state SET covered_seq = 3")  # as if 4 and 5 were not hashed yet
    assert tree_size(conn, "t") == 3
    assert MerkleTree(tile_view(conn, "t", TileCache(8))).root() == merkle.root(leaves(3))


def test_missing_rows_are_reported_not_misread(conn: sqlite3.Connection) -> None:
    grow(conn, "t", [300])
    with ledger_table(conn):
        conn.execute("DELETE FROM ledger WHERE tenant_seq = 290")  # an entry of the partial edge
    with pytest.raises(TileError, match="not all in the ledger"):
        MerkleTree(tile_view(conn, "t", TileCache(8))).root()
    conn.execute("DELETE FROM ledger_tiles WHERE level = 0")  # a full tile
    with pytest.raises(TileError, match="missing"):
        MerkleTree(tile_view(conn, "t", TileCache(8), size=256)).inclusion_proof(7, 256)


def test_the_writer_refuses_nodes_out_of_order(conn: sqlite3.Connection) -> None:
    writer = TileWriter(conn, "t", 0)
    with pytest.raises(TileError, match="expects node 0"):
        writer.put_many([(0, 1, hashlib.sha256(b"x").digest())])


def test_the_cache_keeps_only_full_tiles(conn: sqlite3.Connection) -> None:
    grow(conn, "t", [TILE_WIDTH + 10])
    cache = TileCache(8)
    view = MerkleTree(tile_view(conn, "t", cache))
    view.inclusion_proof(3, view.size)
    assert cache.get(("t", 0, 0)) is not None  # full: cached
    assert cache.get(("t", 0, 1)) is None  # the right edge grows, so it is never cached
