"""The HTTP API: Starlette routes over the runtime (capture → validate → commit → route)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scr import __version__
from scr.bus.routes import cluster_routes
from scr.canon import Canon
from scr.canon.routes import canon_routes
from scr.canon.store_ledger import StoreLedger
from scr.capture.browser import browser_routes
from scr.capture.ingest import ingest_request
from scr.capture.otlp import otlp_routes
from scr.config import Config, DestinationConfig
from scr.dashboard.routes import dashboard_routes
from scr.enrich.routes import enrichment_of, enrichment_routes
from scr.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ScrError,
    Unavailable,
    UnsupportedMediaType,
)
from scr.event_check import DIGEST_BYTES
from scr.httpio import JSONResponse, read_body
from scr.jsontext import check_json_text
from scr.ledger import install as install_ledger
from scr.log.commit import Committed, Committer
from scr.log.tail import LedgerTail, follow_ledger
from scr.metrics import Metrics
from scr.privacy.opening import EventOpener
from scr.privacy.routes import subject_routes
from scr.privacy.sealer import Sealer
from scr.privacy.setup import open_subjects
from scr.retention.holds import holds_on
from scr.retention.routes import hold_routes
from scr.route.control import (
    DELIVERY_STATUSES,
    LocalDestinations,
    RemoteDestinations,
    ReplayRequest,
)
from scr.route.placement import Placement
from scr.route.price_file import live_prices
from scr.route.worker import DestinationWorker
from scr.runtime import Runtime
from scr.schema import json_schema
from scr.security.audit import Acting
from scr.security.audit_api import get_audit
from scr.security.auth import Authenticator
from scr.serve.status import ProcessesCollector, not_running, read_status
from scr.store import open_store
from scr.store.records import StoredEntry
from scr.tasks import stop_task
from scr.usage.routes import usage_routes

if TYPE_CHECKING:
    from scr.enrich.service import Enrichment  # loaded only when enrichment is on

log = logging.getLogger("scr.server")

MAX_LIST_ROWS = 1000
DEFAULT_LIST_ROWS = 100
MAX_QUERY_BODY_BYTES = 1024 * 1024
READY_PROBE_TIMEOUT_S = 2.0



def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


# ----- capture ------------------------------------------------------------------------------


async def post_events(request: Request) -> Response:
    runtime = _runtime(request)
    principal = runtime.principal(request, "ingest")
    return await ingest_request(request, principal, runtime.config.server, runtime,
                                runtime.metrics, live_prices(runtime.data_dir))


# ----- reads --------------------------------------------------------------------------------


def _ledger_view(entry: Any) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "tenant_seq": entry.tenant_seq,
        "ts": entry.ts,
        "hash": entry.hash.hex(),
    }


async def get_event(request: Request) -> Response:
    runtime = _runtime(request)
    tenant = runtime.tenant(request, "read")
    event_id = request.path_params["event_id"]
    stored = await asyncio.to_thread(runtime.store.find_event, tenant, event_id)
    if stored is None:
        raise NotFound(f"no event '{event_id}'")
    return JSONResponse({"event": _event_json(runtime, stored), "ledger": _ledger_view(stored)})


def _event_json(runtime: Runtime, stored: StoredEntry) -> dict[str, Any]:
    """A stored event as the API shows it: sealed personal fields opened (``scr.privacy``)."""
    entry: dict[str, Any] = msgspec.json.decode(stored.entry)
    if entry.get("seal") is not None and runtime.tail.opener is not None:
        return runtime.tail.opener.open_json(stored.tenant, entry)
    payload: dict[str, Any] = entry["payload"]
    return payload


async def get_session(request: Request) -> Response:
    runtime = _runtime(request)
    tenant = runtime.tenant(request, "read")
    session_id = request.path_params["session_id"]
    rows = await asyncio.to_thread(runtime.store.session_entries, tenant, session_id)
    events = []
    for row in rows:
        payload = _event_json(runtime, row)
        if payload["session"]["session_id"] == session_id:  # the key is a hash: check exactly
            events.append({"event": payload, "ledger": _ledger_view(row)})
    if not events:
        raise NotFound(f"no session '{session_id}'")
    return JSONResponse({"session_id": session_id, "events": events})


# ----- route --------------------------------------------------------------------------------


async def list_destinations(request: Request) -> Response:
    runtime = _runtime(request)
    runtime.principal(request, "read")
    return JSONResponse({"destinations": await runtime.destinations.views()})


def _known_destination(runtime: Runtime, name: str) -> None:
    if name not in runtime.destinations.names():
        raise NotFound(f"no destination '{name}'")


def _acting(runtime: Runtime, request: Request, permission: str) -> Acting:
    """Who does an admin action: the key's tenant (or ``?tenant=``) and the key's id."""
    principal = runtime.principal(request, permission)
    return Acting(principal.scope(request.query_params.get("tenant")), principal.key_id)


async def enable_destination(request: Request) -> Response:
    runtime = _runtime(request)
    acting = _acting(runtime, request, "admin")
    name = request.path_params["name"]
    _known_destination(runtime, name)
    requeued = await runtime.destinations.enable(name, acting)
    return JSONResponse({"name": name, "state": "active", "requeued": requeued})


async def list_deliveries(request: Request) -> Response:
    runtime = _runtime(request)
    principal = runtime.principal(request, "read")
    tenant = principal.tenant or request.query_params.get("tenant")
    destination = request.query_params.get("destination")
    status = request.query_params.get("status")
    if status is not None and status not in DELIVERY_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(DELIVERY_STATUSES)}")
    if destination is not None:
        _known_destination(runtime, destination)
    limit = _limit(request)
    rows = await asyncio.to_thread(
        runtime.store.list_deliveries, tenant, destination, status, limit
    )
    listed = [
        {
            "event_id": r.event_id, "destination": r.destination, "status": r.status,
            "attempts": r.attempts, "last_status": r.last_status, "last_error": r.last_error,
            "webhook_id": r.webhook_id, "seq": r.seq, "updated_at": r.updated_at,
        }
        for r in rows
    ]
    if status in (None, "delivered") and len(listed) < limit:
        listed += await asyncio.to_thread(
            _first_time_deliveries, runtime, tenant, destination, limit - len(listed)
        )
    return JSONResponse({"deliveries": listed})


def _first_time_deliveries(
    runtime: Runtime, tenant: str | None, destination: str | None, limit: int
) -> list[dict[str, Any]]:
    """Deliveries that succeeded at once: they live in the attempts log, not as rows."""
    found: list[dict[str, Any]] = []
    for dest, hook, seqs, number, status, _err, _lat, _excerpt, ts in runtime.store.recent_attempts(
        destination, MAX_LIST_ROWS
    ):
        if number != 1 or status is None or not 200 <= status < 300:
            continue
        entries = runtime.store.entries_by_seq(seqs)
        for seq in seqs:
            stored = entries.get(seq)
            if stored is None or (tenant is not None and stored.tenant != tenant):
                continue
            found.append({
                "event_id": stored.event_id, "destination": dest, "status": "delivered",
                "attempts": 1, "last_status": status, "last_error": "", "webhook_id": hook,
                "seq": seq, "updated_at": ts,
            })
            if len(found) >= limit:
                return found
    return found


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", str(DEFAULT_LIST_ROWS))
    # ASCII digits only: str.isdigit() also takes '²', which int() refuses (a 500)
    digits = raw.isascii() and raw.isdigit() and len(raw) <= len(str(MAX_LIST_ROWS))
    if not digits or not 1 <= int(raw) <= MAX_LIST_ROWS:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIST_ROWS}")
    return int(raw)


async def replay_deliveries(request: Request) -> Response:
    runtime = _runtime(request)
    acting = _acting(runtime, request, "admin")
    body = await read_body(request, MAX_QUERY_BODY_BYTES)
    check_json_text(body)
    try:
        ask = msgspec.json.decode(body, type=ReplayRequest)
    except msgspec.DecodeError as error:
        raise BadRequest(f"invalid replay request: {error}") from None
    _known_destination(runtime, ask.destination)
    ask.check()
    count = await runtime.destinations.replay(acting, ask)
    return JSONResponse({"destination": ask.destination, "requeued": count})


# ----- operate ------------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    """Alive; under ``scr serve``, also each process of the set as the supervisor sees it."""
    answer: dict[str, Any] = {"status": "ok", "version": __version__}
    processes = read_status()
    if processes is not None:  # no pids: the answer needs no key
        answer["processes"] = [
            {"title": p.title, "state": p.state, "restarts": p.restarts, "last_exit": p.last_exit}
            for p in processes
        ]
    return JSONResponse(answer)


async def readyz(request: Request) -> Response:
    """Ready when the ledger can commit now: an empty write goes through the one writer."""
    runtime = _runtime(request)
    try:
        await asyncio.wait_for(runtime.committer.run(_nothing, durable=False), READY_PROBE_TIMEOUT_S)
    except TimeoutError:
        raise Unavailable(f"the ledger did not commit within {READY_PROBE_TIMEOUT_S} s") from None
    except Unavailable:
        raise Unavailable(f"the ledger cannot commit: {runtime.committer.last_error}") from None
    if runtime.bus is not None and not runtime.bus.bus.ready:
        raise Unavailable(f"the bus is unavailable: {runtime.bus.bus.last_error}")
    processes = read_status()
    if processes is not None and not_running(processes):
        raise Unavailable("not every process is running: " + "; ".join(not_running(processes)))
    return JSONResponse({"status": "ready"})


def _nothing(tx: object) -> None:
    return None


async def metrics(request: Request) -> Response:
    runtime = _runtime(request)
    await runtime.destinations.refresh_gauges()
    if runtime.bus is not None:
        await runtime.bus.partition_lag()  # sets the owned partitions' lag gauges
    return Response(runtime.metrics.render(ProcessesCollector()), media_type="text/plain; version=0.0.4")


async def openapi(request: Request) -> Response:
    from scr.openapi import document

    return JSONResponse(document())


async def schema(request: Request) -> Response:
    return JSONResponse(json_schema())


def _error_response(request: Request, error: Exception) -> Response:
    assert isinstance(error, ScrError)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


# Starlette's own HTTP errors that carry nothing but a message, by the leaf of their status.
_STARLETTE_ERRORS: dict[int, type[ScrError]] = {
    leaf.status: leaf for leaf in (BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType)
}


def _starlette_error(request: Request, error: Exception) -> Response:
    """Starlette's own errors (no route at the path, a route without the method) as leaves of
    the ``ScrError`` hierarchy, so they too answer the standard error body, not plain text."""
    assert isinstance(error, HTTPException)
    where = f"{request.method} {request.url.path}"
    scr_error: ScrError
    if error.status_code == MethodNotAllowed.status:
        allow = (error.headers or {}).get("Allow", "")
        scr_error = MethodNotAllowed(f"{where}: method not allowed; allowed: {allow}", allow)
    elif error.status_code == NotFound.status:
        scr_error = NotFound(f"{where}: no such endpoint")
    else:
        scr_error = _STARLETTE_ERRORS.get(error.status_code, ScrError)(f"{where}: {error.detail}")
    return _error_response(request, scr_error)


class UnexpectedErrors:
    """Answers an unexpected exception with the standard 500 body, as an ordinary response.

    Not an ``Exception`` handler: Starlette runs those in ``ServerErrorMiddleware``, which
    re-raises after answering, and uvicorn then drops the keep-alive connection without a
    ``Connection: close``, so the client's next request fails. Installed below it, the 500 is
    a normal response and the connection stays usable.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_noting_start)
        except ClientDisconnect:
            return  # the client is gone (or timed out, see scr.http_server): nobody to answer
        except Exception:
            if started:
                raise  # half a response cannot be mended: the server closes the connection
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            answer = JSONResponse(ScrError("internal error; see the server log").body(), status_code=500)
            await answer(scope, receive, send)


Handler = Callable[[Request], Awaitable[Response]]

ROUTES: list[tuple[str, Handler, list[str]]] = [
    ("/v1/events", post_events, ["POST"]),
    ("/v1/events/{event_id}", get_event, ["GET"]),
    ("/v1/sessions/{session_id}", get_session, ["GET"]),
    ("/v1/destinations", list_destinations, ["GET"]),
    ("/v1/destinations/{name}/enable", enable_destination, ["POST"]),
    ("/v1/deliveries", list_deliveries, ["GET"]),
    ("/v1/deliveries/replay", replay_deliveries, ["POST"]),
    ("/v1/audit", get_audit, ["GET"]),
    ("/v1/schema", schema, ["GET"]),
    ("/healthz", healthz, ["GET"]),
    ("/readyz", readyz, ["GET"]),
    ("/metrics", metrics, ["GET"]),
    ("/openapi.json", openapi, ["GET"]),
]


def _canon_for(runtime: Runtime, enrichment: Enrichment | None) -> Callable[[str], Canon]:
    """One canon per tenant, over the runtime's own ledger (its estimates weigh similar past
    sessions when enrichment is on)."""
    ledger = StoreLedger(runtime.store, runtime.committer)
    canons: dict[str, Canon] = {}

    def canon_for(tenant: str) -> Canon:
        canon = canons.get(tenant)
        if canon is None:
            canon = canons[tenant] = Canon(ledger, tenant)
            canon.recall = enrichment.recall if enrichment is not None else None
        return canon

    return canon_for


def _authorize(runtime: Runtime) -> Callable[[Request, str], Awaitable[str]]:
    async def authorize(request: Request, permission: str) -> str:
        return runtime.tenant(request, permission)

    return authorize


def _placement(runtime: Runtime) -> Placement:
    """This process's destinations, each run while the instance owns its home partition."""
    config = runtime.config

    def build(destination: DestinationConfig) -> DestinationWorker:
        return DestinationWorker(destination, runtime.store, runtime.committer, runtime.tail,
                                 runtime.metrics, runtime.data_dir)

    return Placement(list(config.routing.destinations), config.cluster.partitions,
                     runtime.workers, build, runtime.store, runtime.metrics)


def api_app(routes: Sequence[BaseRoute], lifespan: Any = None) -> Starlette:
    """A Starlette app that answers every error in the standard body (edges and the writer)."""
    app = Starlette(
        routes=routes,
        exception_handlers={ScrError: _error_response, HTTPException: _starlette_error},
        middleware=[Middleware(UnexpectedErrors)],
        lifespan=lifespan,
    )
    # No slash redirects: an API answers a path it does not serve 404 (standard body) rather
    # than 307. A redirect has no error body, clients that do not follow it (scr's own delivery
    # does not) see a bare 307, and `/v1/events/%2F` (decoded `/v1/events//`) would be sent on
    # to `/v1/events`, another resource. Every path is documented without a trailing slash.
    app.router.redirect_slashes = False
    return app


def build_runtime(config: Config, data_dir: Path, store_uri: str | None = None,
                  url: str = "http://127.0.0.1:8787",
                  readers: RemoteDestinations | None = None) -> Runtime:
    """The runtime on ``store_uri`` (``postgresql://…``; else ``config.store``; else SQLite
    in ``data_dir``); its destinations run here unless ``readers`` runs them elsewhere."""
    store_uri = store_uri or config.store
    store = open_store(data_dir, store_uri, config.cluster.partitions, config.store_pool)
    metrics_ = Metrics()
    tail = LedgerTail(store)
    committer = Committer(
        store, config.capture.buffer_size, config.validation.deduplication_window_sec
    )
    try:
        subjects = open_subjects(config, store)
    except BaseException:
        store.close()
        raise
    if subjects is not None:  # personal fields are sealed in, and opened on the way out
        committer.sealer = Sealer(subjects)
        tail.opener = EventOpener(subjects)
    auth = Authenticator(store, config.validation.require_authentication)
    workers: dict[str, DestinationWorker] = {}
    if readers is None:
        for destination in config.routing.destinations:
            workers[destination.name] = DestinationWorker(
                destination, store, committer, tail, metrics_, data_dir
            )
    destinations = readers or LocalDestinations(workers, store, committer, metrics_)
    runtime = Runtime(config, data_dir, store, committer, tail, auth, metrics_, destinations, workers)
    runtime.subjects = subjects
    if config.bus is not None:  # the bus (nats, aiohttp) loads only then
        from scr.bus.instance import bus_instance

        runtime.bus = bus_instance(config, committer, metrics_, store, tail, url, DIGEST_BYTES, store_uri)
    return runtime


def create_app(config: Config, data_dir: Path, store_uri: str | None = None,
               url: str = "http://127.0.0.1:8787",
               readers: RemoteDestinations | None = None) -> Starlette:
    """The scr HTTP application over a data folder (and a PostgreSQL store when given);
    starts and stops the runtime with it. ``url`` is where this instance is reached
    (shown by ``GET /v1/cluster``). With ``readers``, the destinations run in reader
    processes, which each commit wakes."""
    runtime = build_runtime(config, data_dir, store_uri, url, readers)
    enrichment = enrichment_of(runtime)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def on_commit(committed: list[Committed]) -> None:
            runtime.metrics.commit_groups.inc()
            if readers is None:
                loop.call_soon_threadsafe(runtime.tail.extend, committed)
            elif committed:  # the readers keep the entries; here only the head is needed
                loop.call_soon_threadsafe(runtime.tail.follow, committed[-1].seq)
                readers.notify(committed[-1].seq)

        runtime.committer.keep_events = readers is None  # else no entry here is read as an Event
        index_sessions = runtime.store.index_sessions()
        runtime.committer.commit_hooks.append(lambda _committed: index_sessions())
        runtime.committer.commit_hooks.append(on_commit)
        runtime.committer.start()
        if enrichment is not None:  # before any event of this instance is appended
            await enrichment.mark_start()
        if readers is not None:
            await readers.start(runtime.store, runtime.committer)
        if runtime.bus is not None and runtime.bus.clustered:
            # each destination runs on the owner of its home partition only (scr.route.placement)
            if readers is not None:
                runtime.bus.on_owned.append(readers.place)
                runtime.bus.on_head.append(readers.notify)
            else:
                runtime.bus.on_owned.append(_placement(runtime).follow)
        else:
            for worker in runtime.workers.values():
                await worker.start()
        follower = None
        if not runtime.store.commits_in_order and not (runtime.bus is not None and runtime.bus.clustered):
            # writers side by side (scr keys create beside this one): the tail's head follows the
            # store's safe seq (a cluster's bus instance does it for the instance)
            follower = asyncio.create_task(
                follow_ledger(runtime.store, runtime.tail, [readers.notify] if readers else []),
                name="scr-follow")
        if runtime.bus is not None:
            await runtime.bus.start()
        for start in runtime.on_start:
            await start()
        try:
            yield
        finally:
            for before in runtime.before_stop:
                await before()
            if follower is not None:
                await stop_task(follower)
            if runtime.bus is not None:
                await runtime.bus.stop()
            # side by side: each lets its deliveries in flight end (STOP_GRACE_S at most)
            await asyncio.gather(*(w.stop() for w in runtime.workers.values() if w.running))
            runtime.committer.close()
            if readers is not None:
                await readers.close()
            for stop in runtime.on_shutdown:
                stop()
            runtime.store.close()

    routes = [Route(path, handler, methods=methods) for path, handler, methods in ROUTES]
    routes += install_ledger(runtime)
    routes += browser_routes(runtime)
    routes += otlp_routes(runtime)
    routes += subject_routes(runtime, holds_on(runtime.store, runtime.subjects))
    routes += hold_routes(runtime)
    routes += usage_routes(runtime)
    routes += enrichment_routes(runtime, enrichment)
    routes += dashboard_routes(runtime)
    routes += canon_routes(_canon_for(runtime, enrichment), _authorize(runtime))
    routes += cluster_routes(
        runtime.bus, runtime.principal, config.cluster.partitions,
        runtime.store.tenant_entries_of_kinds,
    )
    app = api_app(routes, lifespan)
    app.state.runtime = runtime
    return app
