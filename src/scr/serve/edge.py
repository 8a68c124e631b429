"""An edge (``scr: edge N``): one of the HTTP processes on the socket the supervisor listens on.

``POST /v1/events`` is done here: auth, bounded read, decode, validate, canonical bytes and
digests, everything that needs no shared state; the writer only appends the compact records
(``scr.serve.appends``). Every other request goes to the writer's private HTTP socket as it
came (with the client's address), and its answer comes back as the writer gave it. A writer
that is gone is a ``503`` in the standard body at once, and the edge recovers by itself.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scr.capture.ingest import ingest_request
from scr.config import Config
from scr.dashboard.live import LiveSource
from scr.dashboard.routes import live_route
from scr.errors import BadRequest, Unavailable
from scr.http_server import bounded_server
from scr.httpio import read_body
from scr.metrics import Metrics
from scr.route.price_file import live_prices
from scr.security.auth import Authenticator
from scr.serve.appends import AppendClient
from scr.serve.child import EXIT_START_ERROR, calm_the_collector, prepared, serve_and_tell
from scr.serve.readers import appends_path, unix_http_client, writer_http_path
from scr.serve.supervisor import ChildArgs
from scr.serve.writer import CLIENT_HEADER

WRITER_ANSWER_TIMEOUT_S = 300.0  # the slowest call passed on: a replay or an export
# hop-by-hop headers, and those the HTTP layer sets again for the body it sends
NOT_PASSED_ON = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
                 "te", "upgrade", CLIENT_HEADER.decode()}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class WriterProxy:
    """Every request but ``POST /v1/events``, passed to the writer and answered as it answers."""

    def __init__(self, path: Path, max_body_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes
        self.client = unix_http_client(path, "http://writer", WRITER_ANSWER_TIMEOUT_S)

    async def forward(self, request: Request) -> Response:
        body = await read_body(request, self.max_body_bytes)
        headers = [(k, v) for k, v in request.headers.items() if k not in NOT_PASSED_ON]
        if request.client is not None:
            headers.append((CLIENT_HEADER.decode(), f"{request.client.host}:{request.client.port}"))
        # the path and query exactly as the client sent them (still percent-encoded)
        raw = request.scope["raw_path"]
        if request.scope["query_string"]:
            raw += b"?" + request.scope["query_string"]
        try:
            answer = await self.client.request(
                request.method, httpx.URL("http://writer").copy_with(raw_path=raw),
                headers=headers, content=body,
            )
        except httpx.InvalidURL as error:
            raise BadRequest(f"the request's path or query cannot be read: {error}") from None
        except httpx.HTTPError:
            raise Unavailable("the writer is not answering (restarting?); try again") from None
        kept = {k: v for k, v in answer.headers.multi_items() if k.lower() not in NOT_PASSED_ON}
        return Response(answer.content, status_code=answer.status_code, headers=kept)


def edge_app(settings: Config, data_dir: Path, socket_dir: Path, store_uri: str | None) -> Starlette:
    """The edge's application over a read-only use of the store (keys)."""
    from scr.server import api_app
    from scr.store import open_store

    store = open_store(data_dir, store_uri, settings.cluster.partitions, settings.store_pool)
    auth = Authenticator(store, settings.validation.require_authentication)
    metrics = Metrics()
    appender = AppendClient(appends_path(socket_dir))
    proxy = WriterProxy(writer_http_path(socket_dir), settings.server.max_body_bytes)
    prices = live_prices(data_dir)

    async def post_events(request: Request) -> Response:
        principal = auth.principal(request.headers.get("authorization"))
        principal.require("ingest")
        return await ingest_request(request, principal, settings.server, appender, metrics, prices)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await appender.close()
            await proxy.client.aclose()
            store.close()

    # the live stream is answered here: the proxy below waits for whole answers
    live = LiveSource(metrics, store, lambda: [d.name for d in settings.routing.destinations])
    return api_app([
        Route("/v1/events", post_events, methods=["POST"]),
        live_route(live, auth),
        Route("/{path:path}", proxy.forward, methods=METHODS),
    ], lifespan)


def run_edge(args: ChildArgs) -> int:
    """Serve HTTP until SIGTERM; tell the supervisor once requests are answered."""
    ready = prepared(args, lambda settings, store_uri: edge_app(
        settings, Path(args.data), Path(args.socket_dir), store_uri))
    if ready is None:
        return EXIT_START_ERROR
    settings, application = ready
    calm_the_collector()
    server = bounded_server(application, settings.server, log_level=args.log_level)
    serve_and_tell(server, args.ready_fd, [socket.socket(fileno=args.listen_fd)])
    return 0 if server.started else 1
