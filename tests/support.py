"""Test support: valid events, a real HTTP receiver, a real ``scr serve`` process."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import msgspec

from scr.log.commit import writing_alone
from scr.security.auth import create_key as make_key
from scr.security.keys import Role
from scr.store import open_store
from scr.testing.servers import free_port

SERVER_START_TIMEOUT_S = 20.0
POLL_S = 0.02
RECEIVER_POLL_S = 0.02  # how often a receiver's serving loop looks whether it is to shut down

BASE_EVENT: dict[str, Any] = {
    "event_type": "session.completed",
    "event_id": "evt_0001",
    "timestamp": "2026-11-25T10:00:05Z",
    "session": {
        "session_id": "sess_0001",
        "session_type": "chat",
        "start_time": "2026-11-25T09:58:00Z",
        "end_time": "2026-11-25T10:00:00Z",
        "duration_ms": 120000,
    },
    "user": {"user_id": "user_42", "organization_id": "org_acme", "tier": "pro"},
    "usage": {
        "input_tokens": 1200,
        "output_tokens": 300,
        "total_tokens": 1500,
        "model": "gpt-4o",
        "estimated_cost_usd": 0.0075,
        "provider": "openai",
    },
    "outcome": {"status": "success", "final_message": "Here is your summary.", "error_code": None},
    "metadata": {
        "client_version": "web-2.3.1",
        "source_ip": "203.0.113.77",
        "custom_tags": {"feature": "summarize"},
    },
}


_BASE_EVENT_JSON = msgspec.json.encode(BASE_EVENT)


def make_event(event_id: str = "evt_0001", /, **changes: Any) -> dict[str, Any]:
    """A valid v1.2 event; ``changes`` set dotted paths, e.g. ``**{"usage.model": "x"}``."""
    # a fresh copy decoded from JSON: deepcopy took 26 us, and a test's stream makes thousands
    event: dict[str, Any] = msgspec.json.decode(_BASE_EVENT_JSON)
    event["event_id"] = event_id
    for path, value in changes.items():
        target = event
        *parents, last = path.split(".")
        for part in parents:
            target = target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return event


def scraped_metric(url: str, sample: str, timeout_s: float = 10.0) -> float:
    """The value of a sample (a name, with its labels if it has any) on a server's
    ``/metrics``, summed over the lines that carry it; 0 when none does."""
    text = httpx.get(f"{url}/metrics", timeout=timeout_s).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(f"{sample} "))


_DELETE = object()
DELETE: Any = _DELETE


def post_acknowledged(
    client: httpx.Client, url: str, key: str, batch: list[dict[str, Any]], acknowledged: list[str]
) -> bool:
    """Post one batch; record its ids if the server acknowledged it (202). False if the
    request died with the server: that batch was never acknowledged."""
    try:
        response = client.post(f"{url}/v1/events", json=batch, headers={"authorization": f"Bearer {key}"})
    except httpx.HTTPError:
        return False
    if response.status_code == 202:
        acknowledged.extend(e["event_id"] for e in batch)
    return True


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)  # arrival, by the receiver's wall clock (s)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records requests and answers as scripted.

    ``script`` is consumed one status per request (then ``default``); a status may be a
    tuple ``(status, headers)``.
    """

    default: int = 200
    script: list[Any] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        receiver = self
        self._lock = threading.Lock()
        self._ids: set[str] = set()
        self._ids_upto = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    answer = receiver.script.pop(0) if receiver.script else receiver.default
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # shutdown() waits for the serving loop's next look: at the default 0.5 s, each
        # test with a receiver waited most of that at its end
        self.thread = threading.Thread(target=self.server.serve_forever, args=(RECEIVER_POLL_S,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self) -> list[Any]:
        """Every delivered item (batches flattened), in arrival order."""
        items: list[Any] = []
        for request in list(self.received):
            value = request.json()
            items.extend(value if isinstance(value, list) else [value])
        return items

    def event_ids(self) -> set[str]:
        """The ids of every delivered item so far. Each request is parsed once, so a test
        polling this while thousands arrive does not starve the receiver's threads."""
        with self._lock:
            new = self.received[self._ids_upto:]
            self._ids_upto = len(self.received)
        for request in new:
            value = request.json()
            self._ids.update(item["event_id"] for item in (value if isinstance(value, list) else [value]))
        return self._ids

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(condition: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition") -> Any:
    """Poll until ``condition()`` is truthy; fail the test after ``timeout_s``. Between looks
    it sleeps twice as long as the look took (at least ``POLL_S``): a condition that reads a
    whole file of deliveries would otherwise keep a core busy, away from the server."""
    deadline = time.monotonic() + timeout_s
    while (started := time.monotonic()) < deadline:
        value = condition()
        if value:
            return value
        time.sleep(max(POLL_S, 2 * (time.monotonic() - started)))
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


SCR = [sys.executable, "-m", "scr"]


WIDE_TERMINAL_COLUMNS = "400"


def run_scr(*args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the ``scr`` CLI as a user would, on a wide terminal: without one, rich wraps its
    messages at 80 columns, and a long temporary path would split a word a test looks for."""
    env = dict(kwargs.pop("env", None) or os.environ)
    env["COLUMNS"] = WIDE_TERMINAL_COLUMNS
    result = subprocess.run(
        [*SCR, *args], capture_output=True, text=True, timeout=60, check=False, env=env, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(f"scr {' '.join(args)} failed: {result.stdout}\n{result.stderr}")
    return result


def create_key(data: Path, tenant: str = "org_acme", role: str = "ingest", store: str | None = None,
               origins: tuple[str, ...] = ()) -> str:
    """A key made in a data folder, or in a PostgreSQL ``store``, as ``scr keys create`` makes
    it (tests/test_cli.py runs the command itself); the key. In the test's process: a run of
    the command costs about a second of CPU, and the suite makes hundreds."""
    with writing_alone(open_store(data, store)) as committer:
        return make_key(committer, tenant, Role(role), origins=origins).key


@dataclass(frozen=True)
class ServerTls:
    """The PEM files of a server's certificate and key, and the CA that signed them; given as
    ``scr serve --tls-cert/--tls-key`` (``flags``), or already named in the config."""

    cert: Path
    key: Path
    ca: Path
    flags: bool = True

    def client_context(self) -> ssl.SSLContext:
        """What a client that trusts ``ca`` verifies the server with."""
        return ssl.create_default_context(cafile=str(self.ca))


class ServerProcess:
    """A real ``scr serve`` process on a free port, stopped (or killed) by the test."""

    def __init__(
        self, data: Path, config: Path | None = None, store: str | None = None,
        preexec_fn: Callable[[], None] | None = None, tls: ServerTls | None = None,
    ) -> None:
        self.data, self.config, self.store, self.tls = data, config, store, tls
        self.preexec_fn = preexec_fn  # run in the child before exec (e.g. to set its rlimits)
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.verify: ssl.SSLContext | bool = tls.client_context() if tls else True
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        args = [*SCR, "serve", "--data", str(self.data), "--port", str(self.port),
                "--log-level", "warning"]
        if self.config is not None:
            args += ["--config", str(self.config)]
        if self.store is not None:
            args += ["--store", self.store]
        if self.tls is not None and self.tls.flags:
            args += ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
        self.data.mkdir(parents=True, exist_ok=True)
        log = open(self.data.parent / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=log, env={**os.environ}, preexec_fn=self.preexec_fn
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"scr serve exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1, verify=self.verify).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise AssertionError("scr serve did not become ready")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
