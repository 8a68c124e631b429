"""A tenant's approximate nearest-neighbour index (usearch HNSW, cosine), and its file.

The store's ``session_vectors`` are the truth (``scr.store.vectors``); the index is a cache
of them, named by row key, that any process can rebuild. The enricher saves each tenant's
index beside the database (``<data>/enrichment/<tenant digest>.usearch``) with a manifest:
the tenant, the dimensions, the newest key it holds, its size and the file's SHA-256,
written after the index file, each atomically. A process loads the file when the manifest
matches it (and builds the index from the store otherwise: a deleted or damaged file costs a
rebuild, never a wrong answer), then adds the rows past the manifest's key from the store.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import msgspec
import numpy as np
from usearch.index import Index

from scr.fsync import fsync_path
from scr.store.records import VectorRow

log = logging.getLogger("scr.enrich.index")

INDEX_FOLDER = "enrichment"
# HNSW settings measured at 100,000 vectors of 384 dimensions: recall@10 1.0 against exact
# search, query p99 about 3 ms on one core (bench/bench_enrich_index.py).
CONNECTIVITY = 24
EXPANSION_ADD = 128
EXPANSION_SEARCH = 200
HASH_CHUNK = 1 << 20


class Manifest(msgspec.Struct, frozen=True):
    tenant: str
    dimensions: int
    top_key: int
    size: int
    sha256: str


def as_matrix(rows: list[VectorRow]) -> tuple[np.ndarray, np.ndarray]:
    """The rows' keys (uint64) and vectors (float32, one row each)."""
    keys = np.fromiter((row.key for row in rows), dtype=np.uint64, count=len(rows))
    vectors = np.frombuffer(b"".join(row.vector for row in rows), dtype="<f4")
    return keys, vectors.reshape(len(rows), -1)


@dataclass
class TenantIndex:
    """The vectors of one tenant, searchable by cosine similarity."""

    tenant: str
    dimensions: int
    index: Index
    top_key: int = 0  # the newest row key added

    @classmethod
    def empty(cls, tenant: str, dimensions: int) -> TenantIndex:
        return cls(tenant, dimensions, Index(ndim=dimensions, metric="cos", dtype="f32",
                                             connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD,
                                             expansion_search=EXPANSION_SEARCH))

    def __len__(self) -> int:
        return len(self.index)

    def add(self, rows: list[VectorRow], threads: int = 1) -> None:
        """Add the rows past ``top_key`` (``threads`` 0: on every core, for a rebuild)."""
        rows = [row for row in rows if row.key > self.top_key and row.dimensions == self.dimensions]
        if not rows:
            return
        keys, vectors = as_matrix(rows)
        self.index.add(keys, vectors, threads=threads)
        self.top_key = int(keys[-1])

    def nearest(self, vector: np.ndarray, count: int) -> list[tuple[int, float]]:
        """Up to ``count`` (key, cosine similarity), best first."""
        if not len(self.index):
            return []
        found = self.index.search(vector, min(count, len(self.index)), threads=1)
        pairs = zip(found.keys, found.distances, strict=True)
        return [(int(key), 1.0 - float(distance)) for key, distance in pairs]

    def scores(self, vector: np.ndarray, keys: list[int]) -> list[tuple[int, float]]:
        """The exact similarity of each of ``keys`` it holds, best first."""
        held = [key for key in keys if key in self.index]
        if not held:
            return []
        found = self.index.get(np.asarray(held, dtype=np.uint64), dtype="f32")
        matrix = np.vstack(cast(tuple[np.ndarray, ...], found))
        similarity = matrix @ vector
        order = np.argsort(-similarity, kind="stable")
        return [(held[i], float(similarity[i])) for i in order]

    def held_keys(self) -> list[int]:
        keys: list[int] = np.asarray(self.index.keys).tolist()  # iterating them is 50 µs a key
        return keys

    def forget(self, keys: list[int]) -> None:
        """Drop rows the store no longer has (erased, or cleared by a rebuild)."""
        for key in keys:
            if key in self.index:
                self.index.remove(key)


class IndexFolder:
    """The saved indexes of a data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / INDEX_FOLDER

    def _files(self, tenant: str) -> tuple[Path, Path]:
        name = hashlib.sha256(tenant.encode()).hexdigest()[:32]
        return self.path / f"{name}.usearch", self.path / f"{name}.json"

    def save(self, index: TenantIndex) -> None:
        """Write the index, then its manifest (each to a new file, fsynced, renamed)."""
        self.path.mkdir(mode=0o700, exist_ok=True)
        data, manifest = self._files(index.tenant)
        fresh = data.with_suffix(".usearch.new")
        index.index.save(str(fresh))
        fsync_path(fresh)
        digest = _sha256(fresh)
        os.replace(fresh, data)
        described = Manifest(index.tenant, index.dimensions, index.top_key, len(index), digest)
        _write_synced(manifest, msgspec.json.encode(described))
        fsync_path(self.path)

    def load(self, tenant: str, dimensions: int) -> TenantIndex | None:
        """The saved index of the tenant, or None: missing, damaged or of other dimensions."""
        data, manifest_file = self._files(tenant)
        try:
            manifest = msgspec.json.decode(manifest_file.read_bytes(), type=Manifest)
            if manifest.tenant != tenant or manifest.dimensions != dimensions:
                return None
            if _sha256(data) != manifest.sha256:
                log.warning("the index file of a tenant does not match its manifest: rebuilding it")
                return None
            loaded = TenantIndex.empty(tenant, dimensions)
            loaded.index.load(str(data))
        except (OSError, ValueError, RuntimeError, msgspec.DecodeError):
            return None
        if len(loaded.index) != manifest.size:
            return None
        loaded.top_key = manifest.top_key
        return loaded

    def remove_all(self) -> None:
        """Delete every saved index (a rebuild)."""
        for path in self.path.glob("*"):
            path.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_synced(path: Path, body: bytes) -> None:
    fresh = path.with_suffix(path.suffix + ".new")
    with fresh.open("wb") as file:
        file.write(body)
        file.flush()
        os.fsync(file.fileno())
    os.replace(fresh, path)
