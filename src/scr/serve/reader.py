"""A reader process (``scr: reader <process>``): runs the destinations the config puts in it.

It reads the ledger from each destination's durable cursor. The writer wakes it with the new
head after each commit; it then reads the new entries from the store once, for all of its
destinations, into its own ledger tail (one read and one decode per entry, not one per
destination). Its destinations' writes (cursors, deliveries, attempts) go to the one writer
(``scr.serve.writes``), and it answers the edge's questions on its control socket (``scr.serve.readers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path
from typing import cast

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scr.errors import ScrError
from scr.httpio import JSONResponse, read_body
from scr.log.commit import Committer
from scr.log.tail import LedgerTail, from_store
from scr.metrics import Metrics
from scr.route.control import LocalDestinations, ReplayRequest
from scr.route.worker import DestinationWorker
from scr.security.audit import Acting
from scr.serve.child import EXIT_START_ERROR, calm_the_collector, prepared, serve_and_tell
from scr.serve.readers import bind_unix, control_path, decode_seq, notify_path, writes_path
from scr.serve.supervisor import ChildArgs
from scr.serve.writes import RecordingStore, RemoteCommitter
from scr.store import Store, open_store

log = logging.getLogger("scr.serve.reader")

QUIET_CHECK_S = 1.0  # with no wake-up for this long, look at the ledger's head anyway
FETCH_ENTRIES = 1000  # entries read from the store at a time
MAX_CONTROL_BODY_BYTES = 1024 * 1024
MAX_DATAGRAM_BYTES = 64


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
            self.tail.extend([from_store(row) for row in rows])


def run_reader(args: ChildArgs) -> int:
    """Run this process's destinations until SIGTERM, then record what was delivered."""
    process = args.title.removeprefix("scr: reader ")
    socket_dir = Path(args.socket_dir)
    data_dir = Path(args.data)
    ready = prepared(args, lambda settings, store_uri: open_store(
        data_dir, store_uri, settings.cluster.partitions, settings.store_pool))
    if ready is None:
        return EXIT_START_ERROR
    settings, store = ready
    metrics = Metrics()
    tail = LedgerTail(store)
    # the destinations read the store and write through the one writer (scr.serve.writes)
    remote = RemoteCommitter(writes_path(socket_dir))
    committer = cast(Committer, remote)
    writing_store = cast(Store, RecordingStore(store))
    workers = {
        d.name: DestinationWorker(d, writing_store, committer, tail, metrics, data_dir)
        for d in settings.routing.destinations if d.process == process
    }
    destinations = LocalDestinations(workers, writing_store, committer, metrics)
    wake = bind_unix(socket.SOCK_DGRAM, notify_path(socket_dir, process))
    wake.setblocking(False)
    control = bind_unix(socket.SOCK_STREAM, control_path(socket_dir, process))
    follower_task: list[asyncio.Task[None]] = []

    async def start() -> None:
        for worker in workers.values():
            await worker.start()
        follower_task.append(asyncio.ensure_future(Follower(store, tail, wake).run()))

    async def stop() -> None:
        for task in follower_task:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for worker in workers.values():
            if worker.running:
                await worker.stop()
        await remote.close()
        store.close()
        wake.close()

    calm_the_collector()
    server = uvicorn.Server(uvicorn.Config(
        _control_app(destinations), log_level=args.log_level, access_log=False,
        loop="uvloop", http="httptools", timeout_graceful_shutdown=int(args.drain_timeout_s),
    ))
    serve_and_tell(server, args.ready_fd, [control], before=start, after=stop)
    return 0 if server.started else 1


def _control_app(destinations: LocalDestinations) -> Starlette:
    """What the edge asks of this process's destinations (``scr.serve.readers``)."""

    async def views(request: Request) -> Response:
        return JSONResponse(await destinations.views())

    async def enable(request: Request) -> Response:
        acting = msgspec.json.decode(await read_body(request, MAX_CONTROL_BODY_BYTES), type=Acting)
        return JSONResponse({"requeued": await destinations.enable(request.path_params["name"], acting)})

    async def replay(request: Request) -> Response:
        call = msgspec.json.decode(await read_body(request, MAX_CONTROL_BODY_BYTES), type=ReplayCall)
        return JSONResponse({"requeued": await destinations.replay(call.acting, call.request)})

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
            Route("/gauges", gauges, methods=["POST"]),
        ],
        exception_handlers={ScrError: error},
    )
