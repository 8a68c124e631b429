"""The legal holds' HTTP routes (admin): ``POST /v1/legal-holds``, ``GET /v1/legal-holds``
and ``DELETE /v1/legal-holds/{hold_id}``."""

from __future__ import annotations

import asyncio

from msgspec import UNSET
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scr.answers import LegalHolds, LegalHoldView
from scr.canon.validation import decode_json, field_detail
from scr.errors import BadRequest, Detail, Forbidden
from scr.httpio import JSONResponse, read_body
from scr.retention.holds import HoldRequest, place_hold, release_hold
from scr.runtime import Runtime
from scr.store.records import LegalHold

MAX_HOLD_BODY_BYTES = 16 * 1024  # a reason of 1,000 characters and a user id of 256, as UTF-8
HOLDS_PATH = "/v1/legal-holds"
HOLD_PATH = "/v1/legal-holds/{hold_id}"
ALL_VALUES = {"true": True, "false": False}


def view(hold: LegalHold) -> LegalHoldView:
    """A hold as the API shows it."""
    return LegalHoldView(
        id=hold.hold_id, tenant=hold.tenant, user_id=hold.user_id, reason=hold.reason,
        created_at=hold.created_at,
        released_at=UNSET if hold.released_at is None else hold.released_at,
    )


def parse_all(text: str | None) -> bool:
    """``?all=``: whether released holds are listed too (default false)."""
    if text is None:
        return False
    if text not in ALL_VALUES:
        raise BadRequest("all must be true or false", [Detail("all", f"got {text[:20]!r}")])
    return ALL_VALUES[text]


def hold_routes(runtime: Runtime) -> list[Route]:
    """Place, list and release the legal holds of the caller's tenant."""

    async def place(request: Request) -> Response:
        principal = runtime.principal(request, "admin")
        body = await read_body(request, MAX_HOLD_BODY_BYTES)
        ask = decode_json(HoldRequest, body, "legal hold", field_detail)
        if principal.scope(ask.tenant) != ask.tenant:  # a tenant's key acts on its tenant only
            raise Forbidden(f"this key may not place holds on tenant '{ask.tenant}'",
                            [Detail("$.tenant", "another tenant than the key's")])
        hold = await place_hold(runtime.committer, runtime.subjects, ask, principal.key_id)
        return JSONResponse(view(hold), status_code=201)

    async def list_holds(request: Request) -> Response:
        tenant = runtime.tenant(request, "admin")
        active = not parse_all(request.query_params.get("all"))
        holds = await asyncio.to_thread(runtime.store.legal_holds, tenant, active)
        return JSONResponse(LegalHolds(holds=[view(hold) for hold in holds]))

    async def release(request: Request) -> Response:
        principal = runtime.principal(request, "admin")
        tenant = principal.scope(request.query_params.get("tenant"))
        released = await release_hold(runtime.committer, tenant, request.path_params["hold_id"],
                                      principal.key_id)
        return JSONResponse(view(released))

    return [
        Route(HOLDS_PATH, place, methods=["POST"]),
        Route(HOLDS_PATH, list_holds, methods=["GET"]),
        Route(HOLD_PATH, release, methods=["DELETE"]),
    ]
