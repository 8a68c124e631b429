"""``scr enrich status|backfill|rebuild``.

``status`` reads a data folder (``--data``, with ``--config``) or asks a server (``--url``
with a read or admin key). ``backfill`` embeds what the ledger held before enrichment was
turned on, and ``rebuild`` deletes every vector and saved index and embeds the whole ledger
again (after a change of model), with a progress bar: on the data folder itself (which may
run while ``scr serve`` runs: the rows go through the store's one write lock, and the
server's indexes follow the stored rows), or asked of a server (``--url`` with a platform
key), whose enricher does it after the live entries. Interrupted, either resumes where it
stopped.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.progress import Progress

from scr.config import Config, EnrichmentConfig, load_config
from scr.enrich.embedders import EmbedderError, open_embedder
from scr.enrich.enricher import backfill
from scr.enrich.index import IndexFolder
from scr.enrich.status import enrichment_status
from scr.enrich.writes import LocalWrites
from scr.errors import ScrError
from scr.privacy.opening import EventOpener
from scr.store.protocol import Store

EXIT_FAILED = 2
STATUS_TIMEOUT_S = 30.0
PROGRESS_EVERY_S = 0.5  # how often a remote backfill's progress is read

app = typer.Typer(help="Enrichment: embeddings of sessions' text.", no_args_is_help=True)

DataOption = Annotated[Path | None, typer.Option("--data", help="The data folder.")]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="The YAML config (its `enrichment:`).")]
StoreOption = Annotated[str | None, typer.Option(
    "--store", envvar="SCR_STORE", help="A PostgreSQL store instead of the data folder's SQLite.")]


@app.command("status")
def status_command(
    data: DataOption = None, config: ConfigOption = None, store: StoreOption = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="The tenant (with --data).")] = None,
    url: Annotated[str | None, typer.Option("--url", help="A scr server (instead of --data).")] = None,
    key: Annotated[str | None, typer.Option("--key", envvar="SCR_KEY", help="A read or admin key.")] = None,
) -> None:
    """Print the embedder, indexed sessions, lag and last error as JSON."""
    if url is not None:
        typer.echo(json.dumps(_remote_status(url, key), indent=2))
        return
    if data is None or not tenant:
        _fail("give --data DIR --config FILE --tenant T, or --url URL --key KEY")
    settings, enrichment = _enrichment(config)
    opened = _open(data, settings, store)
    try:
        typer.echo(json.dumps(enrichment_status(opened, enrichment.embedder, tenant), indent=2))
    finally:
        opened.close()


UrlOption = Annotated[str | None, typer.Option("--url", help="A scr server (instead of --data).")]
PlatformKeyOption = Annotated[str | None, typer.Option(
    "--key", envvar="SCR_KEY", help="A platform key (with --url).")]


@app.command("backfill")
def backfill_command(data: DataOption = None, config: ConfigOption = None, store: StoreOption = None,
                     url: UrlOption = None, key: PlatformKeyOption = None) -> None:
    """Embed the events committed before enrichment was turned on (resumable)."""
    _backfill_where(data, config, store, url, key, rebuild=False)


@app.command("rebuild")
def rebuild_command(data: DataOption = None, config: ConfigOption = None, store: StoreOption = None,
                    url: UrlOption = None, key: PlatformKeyOption = None) -> None:
    """Delete every vector and index, then embed the whole ledger again (a new model)."""
    _backfill_where(data, config, store, url, key, rebuild=True)


def _backfill_where(data: Path | None, config: Path | None, store: str | None, url: str | None,
                    key: str | None, rebuild: bool) -> None:
    """On the data folder, or asked of the server at ``url``."""
    if url is not None:
        _remote_backfill(url, key, "rebuild" if rebuild else "backfill")
    elif data is not None:
        _run_backfill(data, config, store, rebuild)
    else:
        _fail("give --data DIR --config FILE, or --url URL --key KEY")


def _remote_backfill(url: str, key: str | None, verb: str) -> None:
    """Ask the server's enricher for a backfill or rebuild, and show its progress until done."""
    if not key:
        _fail("--url needs --key (a platform key)")
    headers = {"authorization": f"Bearer {key}"}
    answer = _call(httpx.post, f"{url.rstrip('/')}/v1/enrichment/{verb}", headers)
    with Progress(transient=False) as progress:
        task = progress.add_task(f"{verb} on {url}", total=None)
        while answer["backfill"]["running"]:
            progress.update(task, completed=answer["backfill"]["done"], total=answer["backfill"]["end"])
            time.sleep(PROGRESS_EVERY_S)
            answer = _call(httpx.get, f"{url.rstrip('/')}/v1/enrichment", headers)
        progress.update(task, completed=answer["backfill"]["end"], total=answer["backfill"]["end"])
    typer.echo(f"{verb} done: ledger entries up to {answer['backfill']['end']} embedded")


def _run_backfill(data: Path, config: Path | None, uri: str | None, rebuild: bool) -> None:
    settings, enrichment = _enrichment(config)
    opened = _open(data, settings, uri)
    try:
        embedder = open_embedder(enrichment.embedder.kind, enrichment.embedder.model,
                                 enrichment.embedder.url, enrichment.embedder.api_key_env)
        writes = LocalWrites(opened)
        if rebuild:
            writes.clear(opened.last_seq())
            IndexFolder(data).remove_all()
        opener = _opener(settings, opened)
        with Progress(transient=False) as progress:
            task = progress.add_task("embedding the ledger", total=None)

            def show(done: int, end: int) -> None:
                progress.update(task, completed=done, total=end)

            stored = asyncio.run(backfill(opened, embedder, enrichment.fields, writes, opener, show))
        typer.echo(f"{stored} vectors stored")
    except (ValueError, EmbedderError, RuntimeError) as error:
        _fail(str(error))
    finally:
        opened.close()


def _enrichment(config: Path | None) -> tuple[Config, EnrichmentConfig]:
    if config is None:
        _fail("--config FILE is needed: it holds `enrichment:` (the embedder and fields)")
    try:
        settings = load_config(config)
    except ScrError as error:
        _fail(error.message)
    if settings.enrichment is None:
        _fail(f"{config} has no `enrichment:` section: enrichment is off")
    return settings, settings.enrichment


def _open(data: Path, settings: Config, uri: str | None) -> Store:
    from scr.store import open_store

    if (uri or settings.store) is None and not data.is_dir():
        _fail(f"no data folder at {data}")
    return open_store(data, uri or settings.store, settings.cluster.partitions, settings.store_pool)


def _opener(settings: Config, store: Store) -> EventOpener | None:
    from scr.privacy.setup import open_subjects

    try:
        subjects = open_subjects(settings, store)
    except ScrError as error:
        _fail(error.message)
    return None if subjects is None else EventOpener(subjects)


def _remote_status(url: str, key: str | None) -> dict[str, Any]:
    if not key:
        _fail("--url needs --key (a read or admin key)")
    return _call(httpx.get, f"{url.rstrip('/')}/v1/enrichment", {"authorization": f"Bearer {key}"})


def _call(method: Any, url: str, headers: dict[str, str]) -> dict[str, Any]:
    try:
        response = method(url, timeout=STATUS_TIMEOUT_S, headers=headers)
    except httpx.HTTPError as error:
        _fail(f"cannot reach {url}: {error}")
    if response.status_code not in (httpx.codes.OK, httpx.codes.ACCEPTED):
        _fail(f"the server answered {response.status_code}: {response.text[:500]}")
    answer: dict[str, Any] = response.json()
    return answer


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_FAILED)
