"""Fixtures: an in-process app over a temporary data folder, keys, receivers."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))

from scr.config import Config, parse_config
from scr.server import create_app
from scr.store import Store, open_store
from servers import NatsServer, PostgresServer
from support import Receiver, create_key


def config_text(destinations: str = "", **capture: object) -> str:
    """A config with the given destinations YAML (already indented under ``destinations:``)."""
    body = "session_completion_runtime:\n  routing:\n    destinations:"
    body += ("\n" + destinations) if destinations.strip() else " []"
    return body + "\n"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**kwargs: object) -> Receiver:
        receiver = Receiver(**kwargs)  # type: ignore[arg-type]
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


class Client(TestClient):
    """A TestClient that knows its data folder and makes keys."""

    data: Path
    store_uri: str | None = None

    def key(self, tenant: str = "org_acme", role: str = "ingest") -> dict[str, str]:
        return {"authorization": f"Bearer {create_key(self.data, tenant, role, self.store_uri)}"}


STORE_BACKENDS = ("sqlite", "postgresql")


TMPFS = Path("/dev/shm")
TMPFS_ROOM_BYTES = 4 << 30  # the suite's files peaked at 0.7 GiB (three workers, databases dropped)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "every_store: run the module's serve tests on SQLite and PostgreSQL")
    keep_files_in_memory()


def keep_files_in_memory() -> None:
    """Tests keep their files (data folders, PostgreSQL and NATS stores) on a tmpfs where the
    machine has room for them. The tests kill processes, never the machine, so the page cache
    survives every crash they make, and waiting for the disk at each fsync proved nothing
    (two tests of a thousand small commits each ran 82 s on disk and 5 s in memory, on a
    busy run). A ``TMPDIR`` set by hand wins (and keeps its files after the run); xdist's
    workers inherit this one."""
    if "TMPDIR" in os.environ or not TMPFS.is_dir() or not os.access(TMPFS, os.W_OK):
        return
    if shutil.disk_usage(TMPFS).free < TMPFS_ROOM_BYTES:
        return
    # readable by all: as root, pgserver runs postgres as a user of its own, which must reach
    # its data folder below this one
    folder = Path(tempfile.mkdtemp(prefix="scr-tests-", dir=TMPFS))
    folder.chmod(0o755)
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None  # tempfile reads TMPDIR again
    # freed when this process (the one that made the folder) exits: registered before any
    # other exit handler, it runs after them all (pgserver's, for one, writes a lock file)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files holding ``slow`` tests (crashes, faults, fuzzing) are collected first, each file's tests in
    their order: ``make test`` spreads whole files over its workers (``--dist loadfile``), and a
    long file handed out last would run alone at the end of the suite."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module marked ``every_store`` runs each of its ``serve`` tests on every backend."""
    if "store_uri" in metafunc.fixturenames and metafunc.definition.get_closest_marker("every_store"):
        metafunc.parametrize("store_uri", STORE_BACKENDS, indirect=True)


@pytest.fixture
def store_uri(request: pytest.FixtureRequest) -> str | None:
    """The store ``serve`` runs on: none (the data folder's SQLite), or a fresh PostgreSQL
    database when the module is marked ``every_store``."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    uri: str = request.getfixturevalue("postgres_uri")
    return uri


@pytest.fixture
def serve(data_dir: Path, store_uri: str | None) -> Iterator[Callable[..., Client]]:
    """Start the real app in-process over ``data_dir`` (and ``store_uri``) with a config;
    stopped after the test."""
    clients: list[Client] = []

    def start(config: str | Config | None = None) -> Client:
        parsed = parse_config(config or config_text()) if not isinstance(config, Config) else config
        client = Client(create_app(parsed, data_dir, store_uri))
        client.data, client.store_uri = data_dir, store_uri
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


# ----- real servers (tests/servers.py) --------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the session, stopped at its end."""
    # Not under pytest's tmp folder: as root, pgserver runs postgres as its own user, which
    # must be able to reach the data folder (pytest's is mode 0700) to stop the server cleanly.
    folder = Path(tempfile.mkdtemp(prefix="scr-postgres-"))
    folder.chmod(0o755)
    server = PostgresServer(folder / "pgdata").start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_uri(postgres_server: PostgresServer) -> Iterator[str]:
    """The URI of a fresh database of its own for this test, dropped after it."""
    uri = postgres_server.fresh_database()
    yield uri
    postgres_server.drop_database(uri)


@dataclass
class StoreAt:
    """Where a test's store lives: the data folder, and a PostgreSQL URI for that backend."""

    backend: str
    data: Path
    uri: str | None = None

    def open(self) -> Store:
        return open_store(self.data, self.uri)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_at(request: pytest.FixtureRequest, tmp_path: Path) -> StoreAt:
    """Each store backend in turn: the SQLite file of a data folder, a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return StoreAt("sqlite", tmp_path / "data")
    return StoreAt("postgresql", tmp_path / "data", request.getfixturevalue("postgres_uri"))


@pytest.fixture
def store_at_postgres(postgres_uri: str, tmp_path: Path) -> StoreAt:
    """The PostgreSQL backend only (for what only it does: outages of a server apart)."""
    return StoreAt("postgresql", tmp_path / "data", postgres_uri)


@pytest.fixture
def store(store_at: StoreAt) -> Iterator[Store]:
    """The test's store, on each backend in turn; closed after the test."""
    opened = store_at.open()
    yield opened
    opened.close()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server with JetStream on a free port, stopped after the test."""
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()
