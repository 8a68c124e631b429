"""``GET /v1/sessions/{session_id}/similar``, ``POST /v1/search`` and ``GET /v1/enrichment``
(roles read and admin, the key's tenant in every query): ``scr.enrich.search`` over the
vectors the enricher stored. Answered ``404`` with enrichment off."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scr.canon.validation import decode_json
from scr.enrich.limits import DEFAULT_K, MAX_K
from scr.enrich.status import enrichment_status
from scr.errors import BadRequest, Detail, NotFound
from scr.httpio import JSONResponse, read_body
from scr.runtime import Runtime
from scr.store.protocol import Transaction
from scr.store.records import BACKFILL_ASKED
from scr.store.vectors import VectorFilter

if TYPE_CHECKING:
    from scr.enrich.service import Enrichment

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


def parse_k(text: str | None) -> int:
    if text is None:
        return DEFAULT_K
    if not text.isdigit() or not 1 <= int(text) <= MAX_K:
        raise BadRequest(f"k must be a whole number from 1 to {MAX_K}", [Detail("k", f"got {text!r}")])
    return int(text)


def _milliseconds(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def enrichment_of(runtime: Runtime) -> Enrichment | None:
    """The edge's enrichment service (None: enrichment is off, and nothing of it is loaded)."""
    config = runtime.config.enrichment
    if config is None:
        return None
    from scr.enrich.service import Enrichment

    return Enrichment(runtime, config)


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
        answer = await asyncio.to_thread(service.similar_to_session, tenant, session_id, own.vector, k)
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
        answer = await asyncio.to_thread(service.search, tenant, ask.text, ask.k, keep)
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
        if rebuild:
            await asyncio.to_thread(service.forget_index)
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
