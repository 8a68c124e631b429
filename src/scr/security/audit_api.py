"""``GET /v1/audit?from=&to=`` (admin, auditor): the caller's tenant's admin entries, in ledger order."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from scr.errors import BadRequest, Detail
from scr.httpio import JSONResponse
from scr.ledger.bundle import ledger_time
from scr.runtime import Runtime
from scr.security.audit import ADMIN_KINDS
from scr.security.keys import KEY_ACTOR_PREFIX
from scr.store.protocol import Store


async def get_audit(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    tenant = runtime.tenant(request, "audit")
    start = audit_time("from", request.query_params.get("from"))
    end = audit_time("to", request.query_params.get("to"))
    entries = await asyncio.to_thread(audit_entries, runtime.store, tenant, start, end)
    return JSONResponse({"entries": entries})


def audit_time(name: str, value: str | None) -> str | None:
    """``from``/``to`` of ``GET /v1/audit`` as ledger entry times; ``BadRequest`` naming it."""
    if value is None:
        return None
    try:
        return ledger_time(value)
    except ValueError as error:
        message = f"{name} must be an RFC 3339 time with a zone, e.g. 2026-12-01T00:00:00Z ({error})"
        raise BadRequest(message, [Detail(name, message)]) from None


def audit_entries(store: Store, tenant: str, start: str | None, end: str | None) -> list[dict[str, Any]]:
    """The tenant's admin entries committed in ``[start, end)`` (ledger times), in ledger order."""
    after_seq = store.seq_at_time(start) if start is not None else 0
    listed = []
    for stored in store.tenant_entries_of_kinds(tenant, sorted(ADMIN_KINDS), after_seq):
        if (start is not None and stored.ts < start) or (end is not None and stored.ts >= end):
            continue
        entry = msgspec.json.decode(stored.entry)
        actor: str = entry["actor"]
        listed.append({
            "index": stored.tenant_seq,
            "ts": stored.ts,
            "kind": stored.kind,
            "key_id": actor.removeprefix(KEY_ACTOR_PREFIX) if actor.startswith(KEY_ACTOR_PREFIX) else None,
            "details": entry["payload"],
        })
    return listed
