"""``GET /v1/sessions/{session_id}/similar``, ``POST /v1/search`` and ``GET /v1/enrichment``
(roles read and admin, the key's tenant in every query): ``scr.enrich.search`` over the
vectors the enricher stored. Answered ``404`` with enrichment off."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import datetime
from typing import Annotated

import msgspec
import numpy as np
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scr.canon.ledger import LedgerEntryLike
from scr.canon.validation import decode_json
from scr.config import EnrichmentConfig
from scr.enrich.embedders import Embedder, EmbedderError, open_embedder
from scr.enrich.neighbours import IndexedNeighbours, Neighbours, PgvectorNeighbours
from scr.enrich.search import DEFAULT_K, MAX_K, similar
from scr.enrich.status import enrichment_status
from scr.errors import BadRequest, Detail, NotFound, Unavailable
from scr.httpio import JSONResponse, read_body
from scr.log.entry import decode_entry
from scr.runtime import Runtime
from scr.store.protocol import Transaction
from scr.store.records import BACKFILL_ASKED
from scr.store.sqlite import SqliteStore
from scr.store.vectors import VectorFilter

log = logging.getLogger("scr.enrich")

MAX_SEARCH_BODY_BYTES = 64 * 1024
MAX_TEXT_BYTES = 32 * 1024  # as a content field (DESIGN.md, "Content for enrichment")


class SearchFilter(msgspec.Struct, forbid_unknown_fields=True):
    model: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    status: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    session_type: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    user_id: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    from_: Annotated[datetime, Meta(tz=True)] | None = msgspec.field(default=None, name="from")
    to: Annotated[datetime, Meta(tz=True)] | None = None


class SearchRequest(msgspec.Struct, forbid_unknown_fields=True):
    text: Annotated[str, Meta(min_length=1)]
    k: Annotated[int, Meta(ge=1, le=MAX_K)] = DEFAULT_K
    filter: SearchFilter = msgspec.field(default_factory=SearchFilter)


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
        answer = similar(store, self.neighbours, tenant, vector, k,
                         exact_below=self.config.index.exact_below)
        found = (store.find_event(tenant, session.event_id) for session in answer.results)
        return [decode_entry(stored.entry) for stored in found if stored is not None]

    def user_key(self, tenant: str, user_id: str) -> str:
        """A user id as the vectors hold it (the keyed hash when personal data is sealed)."""
        opener = self.runtime.tail.opener
        return opener.subject_of(tenant, user_id) if opener is not None else user_id


def parse_k(text: str | None) -> int:
    if text is None:
        return DEFAULT_K
    if not text.isdigit() or not 1 <= int(text) <= MAX_K:
        raise BadRequest(f"k must be a whole number from 1 to {MAX_K}", [Detail("k", f"got {text!r}")])
    return int(text)


def _milliseconds(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def enrichment_of(runtime: Runtime) -> Enrichment | None:
    """The edge's enrichment service (None: enrichment is off)."""
    config = runtime.config.enrichment
    return Enrichment(runtime, config) if config is not None else None


def enrichment_routes(runtime: Runtime, enrichment: Enrichment | None) -> list[Route]:

    def enabled() -> Enrichment:
        if enrichment is None:
            raise NotFound("enrichment is off: add `enrichment:` to the config to turn it on")
        return enrichment

    async def similar_sessions(request: Request) -> Response:
        tenant = runtime.tenant(request, "read")
        k = parse_k(request.query_params.get("k"))
        service, session_id = enabled(), request.path_params["session_id"]
        own = await asyncio.to_thread(runtime.store.vectors.of_session, tenant, session_id)
        if own is None:
            raise NotFound(f"no session {session_id!r} with an embedded text for this tenant")
        vector = np.frombuffer(own.vector, dtype="<f4")
        answer = await asyncio.to_thread(similar, runtime.store, service.neighbours, tenant, vector, k,
                                         VectorFilter(), session_id, service.config.index.exact_below)
        return JSONResponse(answer.as_json())

    async def search(request: Request) -> Response:
        tenant = runtime.tenant(request, "read")
        service = enabled()
        ask = decode_json(SearchRequest, await read_body(request, MAX_SEARCH_BODY_BYTES), "search")
        if len(ask.text.encode()) > MAX_TEXT_BYTES:
            raise BadRequest(f"text is over {MAX_TEXT_BYTES} UTF-8 bytes", [Detail("text", "too long")])
        wanted = ask.filter
        keep = VectorFilter(
            model=wanted.model, status=wanted.status, session_type=wanted.session_type,
            user_key=None if wanted.user_id is None else service.user_key(tenant, wanted.user_id),
            from_ms=_milliseconds(wanted.from_), to_ms=_milliseconds(wanted.to),
        )
        vector = await asyncio.to_thread(service.embed, ask.text)
        answer = await asyncio.to_thread(similar, runtime.store, service.neighbours, tenant, vector,
                                         ask.k, keep, None, service.config.index.exact_below)
        return JSONResponse(answer.as_json())

    async def status(request: Request) -> Response:
        principal = runtime.auth.principal(request.headers.get("authorization"))
        if principal.can("any_tenant"):  # a platform key follows a backfill it asked for
            tenant = request.query_params.get("tenant") or ""
        else:
            principal.require("read")
            tenant = principal.scope(request.query_params.get("tenant"))
        service = enabled()
        return JSONResponse(await asyncio.to_thread(enrichment_status, runtime.store,
                                                    service.config.embedder, tenant))

    async def ask_backfill(request: Request) -> Response:
        """A backfill (or a rebuild: every vector deleted, then the whole ledger embedded again),
        done by the enricher process once it has embedded the live entries."""
        runtime.principal(request, "any_tenant")  # every tenant's vectors: a platform key
        service = enabled()
        rebuild = request.url.path.endswith("/rebuild")
        store, head = runtime.store, await asyncio.to_thread(runtime.store.last_seq)
        asked = (await asyncio.to_thread(store.cursor, BACKFILL_ASKED) or 0) + 1

        def write(tx: Transaction) -> None:
            if rebuild:
                store.vectors.clear(tx, head)
            else:
                store.vectors.start(tx, head)  # (enrichment never ran: its start is now)
            store.set_cursor(tx, BACKFILL_ASKED, asked)

        await runtime.committer.run(write)
        if rebuild and isinstance(service.neighbours, IndexedNeighbours):
            await asyncio.to_thread(service.neighbours.folder.remove_all)
        tenant = request.query_params.get("tenant") or ""
        answer = await asyncio.to_thread(enrichment_status, store, service.config.embedder, tenant)
        return JSONResponse(answer, status_code=202)

    return [
        Route("/v1/enrichment/backfill", ask_backfill, methods=["POST"]),
        Route("/v1/enrichment/rebuild", ask_backfill, methods=["POST"]),
        Route("/v1/sessions/{session_id}/similar", similar_sessions, methods=["GET"]),
        Route("/v1/search", search, methods=["POST"]),
        Route("/v1/enrichment", status, methods=["GET"]),
    ]
