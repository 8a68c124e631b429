"""Enrichment index benchmark (enrichment issue): recall@10 against exact search and query
latency at ``SCR_BENCH_INDEX_VECTORS`` vectors of 384 dimensions in one tenant.

The vectors are synthetic and clustered like sentence embeddings (2,000 topics, each vector
a topic plus noise, normalised): uniform random vectors have no neighbourhoods, and
embedding 100,000 texts would take minutes of the bench. They are stored as the enricher
stores them (the SQLite store's ``session_vectors``), and searched as the API does
(``scr.enrich.search.similar``: the approximate index, then the store for each result's
session), on one thread:
- unfiltered: recall@10 of the results against exact search, p50 and p99;
- a filter keeping under 1% of the sessions (``model``): recall@10 (searched exactly) and p99;
- rebuilding the index from the store (a lost index file), and saving it.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.ingest import percentile
from scr.enrich.index import IndexFolder
from scr.enrich.neighbours import IndexedNeighbours
from scr.enrich.search import similar
from scr.log.commit import Committer
from scr.store.records import VectorRow
from scr.store.sqlite import SqliteStore
from scr.store.vectors import VectorFilter

VECTORS = int(os.environ.get("SCR_BENCH_INDEX_VECTORS", "100000"))
QUERIES = int(os.environ.get("SCR_BENCH_INDEX_QUERIES", "500"))
DIMENSIONS = 384
TOPICS = 2_000
NOISE = 0.6  # per dimension, against a unit topic: neighbours are close, not identical
RARE_EVERY = 200  # one session in this many has the rare model (0.5%)
K = 10
WRITE_ROWS = 5_000
TENANT = "org_bench"


def clustered(rng: np.random.Generator, count: int, topics: np.ndarray) -> np.ndarray:
    noise = rng.standard_normal((count, DIMENSIONS)).astype(np.float32) * NOISE / np.sqrt(DIMENSIONS)
    vectors = topics[rng.integers(0, len(topics), count)] + noise
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def store_vectors(store: SqliteStore, vectors: np.ndarray) -> None:
    committer = Committer(store, buffer_size=WRITE_ROWS)
    committer.start()
    try:
        for start in range(0, len(vectors), WRITE_ROWS):
            rows = [VectorRow(0, TENANT, f"s{n}", f"e{n}", n + 1, ["content.user_request"],
                              "all-MiniLM-L6-v2", DIMENSIONS, vectors[n].astype("<f4").tobytes(),
                              "rare-model" if n % RARE_EVERY == 0 else "gpt-4o", "success", "chat",
                              "user", 1_780_000_000_000 + n)
                    for n in range(start, min(start + WRITE_ROWS, len(vectors)))]
            cursor = start
            committer.run_sync(lambda tx, rows=rows, cursor=cursor: store.vectors.add(
                tx, rows, cursor, cursor + len(rows)))
    finally:
        committer.close()


def measure(store: SqliteStore, neighbours: IndexedNeighbours, vectors: np.ndarray,
            queries: np.ndarray, keep: VectorFilter, allowed: np.ndarray) -> dict[str, Any]:
    took, found, exact = [], 0, 0
    pool = vectors[allowed]
    for query in queries:
        started = time.perf_counter()
        answer = similar(store, neighbours, TENANT, query, K, keep)
        took.append(time.perf_counter() - started)
        truth = {f"s{allowed[i]}" for i in np.argsort(-(pool @ query))[:K]}
        found += len(truth & {result.session_id for result in answer.results})
        exact += answer.exact
    return {"recall_at_10": round(found / (K * len(queries)), 4),
            "answered_exactly": exact, "queries": len(queries),
            "p50_ms": round(percentile(took, 0.5) * 1000, 2),
            "p99_ms": round(percentile(took, 0.99) * 1000, 2)}


def main() -> dict[str, Any]:
    rng = np.random.default_rng(15)
    topics = rng.standard_normal((TOPICS, DIMENSIONS)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    vectors = clustered(rng, VECTORS, topics)
    queries = clustered(rng, QUERIES, topics)
    with tempfile.TemporaryDirectory(prefix="scr-bench-index-") as folder:
        data = Path(folder) / "data"
        store = SqliteStore(data)
        try:
            store_vectors(store, vectors)
            neighbours = IndexedNeighbours(store, data)
            started = time.perf_counter()
            neighbours.fresh(TENANT)
            built_s = time.perf_counter() - started
            started = time.perf_counter()
            neighbours.save_changed()
            saved_s = time.perf_counter() - started
            index_bytes = sum(path.stat().st_size for path in IndexFolder(data).path.glob("*.usearch"))
            everyone = np.arange(VECTORS)
            rare = everyone[everyone % RARE_EVERY == 0]
            return {
                "vectors": VECTORS, "dimensions": DIMENSIONS,
                "unfiltered": measure(store, neighbours, vectors, queries, VectorFilter(), everyone),
                "filter_keeping_0.5%": measure(store, neighbours, vectors, queries[:100],
                                               VectorFilter(model="rare-model"), rare),
                "rebuild_from_store_s": round(built_s, 1), "save_s": round(saved_s, 2),
                "index_file_mib": round(index_bytes / 2**20, 1),
            }
        finally:
            store.close()
