"""Tree upkeep inside the committer's transactions: in step with the ledger, through failures."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from packed import ledger_table

from ledger.conftest import submission
from scr.errors import Unavailable
from scr.ledger import upkeep
from scr.ledger.proofs import TreeReader
from scr.ledger.tiles import TileCache, covered_seq, create_schema, open_database, tile_view, tree_sizes
from scr.ledger.upkeep import SizedKeeper, TreeKeeper
from scr.log import merkle
from scr.log.commit import Committed, Committer
from scr.log.merkle import leaf_hash
from scr.log.nodes import MerkleTree
from scr.store.postgres import PostgresStore
from scr.store.protocol import Store
from scr.store.sql import PgSql, sql_of
from scr.store.sqlite import SqliteStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "data")
    conn = open_database(opened.path)
    create_schema(conn)
    conn.close()
    yield opened
    opened.close()


def committer_with_keeper(store: Store, keeper: TreeKeeper) -> Committer:
    committer = Committer(store, buffer_size=10_000)
    committer.append_hooks.append(lambda tx, committed: keeper.append_hook(sql_of(tx), committed))
    committer.failure_hooks.append(keeper.forget)
    committer.start()
    return committer


def ledger_root(store: Store, tenant: str) -> bytes:
    """The RFC 6962 root over the tenant's stored entry bytes, computed from scratch."""
    entries = store.tenant_entries(tenant, 0, 1_000_000)
    assert [e.tenant_seq for e in entries] == list(range(len(entries)))
    return merkle.root([leaf_hash(e.entry) for e in entries])


def stored_root(store: SqliteStore, tenant: str) -> bytes:
    conn = open_database(store.path)
    try:
        return MerkleTree(tile_view(conn, tenant, TileCache(16))).root()
    finally:
        conn.close()


def append(committer: Committer, ids: list[str], tenant: str = "org_acme") -> None:
    asyncio.run(committer.append_events([submission(i, tenant) for i in ids]))


def test_every_tenant_tree_follows_its_ledger(store: SqliteStore) -> None:
    committer = committer_with_keeper(store, TreeKeeper())
    try:
        for group in range(5):
            append(committer, [f"a{group}_{i}" for i in range(97)], "org_a")
            append(committer, [f"b{group}_{i}" for i in range(3)], "org_b")
    finally:
        committer.close()
    conn = open_database(store.path)
    assert tree_sizes(conn) == {"org_a": 485, "org_b": 15}
    assert covered_seq(conn) == store.last_seq() == 500
    conn.close()
    for tenant in ("org_a", "org_b"):
        assert stored_root(store, tenant) == ledger_root(store, tenant)


def test_a_failed_group_leaves_no_tree_state_and_the_next_one_is_right(store: SqliteStore) -> None:
    keeper = TreeKeeper()
    committer = committer_with_keeper(store, keeper)
    failures = {"left": 0}

    def failing_after_the_keeper(tx: object, committed: list[Committed]) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("disk went away")

    committer.append_hooks.append(failing_after_the_keeper)
    try:
        append(committer, [f"first_{i}" for i in range(300)])
        failures["left"] = 1
        with pytest.raises(Unavailable):  # the keeper had extended its tree: it must forget that
            append(committer, [f"lost_{i}" for i in range(50)])
        append(committer, [f"after_{i}" for i in range(20)])
    finally:
        committer.close()
    assert store.last_seq() == 320
    assert stored_root(store, "org_acme") == ledger_root(store, "org_acme")


def test_entries_written_by_another_process_are_caught_up(store: SqliteStore) -> None:
    server_side = committer_with_keeper(store, TreeKeeper())
    try:
        append(server_side, ["evt_1"])
        cli_side = Committer(store, buffer_size=10)  # as `scr keys create` does: no hooks
        cli_side.start()
        append(cli_side, ["evt_2", "evt_3"])
        cli_side.close()
        append(server_side, ["evt_4"], "org_other")  # another tenant's group still catches up
    finally:
        server_side.close()
    conn = open_database(store.path)
    assert tree_sizes(conn) == {"org_acme": 3, "org_other": 1}
    conn.close()
    assert stored_root(store, "org_acme") == ledger_root(store, "org_acme")


def test_a_ledger_from_before_the_trees_is_hashed_in(store: SqliteStore) -> None:
    plain = Committer(store, buffer_size=1000)
    plain.start()
    append(plain, [f"old_{i}" for i in range(700)])
    plain.close()
    keeper = TreeKeeper()
    conn = open_database(store.path)
    conn.execute("BEGIN IMMEDIATE")
    keeper.append_hook(conn, [])  # what the service does at startup
    conn.execute("COMMIT")
    conn.close()
    assert stored_root(store, "org_acme") == ledger_root(store, "org_acme")


def test_a_removed_entry_stops_the_tree_instead_of_forking_it(store: SqliteStore) -> None:
    committer = committer_with_keeper(store, TreeKeeper())
    try:
        append(committer, ["evt_1", "evt_2", "evt_3"])
        with sqlite3.connect(store.path) as conn, ledger_table(conn):  # tampering while the server runs
            conn.execute("DELETE FROM ledger WHERE tenant_seq = 2")
        other = Committer(store, buffer_size=10)  # makes the writer reload its chain heads
        other.start()
        other.close()
        with pytest.raises(Unavailable):
            append(committer, ["evt_4"])
        assert "entries were removed" in committer.last_error
    finally:
        committer.close()


def test_trees_dropped_from_memory_are_reloaded_exactly(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upkeep, "TREES_IN_MEMORY", 2)
    committer = committer_with_keeper(store, TreeKeeper())
    try:
        for group in range(6):
            for tenant in ("org_a", "org_b", "org_c", "org_d"):
                append(committer, [f"{tenant}_{group}_{i}" for i in range(70)], tenant)
    finally:
        committer.close()
    for tenant in ("org_a", "org_b", "org_c", "org_d"):
        assert stored_root(store, tenant) == ledger_root(store, tenant)


def test_two_instances_on_postgresql_keep_every_tree_exact(postgres_uri: str) -> None:
    """Two writers of one PostgreSQL ledger (a cluster's instances; a partition moving between
    them): each keeps the trees of what it appends, reloads only the tenants the other one
    appended to, and forgets its trees after a failed group."""
    stores = [PostgresStore(postgres_uri), PostgresStore(postgres_uri)]
    keepers: list[TreeKeeper] = [SizedKeeper(), SizedKeeper()]  # writers side by side
    committers = [committer_with_keeper(s, k) for s, k in zip(stores, keepers, strict=True)]
    failures = {"left": 0}

    def failing_after_the_keeper(tx: object, committed: list[Committed]) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("connection cut")

    committers[0].append_hooks.append(failing_after_the_keeper)
    first, second = committers
    try:
        append(first, [f"a0_{i}" for i in range(300)], "org_a")
        append(first, [f"c0_{i}" for i in range(10)], "org_c")
        load_of_a = keepers[0].held_heads(["org_a"])["org_a"].load
        append(second, [f"b0_{i}" for i in range(260)], "org_b")
        append(first, [f"a1_{i}" for i in range(5)], "org_a")
        assert keepers[0].held_heads(["org_a"])["org_a"].load == load_of_a  # org_b moved, not org_a
        append(second, [f"c1_{i}" for i in range(20)], "org_c")  # org_c's partition moved over
        append(first, [f"c2_{i}" for i in range(7)], "org_c")  # and back
        failures["left"] = 1
        with pytest.raises(Unavailable):  # first's keeper had taken them: it must forget that
            append(first, [f"lost_{i}" for i in range(50)], "org_a")
        append(second, [f"b1_{i}" for i in range(3)], "org_b")  # the ledger moves past first's
        append(first, [f"a2_{i}" for i in range(40)], "org_a")
        append(second, [f"a3_{i}" for i in range(30)], "org_a")
    finally:
        for committer in committers:
            committer.close()
    reader = TreeReader(lambda: PgSql(stores[0].connect()))
    sizes = {"org_a": 375, "org_b": 263, "org_c": 37}
    for tenant, size in sizes.items():
        assert reader.size(tenant) == size
        assert reader.tree(tenant).root() == ledger_root(stores[0], tenant), tenant
    for opened in stores:
        opened.close()
