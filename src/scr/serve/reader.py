"""A reader process (``scr: reader <process>``): runs the destinations the config puts in it.

It reads the ledger from each destination's durable cursor. The writer wakes it with the new
head after each commit; it then reads the new entries from the store once, for all of its
destinations, into its own ledger tail (one read and at most one decode per entry, not one
per destination; none when every destination sends the ledgered line through a built-in
transform). Its destinations' writes (cursors, deliveries, attempts) go to the one writer
(``scr.serve.writes``), and it answers the edge's questions on its control socket (``scr.serve.readers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from pathlib import Path
from typing import cast

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scr.bus.leases import shares_partitions
from scr.config import ClusterConfig, Config, DestinationConfig
from scr.errors import NotFound, ScrError
from scr.http_server import KEEP_ALIVE_IDLE_S
from scr.httpio import JSONResponse, read_body
from scr.log.commit import Committer
from scr.log.tail import LedgerTail
from scr.metrics import Metrics
from scr.privacy.opening import EventOpener
from scr.privacy.setup import open_subjects
from scr.privacy.subjects import Subjects
from scr.route.control import LocalDestinations, ReplayRequest
from scr.route.placement import Placement
from scr.route.worker import DestinationWorker, reads_events
from scr.security.audit import Acting
from scr.serve.child import EXIT_START_ERROR, calm_the_collector, prepared, serve_and_tell
from scr.serve.readers import bind_unix, control_path, decode_seq, notify_path, writes_path
from scr.serve.supervisor import ChildArgs
from scr.serve.writes import RecordingStore, RemoteCommitter
from scr.store import Store, open_store

log = logging.getLogger("scr.serve.reader")

LEASE_POLLS = 3  # a cluster reader's lease on its partitions, in ownership polls
MIN_LEASE_S = 1.0
QUIET_CHECK_S = 1.0  # with no wake-up for this long, look at the ledger's head anyway
FETCH_ENTRIES = 1000  # entries read from the store at a time
MAX_CONTROL_BODY_BYTES = 1024 * 1024
MAX_DATAGRAM_BYTES = 64


class OwnedLease:
    """In a cluster, the partitions the writer last said this instance owns, trusted for
    ``lease_s``: a reader that hears nothing more (the writer died, or lost the store and so
    its partitions) stops its destinations rather than deliver for partitions another
    instance may have taken. The writer says it after every ownership poll, so the lease is
    three polls long (at least a second)."""

    def __init__(self, placement: Placement, cluster: ClusterConfig) -> None:
        self.placement = placement
        self.lease_s = max(MIN_LEASE_S, LEASE_POLLS * cluster.ownership_poll_ms / 1000)
        self.expires = 0.0

    async def grant(self, owned: set[int]) -> None:
        self.expires = time.monotonic() + self.lease_s
        await self.placement.follow(owned)

    async def watch(self) -> None:
        """Stop every destination once the lease runs out."""
        while True:
            await asyncio.sleep(self.lease_s / 2)
            if time.monotonic() > self.expires:
                try:
                    await self.placement.follow(set())
                except Exception as error:  # a sink that fails to close: try again
                    log.warning("cannot stop the destinations of a lapsed lease: %s", error)


class ForgetCall(msgspec.Struct, forbid_unknown_fields=True):
    tenant: str
    subject: str


class ReplayCall(msgspec.Struct, forbid_unknown_fields=True):
    acting: Acting
    request: ReplayRequest


class Follower:
    """Keeps the process's ledger tail at the head: woken by the writer, or every
    ``QUIET_CHECK_S`` when nothing came (a wake-up lost while this process restarted)."""

    def __init__(self, store: Store, tail: LedgerTail, wake: socket.socket) -> None:
        self.store, self.tail, self.wake = store, tail, wake

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                try:
                    message = await asyncio.wait_for(loop.sock_recv(self.wake, MAX_DATAGRAM_BYTES),
                                                     QUIET_CHECK_S)
                    head = decode_seq(message)
                except TimeoutError:
                    head = await asyncio.to_thread(self.store.last_seq)
                if head > self.tail.head_seq:
                    await self._read_up_to(head)
            except Exception as error:  # the store is unreachable: the next round tries again
                log.warning("cannot read the ledger's new entries: %s", error)
                await asyncio.sleep(QUIET_CHECK_S)

    async def _read_up_to(self, head: int) -> None:
        while self.tail.head_seq < head:
            rows = await asyncio.to_thread(self.store.entries_after, self.tail.head_seq, FETCH_ENTRIES)
            if not rows:
                return
            self.tail.extend(self.tail.committed_rows(rows), settled=True)


def run_reader(args: ChildArgs) -> int:
    """Run this process's destinations until SIGTERM, then record what was delivered; in a
    cluster, only those whose home partition the instance owns (``OwnedLease``)."""
    process = args.title.removeprefix("scr: reader ")
    socket_dir = Path(args.socket_dir)
    data_dir = Path(args.data)
    ready = prepared(args, lambda settings, store_uri: open_with_subjects(data_dir, settings, store_uri))
    if ready is None:
        return EXIT_START_ERROR
    settings, (store, subjects) = ready
    metrics = Metrics()
    tail = LedgerTail(store)
    if subjects is not None:  # the destinations receive sealed fields opened
        tail.opener = EventOpener(subjects)
    # the destinations read the store and write through the one writer (scr.serve.writes)
    remote = RemoteCommitter(writes_path(socket_dir))
    committer = cast(Committer, remote)
    writing_store = cast(Store, RecordingStore(store))
    mine = [d for d in settings.routing.destinations if d.process == process]
    # an event is decoded only for a destination that reads it so (one read per entry)
    tail.decode_events = any(reads_events(d) for d in mine)

    def build(destination: DestinationConfig) -> DestinationWorker:
        return DestinationWorker(destination, writing_store, committer, tail, metrics, data_dir)

    workers = {d.name: build(d) for d in mine}
    destinations = LocalDestinations(workers, writing_store, committer, metrics)
    lease = None  # in a cluster, the destinations follow the instance's partitions
    if shares_partitions(settings, args.store or settings.store):
        lease = OwnedLease(Placement(mine, settings.cluster.partitions, workers, build, store, metrics),
                           settings.cluster)
    wake = bind_unix(socket.SOCK_DGRAM, notify_path(socket_dir, process))
    wake.setblocking(False)
    control = bind_unix(socket.SOCK_STREAM, control_path(socket_dir, process))
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        if lease is None:
            for worker in workers.values():
                await worker.start()
        else:
            tasks.append(asyncio.ensure_future(lease.watch()))
        tasks.append(asyncio.ensure_future(Follower(store, tail, wake).run()))

    async def stop() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # side by side: each lets its deliveries in flight end (STOP_GRACE_S at most)
        await asyncio.gather(*(w.stop() for w in workers.values() if w.running))
        await remote.close()
        store.close()
        wake.close()

    calm_the_collector()
    server = uvicorn.Server(uvicorn.Config(
        _control_app(destinations, lease, tail), log_level=args.log_level, access_log=False,
        loop="uvloop", http="httptools", timeout_keep_alive=KEEP_ALIVE_IDLE_S,
        timeout_graceful_shutdown=int(args.drain_timeout_s),
    ))
    serve_and_tell(server, args.ready_fd, [control], before=start, after=stop)
    return 0 if server.started else 1


def open_with_subjects(data_dir: Path, settings: Config,
                       store_uri: str | None) -> tuple[Store, Subjects | None]:
    """The store, and its subjects when encryption is on (the master key checked)."""
    store = open_store(data_dir, store_uri, settings.cluster.partitions, settings.store_pool)
    try:
        return store, open_subjects(settings, store)
    except BaseException:
        store.close()
        raise


def _control_app(destinations: LocalDestinations, lease: OwnedLease | None, tail: LedgerTail) -> Starlette:
    """What the edge asks of this process's destinations (``scr.serve.readers``)."""

    async def views(request: Request) -> Response:
        return JSONResponse(await destinations.views())

    async def enable(request: Request) -> Response:
        acting = msgspec.json.decode(await read_body(request, MAX_CONTROL_BODY_BYTES), type=Acting)
        return JSONResponse({"requeued": await destinations.enable(request.path_params["name"], acting)})

    async def replay(request: Request) -> Response:
        call = msgspec.json.decode(await read_body(request, MAX_CONTROL_BODY_BYTES), type=ReplayCall)
        return JSONResponse({"requeued": await destinations.replay(call.acting, call.request)})

    async def owned(request: Request) -> Response:
        partitions = msgspec.json.decode(await read_body(request, MAX_CONTROL_BODY_BYTES), type=list[int])
        if lease is None:
            raise NotFound("this reader's destinations do not follow partitions (no cluster)")
        await lease.grant(set(partitions))
        return JSONResponse({})

    async def forget(request: Request) -> Response:
        call = msgspec.json.decode(await read_body(request, MAX_CONTROL_BODY_BYTES), type=ForgetCall)
        tail.forget(call.tenant, call.subject)
        return JSONResponse({})

    async def gauges(request: Request) -> Response:
        await destinations.refresh_gauges()
        return JSONResponse({})

    async def error(request: Request, failure: Exception) -> Response:
        assert isinstance(failure, ScrError)
        return JSONResponse(failure.body(), status_code=failure.status)

    return Starlette(
        routes=[
            Route("/destinations", views, methods=["GET"]),
            Route("/destinations/{name}/enable", enable, methods=["POST"]),
            Route("/replay", replay, methods=["POST"]),
            Route("/owned", owned, methods=["POST"]),
            Route("/forget", forget, methods=["POST"]),
            Route("/gauges", gauges, methods=["POST"]),
        ],
        exception_handlers={ScrError: error},
    )
