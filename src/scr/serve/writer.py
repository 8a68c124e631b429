"""The writer (``scr: writer``): the one process that commits, and the API's control plane.

It holds the runtime: the group committer (dedup, chain, Merkle upkeep, fsync), the ledger's
checkpoints, the canon and every read and admin route. It has no public socket: the edges
send it validated events on ``writer.appends`` (``scr.serve.appends``) and pass it every
other request over its private HTTP socket ``writer.http``; the readers send their writes on
``writer.writes`` (``scr.serve.writes``) and are woken after each commit.
"""

from __future__ import annotations

import socket
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from scr.config import Config
from scr.http_server import KEEP_ALIVE_IDLE_S
from scr.serve.appends import AppendService
from scr.serve.child import EXIT_START_ERROR, calm_the_collector, prepared, serve_and_tell
from scr.serve.readers import ReaderSet, appends_path, bind_unix, writer_http_path
from scr.serve.supervisor import ChildArgs

CLIENT_HEADER = b"x-scr-client"  # the public client's address, set by the edge that took it


class ForwardedClient:
    """The client an edge took the request from, in place of the edge itself.

    Trusted because only the instance's own processes reach the writer's socket (a 0700
    folder); the edges set the header on every request they pass on, over any a client sent.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == CLIENT_HEADER:
                    host, _, port = value.decode("latin-1").rpartition(":")
                    scope = {**scope, "client": (host, int(port) if port.isdigit() else 0)}
                    break
        await self.app(scope, receive, send)


def run_writer(args: ChildArgs) -> int:
    """Commit and answer the edges until SIGTERM, then drain what is queued."""
    from scr.server import create_app

    socket_dir = Path(args.socket_dir)

    def build(settings: Config, store_uri: str | None) -> Starlette:
        # destinations run in reader processes (in a cluster, those of the partitions this
        # instance owns: the writer tells them after each ownership poll), and so do usage,
        # the enricher and the archiver (in a cluster, on the instance holding their lease);
        # the writer takes their writes and wakes them
        readers = ReaderSet(settings, socket_dir)
        return create_app(settings, Path(args.data), store_uri, args.url, readers)

    ready = prepared(args, build)
    if ready is None:
        return EXIT_START_ERROR
    _, application = ready
    runtime = application.state.runtime
    appends = AppendService(runtime, appends_path(socket_dir))
    runtime.on_start.append(appends.start)
    runtime.before_stop.insert(0, appends.close)  # no new events once the drain begins
    calm_the_collector()
    server = uvicorn.Server(uvicorn.Config(
        ForwardedClient(application), log_level=args.log_level, access_log=False, loop="uvloop",
        http="httptools", ws="none", timeout_keep_alive=KEEP_ALIVE_IDLE_S,
        timeout_graceful_shutdown=max(1, int(args.drain_timeout_s)),
    ))
    private: socket.socket = bind_unix(socket.SOCK_STREAM, writer_http_path(socket_dir))
    serve_and_tell(server, args.ready_fd, [private])
    return 0 if server.started else 1
