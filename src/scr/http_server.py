"""The HTTP server: uvicorn running the scr app, bounded against slow and too many clients.

Everything about client connections lives here: ``bounded_server`` makes the uvicorn server
(uvloop, httptools) an edge process runs for the app on the listening socket it inherits
from the supervisor, under the ``server`` limits of the config:

- ``header_timeout_s``: a request's headers must be complete this long after its first byte
  (a new connection's first request: after the connection opened). Past it the client gets
  ``408`` with the standard error body and ``Connection: close``, and the connection is
  closed; a connection that sent nothing is just closed.
- ``body_timeout_s``: the whole body must have arrived this long after the headers ended
  (total time, not idle time: a client trickling a byte now and then would otherwise hold
  its connection without end). Past it: ``408`` as above if no answer was begun, and the
  app sees the client as gone, so nothing of the request is stored.
- ``max_connections``: connections one process holds open at once. One more is answered
  ``503`` with the standard body and ``Connection: close`` at once, never parsed, and
  closed.

uvicorn has no such bounds: ``limit_concurrency`` counts in-flight requests (not connections
waiting for their headers) and answers a plain-text 503; ``timeout_keep_alive`` only covers
the idle time between requests. The smallest robust layer is a subclass of uvicorn's
httptools protocol that follows the parser's own callbacks (message begin, headers complete,
message complete): no byte is parsed twice, and a deadline timer is armed only for a head or
body that spans more than one read, so a request that arrives whole costs no timer at all.
It relies on ``HttpToolsProtocol``'s callbacks, stable across uvicorn releases (the version
is pinned in constraints.txt).

With ``server.tls_cert`` and ``server.tls_key`` the edges serve HTTPS (uvicorn's own TLS, the
standard library's ``ssl``); ``check_tls`` loads the pair once in the supervisor, so a missing,
unreadable or mismatched file is a start-up error before any child serves.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import time
from typing import ClassVar, cast

import msgspec
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from scr.config import ServerConfig
from scr.errors import ConfigError, Detail, RequestTimeout, ScrError, Unavailable

log = logging.getLogger("scr.http_server")

# File descriptors kept for everything but client connections: the listening socket, the
# store (SQLite and its WAL, or a PostgreSQL pool), logs, outgoing deliveries, NATS.
RESERVED_FILE_DESCRIPTORS = 256
# A refused connection is closed this long after its 503 if the client has not closed it:
# long enough for the client to read the answer, short enough that refusals cost little.
REFUSAL_LINGER_S = 2.0
# Refusals are logged at most this often (seconds): a flood must not flood the log too.
REFUSAL_WARNING_EVERY_S = 10.0
# An idle keep-alive connection is closed this long after its last answer (seconds;
# uvicorn's default, kept explicit because the README promises it).
KEEP_ALIVE_IDLE_S = 5
SERVER_KEY = "session_completion_runtime.server"


def bounded_server(app: ASGIApp, limits: ServerConfig, *, log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for ``app`` under ``limits`` (header and body deadlines, a connection
    cap, a SIGTERM drain of at most ``limits.drain_timeout_s``); serve it on the listening
    socket inherited from the supervisor with ``server.serve([socket.socket(fileno=fd)])``,
    never uvicorn's ``fd=``, which takes every inherited socket for a Unix one and so leaves
    Nagle's algorithm on for TCP clients (40 ms stalls on small answers)."""
    config = uvicorn.Config(
        app, log_level=log_level, access_log=False,
        loop="uvloop", http=_bounded_protocol(limits), timeout_keep_alive=KEEP_ALIVE_IDLE_S,
        timeout_graceful_shutdown=max(1, int(limits.drain_timeout_s)),
        # scr has no WebSocket route: an Upgrade request is plain HTTP, and no connection
        # leaves the bounded protocol for one without these deadlines.
        ws="none",
        ssl_certfile=limits.tls_cert, ssl_keyfile=limits.tls_key,
    )
    return uvicorn.Server(config)


def check_tls(limits: ServerConfig) -> None:
    """Load ``server.tls_cert`` and ``server.tls_key`` as the edges will; a ``ConfigError``
    naming the key when a file cannot be read or the two are not a certificate and its key."""
    if limits.tls_cert is None or limits.tls_key is None:
        return
    for name, path in (("tls_cert", limits.tls_cert), ("tls_key", limits.tls_key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            reason = error.strerror or str(error)
            raise ConfigError(f"cannot read server.{name} {path}: {reason}",
                              [Detail(f"{SERVER_KEY}.{name}", f"{path}: {reason}")]) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:  # an encrypted key is refused, never prompted for on the terminal
        context.load_cert_chain(limits.tls_cert, limits.tls_key, password=_no_password)
    except (ssl.SSLError, ValueError) as error:
        message = (f"{limits.tls_cert} and {limits.tls_key} are not a PEM certificate and its "
                   f"unencrypted private key: {error}")
        raise ConfigError(f"server.tls_cert/tls_key: {message}",
                          [Detail(f"{SERVER_KEY}.tls_key", message)]) from None


def _no_password() -> bytes:
    raise ValueError("the private key is encrypted; give it unencrypted (file mode 0600)")


def reserve_file_descriptors(limits: ServerConfig) -> None:
    """Raise this process's soft open-files limit (RLIMIT_NOFILE) to its hard limit when it is
    below what ``limits.max_connections`` needs; a ``ConfigError`` naming the key when even the
    hard limit is too low (then every connection past it would fail, legitimate ones too)."""
    needed = limits.max_connections + RESERVED_FILE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if _allows(soft, needed):
        return
    if not _allows(hard, needed):
        fits = max(0, hard - RESERVED_FILE_DESCRIPTORS)
        raise ConfigError(
            f"server.max_connections is {limits.max_connections}, but this process may open only "
            f"{hard} files",
            [Detail(
                f"{SERVER_KEY}.max_connections",
                f"{limits.max_connections} connections and {RESERVED_FILE_DESCRIPTORS} files for the "
                f"store, logs and deliveries need an open-files limit (RLIMIT_NOFILE) of {needed}; the "
                f"hard limit is {hard}: lower max_connections to at most {fits}, or raise the limit "
                f"(ulimit -n, systemd LimitNOFILE=)",
            )],
        )
    raised = needed if hard == resource.RLIM_INFINITY else hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    log.info("open-files limit raised from %d to %d for %d connections", soft, raised,
             limits.max_connections)


def _allows(limit: int, needed: int) -> bool:
    return limit == resource.RLIM_INFINITY or limit >= needed


def _error_answer(error: ScrError, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A complete HTTP/1.1 response with the standard error body, closing the connection,
    written by the protocol itself (the app never saw the request, or no longer can answer)."""
    body = msgspec.json.encode(error.body())
    lines = [STATUS_LINE[error.status]]
    lines += [name + b": " + value + b"\r\n" for name, value in default_headers]
    lines += [
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
        body,
    ]
    return b"".join(lines)


class _Refusal(asyncio.Protocol):
    """A connection over ``max_connections``: answered ``503`` at once and never parsed.

    The write side is shut after the answer; what the client sends is read and dropped, so
    that the close sends a FIN, not a reset that could destroy the answer before the client
    reads it. Closed when the client closes, or ``REFUSAL_LINGER_S`` after the answer.
    """

    def __init__(self, answer: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self.answer = answer
        self.loop = loop
        self.linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)
        stream.write(self.answer)
        if stream.can_write_eof():
            stream.write_eof()
        self.linger = self.loop.call_later(REFUSAL_LINGER_S, stream.close)

    def data_received(self, data: bytes) -> None:
        return None

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self.linger is not None:
            self.linger.cancel()


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a body deadline and a connection
    cap (see the module's docstring). ``limits`` is set on the subclass ``bounded_server`` makes."""

    limits: ClassVar[ServerConfig] = ServerConfig()
    _last_refusal_warning: ClassVar[float] = float("-inf")
    _refused_since_warning: ClassVar[int] = 0

    header_deadline: asyncio.TimerHandle | None = None
    body_deadline: asyncio.TimerHandle | None = None
    # From a request's first byte to the end of its headers (a timeout then answers 408), and
    # from there to the end of its body.
    reading_head = False
    reading_body = False

    # ----- the connection cap ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # uvicorn's own set of open connections: this one is not in it yet.
        if len(self.connections) >= self.limits.max_connections:
            self._refuse(transport)
            return
        super().connection_made(transport)
        self.header_deadline = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _refuse(self, transport: asyncio.Transport) -> None:
        answer = _error_answer(
            Unavailable(f"the server holds its maximum of {self.limits.max_connections} connections; "
                        "try again shortly"),
            self.server_state.default_headers,
        )
        refusal = _Refusal(answer, self.loop)
        transport.set_protocol(refusal)
        refusal.connection_made(transport)
        cls = type(self)
        cls._refused_since_warning += 1
        now = time.monotonic()
        if now - cls._last_refusal_warning >= REFUSAL_WARNING_EVERY_S:
            log.warning("refused %d connection(s) with 503: server.max_connections (%d) are open",
                        cls._refused_since_warning, self.limits.max_connections)
            cls._last_refusal_warning, cls._refused_since_warning = now, 0

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # ----- deadlines, at the parser's callbacks ----------------------------------------------

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Armed only for a head or body that spans more than one read: most requests arrive
        # whole, and then no timer is set or cancelled for them.
        if self.transport.is_closing():
            return
        if self.reading_head and self.header_deadline is None:
            self.header_deadline = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)
        if self.reading_body and self.body_deadline is None:
            self.body_deadline = self.loop.call_later(self.limits.body_timeout_s, self._body_timed_out)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.reading_head = True

    def on_headers_complete(self) -> None:
        self.reading_head, self.reading_body = False, True
        if self.header_deadline is not None:  # the connection's first, or a slow head
            self.header_deadline.cancel()
            self.header_deadline = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.reading_body = False
        if self.body_deadline is not None:
            self.body_deadline.cancel()
            self.body_deadline = None
        super().on_message_complete()

    def _disarm(self) -> None:
        for deadline in (self.header_deadline, self.body_deadline):
            if deadline is not None:
                deadline.cancel()
        self.header_deadline = self.body_deadline = None

    def _head_timed_out(self) -> None:
        self.header_deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A pipelined request stalls behind one being answered: finish that answer, then close.
            cycle.keep_alive = False
            return
        log.debug("closing %s: headers incomplete after %s s", self.client, self.limits.header_timeout_s)
        if self.reading_head:
            self.transport.write(_error_answer(
                RequestTimeout(f"the request's headers did not arrive within "
                               f"{self.limits.header_timeout_s:g} s"),
                self.server_state.default_headers,
            ))
        self.transport.close()

    def _body_timed_out(self) -> None:
        self.body_deadline = None
        cycle = self.cycle
        if self.transport.is_closing():
            return
        log.debug("closing %s: body incomplete after %s s", self.client, self.limits.body_timeout_s)
        if not self.pipeline and not cycle.response_started:
            # No answer begun (and none ahead of it, pipelined): answer 408 here. The app,
            # still reading, then sees the client gone and stores nothing.
            self.transport.write(_error_answer(
                RequestTimeout(f"the request's body did not arrive within "
                               f"{self.limits.body_timeout_s:g} s"),
                self.server_state.default_headers,
            ))
        cycle.disconnected = True
        cycle.message_event.set()
        self.transport.close()


def _bounded_protocol(limits: ServerConfig) -> type[BoundedHttpProtocol]:
    """The protocol class for one server: uvicorn builds each connection's protocol from a class."""
    return cast(
        type[BoundedHttpProtocol],
        type("BoundedHttpProtocol", (BoundedHttpProtocol,), {"limits": limits}),
    )
