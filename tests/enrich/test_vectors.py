"""The session vectors in each store and the search over them, with vectors made here (the
embedders have tests of their own): tenants apart, one result per session, never fewer than
min(k, matching sessions), exact for selective filters, deleted vectors gone, and a saved
index that is lost or damaged rebuilt from the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from store import test_store

from scr.enrich.index import IndexFolder
from scr.enrich.neighbours import IndexedNeighbours, Neighbours, PgvectorNeighbours
from scr.enrich.search import similar
from scr.log.commit import Committer
from scr.store import Store
from scr.store.records import ENRICH_CURSOR, VectorRow
from scr.store.sqlite import SqliteStore
from scr.store.vectors import VectorFilter

committer = test_store.committer  # the store tests' fixture: a running Committer
DIMENSIONS = 384
MODEL = "all-MiniLM-L6-v2"


def unit(rng: np.random.Generator, around: np.ndarray | None = None, spread: float = 1.0) -> np.ndarray:
    vector = rng.standard_normal(DIMENSIONS).astype(np.float32) * spread
    if around is not None:
        vector += around
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def row(vector: np.ndarray, session: str, tenant: str = "org_acme", seq: int = 1, user: str = "user_1",
        model: str = "gpt-4o", status: str = "success", at_ms: int = 1_780_000_000_000) -> VectorRow:
    return VectorRow(0, tenant, session, f"evt_{session}_{seq}", seq, ["content.user_request"], MODEL,
                     DIMENSIONS, vector.astype("<f4").tobytes(), model, status, "chat", user, at_ms)


def add(committer: Committer, store: Store, rows: list[VectorRow]) -> None:
    cursor = store.cursor(ENRICH_CURSOR) or 0
    assert committer.run_sync(lambda tx: store.vectors.add(tx, rows, cursor, cursor + 1))


@pytest.fixture
def neighbours(store: Store, tmp_path: Path) -> Iterator[Neighbours]:
    yield (IndexedNeighbours(store, tmp_path / "data") if isinstance(store, SqliteStore)
           else PgvectorNeighbours(store))


def test_a_round_and_the_cursor_commit_together_once(store: Store, committer: Committer) -> None:
    rng = np.random.default_rng(1)
    first = [row(unit(rng), "s1")]
    assert committer.run_sync(lambda tx: store.vectors.add(tx, first, 0, 5))
    # a killed enricher's round that arrives after its successor's: refused whole
    assert not committer.run_sync(lambda tx: store.vectors.add(tx, first, 0, 5))
    assert store.cursor(ENRICH_CURSOR) == 5
    [stored] = store.vectors.after("org_acme", 0, 10)
    assert stored.key > 0 and stored.session_id == "s1" and stored.source_fields == ["content.user_request"]
    assert stored.vector == first[0].vector
    assert store.vectors.counts("org_acme") == (1, 1) and store.vectors.counts("org_other") == (0, 0)
    assert store.vectors.models() == [(MODEL, DIMENSIONS)]


def test_results_are_one_per_session_best_first_never_its_own_nor_another_tenants(
        store: Store, committer: Committer, neighbours: Neighbours) -> None:
    rng = np.random.default_rng(2)
    topic = unit(rng)
    rows = [row(unit(rng, topic, 0.02), f"near_{n}") for n in range(6)]
    rows += [row(unit(rng, topic, 0.02), "near_0", seq=2)]  # a second vector of one session
    rows += [row(unit(rng), f"far_{n}") for n in range(20)]
    rows += [row(unit(rng, topic, 0.02), f"other_{n}", tenant="org_other") for n in range(5)]
    add(committer, store, rows)
    query = unit(rng, topic, 0.02)
    answer = similar(store, neighbours, "org_acme", query, 5, own_session="near_1")
    sessions = [found.session_id for found in answer.results]
    assert sorted(sessions) == ["near_0", "near_2", "near_3", "near_4", "near_5"]
    scores = [found.score for found in answer.results]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= found.score <= 1.0 for found in answer.results)
    everything = similar(store, neighbours, "org_acme", query, 100)
    assert len(everything.results) == 26  # every session of the tenant once, none of org_other
    assert not any(found.session_id.startswith("other_") for found in everything.results)


def test_a_selective_filter_is_searched_exactly_and_never_returns_fewer_than_it_keeps(
        store: Store, committer: Committer, neighbours: Neighbours) -> None:
    rng = np.random.default_rng(3)
    rows = [row(unit(rng), f"s{n}", model="gpt-4o-mini" if n % 50 == 0 else "gpt-4o",
                at_ms=1_780_000_000_000 + n) for n in range(400)]
    add(committer, store, rows)
    query = unit(rng)
    answer = similar(store, neighbours, "org_acme", query, 10, VectorFilter(model="gpt-4o-mini"))
    assert answer.exact and len(answer.results) == 8  # all 8 sessions it keeps, k being 10
    assert {found.session_id for found in answer.results} == {f"s{n}" for n in range(0, 400, 50)}
    window = VectorFilter(from_ms=1_780_000_000_000 + 100, to_ms=1_780_000_000_000 + 103)
    assert {f.session_id for f in similar(store, neighbours, "org_acme", query, 10, window).results} == {
        "s100", "s101", "s102"}
    wide = similar(store, neighbours, "org_acme", query, 10, VectorFilter(model="gpt-4o"), exact_below=0)
    assert len(wide.results) == 10 and not wide.exact
    truth = sorted(((float(np.frombuffer(r.vector, dtype="<f4") @ query), r.session_id)
                    for r in rows if r.event_model == "gpt-4o"), reverse=True)[:10]
    assert [found.session_id for found in wide.results] == [session for _, session in truth]


def test_a_deleted_subjects_vectors_leave_no_trace_and_are_not_added_again(
        store: Store, committer: Committer, neighbours: Neighbours) -> None:
    rng = np.random.default_rng(4)
    topic = unit(rng)
    rows = [row(unit(rng, topic, 0.02), f"mine_{n}", user="subject_hash_a") for n in range(3)]
    rows += [row(unit(rng), f"theirs_{n}", user="subject_hash_b") for n in range(3)]
    add(committer, store, rows)
    query = unit(rng, topic, 0.02)
    assert {f.session_id for f in similar(store, neighbours, "org_acme", query, 3).results} == {
        "mine_0", "mine_1", "mine_2"}
    deleted = committer.run_sync(lambda tx: store.vectors.delete_subject(tx, "org_acme", "subject_hash_a"))
    assert deleted == 3
    after = similar(store, neighbours, "org_acme", query, 10)
    assert sorted(f.session_id for f in after.results) == ["theirs_0", "theirs_1", "theirs_2"]
    assert store.vectors.of_session("org_acme", "mine_0") is None


def test_an_erased_subjects_round_adds_nothing_for_it(store: Store, committer: Committer) -> None:
    rng = np.random.default_rng(5)
    committer.run_sync(lambda tx: store.add_subject_key(tx, "org_acme", "subject_hash_a", 1, b"wrapped"))
    committer.run_sync(lambda tx: store.erase_subject_keys(tx, "org_acme", "subject_hash_a",
                                                          "2026-12-05T00:00:00.000000Z"))
    add(committer, store, [row(unit(rng), "erased", user="subject_hash_a"),
                           row(unit(rng), "kept", user="subject_hash_b")])
    assert [r.session_id for r in store.vectors.after("org_acme", 0, 10)] == ["kept"]


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[tuple[SqliteStore, Committer]]:
    """A SQLite store of ``tmp_path / "data"`` (where its indexes are saved) and its committer."""
    store = SqliteStore(tmp_path / "data")
    running = Committer(store, buffer_size=1_000)
    running.start()
    yield store, running
    running.close()
    store.close()


@pytest.mark.parametrize("damage", ["deleted", "flipped", "truncated"])
def test_a_lost_or_damaged_index_file_is_rebuilt_from_the_store(
        tmp_path: Path, sqlite: tuple[SqliteStore, Committer], damage: str) -> None:
    store, running = sqlite
    rng = np.random.default_rng(6)
    add(running, store, [row(unit(rng), f"s{n}") for n in range(300)])
    query = unit(rng)
    first = IndexedNeighbours(store, tmp_path / "data")
    expected = similar(store, first, "org_acme", query, 10)
    first.save_changed()
    [saved] = (tmp_path / "data" / "enrichment").glob("*.usearch")
    if damage == "deleted":
        saved.unlink()
    elif damage == "flipped":
        body = bytearray(saved.read_bytes())
        body[len(body) // 2] ^= 0xFF
        saved.write_bytes(bytes(body))
    else:
        saved.write_bytes(saved.read_bytes()[:100])
    assert IndexFolder(tmp_path / "data").load("org_acme", DIMENSIONS) is None
    again = similar(store, IndexedNeighbours(store, tmp_path / "data"), "org_acme", query, 10)
    assert again == expected


def test_a_saved_index_is_loaded_and_follows_rows_added_after_it(
        tmp_path: Path, sqlite: tuple[SqliteStore, Committer]) -> None:
    store, running = sqlite
    rng = np.random.default_rng(7)
    add(running, store, [row(unit(rng), f"s{n}") for n in range(50)])
    saver = IndexedNeighbours(store, tmp_path / "data")
    saver.fresh("org_acme")
    saver.save_changed()
    newest = unit(rng)
    add(running, store, [row(newest, "late")])
    loaded = IndexFolder(tmp_path / "data").load("org_acme", DIMENSIONS)
    assert loaded is not None and len(loaded) == 50
    answer = similar(store, IndexedNeighbours(store, tmp_path / "data"), "org_acme", newest, 1)
    assert [f.session_id for f in answer.results] == ["late"]
