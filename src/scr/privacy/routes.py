"""The subjects' HTTP routes: erasure (``DELETE /v1/subjects/{user_id}``) and export."""

from __future__ import annotations

import asyncio
import logging

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scr.errors import BadRequest, Conflict
from scr.httpio import JSONResponse
from scr.privacy.erasure import Erasure, HoldsOn, answer, erase, no_holds, refuse_held, sealed_leaves
from scr.privacy.export import Ledger, export_subject
from scr.privacy.opening import EventOpener
from scr.privacy.subjects import Subjects
from scr.runtime import Runtime
from scr.store.protocol import Transaction

log = logging.getLogger("scr.privacy")

MAX_USER_ID_CHARS = 256  # the schema's bound on user.user_id
EXPORT_ROUTE = ("/v1/subjects/{user_id}/export", "GET")


def _subjects(runtime: Runtime) -> Subjects:
    if runtime.subjects is None:
        raise Conflict("erasure and export need encryption at rest: configure a master key "
                       "(security.master_key_file or SCR_MASTER_KEY_FILE)")
    return runtime.subjects


def _user_id(request: Request) -> str:
    value: str = request.path_params["user_id"]
    if not 1 <= len(value) <= MAX_USER_ID_CHARS:
        raise BadRequest(f"user_id must be 1 to {MAX_USER_ID_CHARS} characters")
    return value


def subject_routes(runtime: Runtime, holds_on: HoldsOn = no_holds) -> list[Route]:
    """``DELETE /v1/subjects/{user_id}``; ``holds_on`` names the legal holds that block it."""
    scrubs: set[asyncio.Task[None]] = set()

    async def erase_subject(request: Request) -> Response:
        principal = runtime.principal(request, "admin")
        tenant = principal.scope(request.query_params.get("tenant"))
        ring = _subjects(runtime)
        subject = ring.subject_of(tenant, _user_id(request))
        refuse_held(holds_on, tenant, subject)
        committer = runtime.committer
        leaves = await asyncio.to_thread(sealed_leaves, runtime.store, tenant, subject)

        def write(tx: Transaction) -> Erasure:
            refuse_held(holds_on, tenant, subject, tx)  # again: a hold placed since the check
            if committer.sealer is not None:  # the writer seals its next event under a new key
                committer.sealer.forget(tenant, subject)
            return erase(tx, committer, ring, tenant, subject, leaves, principal.key_id)

        erased = await committer.run(write)
        runtime.tail.forget(tenant, subject)
        await runtime.destinations.forget(tenant, subject)
        task = asyncio.ensure_future(_scrub(runtime))
        scrubs.add(task)
        task.add_done_callback(scrubs.discard)
        return JSONResponse(answer(erased), status_code=202)

    return [Route("/v1/subjects/{user_id}", erase_subject, methods=["DELETE"])]


def export_routes(runtime: Runtime, ledger: Ledger) -> list[Route]:
    """``GET /v1/subjects/{user_id}/export`` (admin), over the verifiable ledger."""

    async def export(request: Request) -> Response:
        tenant = runtime.tenant(request, "admin")
        subjects = _subjects(runtime)
        opener = runtime.tail.opener
        assert isinstance(opener, EventOpener)
        answer = await export_subject(ledger, runtime.store, subjects, opener, tenant, _user_id(request))
        return Response(msgspec.json.encode(answer), media_type="application/json")

    path, method = EXPORT_ROUTE
    return [Route(path, export, methods=[method])]


async def _scrub(runtime: Runtime) -> None:
    """Older copies of the destroyed keys leave the store's files (in the background)."""
    try:
        if not await asyncio.to_thread(runtime.store.scrub):
            log.warning("erasure: the WAL could not be emptied now (busy readers); the next "
                        "checkpoint will")
    except Exception as error:  # the store went away: the next erasure or checkpoint will
        log.warning("erasure: could not scrub the store: %s", error)
