"""The canon's HTTP routes, for the server to mount.

``canon_routes(canon_for, authorize)`` knows nothing of keys or stores: ``authorize(request,
role)`` answers the caller's tenant (or raises a ``ScrError``), and ``canon_for(tenant)``
answers that tenant's ``Canon``. Roles asked for: ``decide`` (POST /v1/decide), ``admin``
(adding items, promoting), ``read`` (listing items, why-not traces) and ``ingest``
(observations). Errors are raised as ``ScrError``; the server renders them.

Canon calls append to the ledger, which may wait on a disk, so they run in a worker thread
(the event loop's default executor: measurably quicker per call than anyio's thread hop),
unless the ledger says its appends never block (``blocking = False``, as MemoryLedger does).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast, get_args

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scr.canon.canon import Canon
from scr.canon.model import (
    DecideRequest,
    ItemKind,
    ItemSpec,
    Level,
    PromoteRequest,
)
from scr.canon.validation import decode_exact, decode_json
from scr.errors import BadRequest, Detail
from scr.httpio import JSONResponse, read_body

MAX_BODY_BYTES = 1024 * 1024

Authorize = Callable[[Request, str], Awaitable[str]]
CanonFor = Callable[[str], Canon]

_encode = msgspec.json.Encoder(decimal_format="string").encode
T = TypeVar("T")


async def call_canon(canon: Canon, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a canon call: in the loop's default executor if its ledger may block, else here."""
    if not getattr(canon.ledger, "blocking", True):
        return call(*args, **kwargs)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(call, *args, **kwargs))


def _choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query_params.get(name)
    if value is not None and value not in allowed:
        raise BadRequest(
            f"{name} must be one of {', '.join(allowed)}",
            [Detail(f"?{name}", f"'{value}' is not one of {', '.join(allowed)}")],
        )
    return value


def canon_routes(canon_for: CanonFor, authorize: Authorize) -> list[Route]:
    """The canon's routes: decide, canon items, promote, why-not, observations."""

    async def decide(request: Request) -> Response:
        tenant = await authorize(request, "decide")
        ask = decode_json(DecideRequest, await read_body(request, MAX_BODY_BYTES), "decide request")
        canon = canon_for(tenant)
        if hasattr(canon.ledger, "append_async"):
            decision = await canon.decide_async(ask)
        else:
            decision = await call_canon(canon, canon.decide_valid, ask)
        return JSONResponse(decision)

    async def add_item(request: Request) -> Response:
        tenant = await authorize(request, "admin")
        spec = decode_json(ItemSpec, await read_body(request, MAX_BODY_BYTES), "canon item")
        canon = canon_for(tenant)
        item = await call_canon(canon, canon.add_item, spec)
        return JSONResponse(item, status_code=201)

    async def list_items(request: Request) -> Response:
        tenant = await authorize(request, "read")
        level = cast(Level | None, _choice(request, "level", get_args(Level)))
        kind = cast(ItemKind | None, _choice(request, "kind", get_args(ItemKind)))
        canon = canon_for(tenant)
        items = await call_canon(canon, canon.items, level=level, kind=kind)
        return JSONResponse({"items": items})

    async def promote(request: Request) -> Response:
        tenant = await authorize(request, "admin")
        ask = decode_json(PromoteRequest, await read_body(request, MAX_BODY_BYTES), "promotion request")
        canon = canon_for(tenant)
        result = await call_canon(
            canon, canon.promote, ask.item_id, to_level=ask.to_level, reason=ask.reason
        )
        return JSONResponse(result)

    async def why_not(request: Request) -> Response:
        tenant = await authorize(request, "read")
        canon = canon_for(tenant)
        trace = await call_canon(canon, canon.why_not, request.path_params["trace_id"])
        return JSONResponse(trace)

    async def observe(request: Request) -> Response:
        tenant = await authorize(request, "ingest")
        # Plain values, not an Observation: the cost's spelling is checked as written.
        observation = decode_exact(await read_body(request, MAX_BODY_BYTES), "observation")
        canon = canon_for(tenant)
        entry_id = await call_canon(canon, canon.observe, observation)
        return JSONResponse({"entry_id": entry_id}, status_code=201)

    return [
        Route("/v1/decide", decide, methods=["POST"]),
        Route("/v1/canon/items", add_item, methods=["POST"]),
        Route("/v1/canon/items", list_items, methods=["GET"]),
        Route("/v1/canon/promote", promote, methods=["POST"]),
        Route("/v1/canon/why-not/{trace_id}", why_not, methods=["GET"]),
        Route("/v1/canon/observations", observe, methods=["POST"]),
    ]
