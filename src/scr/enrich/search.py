"""Similar sessions: one result per session (its best vector), best first, never fewer than
``min(k, sessions the filter keeps)``.

A filter that keeps few vectors (under ``exact_below``, counted through the store's indexes
up to that many) is searched exactly: an approximate index asked for the nearest of all
vectors and then filtered can return fewer than k (pgvector's HNSW returned 3 of 10 in a
published test). Otherwise the approximate index is asked for a few more candidates than k,
the filter is checked on each candidate's row, then ``WIDEN`` times as many are asked for
while the sessions found fall short, and past ``ANN_CAP`` candidates (or when the index had
no more to give) the search is exact. An exact answer says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from scr.enrich.neighbours import Neighbours
from scr.store.protocol import Store
from scr.store.vectors import VectorFilter

EXACT_BELOW = 2_000  # vectors a filter keeps, under which the search is exact (the default)
FIRST_CANDIDATES = 2  # the first approximate lookup asks for k × this + 1 (its own session)
WIDEN = 4
ANN_CAP = 4_096
NO_FILTER = VectorFilter()


class Found(NamedTuple):
    session_id: str
    event_id: str
    score: float
    source_fields: list[str]


@dataclass(frozen=True)
class Answer:
    results: list[Found]
    exact: bool

    def as_json(self) -> dict[str, Any]:
        return {"results": [found._asdict() for found in self.results], "exact": self.exact}


def similar(store: Store, neighbours: Neighbours, tenant: str, vector: np.ndarray, k: int,
            keep: VectorFilter = NO_FILTER, own_session: str | None = None,
            exact_below: int = EXACT_BELOW) -> Answer:
    """The ``k`` sessions of ``tenant`` most similar to ``vector`` (not ``own_session``);
    a filter keeping fewer than ``exact_below`` vectors is searched exactly."""
    search = _Search(store, neighbours, tenant, vector, k, own_session)
    if keep.empty:
        return search.approximate(None) or search.exact(neighbours.keys(tenant))
    matching = store.vectors.matching_keys(tenant, keep, limit=exact_below)
    if len(matching) < exact_below:
        return search.exact(matching)
    return search.approximate(keep) or search.exact(store.vectors.matching_keys(tenant, keep))


@dataclass
class _Search:
    store: Store
    neighbours: Neighbours
    tenant: str
    vector: np.ndarray
    k: int
    own_session: str | None

    def approximate(self, keep: VectorFilter | None) -> Answer | None:
        """The approximate answer, or None when it cannot be sure to have k sessions."""
        size = self.neighbours.size(self.tenant)
        count = self.k * FIRST_CANDIDATES + 1
        while True:
            best = self._best(self.neighbours.nearest(self.tenant, self.vector, count), keep)
            if len(best) >= self.k:
                return Answer(best[: self.k], exact=False)
            if count >= size or count >= ANN_CAP:
                return None
            count *= WIDEN

    def exact(self, keys: list[int]) -> Answer:
        best = self._best(self.neighbours.scores(self.tenant, self.vector, keys), None)
        return Answer(best[: self.k], exact=True)

    def _best(self, scored: list[tuple[int, float]], keep: VectorFilter | None) -> list[Found]:
        """Each session's best vector among ``scored`` (in order), stored rows only."""
        rows = self.store.vectors.by_keys(self.tenant, [key for key, _ in scored])
        gone = [key for key, _ in scored if key not in rows]
        if gone:
            self.neighbours.forget(self.tenant, gone)
        best: dict[str, Found] = {}
        for key, score in scored:
            row = rows.get(key)
            if row is None or (keep is not None and not keep.keeps(row)):
                continue
            if row.session_id == self.own_session or row.session_id in best:
                continue
            best[row.session_id] = Found(row.session_id, row.event_id, round(score, 6),
                                         row.source_fields)
        return sorted(best.values(), key=lambda found: -found.score)
