"""The HTTP server against real clients: a 500 keeps the connection, slow clients are timed out,
connections past the cap are refused with 503, and the open-files limit fits the cap.

Every test runs a real ``scr serve`` process and talks to it over raw TCP sockets, because
what is tested is what travels on the connection (status, ``Connection`` header, when the
server closes) and an HTTP client library would hide it (httpx silently replaces a pooled
connection the server dropped).
"""

from __future__ import annotations

import contextlib
import json
import resource
import select
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from packed import ledger_table

from scr.testing.servers import free_port
from support import SCR, ServerProcess, create_key, make_event, wait_for

# Reads on a test socket give up after this long: far above every timeout configured below.
SOCKET_TIMEOUT_S = 10.0
# A slow client sends one more byte this often (seconds).
TRICKLE_EVERY_S = 0.2
# The servers below time requests out after this many seconds.
SHORT_TIMEOUT_S = 1
CAP = 20


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, object]:
        """The standard error body's ``error`` object (and the body is exactly that shape)."""
        assert self.headers["content-type"].startswith("application/json"), self.headers
        error: dict[str, object] = json.loads(self.body)["error"]
        assert set(error) == {"code", "message", "details"}, error
        return error


def parse_answer(raw: bytes) -> Answer:
    head, separator, body = raw.partition(b"\r\n\r\n")
    assert separator, f"no whole answer in {raw!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    assert len(body) == int(headers["content-length"]), raw
    return Answer(int(status_line.split()[1]), headers, body)


def read_answer(sock: socket.socket) -> Answer:
    """One whole answer from a keep-alive connection (its body by Content-Length)."""
    raw = b""
    while b"\r\n\r\n" not in raw or len(raw.partition(b"\r\n\r\n")[2]) < _length(raw):
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the server closed the connection; had {raw!r}")
        raw += chunk
    return parse_answer(raw)


def _length(raw: bytes) -> int:
    for line in raw.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    raw = b""
    while chunk := _recv(sock):
        raw += chunk
    return raw


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request(method: str, path: str, key: str | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1"]
    if key is not None:
        lines.append(f"authorization: Bearer {key}")
    if body:
        lines += ["content-type: application/json", f"content-length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def trickle_until_closed(socks: list[socket.socket], deadline_s: float) -> dict[socket.socket, bytes]:
    """Send each socket one more byte every ``TRICKLE_EVERY_S`` (a client that is slow, not
    idle) until the server has closed every one; what each received. Fails at the deadline."""
    received = {sock: b"" for sock in socks}
    open_socks = set(socks)
    deadline = time.monotonic() + deadline_s
    while open_socks:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(open_socks)} slow connection(s) still open after {deadline_s} s")
        for sock in list(open_socks):
            with contextlib.suppress(OSError):  # closed by the server: its answer is read below
                sock.send(b"a")
        readable, _, _ = select.select(list(open_socks), [], [], TRICKLE_EVERY_S)
        for sock in readable:
            chunk = _recv(sock)
            if chunk:
                received[sock] += chunk
            else:
                open_socks.discard(sock)
    return received


def write_config(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "scr.yaml"
    path.write_text(f"session_completion_runtime:\n  server: {{{server}}}\n")
    return path


@pytest.fixture
def started() -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    yield servers
    for server in servers:
        server.stop()


def start(started: list[ServerProcess], server: ServerProcess) -> ServerProcess:
    started.append(server.start())
    return server


# ----- a 500 is an ordinary answer ------------------------------------------------------------


def test_a_500_answers_the_standard_body_and_the_connection_stays_usable(
    tmp_path: Path, started: list[ServerProcess]
) -> None:
    """A real 500 comes from a corrupt ledger row (an entry that is not JSON), written into the
    data folder's SQLite while the server runs: a fault that can happen on a real disk, and
    no route of the product needs to exist for the test's sake. Reading that event fails in
    the route with an error nobody expected; the client must get the standard body and keep
    its connection (the defect: the server dropped it without ``Connection: close``, so the
    client's next request on it failed)."""
    data = tmp_path / "data"
    ingest, read = create_key(data), create_key(data, role="read")
    server = start(started, ServerProcess(data))
    posted = httpx.post(f"{server.url}/v1/events", json=make_event("evt_corrupt"),
                        headers={"authorization": f"Bearer {ingest}"})
    assert posted.status_code == 202, posted.text
    with sqlite3.connect(data / "scr.db", timeout=SOCKET_TIMEOUT_S) as db, ledger_table(db):
        assert db.execute("UPDATE ledger SET entry = x'00' WHERE event_id = 'evt_corrupt'").rowcount == 1

    with connect(server) as sock:
        sock.sendall(request("GET", "/v1/events/evt_corrupt", read))
        failed = read_answer(sock)
        assert failed.status == 500
        assert failed.error()["code"] == "internal"
        assert "close" not in failed.headers.get("connection", "")
        # the same connection serves the next request
        sock.sendall(request("GET", "/healthz"))
        healthy = read_answer(sock)
        assert healthy.status == 200 and json.loads(healthy.body)["status"] == "ok"
        sock.sendall(request("GET", "/v1/events/evt_corrupt", read))
        assert read_answer(sock).status == 500


# ----- slow clients ---------------------------------------------------------------------------


def test_slow_headers_are_answered_408_and_closed_while_other_clients_are_served(
    tmp_path: Path, started: list[ServerProcess]
) -> None:
    config = write_config(tmp_path, f"header_timeout_s: {SHORT_TIMEOUT_S}, max_connections: {CAP}")
    server = start(started, ServerProcess(tmp_path / "data", config))
    opened_at = time.monotonic()  # no deadline of the server can start before this
    slow = [connect(server) for _ in range(CAP - 3)]
    for sock in slow:  # a request line and headers that never end: one byte at a time after this
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ")
    idle = connect(server)  # opens and sends nothing
    kept = connect(server)  # a kept-alive connection whose second request is the slow one
    kept.sendall(request("GET", "/healthz"))
    assert read_answer(kept).status == 200
    kept.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ")
    slow.append(kept)

    # a client within the limits is served while the slow ones hold their connections
    assert httpx.get(f"{server.url}/healthz").status_code == 200

    received = trickle_until_closed(slow, SHORT_TIMEOUT_S + SOCKET_TIMEOUT_S)
    assert time.monotonic() - opened_at >= SHORT_TIMEOUT_S, "closed before header_timeout_s"
    for raw in received.values():
        answer = parse_answer(raw)
        assert answer.status == 408, raw
        assert answer.headers["connection"] == "close"
        error = answer.error()
        assert error["code"] == "request_timeout" and "headers" in str(error["message"])
    assert read_to_close(idle) == b"", "a connection that sent nothing is closed without an answer"
    for sock in [*slow, idle]:
        sock.close()
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_a_stalled_body_is_answered_408_and_nothing_of_it_is_stored(
    tmp_path: Path, started: list[ServerProcess]
) -> None:
    data = tmp_path / "data"
    ingest, read = create_key(data), create_key(data, role="read")
    config = write_config(tmp_path, f"body_timeout_s: {SHORT_TIMEOUT_S}")
    server = start(started, ServerProcess(data, config))
    event = json.dumps(make_event("evt_stalled")).encode()
    half = len(event) // 2

    with connect(server) as sock:
        # the headers and half the body at once, then a byte now and then: slow, never idle
        sock.sendall(request("POST", "/v1/events", ingest, event)[: -len(event) + half])
        received = trickle_until_closed([sock], SHORT_TIMEOUT_S + SOCKET_TIMEOUT_S)[sock]
    answer = parse_answer(received)
    assert answer.status == 408, received
    assert answer.headers["connection"] == "close"
    error = answer.error()
    assert error["code"] == "request_timeout" and "body" in str(error["message"])

    reads = {"authorization": f"Bearer {read}"}
    assert httpx.get(f"{server.url}/v1/events/evt_stalled", headers=reads).status_code == 404
    # sent whole, the same event is new: nothing of the stalled request was kept
    whole = httpx.post(f"{server.url}/v1/events", content=event,
                       headers={"authorization": f"Bearer {ingest}", "content-type": "application/json"})
    assert whole.status_code == 202 and whole.json()["accepted"] == 1, whole.text


def test_a_connection_past_max_connections_gets_503_and_clients_are_served_once_one_is_free(
    tmp_path: Path, started: list[ServerProcess]
) -> None:
    # headers may take a minute here: the slow connections hold their places for the whole test
    # one edge: the cap is per HTTP process, and the kernel spreads connections over them
    config = write_config(tmp_path, f"header_timeout_s: 60, max_connections: {CAP}, workers: 1")
    server = start(started, ServerProcess(tmp_path / "data", config))
    held = [connect(server) for _ in range(CAP)]
    for sock in held:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n")

    with connect(server) as over:
        over.sendall(request("GET", "/healthz"))
        answer = parse_answer(read_to_close(over))
    assert answer.status == 503
    assert answer.headers["connection"] == "close"
    error = answer.error()
    assert error["code"] == "unavailable" and str(CAP) in str(error["message"])
    refused = httpx.get(f"{server.url}/healthz")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "unavailable"

    held.pop().close()  # one place frees up
    wait_for(lambda: httpx.get(f"{server.url}/healthz").status_code == 200, SOCKET_TIMEOUT_S,
             "a client served once a connection closed")
    for sock in held:
        sock.close()


# ----- the open-files limit -------------------------------------------------------------------


def _open_files_limit(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _soft_open_files_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files limit in /proc")


def test_the_soft_open_files_limit_is_raised_to_fit_max_connections(
    tmp_path: Path, started: list[ServerProcess]
) -> None:
    # the default max_connections (1000) and the files kept for the store need more than 1024
    limited = ServerProcess(tmp_path / "data", preexec_fn=lambda: _open_files_limit(1024, 4096))
    server = start(started, limited)
    assert server.proc is not None
    assert _soft_open_files_limit(server.proc.pid) == 4096
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_max_connections_over_the_hard_open_files_limit_is_a_start_up_error(tmp_path: Path) -> None:
    args = [*SCR, "serve", "--data", str(tmp_path / "data"), "--port", str(free_port())]
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: _open_files_limit(512, 512),
    )
    try:
        _, stderr = process.communicate(timeout=SOCKET_TIMEOUT_S * 2)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError("scr serve started although it cannot hold max_connections") from None
    assert process.returncode == 2, stderr
    message = " ".join(stderr.split())  # as one line: the console wraps it
    assert "session_completion_runtime.server.max_connections" in message
    assert "the hard limit is 512" in message and "at most 256" in message
    assert not (tmp_path / "data" / "scr.db").exists(), "nothing is opened before the check"
