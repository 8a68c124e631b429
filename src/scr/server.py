"""The HTTP API: Starlette routes over the runtime (capture → validate → commit → route)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scr import __version__
from scr.bus.instance import BusInstance, bus_instance
from scr.bus.routes import cluster_routes
from scr.canon import Canon
from scr.canon.routes import canon_routes
from scr.canon.store_ledger import StoreLedger
from scr.capture.browser import browser_routes
from scr.capture.ingest import DIGEST_BYTES, commit, events_media_type, split_body, validate
from scr.capture.otlp import otlp_routes
from scr.config import Config
from scr.errors import BadRequest, NotFound, ScrError, Unavailable
from scr.httpio import JSONResponse, read_body, read_decoded_body
from scr.jsontext import check_json_text
from scr.ledger import install as install_ledger
from scr.log.commit import Committed, Committer, Outcome, Submission
from scr.log.tail import LedgerTail
from scr.metrics import Metrics
from scr.route.price_file import live_prices
from scr.route.replay import requeue
from scr.route.worker import DestinationWorker
from scr.schema import json_schema
from scr.security.auth import Authenticator
from scr.security.keys import Principal
from scr.store import Store, open_store
from scr.store.postgres import partition_of

log = logging.getLogger("scr.server")

MAX_LIST_ROWS = 1000
DEFAULT_LIST_ROWS = 100
MAX_QUERY_BODY_BYTES = 1024 * 1024
MAX_REPLAY_EVENTS = 100_000
READY_PROBE_TIMEOUT_S = 2.0



@dataclass
class Runtime:
    """Everything one running scr process holds."""

    config: Config
    data_dir: Path
    store: Store
    committer: Committer
    tail: LedgerTail
    auth: Authenticator
    metrics: Metrics
    workers: dict[str, DestinationWorker] = field(default_factory=dict)
    bus: BusInstance | None = None  # set with `bus:` (scale-out): events go through JetStream
    # Run after the committer has stopped, in order (the ledger's checkpoint thread).
    on_shutdown: list[Callable[[], None]] = field(default_factory=list)
    # Run once the committer runs, and before it stops (background tasks that write).
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    before_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def append_events(self, submissions: Sequence[Submission]) -> list[tuple[Outcome, int]]:
        """Commit validated events; with a bus, ``202`` follows JetStream's ack and the
        partition's owner appends them (the ledger seq is then not known yet: 0)."""
        if self.bus is not None:
            return [(outcome, 0) for outcome in await self.bus.bus.publish(submissions)]
        return await self.committer.append_events(submissions)

    def principal(self, request: Request, permission: str) -> Principal:
        principal = self.auth.principal(request.headers.get("authorization"))
        principal.require(permission)
        return principal

    def tenant(self, request: Request, permission: str) -> str:
        """The tenant a request may act on: the key's own, or ``?tenant=`` for a caller
        that spans tenants (after checking ``permission``)."""
        return self.principal(request, permission).scope(request.query_params.get("tenant"))


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


# ----- capture ------------------------------------------------------------------------------


async def post_events(request: Request) -> Response:
    runtime = _runtime(request)
    principal = runtime.principal(request, "ingest")
    limits = runtime.config.server
    kind = events_media_type(request.headers.get("content-type"))
    body = await read_decoded_body(request, limits.max_body_bytes)
    is_batch, items, source = split_body(body, kind, limits.max_batch_events)
    batch = validate(items, principal, is_batch, source)
    status, content = await commit(batch, runtime, runtime.metrics,
                                   live_prices(runtime.data_dir))
    return JSONResponse(content, status_code=status)


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
    entry = msgspec.json.decode(stored.entry)
    return JSONResponse({"event": entry["payload"], "ledger": _ledger_view(stored)})


async def get_session(request: Request) -> Response:
    runtime = _runtime(request)
    tenant = runtime.tenant(request, "read")
    session_id = request.path_params["session_id"]
    rows = await asyncio.to_thread(runtime.store.session_entries, tenant, session_id)
    events = []
    for row in rows:
        payload = msgspec.json.decode(row.entry)["payload"]
        if payload["session"]["session_id"] == session_id:  # the key is a hash: check exactly
            events.append({"event": payload, "ledger": _ledger_view(row)})
    if not events:
        raise NotFound(f"no session '{session_id}'")
    return JSONResponse({"session_id": session_id, "events": events})


# ----- route --------------------------------------------------------------------------------


async def list_destinations(request: Request) -> Response:
    runtime = _runtime(request)
    runtime.principal(request, "read")
    answer_rows = []
    for name, worker in runtime.workers.items():
        config = worker.config
        answer_rows.append({
            "name": name,
            "type": config.type,
            "transform": config.transform if isinstance(config.transform, str) else "python",
            "state": _state(worker),
            "lag": worker.lag,
            "cursor": worker.cursor,
            "last_error": worker.last_error or worker.reason,
            "retention_days": config.retention_days,
        })
    return JSONResponse({"destinations": answer_rows})


def _state(worker: DestinationWorker) -> str:
    if worker.state == "disabled":
        return "disabled"
    return "backing_off" if worker.open_sessions else "active"


def _worker(runtime: Runtime, name: str) -> DestinationWorker:
    worker = runtime.workers.get(name)
    if worker is None:
        raise NotFound(f"no destination '{name}'")
    return worker


async def enable_destination(request: Request) -> Response:
    runtime = _runtime(request)
    runtime.principal(request, "admin")
    worker = _worker(runtime, request.path_params["name"])
    requeued = await worker.enable()
    return JSONResponse({"name": worker.name, "state": "active", "requeued": requeued})


DELIVERY_STATUSES = ("pending", "retrying", "delivered", "dead")


async def list_deliveries(request: Request) -> Response:
    runtime = _runtime(request)
    principal = runtime.principal(request, "read")
    tenant = principal.tenant or request.query_params.get("tenant")
    destination = request.query_params.get("destination")
    status = request.query_params.get("status")
    if status is not None and status not in DELIVERY_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(DELIVERY_STATUSES)}")
    if destination is not None:
        _worker(runtime, destination)
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
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST_ROWS:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIST_ROWS}")
    return int(raw)


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True):
    destination: str
    event_ids: list[str] | None = None
    # RFC 3339 times of the ledger entries, from inclusive, to exclusive
    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    status: str | None = None


async def replay_deliveries(request: Request) -> Response:
    runtime = _runtime(request)
    tenant = runtime.tenant(request, "admin")
    body = await read_body(request, MAX_QUERY_BODY_BYTES)
    check_json_text(body)
    try:
        ask = msgspec.json.decode(body, type=ReplayRequest)
    except msgspec.DecodeError as error:
        raise BadRequest(f"invalid replay request: {error}") from None
    worker = _worker(runtime, ask.destination)
    if ask.event_ids is None and ask.from_ is None:
        raise BadRequest("give event_ids, or from/to (and optionally status)")
    if ask.status is not None and ask.status not in DELIVERY_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(DELIVERY_STATUSES)}")
    count = await requeue(runtime.store, runtime.committer, worker, tenant, ask.event_ids,
                          ask.from_, ask.to, ask.status, MAX_REPLAY_EVENTS)
    worker.wake()
    return JSONResponse({"destination": worker.name, "requeued": count})


# ----- operate ------------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


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
    return JSONResponse({"status": "ready"})


def _nothing(tx: object) -> None:
    return None


async def metrics(request: Request) -> Response:
    runtime = _runtime(request)
    for worker in runtime.workers.values():
        runtime.metrics.lag_entries.labels(worker.name).set(worker.lag)
        age = await asyncio.to_thread(worker.oldest_pending_age_s)
        runtime.metrics.oldest_pending_age.labels(worker.name).set(age)
    if runtime.bus is not None:
        await runtime.bus.partition_lag()  # sets the owned partitions' lag gauges
    return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4")


async def openapi(request: Request) -> Response:
    from scr.openapi import document

    return JSONResponse(document())


async def schema(request: Request) -> Response:
    return JSONResponse(json_schema())


def _error_response(request: Request, error: Exception) -> Response:
    assert isinstance(error, ScrError)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


async def _unexpected(request: Request, error: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(ScrError("internal error; see the server log").body(), status_code=500)


Handler = Callable[[Request], Awaitable[Response]]

ROUTES: list[tuple[str, Handler, list[str]]] = [
    ("/v1/events", post_events, ["POST"]),
    ("/v1/events/{event_id}", get_event, ["GET"]),
    ("/v1/sessions/{session_id}", get_session, ["GET"]),
    ("/v1/destinations", list_destinations, ["GET"]),
    ("/v1/destinations/{name}/enable", enable_destination, ["POST"]),
    ("/v1/deliveries", list_deliveries, ["GET"]),
    ("/v1/deliveries/replay", replay_deliveries, ["POST"]),
    ("/v1/schema", schema, ["GET"]),
    ("/healthz", healthz, ["GET"]),
    ("/readyz", readyz, ["GET"]),
    ("/metrics", metrics, ["GET"]),
    ("/openapi.json", openapi, ["GET"]),
]


def _canon_for(runtime: Runtime) -> Callable[[str], Canon]:
    """One canon per tenant, over the runtime's own ledger."""
    ledger = StoreLedger(runtime.store, runtime.committer)
    canons: dict[str, Canon] = {}

    def canon_for(tenant: str) -> Canon:
        canon = canons.get(tenant)
        if canon is None:
            canon = canons[tenant] = Canon(ledger, tenant)
        return canon

    return canon_for


def _authorize(runtime: Runtime) -> Callable[[Request, str], Awaitable[str]]:
    async def authorize(request: Request, permission: str) -> str:
        return runtime.tenant(request, permission)

    return authorize


def _place_destinations(runtime: Runtime) -> Callable[[set[int]], Awaitable[None]]:
    """Run each destination while this instance owns its home partition, and only then.

    Called after every ownership poll: a destination whose start failed (the store was
    unreachable) is started at the next one. Its durable cursor carries over: the new owner
    delivers again what the old one sent but had not recorded (at least once, same
    webhook-ids); those entries are counted.
    """
    partitions = runtime.config.cluster.partitions

    async def place(owned: set[int]) -> None:
        for config in runtime.config.routing.destinations:
            home = partition_of(config.name, partitions)
            worker = runtime.workers[config.name]
            if home not in owned:
                if worker.running:
                    await worker.stop()
                continue
            if worker.running:
                continue
            # built in a thread: it reads the destination's state from the store
            worker = await asyncio.to_thread(
                DestinationWorker, config, runtime.store, runtime.committer, runtime.tail,
                runtime.metrics, runtime.data_dir,
            )
            try:
                await worker.start()
            except BaseException:
                await worker.sink.close()
                raise
            runtime.workers[config.name] = worker
            if worker.cursor:  # it ran elsewhere before: what lies past it may be resent
                inherited = max(0, await asyncio.to_thread(runtime.store.last_seq) - worker.cursor)
                runtime.metrics.failover_redeliveries.labels(config.name).inc(inherited)
                log.info("destination %s taken over at cursor %d (%d entries may be resent)",
                         config.name, worker.cursor, inherited)

    return place


def build_runtime(config: Config, data_dir: Path, store_uri: str | None = None,
                  url: str = "http://127.0.0.1:8787") -> Runtime:
    """The runtime on ``store_uri`` (``postgresql://…``; else ``config.store``; else SQLite
    in ``data_dir``)."""
    store_uri = store_uri or config.store
    store = open_store(data_dir, store_uri, config.cluster.partitions, config.store_pool)
    metrics_ = Metrics()
    tail = LedgerTail(store)
    committer = Committer(
        store, config.capture.buffer_size, config.validation.deduplication_window_sec
    )
    auth = Authenticator(store, config.validation.require_authentication)
    runtime = Runtime(config, data_dir, store, committer, tail, auth, metrics_)
    runtime.bus = bus_instance(
        config, committer, metrics_, store, tail, url, DIGEST_BYTES, store_uri
    )
    for destination in config.routing.destinations:
        runtime.workers[destination.name] = DestinationWorker(
            destination, store, committer, tail, metrics_, data_dir
        )
    return runtime


def create_app(config: Config, data_dir: Path, store_uri: str | None = None,
               url: str = "http://127.0.0.1:8787") -> Starlette:
    """The scr HTTP application over a data folder (and a PostgreSQL store when given);
    starts and stops the runtime with it. ``url`` is where this instance is reached
    (shown by ``GET /v1/cluster``)."""
    runtime = build_runtime(config, data_dir, store_uri, url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def on_commit(committed: list[Committed]) -> None:
            runtime.metrics.commit_groups.inc()
            loop.call_soon_threadsafe(runtime.tail.extend, committed)

        runtime.committer.commit_hooks.append(on_commit)
        runtime.committer.start()
        if runtime.bus is not None and runtime.bus.clustered:
            # each destination runs on the owner of its home partition only
            runtime.bus.on_owned.append(_place_destinations(runtime))
        else:
            for worker in runtime.workers.values():
                await worker.start()
        if runtime.bus is not None:
            await runtime.bus.start()
        for start in runtime.on_start:
            await start()
        try:
            yield
        finally:
            for stop_task in runtime.before_stop:
                await stop_task()
            if runtime.bus is not None:
                await runtime.bus.stop()
            for worker in runtime.workers.values():
                if worker.running:
                    await worker.stop()
            runtime.committer.close()
            for stop in runtime.on_shutdown:
                stop()
            runtime.store.close()

    routes = [Route(path, handler, methods=methods) for path, handler, methods in ROUTES]
    routes += install_ledger(runtime)
    routes += browser_routes(runtime)
    routes += otlp_routes(runtime)
    routes += canon_routes(_canon_for(runtime), _authorize(runtime))
    routes += cluster_routes(
        runtime.bus, runtime.principal, config.cluster.partitions,
        runtime.store.tenant_entries_of_kinds,
    )
    app = Starlette(
        routes=routes,
        exception_handlers={ScrError: _error_response, Exception: _unexpected},
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app
