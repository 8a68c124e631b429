"""The ``scr`` command line: serve, send, keys, config, schema (and later issues' verbs)."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup
from typer.main import get_command

from scr.errors import ConfigError, ScrError
from scr.privacy.cli import create_master, rotate_master

if TYPE_CHECKING:
    from typer._click import Command, Context  # click's types (typer vendors click)

    from scr.config import Config
    from scr.log.commit import Committer

DEFAULT_URL = "http://127.0.0.1:8787"
DEFAULT_DATA = Path(".scr-data")
SEND_BATCH_EVENTS = 1000
SEND_TIMEOUT_S = 60.0

# The sub-apps whose modules import heavy packages (numpy, the ledger, httpx): `scr --help`
# lists them by their help (the same text as their Typer's, tests/test_cli.py checks), and a
# module is imported only when its command runs
SUB_APPS = {  # name: (module with an `app`, help)
    "ledger": (
        "scr.ledger.cli",
        "Verify, audit and export the ledger (exit 0 verified, 1 tampering found, 2 could not verify).",
    ),
    "canon": (
        "scr.canon.cli",
        "The Bickford Canon: canon items, promotions, decisions and the invariant audit.",
    ),
    "prices": ("scr.route.prices_cli", "The price table (USD per 1M tokens) costing every event."),
    "usage": ("scr.usage.cli", "Usage: reconcile a provider's export with the ledger."),
    "enrich": ("scr.enrich.cli", "Enrichment: embeddings of sessions' text."),
    "archive": ("scr.retention.cli", "Retention: archive segments, purge and their checks."),
}


class _SubAppStub(TyperGroup):
    """A sub-app's place in ``scr``'s command list until its module is imported."""

    def __init__(self, name: str, module: str, help_text: str) -> None:
        super().__init__(name=name, help=help_text, no_args_is_help=True)
        self.module = module

    def load(self) -> Command:
        """The sub-app's command group, exactly as ``add_typer`` would have made it."""
        holder = typer.Typer()
        holder.add_typer(importlib.import_module(self.module).app, name=self.name)
        group = get_command(holder)
        assert isinstance(group, TyperGroup)
        return group.commands[str(self.name)]


class _ScrGroup(TyperGroup):
    """``scr``'s root group: the sub-apps of ``SUB_APPS`` are loaded when resolved."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, (module, help_text) in SUB_APPS.items():
            self.add_command(_SubAppStub(name, module, help_text))

    def resolve_command(
        self, ctx: Context, args: list[str]
    ) -> tuple[str | None, Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if name is not None and isinstance(command, _SubAppStub):
            command = self.commands[name] = command.load()
        return name, command, rest


app = typer.Typer(cls=_ScrGroup, help="scr: the Session Completion Runtime.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
config_app = typer.Typer(help="Config files.", no_args_is_help=True)
db_app = typer.Typer(help="The PostgreSQL store's schema.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
err = Console(stderr=True)

DataOption = Annotated[Path, typer.Option("--data", help="The data folder (SQLite database).")]
UrlOption = Annotated[
    str, typer.Option("--url", envvar="SCR_URL", help="The scr server.")
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store", envvar="SCR_STORE",
        help="A PostgreSQL store (postgresql://user@host/db) instead of the data folder's SQLite.",
    ),
]
KeyOption = Annotated[
    str | None, typer.Option("--key", envvar="SCR_KEY", help="An API key.")
]


def _load(config: Path | None) -> Config:
    from scr.config import default_config, load_config

    if config is None:
        return default_config()
    try:
        return load_config(config)
    except ConfigError as error:
        _print_config_error(error)
        raise typer.Exit(2) from None


def _print_config_error(error: ConfigError) -> None:
    err.print(f"[red]config error:[/red] {error.message}")
    for detail in error.details:
        err.print(f"  {detail.path}: {detail.message}")


def _with_bus(settings: Config, bus: str) -> Config:
    """The config with ``--bus`` in place of its ``bus:`` (checked like the key)."""
    from scr.config import with_bus

    try:
        return with_bus(settings, bus)
    except ConfigError as error:
        _print_config_error(error)
        raise typer.Exit(2) from None


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option("--config", help="YAML config file.")] = None,
    data: DataOption = DEFAULT_DATA,
    store: StoreOption = None,
    bus: Annotated[
        str | None,
        typer.Option("--bus", envvar="SCR_BUS", help="NATS JetStream (nats://host:4222): scale-out."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", help="Serve HTTPS with this PEM certificate (and chain); with --tls-key."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="The PEM private key of --tls-cert."),
    ] = None,
) -> None:
    """Run the server on the embedded store in DATA, or on a PostgreSQL --store."""
    import logging
    import tempfile

    from setproctitle import setproctitle

    # imported once, before the children fork: the serve modules, and the app (scr.server)
    # that the writer and the edges build; the enricher's below, with enrichment on
    from scr import native, server  # noqa: F401
    from scr.config import with_tls
    from scr.http_server import check_tls, reserve_file_descriptors
    from scr.serve import archive, child, edge, reader, usage, writer  # noqa: F401
    from scr.serve.readers import reader_processes
    from scr.serve.supervisor import Child, ChildArgs, Supervisor, listening_sockets, prepare_run_dir

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _load(config)
    if bus is not None:
        settings = _with_bus(settings, bus)
    cert, key = (str(path.absolute()) if path else None for path in (tls_cert, tls_key))
    try:  # before the store is opened: a limit or TLS files it cannot serve are start-up errors
        settings = with_tls(settings, cert, key)
        check_tls(settings.server)
        reserve_file_descriptors(settings.server)
    except ConfigError as error:
        _print_config_error(error)
        raise typer.Exit(2) from None
    store_uri = store or settings.store
    scheme = "https" if settings.server.tls_cert else "http"
    edges = settings.server.workers or os.cpu_count() or 1
    try:
        listeners = listening_sockets(host, port, edges)
    except OSError as error:
        err.print(f"[red]error:[/red] cannot listen on {host}:{port}: {error.strerror}")
        raise typer.Exit(2) from None
    data.mkdir(parents=True, exist_ok=True)
    setproctitle("scr: supervisor")
    child_args = ChildArgs(
        role="", title="", config=str(config) if config else None, data=str(data), store=store,
        bus=bus, url=f"{scheme}://{host}:{port}", listen_fd=-1, ready_fd=-1, log_level=log_level,
        drain_timeout_s=settings.server.drain_timeout_s,
        socket_dir=tempfile.mkdtemp(prefix="scr-"),  # short: a Unix socket path has 107 bytes
        tls_cert=cert, tls_key=key,
    )
    children = [Child("scr: writer", "writer"),
                *(Child(f"scr: edge {n}", "edge", listener) for n, listener in enumerate(listeners)),
                *(Child(f"scr: reader {name}", "reader") for name in reader_processes(settings))]
    # the ledger's singleton readers: in a cluster every instance starts them, and each works
    # only on the instance that holds its lease (scr.bus.leases)
    children.append(Child(usage.TITLE, "usage"))
    if settings.enrichment is not None:
        from scr.serve import enrich  # its model runs on numpy, which nothing else loads

        children.append(Child(enrich.TITLE, "enrich"))
    # as the enricher's: the bus (nats, aiohttp) and the HTTP sinks' aiohttp only when used
    if settings.bus is not None:
        from scr.bus import instance  # noqa: F401
    if any(destination.type == "http" for destination in settings.routing.destinations):
        from scr.route import http_sink  # noqa: F401
    if settings.retention is not None:
        children.append(Child(archive.TITLE, "archive"))
    auth = "on" if settings.validation.require_authentication else "OFF"
    if native.WHY_OFF:
        logging.getLogger("scr.serve").warning(
            "%s: %s; every event costs more CPU", native.STATUS, native.WHY_OFF
        )
    supervisor = Supervisor(
        children=children, run_dir=prepare_run_dir(data),
        drain_timeout_s=settings.server.drain_timeout_s, base_args=child_args,
        on_ready=[f"scr serving on {scheme}://{host}:{port} "
                  f"({_where(store_uri, data)}, auth: {auth}, {native.STATUS})"],
    )
    code = supervisor.run()
    if code:
        raise typer.Exit(code)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="The organization the key belongs to.")],
    role: Annotated[str, typer.Option(help="ingest, read, admin, platform, auditor or publishable.")],
    data: DataOption = DEFAULT_DATA,
    store: StoreOption = None,
    label: Annotated[str, typer.Option(help="A note to recognise the key by.")] = "",
    origin: Annotated[
        list[str] | None,
        typer.Option(help="A web origin a publishable key is accepted from (repeatable)."),
    ] = None,
) -> None:
    """Create an API key; the key is printed once, as the last line."""
    from scr.security.auth import create_key
    from scr.security.keys import parse_role

    with _key_writer(data, store) as committer:
        grant = create_key(committer, tenant, parse_role(role), label, origin or [])
    print(f"created key {grant.key_id} for tenant {grant.tenant} with role {grant.role.value}")
    if grant.origins:
        print(f"accepted from {', '.join(sorted(grant.origins))}")
    print("store it now: it is not shown again")
    print(grant.key)


keys_app.command("create-master")(create_master)
keys_app.command("rotate-master")(rotate_master)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, as `scr keys create` printed it.")],
    data: DataOption = DEFAULT_DATA,
    store: StoreOption = None,
) -> None:
    """Revoke an API key: servers refuse it about 5 s later (ledgered as KEY_REVOKED)."""
    from scr.security.auth import KEY_CACHE_TTL_S, revoke_key

    with _key_writer(data, store) as committer:
        tenant = revoke_key(committer, key_id)
    print(f"revoked key {key_id} of tenant {tenant}; servers refuse it about {KEY_CACHE_TTL_S:g} s from now")


@contextlib.contextmanager
def _key_writer(data: Path, store: str | None) -> Iterator[Committer]:
    """A committer on the store for one key change; a store or key error exits with 2."""
    from scr.log.commit import writing_alone
    from scr.store import open_store

    try:
        with writing_alone(open_store(data, store)) as committer:
            yield committer
    except psycopg_errors() as error:
        err.print(f"[red]error:[/red] cannot open the store {_where(store, data)}: {error}")
        raise typer.Exit(2) from None
    except ScrError as error:
        err.print(f"[red]error:[/red] {error.message}")
        raise typer.Exit(2) from None


@db_app.command("migrate")
def db_migrate(
    store: Annotated[str, typer.Option("--store", envvar="SCR_STORE", help="postgresql://user@host/db")],
) -> None:
    """Apply the PostgreSQL store's pending schema migrations (also done at every start)."""
    import psycopg

    from scr.config import DEFAULT_STORE_CONNECT_TIMEOUT_S
    from scr.store.migrations import migrate, schema_version
    from scr.store.postgres import is_postgres_uri, redact

    if not is_postgres_uri(store):
        err.print("[red]error:[/red] --store must be a postgresql:// URI")
        raise typer.Exit(2)
    try:
        with psycopg.connect(store, autocommit=True, connect_timeout=DEFAULT_STORE_CONNECT_TIMEOUT_S) as conn:
            applied = migrate(conn)
            version = schema_version(conn)
    except psycopg.Error as error:
        err.print(f"[red]error:[/red] cannot migrate {redact(store)}: {error}")
        raise typer.Exit(2) from None
    done = ", ".join(str(v) for v in applied) if applied else "none (already current)"
    print(f"{redact(store)}: schema version {version}; applied now: {done}")


def psycopg_errors() -> tuple[type[Exception], ...]:
    """What opening a store raises when its server cannot be reached or refuses us."""
    import psycopg
    import psycopg_pool

    return (psycopg.Error, psycopg_pool.PoolTimeout)


def _where(store: str | None, data: Path) -> str:
    from scr.store.postgres import redact

    return f"store: {redact(store)}" if store else f"data: {data}"


@config_app.command("check")
def config_check(file: Annotated[Path, typer.Argument(help="YAML config file.")]) -> None:
    """Check a config file; report every error with its line."""
    from scr.config import load_config

    try:
        settings = load_config(file)
    except ConfigError as error:
        _print_config_error(error)
        raise typer.Exit(1) from None
    names = ", ".join(d.name for d in settings.routing.destinations) or "none"
    print(f"{file}: ok ({len(settings.routing.destinations)} destinations: {names})")


@app.command()
def schema() -> None:
    """Print the event's JSON Schema (draft 2020-12)."""
    from scr.schema import json_schema

    print(json.dumps(json_schema(), indent=2))


def _read_events(source: str) -> list[Any]:
    """Events from a JSON file (object or array) or NDJSON; ``-`` reads standard input."""
    import msgspec

    text = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    stripped = text.strip()
    if not stripped:
        return []
    try:
        value = msgspec.json.decode(stripped)
        return value if isinstance(value, list) else [value]
    except msgspec.DecodeError:
        pass
    events = []
    for number, line in enumerate(stripped.splitlines(), start=1):
        if line.strip():
            try:
                events.append(msgspec.json.decode(line))
            except msgspec.DecodeError as error:
                raise ValueError(f"{source} line {number}: not JSON: {error}") from None
    return events


@app.command()
def send(
    file: Annotated[str, typer.Argument(help="JSON or NDJSON events; - for standard input.")],
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    batch_size: Annotated[
        int, typer.Option(help="Events per request.", min=1, max=10_000)
    ] = SEND_BATCH_EVENTS,
) -> None:
    """Send events in batches, with a progress bar and a summary."""
    import httpx
    import msgspec
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    try:
        events = _read_events(file)
    except (OSError, ValueError) as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    totals = {"accepted": 0, "duplicate": 0, "rejected": 0}
    problems: list[str] = []
    columns = (TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with httpx.Client(base_url=url, timeout=SEND_TIMEOUT_S) as client, Progress(
        *columns, console=err, disable=not err.is_terminal
    ) as progress:
        task = progress.add_task("events", total=len(events))
        for start in range(0, len(events), batch_size):
            part = events[start : start + batch_size]
            try:
                response = client.post("/v1/events", content=msgspec.json.encode(part), headers=headers)
            except httpx.HTTPError as error:
                err.print(f"[red]error:[/red] cannot reach {url}: {error}")
                raise typer.Exit(2) from None
            answer = response.json()
            if response.status_code not in (202, 207):
                message = answer.get("error", {}).get("message", response.text)
                err.print(f"[red]error:[/red] HTTP {response.status_code}: {message}")
                raise typer.Exit(2)
            for name in totals:
                totals[name] += answer[name]
            for result in answer["results"]:
                if result["status"] == "rejected":
                    first = result["errors"][0]
                    problems.append(
                        f"event {start + result['index']} ({result['event_id']}): "
                        f"{first['path']}: {first['message']}"
                    )
            progress.advance(task, len(part))
    for line in problems[:20]:
        err.print(f"  rejected {line}")
    if len(problems) > 20:
        err.print(f"  … and {len(problems) - 20} more rejected")
    print(f"sent {len(events)}: {totals['accepted']} accepted, {totals['duplicate']} duplicate, "
          f"{totals['rejected']} rejected")
    if totals["rejected"]:
        raise typer.Exit(1)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
