"""``GET /v1/cluster`` (instances, the partitions each owns, lag per partition) and
``GET /v1/conflicts`` (events whose id came back with another body after its ``202``)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scr.errors import BadRequest
from scr.httpio import JSONResponse
from scr.log.entry import Kind
from scr.security.keys import Principal

if TYPE_CHECKING:  # the bus (nats, aiohttp) loads only where the config has one
    from scr.bus.instance import BusInstance

MAX_CONFLICTS = 1000
MAX_SEQ = 2**63 - 1  # the stores' integers (SQLite, PostgreSQL bigint): no ledger seq is larger
_SEQ = re.compile(r"[0-9]{1,19}")  # ASCII digits: str.isdigit() also takes '²', which int() refuses

Authorize = Callable[[Request, str], Principal]


def cluster_routes(
    instance: BusInstance | None, authorize: Authorize, partitions: int,
    tenant_entries_of_kinds: Callable[[str, Sequence[str], int], Sequence[Any]],
) -> list[Route]:
    """The cluster's HTTP routes over this instance's view (``instance`` None: no bus)."""

    async def get_cluster(request: Request) -> Response:
        authorize(request, "cluster")
        if instance is None:
            return JSONResponse({"partitions": partitions, "bus": None, "instances": [], "lag": {}})
        members, lags = await asyncio.gather(instance.ownership.instances(), instance.partition_lag())
        return JSONResponse({
            "partitions": partitions,
            "bus": {"ready": instance.bus.ready, "stream": instance.bus.stream},
            "instances": members,
            "lag": {str(p): lag for p, lag in sorted(lags.items())},
        })

    async def get_conflicts(request: Request) -> Response:
        principal = authorize(request, "read")
        tenant = principal.scope(request.query_params.get("tenant"))
        after = request.query_params.get("after", "0")
        if not _SEQ.fullmatch(after) or int(after) > MAX_SEQ:
            raise BadRequest("after must be a ledger seq (a non-negative integer)")
        rows = await asyncio.to_thread(
            tenant_entries_of_kinds, tenant, [Kind.EVENT_CONFLICT.value], int(after)
        )
        conflicts = []
        for row in rows[:MAX_CONFLICTS]:
            entry = msgspec.json.decode(row.entry)
            conflicts.append({"seq": row.seq, "ts": row.ts, **entry["payload"]})
        return JSONResponse({"conflicts": conflicts})

    return [
        Route("/v1/cluster", get_cluster, methods=["GET"]),
        Route("/v1/conflicts", get_conflicts, methods=["GET"]),
    ]
