"""The dashboard: ``GET /`` (the page, no key needed to load it), its static files under
``/dashboard/{name}``, ``GET /v1/budgets`` and the live stream (``scr.dashboard.live``).

The page is hand-written HTML, CSS and JavaScript with uPlot vendored beside it (package
data of scr, so it works from a wheel); the key is typed into the page and kept in memory.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scr.config import BudgetConfig
from scr.dashboard.live import LIVE_PATH, LiveSource, StreamSlots, live_handler
from scr.errors import NotFound
from scr.httpio import JSONResponse
from scr.runtime import Runtime
from scr.security.auth import Authenticator
from scr.store.protocol import Store
from scr.usage.budgets import spent_now

PAGE = "index.html"
# What /dashboard/{name} serves: each file of the page, by name, with its media type.
STATIC_FILES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "LICENSE": "text/plain; charset=utf-8",
}
VENDORED = {"uPlot.iife.min.js", "uPlot.min.css", "LICENSE"}  # uPlot 1.6.32, MIT
STATIC_CACHE_S = 300
# the page runs only its own files: no inline script, nothing from elsewhere
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def static_bytes(name: str) -> bytes:
    """A file of the page, from the package (``static/``, uPlot's under ``static/vendor/``)."""
    folder = resources.files("scr.dashboard") / "static"
    if name in VENDORED:
        folder = folder / "vendor"
    return (folder / name).read_bytes()


async def page(request: Request) -> Response:
    """``GET /``: the dashboard page; it asks for a read key and keeps it in memory only."""
    return Response(static_bytes(PAGE), media_type="text/html; charset=utf-8",
                    headers={"content-security-policy": PAGE_POLICY, "cache-control": "no-cache",
                             "referrer-policy": "no-referrer"})


async def static_file(request: Request) -> Response:
    name = request.path_params["name"]
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise NotFound(f"no dashboard file '{name[:80]}'")
    return Response(static_bytes(name), media_type=media_type,
                    headers={"cache-control": f"public, max-age={STATIC_CACHE_S}"})


def budget_views(budgets: list[BudgetConfig], store: Store, tenant: str,
                 now: datetime) -> list[dict[str, Any]]:
    """The tenant's budgets, each with its current UTC period and the exact cost spent in it."""
    views = []
    for budget in budgets:
        if budget.tenant != tenant:
            continue
        start, end, spent = spent_now(store, budget, now)
        views.append({
            "period": budget.period, "limit_usd": budget.limit_usd,
            "alert_at": [float(share) for share in budget.thresholds],
            "period_start": start.isoformat().replace("+00:00", "Z"),
            "period_end": end.isoformat().replace("+00:00", "Z"),
            "spent_usd": format(spent, "f"),
        })
    return views


def dashboard_routes(runtime: Runtime) -> list[Route]:
    """The page, its files, ``GET /v1/budgets`` and the live stream of the one-process app
    (an edge of ``scr serve`` serves the stream itself: ``scr.serve.edge``)."""

    async def get_budgets(request: Request) -> Response:
        tenant = runtime.tenant(request, "read")
        budgets = list(runtime.config.usage.budgets)
        views = await asyncio.to_thread(budget_views, budgets, runtime.store, tenant, datetime.now(UTC))
        return JSONResponse({"budgets": views})

    source = LiveSource(runtime.metrics, runtime.store, runtime.destinations.names,
                        runtime.destinations.refresh_gauges)
    return [
        Route("/", page, methods=["GET"]),
        Route("/dashboard/{name}", static_file, methods=["GET"]),
        Route("/v1/budgets", get_budgets, methods=["GET"]),
        live_route(source, runtime.auth),
    ]


def live_route(source: LiveSource, auth: Authenticator, slots: StreamSlots | None = None) -> Route:
    """``GET /v1/dashboard/live`` over ``source``, for the one-process app and the edges."""
    return Route(LIVE_PATH, live_handler(auth, source, slots or StreamSlots()), methods=["GET"])
