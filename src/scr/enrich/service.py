"""The enrichment an edge serves: the embedder (loaded at the first text search) and the
store's nearest-neighbour lookups. ``scr.enrich.routes`` loads this module only when
enrichment is on, so an instance without it never imports numpy and the index."""

from __future__ import annotations

import asyncio
import logging
import threading

import numpy as np

from scr.canon.ledger import LedgerEntryLike
from scr.config import EnrichmentConfig
from scr.enrich.embedders import Embedder, EmbedderError, open_embedder
from scr.enrich.neighbours import IndexedNeighbours, Neighbours, PgvectorNeighbours
from scr.enrich.search import NO_FILTER, Answer, similar
from scr.errors import Unavailable
from scr.log.entry import decode_entry
from scr.runtime import Runtime
from scr.store.sqlite import SqliteStore
from scr.store.vectors import VectorFilter

log = logging.getLogger("scr.enrich")


class Enrichment:
    """What an edge needs to search: the embedder (loaded at the first text search) and the
    store's nearest-neighbour lookups."""

    def __init__(self, runtime: Runtime, config: EnrichmentConfig) -> None:
        self.runtime, self.config = runtime, config
        store = runtime.store
        self.neighbours: Neighbours = (IndexedNeighbours(store, runtime.data_dir)
                                       if isinstance(store, SqliteStore) else PgvectorNeighbours(store))
        self._embedder: Embedder | None = None
        self._loading = threading.Lock()

    async def mark_start(self) -> None:
        """Enrichment on: the enricher starts at the ledger's head as the instance starts,
        before it takes an event (the start kept when enrichment ran before). Marked here, not
        by the enricher process: one slow to load its model left the events of its first
        seconds to a backfill."""
        store = self.runtime.store
        head = await asyncio.to_thread(store.last_seq)
        await self.runtime.committer.run(lambda tx: store.vectors.start(tx, head))

    def embedder(self) -> Embedder:
        with self._loading:
            if self._embedder is None:
                embedder = self.config.embedder
                self._embedder = open_embedder(embedder.kind, embedder.model, embedder.url,
                                               embedder.api_key_env)
            return self._embedder

    def embed(self, text: str) -> np.ndarray:
        try:
            vector: np.ndarray = self.embedder().embed([text])[0]
        except (EmbedderError, ValueError) as error:
            raise Unavailable(f"the embedder cannot embed the text now: {error}") from None
        return vector

    def recall(self, tenant: str, text: str, k: int) -> list[LedgerEntryLike]:
        """The session completions of the ``k`` sessions most similar to ``text`` (the
        canon's evidence; none when the embedder fails: the decision then rests on the
        recent evidence, and the failure is logged)."""
        try:
            vector = self.embed(text)
        except Unavailable as error:
            log.warning("no similar sessions for a decision: %s", error.message)
            return []
        store = self.runtime.store
        found = (store.find_event(tenant, session.event_id)
                 for session in self._nearest(tenant, vector, k).results)
        return [decode_entry(stored.entry) for stored in found if stored is not None]

    def user_key(self, tenant: str, user_id: str) -> str:
        """A user id as the vectors hold it (the keyed hash when personal data is sealed)."""
        opener = self.runtime.tail.opener
        return opener.subject_of(tenant, user_id) if opener is not None else user_id

    def similar_to_session(self, tenant: str, session_id: str, vector: bytes, k: int) -> Answer:
        """The ``k`` sessions nearest a stored session's vector (little-endian float32s)."""
        return self._nearest(tenant, np.frombuffer(vector, dtype="<f4"), k, own_session=session_id)

    def search(self, tenant: str, text: str, k: int, keep: VectorFilter) -> Answer:
        """The ``k`` sessions nearest ``text`` that ``keep`` lets through."""
        return self._nearest(tenant, self.embed(text), k, keep)

    def _nearest(self, tenant: str, vector: np.ndarray, k: int, keep: VectorFilter = NO_FILTER,
                 own_session: str | None = None) -> Answer:
        return similar(self.runtime.store, self.neighbours, tenant, vector, k, keep, own_session,
                       self.config.index.exact_below)

    def forget_index(self) -> None:
        """Remove the saved index files (a rebuild embeds every vector again)."""
        if isinstance(self.neighbours, IndexedNeighbours):
            self.neighbours.folder.remove_all()
