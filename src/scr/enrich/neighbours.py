"""Where a search finds its candidates: each store's nearest-neighbour lookups.

``IndexedNeighbours`` (the SQLite store) keeps each tenant's ``TenantIndex`` in memory,
loaded from its saved file or built from the store, and brought up to the store's newest
row before every lookup. ``PgvectorNeighbours`` (the PostgreSQL store) asks pgvector's HNSW
index. Both answer exact scores for a list of keys, which a selective filter needs.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from scr.enrich.index import IndexFolder, TenantIndex
from scr.store.protocol import Store
from scr.store.vectors import VectorFilter

CATCH_UP_ROWS = 5_000  # rows read from the store at a time when an index catches up


class Neighbours(Protocol):
    def nearest(self, tenant: str, vector: np.ndarray, count: int) -> list[tuple[int, float]]:
        """Up to ``count`` approximate nearest (key, cosine similarity), best first."""

    def scores(self, tenant: str, vector: np.ndarray, keys: list[int]) -> list[tuple[int, float]]:
        """Exact (key, similarity) of the keys, best first."""

    def keys(self, tenant: str) -> list[int]:
        """Every key of the tenant's vectors."""

    def size(self, tenant: str) -> int:
        """How many vectors a ``nearest`` can reach."""

    def forget(self, tenant: str, keys: list[int]) -> None:
        """Keys the store no longer has."""


class IndexedNeighbours:
    """The tenants' in-memory indexes of one process (thread-safe)."""

    def __init__(self, store: Store, data_dir: Path) -> None:
        self.store, self.folder = store, IndexFolder(data_dir)
        self._indexes: dict[str, TenantIndex] = {}
        self._saved: dict[str, int] = {}  # tenant → the newest key in its saved file
        self._lock = threading.Lock()

    def fresh(self, tenant: str) -> TenantIndex | None:
        """The tenant's index with every stored row (None: the tenant has no vectors)."""
        with self._lock:
            index = self._indexes.get(tenant)
            if index is None:
                first = self.store.vectors.after(tenant, 0, 1)
                if not first:
                    return None
                dimensions = first[0].dimensions
                index = self.folder.load(tenant, dimensions)
                if index is None:
                    index = TenantIndex.empty(tenant, dimensions)
                else:
                    self._saved[tenant] = index.top_key
                self._indexes[tenant] = index
            while rows := self.store.vectors.after(tenant, index.top_key, CATCH_UP_ROWS):
                index.add(rows, threads=0 if len(rows) == CATCH_UP_ROWS else 1)
                if len(rows) < CATCH_UP_ROWS:
                    break
            return index

    def save_changed(self) -> None:
        """Save each index that changed since it was last saved, without the rows the store
        no longer has (an erased subject's, or all of them after a rebuild)."""
        with self._lock:
            held = list(self._indexes.values())
        for index in held:
            stored = set(self.store.vectors.matching_keys(index.tenant, VectorFilter()))
            with self._lock:
                gone = [key for key in index.held_keys() if key not in stored]
                if index.top_key == self._saved.get(index.tenant) and not gone:
                    continue
                index.forget(gone)
                self.folder.save(index)
                self._saved[index.tenant] = index.top_key

    def nearest(self, tenant: str, vector: np.ndarray, count: int) -> list[tuple[int, float]]:
        index = self.fresh(tenant)
        return [] if index is None else index.nearest(vector, count)

    def scores(self, tenant: str, vector: np.ndarray, keys: list[int]) -> list[tuple[int, float]]:
        index = self.fresh(tenant)
        return [] if index is None else index.scores(vector, keys)

    def keys(self, tenant: str) -> list[int]:
        index = self.fresh(tenant)
        return [] if index is None else index.held_keys()

    def size(self, tenant: str) -> int:
        index = self.fresh(tenant)
        return 0 if index is None else len(index)

    def forget(self, tenant: str, keys: list[int]) -> None:
        with self._lock:
            index = self._indexes.get(tenant)
            if index is not None:
                index.forget(keys)


class PgvectorNeighbours:
    """pgvector's HNSW index (384 dimensions; other dimensions are searched exactly)."""

    def __init__(self, store: Any) -> None:
        self.vectors = store.vectors

    def nearest(self, tenant: str, vector: np.ndarray, count: int) -> list[tuple[int, float]]:
        result: list[tuple[int, float]] = self.vectors.nearest(tenant, vector, count)
        return result

    def scores(self, tenant: str, vector: np.ndarray, keys: list[int]) -> list[tuple[int, float]]:
        result: list[tuple[int, float]] = self.vectors.scores(tenant, vector, keys)
        return result

    def keys(self, tenant: str) -> list[int]:
        result: list[int] = self.vectors.all_keys(tenant)
        return result

    def size(self, tenant: str) -> int:
        return self.vectors.counts(tenant)[0]  # type: ignore[no-any-return]

    def forget(self, tenant: str, keys: list[int]) -> None:
        """Nothing to do: pgvector's index follows the table."""
