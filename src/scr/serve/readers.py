"""The edge's side of the reader processes: wake them after each commit, ask them how the
destinations are doing.

Each reader process has two Unix sockets in the instance's socket folder (0700, made by the
supervisor): ``<process>.notify`` takes datagrams of 8 bytes, the ledger's new head
sequence number (big-endian), and ``<process>.control`` answers a small HTTP API
(``scr.serve.reader``); the writer takes their writes on ``writer.writes``
(``scr.serve.writes``). A datagram that cannot be sent (the reader is restarting, its queue
is full) is dropped: the reader reads the ledger from the store, not from the message,
and checks the head itself when it hears nothing for a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import msgspec

from scr.config import Config
from scr.errors import BadRequest, Conflict, NotFound, ScrError, Unavailable
from scr.http_server import KEEP_ALIVE_IDLE_S
from scr.log.commit import Committer
from scr.route.control import DestinationView, ReplayRequest
from scr.security.audit import Acting
from scr.serve.writes import WriteService
from scr.store.protocol import Store

log = logging.getLogger("scr.serve")

CONTROL_TIMEOUT_S = 5.0  # a reader that does not answer a question by then is reported
# httpx's own bounds on its connections, with idle ones reused half as long as the servers
# keep them (a Limits given replaces every default: unbounded pools otherwise)
CLIENT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20,
                             keepalive_expiry=KEEP_ALIVE_IDLE_S / 2)
REPLAY_TIMEOUT_S = 60.0  # a replay of 100,000 events is the slowest control call
SEQ_BYTES = 8
_ANSWERED: dict[int, type[ScrError]] = {400: BadRequest, 404: NotFound, 409: Conflict}
_views = msgspec.json.Decoder(list[DestinationView])


def writes_path(socket_dir: Path) -> Path:
    return socket_dir / "writer.writes"


def appends_path(socket_dir: Path) -> Path:
    return socket_dir / "writer.appends"


def writer_http_path(socket_dir: Path) -> Path:
    return socket_dir / "writer.http"


def bind_unix(kind: socket.SocketKind, path: Path) -> socket.socket:
    """A Unix socket at ``path`` (one left by a killed predecessor is replaced)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    bound = socket.socket(socket.AF_UNIX, kind)
    bound.bind(str(path))
    if kind == socket.SOCK_STREAM:
        bound.listen()
    return bound


def unix_http_client(path: Path, base_url: str, timeout_s: float = CONTROL_TIMEOUT_S) -> httpx.AsyncClient:
    """An HTTP client of another process of this instance, over its Unix socket. The HTTP is
    plain, so the transport's TLS context trusts no CA: httpx would otherwise load certifi's
    bundle for each client (50-80 ms of CPU at every start of an edge or a writer). An idle
    connection is dropped well before the server would close it (``KEEP_ALIVE_IDLE_S``): a
    request sent on one as the server closed it failed (an edge answered 503 to ``/healthz``)."""
    transport = httpx.AsyncHTTPTransport(
        uds=str(path), verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
        limits=CLIENT_LIMITS,
    )
    return httpx.AsyncClient(transport=transport, base_url=base_url, timeout=timeout_s)


def control_path(socket_dir: Path, process: str) -> Path:
    return socket_dir / f"{process}.control"


def notify_path(socket_dir: Path, process: str) -> Path:
    return socket_dir / f"{process}.notify"


def usage_notify_path(socket_dir: Path) -> Path:
    """The usage process's wake-up socket (a name no destinations' process can have)."""
    return socket_dir / "usage.aggregates.notify"


def enrich_notify_path(socket_dir: Path) -> Path:
    """The enricher's wake-up socket (a name no destinations' process can have)."""
    return socket_dir / "enrich.vectors.notify"


def reader_processes(config: Config) -> list[str]:
    """The reader processes the config asks for, in the order of its destinations."""
    return list(dict.fromkeys(d.process for d in config.routing.destinations))


def encode_seq(seq: int) -> bytes:
    return seq.to_bytes(SEQ_BYTES, "big")


def decode_seq(message: bytes) -> int:
    return int.from_bytes(message[:SEQ_BYTES], "big")


class ReaderSet:
    """The destinations of this instance, run by its reader processes, and the usage
    process (``scr.serve.usage``) and the enricher (``scr.serve.enrich``), which each commit
    wakes too."""

    def __init__(self, config: Config, socket_dir: Path) -> None:
        self.process_of = {d.name: d.process for d in config.routing.destinations}
        self.processes = reader_processes(config)
        self._clients = {
            process: unix_http_client(control_path(socket_dir, process), "http://reader")
            for process in self.processes
        }
        self._notify_to = [str(notify_path(socket_dir, p)) for p in self.processes]
        self._notify_to.append(str(usage_notify_path(socket_dir)))
        if config.enrichment is not None:
            self._notify_to.append(str(enrich_notify_path(socket_dir)))
        self._notifier = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notifier.setblocking(False)
        self._writes_at = writes_path(socket_dir)
        self._writes: WriteService | None = None
        self._placing: set[asyncio.Task[None]] = set()

    async def start(self, store: Store, committer: Committer) -> None:
        self._writes = WriteService(store, committer, self._writes_at)
        await self._writes.start()

    def names(self) -> list[str]:
        return list(self.process_of)

    def notify(self, head_seq: int) -> None:
        message = encode_seq(head_seq)
        for path in self._notify_to:
            # restarting or full: the reader catches up from the store on its own
            with contextlib.suppress(OSError):
                self._notifier.sendto(message, path)

    def place(self, owned: set[int]) -> None:
        """Tell each reader the partitions this instance owns now, without waiting: a reader
        that does not hear it again within its lease stops its destinations (``scr.serve.reader``)."""
        body = msgspec.json.encode(sorted(owned))
        for process in self.processes:
            task = asyncio.ensure_future(self._tell_owned(process, body))
            self._placing.add(task)
            task.add_done_callback(self._placing.discard)

    async def _tell_owned(self, process: str, body: bytes) -> None:
        try:
            await self._call(process, "POST", "/owned", body)
        except ScrError as error:  # restarting: the next poll tells it again
            log.debug("cluster: could not tell %s its partitions: %s", process, error)

    async def views(self) -> list[DestinationView]:
        answers = await asyncio.gather(*(self._call(p, "GET", "/destinations") for p in self.processes))
        by_name = {view.name: view for answer in answers for view in _views.decode(answer)}
        return [by_name[name] for name in self.process_of if name in by_name]

    async def enable(self, name: str, acting: Acting) -> int:
        answer = await self._call(self.process_of[name], "POST", f"/destinations/{name}/enable",
                                  msgspec.json.encode(acting))
        requeued: int = msgspec.json.decode(answer)["requeued"]
        return requeued

    async def replay(self, acting: Acting, ask: ReplayRequest) -> int:
        body = msgspec.json.encode({"acting": acting, "request": ask})
        answer = await self._call(self.process_of[ask.destination], "POST", "/replay", body,
                                  REPLAY_TIMEOUT_S)
        requeued: int = msgspec.json.decode(answer)["requeued"]
        return requeued

    async def forget(self, tenant: str, subject: str) -> None:
        """Each reader drops its tail and the subject's keys; one that does not answer is
        restarting, and starts with neither."""
        body = msgspec.json.encode({"tenant": tenant, "subject": subject})
        await asyncio.gather(*(self._call(p, "POST", "/forget", body) for p in self.processes),
                             return_exceptions=True)

    async def refresh_gauges(self) -> None:
        """Each reader sets its gauges; one that does not answer keeps its last ones (its
        ``scr_process_up`` tells why), and ``/metrics`` still answers."""
        await asyncio.gather(*(self._call(p, "POST", "/gauges") for p in self.processes),
                             return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._placing):
            task.cancel()
        if self._writes is not None:
            await self._writes.close()
        for client in self._clients.values():
            await client.aclose()
        self._notifier.close()

    async def _call(self, process: str, method: str, path: str, body: bytes = b"",
                    timeout_s: float = CONTROL_TIMEOUT_S) -> bytes:
        try:
            response = await self._clients[process].request(method, path, content=body, timeout=timeout_s)
        except httpx.HTTPError:
            raise Unavailable(
                f"the reader process 'scr: reader {process}' is not answering (restarting?); try again"
            ) from None
        if response.status_code != 200:
            raise _answered(response)
        return response.content


def _answered(response: httpx.Response) -> ScrError:
    """The reader's error, raised again on the edge with the same status and message."""
    try:
        error: dict[str, Any] = response.json()["error"]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        message = f"the reader answered {response.status_code}"
    return _ANSWERED.get(response.status_code, ScrError)(message)
