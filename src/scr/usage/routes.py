"""``GET /v1/usage``, ``GET /v1/usage/users`` and ``GET /v1/anomalies`` (roles read and admin; a
platform key names the tenant with ``tenant=``) and ``POST /v1/usage/reconcile?format=`` (admin: the body is a
provider's export)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scr.errors import BadRequest, Detail, UnsupportedMediaType
from scr.httpio import JSONResponse, read_decoded_body
from scr.log.entry import Kind, decode_entry
from scr.privacy.opening import EventOpener
from scr.privacy.sealing import SUBJECT_PREFIX
from scr.runtime import Runtime
from scr.store.protocol import Store
from scr.usage.exports import read_export
from scr.usage.judging import DATA_FIELDS
from scr.usage.query import UsageQuery
from scr.usage.reconcile import reconcile
from scr.usage.users import UsersQuery

ANOMALY_FIELDS = [name for name in DATA_FIELDS if name != "tenant"]  # GET /v1/anomalies's fields
MAX_EXPORT_BYTES = 32 * 1024 * 1024  # a month of 50 models by line item is well under 1 MiB
# the media types an export may be sent as (none given: read by ``format=``)
EXPORT_MEDIA_TYPES = ("application/json", "text/csv", "text/plain", "application/octet-stream")


def usage_routes(runtime: Runtime) -> list[Route]:
    """The usage API over the aggregates the usage reader keeps in the store."""

    def reading_tenant(request: Request) -> str:
        principal = runtime.auth.principal(request.headers.get("authorization"))
        if principal.can("any_tenant"):  # a platform key names the tenant it reads
            tenant = request.query_params.get("tenant") or ""
            if not tenant:
                raise BadRequest("tenant: a platform key names the tenant with ?tenant=",
                                 [Detail("tenant", "required for a platform key")])
            return tenant
        principal.require("read")
        return principal.scope(request.query_params.get("tenant"))

    async def name_users(rows: list[dict[str, Any]], tenant: str, field: str = "user_id") -> None:
        if isinstance(runtime.tail.opener, EventOpener):
            await asyncio.to_thread(_name_users, rows, runtime.store, runtime.tail.opener, tenant, field)

    async def get_usage(request: Request) -> Response:
        tenant = reading_tenant(request)
        query = UsageQuery.parse(request.query_params)
        answer = await asyncio.to_thread(query.answer, runtime.store, tenant)
        if "user_id" in query.group_by:
            await name_users(answer["rows"], tenant)
        return JSONResponse(answer)

    async def get_users(request: Request) -> Response:
        tenant = reading_tenant(request)
        query = UsersQuery.parse(request.query_params)
        answer = await asyncio.to_thread(query.answer, runtime.store, tenant)
        await name_users(answer["users"], tenant)
        return JSONResponse(answer)

    async def post_reconcile(request: Request) -> Response:
        principal = runtime.principal(request, "admin")
        tenant = principal.scope(request.query_params.get("tenant"))
        media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        if media and media not in EXPORT_MEDIA_TYPES:
            raise UnsupportedMediaType(f"content type '{media[:40]}' is not an export: send "
                                       f"{', '.join(EXPORT_MEDIA_TYPES)}")
        body = await read_decoded_body(request, MAX_EXPORT_BYTES)
        charges = read_export(body, request.query_params.get("format", ""))
        answer = await asyncio.to_thread(reconcile, charges, runtime.store, tenant,
                                         runtime.destinations.names())
        return JSONResponse(answer)

    async def get_anomalies(request: Request) -> Response:
        tenant = reading_tenant(request)
        start, end = (_instant(name, request.query_params.get(name)) for name in ("from", "to"))
        found = await asyncio.to_thread(anomalies_of, runtime.store, tenant, start, end)
        users = [row for anomaly in found for row in anomaly["breakdown"] if row["dimension"] == "user_id"]
        await name_users(users, tenant, "key")
        return JSONResponse({"anomalies": found})

    return [Route("/v1/usage", get_usage, methods=["GET"]),
            Route("/v1/usage/users", get_users, methods=["GET"]),
            Route("/v1/anomalies", get_anomalies, methods=["GET"]),
            Route("/v1/usage/reconcile", post_reconcile, methods=["POST"])]


def anomalies_of(store: Store, tenant: str, start: datetime | None, end: datetime | None
                 ) -> list[dict[str, Any]]:
    """The tenant's ANOMALY entries whose window starts in ``[start, end)``, in ledger order."""
    found = []
    for stored in store.tenant_entries_of_kinds(tenant, [Kind.ANOMALY.value], 0):
        data = decode_entry(stored.entry).payload["data"]
        window_start = datetime.fromisoformat(data["window_start"])
        if (start is None or window_start >= start) and (end is None or window_start < end):
            found.append({name: data[name] for name in ANOMALY_FIELDS})
    return found


def _instant(name: str, value: str | None) -> datetime | None:
    """``from``/``to``: an RFC 3339 time with a zone; ``BadRequest`` naming the parameter."""
    if value is None:
        return None
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        message = f"{name} must be an RFC 3339 time with a zone, e.g. 2026-12-01T00:00:00Z"
        raise BadRequest(message, [Detail(name, message)])
    return instant


def _name_users(rows: list[dict[str, Any]], store: Store, opener: EventOpener, tenant: str,
                field: str = "user_id") -> None:
    """With encryption on, usage is kept by subject (``subject:<keyed hash>``, never the user
    id): each row's ``field`` shows the user id it stands for, or ``erased:<hash prefix>``."""
    names: dict[str, str] = {}
    for row in rows:
        value = row.get(field)
        if isinstance(value, str) and value.startswith(SUBJECT_PREFIX):
            if value not in names:
                names[value] = opener.user_of(store, tenant, value.removeprefix(SUBJECT_PREFIX))
            row[field] = names[value]
