"""The ledger proof API (``/v1/ledger/...``): checkpoints, entries and proofs, tenant-scoped.

Every route needs the ``ledger`` permission (roles ``read``, ``admin`` and ``auditor``) and
answers for the key's tenant, or for ``?tenant=`` when the key spans tenants.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from scr.errors import BadRequest, Detail, Unavailable
from scr.ledger.checkpoints import StoredCheckpoint
from scr.ledger.service import LedgerService
from scr.security.keys import Principal

MAX_CHECKPOINTS_PER_CALL = 1000
MAX_TREE_SIZE = 2**63 - 1  # SQLite's integers: no tree is larger
_NUMBER = re.compile(r"0|[1-9][0-9]{0,18}")

# (path, method) of every ledger route, in the order ledger_routes builds their handlers.
LEDGER_ROUTES: list[tuple[str, str]] = [
    ("/v1/ledger/checkpoint", "GET"),
    ("/v1/ledger/checkpoint", "POST"),
    ("/v1/ledger/public-key", "GET"),
    ("/v1/ledger/checkpoints", "GET"),
    ("/v1/ledger/entries", "GET"),
    ("/v1/ledger/proof/inclusion", "GET"),
    ("/v1/ledger/proof/consistency", "GET"),
]

Authorize = Callable[[Request, str], Principal]
"""``authorize(request, permission)``: the caller, or ``Unauthorized`` / ``Forbidden``."""


def _json(content: Any) -> Response:
    return Response(msgspec.json.encode(content), media_type="application/json")


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _number(request: Request, name: str, default: int | None = None) -> int:
    """A non-negative integer query parameter; 400 naming it when missing or malformed."""
    raw = request.query_params.get(name)
    if raw is None:
        if default is not None:
            return default
        raise BadRequest(f"`{name}` is required", [Detail(name, "required: a non-negative integer")])
    if not _NUMBER.fullmatch(raw) or int(raw) > MAX_TREE_SIZE:
        raise BadRequest(
            f"`{name}` must be a non-negative integer",
            [Detail(name, f"expected a non-negative integer without leading zeros, got {raw[:40]!r}")],
        )
    return int(raw)


def _checkpoint_view(checkpoint: StoredCheckpoint) -> dict[str, Any]:
    return {
        "tree_size": checkpoint.tree_size,
        "root_hash": _b64(checkpoint.root_hash),
        "issued_at": checkpoint.issued_at,
        "checkpoint": checkpoint.note,
    }


def ledger_routes(ledger: LedgerService, authorize: Authorize) -> list[Route]:
    """The routes of the ledger API over one ``LedgerService``."""

    def tenant_of(request: Request) -> str:
        return authorize(request, "ledger").scope(request.query_params.get("tenant"))

    async def get_checkpoint(request: Request) -> Response:
        checkpoint = await ledger.newest_checkpoint(tenant_of(request))
        return PlainTextResponse(checkpoint.note)

    async def post_checkpoint(request: Request) -> Response:
        checkpoint = await ledger.issue_now(tenant_of(request))
        return PlainTextResponse(checkpoint.note)

    async def get_public_key(request: Request) -> Response:
        authorize(request, "ledger")  # one key signs every tenant's tree: no tenant needed
        return PlainTextResponse(ledger.signer.verifier_key() + "\n")

    async def list_checkpoints(request: Request) -> Response:
        tenant = tenant_of(request)
        since = _number(request, "since", default=0)
        found = await ledger.checkpoints_since(tenant, since, MAX_CHECKPOINTS_PER_CALL)
        return _json({"checkpoints": [_checkpoint_view(c) for c in found]})

    async def list_entries(request: Request) -> Response:
        tenant = tenant_of(request)
        start, end = _number(request, "start"), _number(request, "end")
        if end < start:
            raise BadRequest("`end` must not be below `start`", [Detail("end", "must be >= start")])
        rows = await ledger.entries(tenant, start, end)
        entries = [{"index": r.tenant_seq, "event_id": r.event_id, "leaf": _b64(r.entry)} for r in rows]
        return _json({"entries": entries})

    async def inclusion(request: Request) -> Response:
        tenant = tenant_of(request)
        event_id = request.query_params.get("event_id")
        has_index = "index" in request.query_params
        if (event_id is None) == (not has_index):
            raise BadRequest(
                "name the entry with exactly one of `event_id` or `index`",
                [Detail("event_id", "give event_id, or index")],
            )
        tree_size = _number(request, "tree_size")
        index, event_id = await ledger.entry_at(
            tenant, event_id, _number(request, "index") if has_index else None
        )
        hashes = await ledger.inclusion_proof(tenant, index, tree_size)
        return _json({
            "leaf_index": index, "event_id": event_id, "tree_size": tree_size,
            "hashes": [_b64(h) for h in hashes],
        })

    async def consistency(request: Request) -> Response:
        tenant = tenant_of(request)
        first, second = _number(request, "first"), _number(request, "second")
        hashes = await ledger.consistency_proof(tenant, first, second)
        return _json({"first": first, "second": second, "hashes": [_b64(h) for h in hashes]})

    handlers = [get_checkpoint, post_checkpoint, get_public_key, list_checkpoints, list_entries,
                inclusion, consistency]
    return [
        Route(path, handler, methods=[method])
        for (path, method), handler in zip(LEDGER_ROUTES, handlers, strict=True)
    ]


def unavailable_routes(
    reason: str, routes: Sequence[tuple[str, str]] = LEDGER_ROUTES
) -> list[Route]:
    """The ledger routes (or ``routes``) on a store that does not keep what they serve: each
    answers 503 with why."""

    async def unavailable(request: Request) -> Response:
        raise Unavailable(reason)

    return [Route(path, unavailable, methods=[method]) for path, method in routes]
