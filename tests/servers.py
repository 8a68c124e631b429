"""Real servers the test session starts from pip packages: PostgreSQL (``pgserver``).

One server per test session, in a temporary folder, stopped at the session's end; each test
gets a fresh database cloned from a template (``CREATE DATABASE … TEMPLATE``, ~0.3 s). The
server listens on a Unix socket in its folder only (pgserver's default on Linux): nothing
is reachable from the network. The NATS server of the scale-out tests belongs beside it.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from scr.store.migrations import migrate

TEMPLATE_DATABASE = "scr_template"
CONNECT_TIMEOUT_S = 10


def with_database(uri: str, database: str) -> str:
    """The same server's URI with another database name."""
    parts = urlsplit(uri)
    return parts._replace(path=f"/{database}").geturl()


@dataclass
class PostgresServer:
    """A real PostgreSQL 16 (with pgvector) from ``pgserver``, for one test session."""

    folder: Path
    uri: str = ""
    _server: object = None
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def start(self) -> PostgresServer:
        with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import pgserver

            server = pgserver.get_server(self.folder, cleanup_mode="stop")
        self._server = server
        self.uri = server.get_uri()
        self.admin(f"CREATE DATABASE {TEMPLATE_DATABASE}")
        with psycopg.connect(with_database(self.uri, TEMPLATE_DATABASE), autocommit=True) as conn:
            migrate(conn)  # every test database starts at the current schema
        return self

    def admin(self, sql: str) -> None:
        """Run one statement on the server's maintenance database (outside a transaction)."""
        with psycopg.connect(self.uri, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # test-only SQL built from constants

    def fresh_database(self) -> str:
        """A new, empty database (from the session's template); its URI."""
        name = f"scr_test_{next(self._numbers)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DATABASE}")
        return with_database(self.uri, name)

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

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None
