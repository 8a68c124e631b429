"""``GET /v1/usage`` (roles read and admin; a platform key names the tenant with ``tenant=``)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scr.errors import BadRequest, Detail
from scr.httpio import JSONResponse
from scr.runtime import Runtime
from scr.usage.query import UsageQuery


def usage_routes(runtime: Runtime) -> list[Route]:
    """The usage API over the aggregates the usage reader keeps in the store."""

    async def get_usage(request: Request) -> Response:
        principal = runtime.auth.principal(request.headers.get("authorization"))
        if principal.can("any_tenant"):  # a platform key names the tenant it reads
            tenant = request.query_params.get("tenant") or ""
            if not tenant:
                raise BadRequest("tenant: a platform key names the tenant with ?tenant=",
                                 [Detail("tenant", "required for a platform key")])
        else:
            principal.require("read")
            tenant = principal.scope(request.query_params.get("tenant"))
        query = UsageQuery.parse(request.query_params)
        return JSONResponse(await asyncio.to_thread(query.answer, runtime.store, tenant))

    return [Route("/v1/usage", get_usage, methods=["GET"])]
