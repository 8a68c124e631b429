"""``scr usage reconcile``: a provider's export compared with the ledger, offline on a data
folder (``--data --tenant``) or through a server's ``POST /v1/usage/reconcile`` (``--url``).

Exit codes: 0 every difference is rounding within the provider's precision, 1 another
difference, 2 a bad file or bad arguments (each bad line printed with its number).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from scr.errors import ScrError
from scr.usage.exports import FORMATS, read_export
from scr.usage.reconcile import agrees, reconcile

EXIT_AGREES, EXIT_DIFFERS, EXIT_INVALID = 0, 1, 2
RECONCILE_TIMEOUT_S = 120.0
DEFAULT_DATA = Path(".scr-data")

app = typer.Typer(help="Usage: reconcile a provider's export with the ledger.", no_args_is_help=True)


@app.command("reconcile")
def reconcile_command(
    export: Annotated[Path, typer.Option("--export", help="The provider's export file.")],
    form: Annotated[str, typer.Option("--format", help=" | ".join(FORMATS))],
    data: Annotated[Path | None, typer.Option("--data", help="The data folder (offline).")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="The tenant (with --data).")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="With --data: the YAML config naming the destinations to report.")] = None,
    store: Annotated[str | None, typer.Option(
        "--store", envvar="SCR_STORE", help="With --data: a PostgreSQL store instead of SQLite.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="A scr server (instead of --data).")] = None,
    key: Annotated[str | None, typer.Option(
        "--key", envvar="SCR_KEY", help="An admin key (with --url).")] = None,
) -> None:
    """Compare EXPORT with the ledger per (day, model); print the answer as JSON."""
    if form not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}")
    try:
        body = export.read_bytes()
    except OSError as error:
        _fail(f"cannot read {export}: {error.strerror}")
    if url is not None:
        answer = _remote(body, form, url, key)
    elif data is not None and tenant:
        answer = _offline(body, form, data, tenant, config, store)
    else:
        _fail("give --data DIR --tenant T (offline) or --url URL --key KEY")
    typer.echo(json.dumps(answer, indent=2))
    raise typer.Exit(EXIT_AGREES if agrees(answer) else EXIT_DIFFERS)


def _offline(body: bytes, form: str, data: Path, tenant: str, config: Path | None,
             uri: str | None) -> dict[str, Any]:
    from scr.config import load_config
    from scr.store import open_store

    try:
        charges = read_export(body, form)
        destinations = [d.name for d in load_config(config).routing.destinations] if config else []
    except ScrError as error:  # ConfigError is one
        _print_error(error)
        raise typer.Exit(EXIT_INVALID) from None
    if uri is None and not data.is_dir():
        _fail(f"no data folder at {data}")
    opened = open_store(data, uri)
    try:
        return reconcile(charges, opened, tenant, destinations)
    finally:
        opened.close()


def _remote(body: bytes, form: str, url: str, key: str | None) -> dict[str, Any]:
    if not key:
        _fail("--url needs --key (an admin key)")
    try:
        response = httpx.post(f"{url.rstrip('/')}/v1/usage/reconcile", params={"format": form},
                              content=body, timeout=RECONCILE_TIMEOUT_S,
                              headers={"authorization": f"Bearer {key}",
                                       "content-type": "text/csv" if form == "focus" else "application/json"})
    except httpx.HTTPError as error:
        _fail(f"cannot reach {url}: {error}")
    if response.status_code != httpx.codes.OK:
        _print_answered(response)
        raise typer.Exit(EXIT_INVALID)
    answer: dict[str, Any] = response.json()
    return answer


def _print_answered(response: httpx.Response) -> None:
    """The server's error, its details one a line (as ``_print_error`` prints them)."""
    try:
        error = response.json()["error"]
        typer.echo(f"error: the server answered {response.status_code}: {error['message']}", err=True)
        for detail in error.get("details") or []:
            typer.echo(f"  {detail['path']}: {detail['message']}", err=True)
    except (ValueError, KeyError, TypeError):  # not scr's error body (a proxy's page)
        typer.echo(f"error: the server answered {response.status_code}: {response.text[:500]}", err=True)


def _print_error(error: ScrError) -> None:
    typer.echo(f"error: {error.message}", err=True)
    for detail in error.details:
        typer.echo(f"  {detail.path}: {detail.message}", err=True)


def _fail(message: str) -> Any:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_INVALID)
