"""``scr ledger``: verify, audit and export the ledger.

Exit codes: 0 verified, 1 tampering found, 2 could not verify.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import httpx
import typer

from scr.ledger.audit import DEFAULT_SAMPLES, load_state, save_state
from scr.ledger.audit import audit as run_audit
from scr.ledger.bundle import encode_bundle, export_bundle, ledger_time, verify_bundle
from scr.ledger.report import EXIT_TAMPERED, EXIT_UNVERIFIABLE, EXIT_VERIFIED, Report
from scr.ledger.sources import DataSource, HttpSource, LedgerSource, SourceError
from scr.ledger.verify import verify_data
from scr.log.checkpoint import CheckpointError
from scr.privacy.export import verify_export

DEFAULT_URL = "http://127.0.0.1:8787"
MAX_LISTED_FINDINGS = 50

app = typer.Typer(
    help="Verify, audit and export the ledger (exit 0 verified, 1 tampering found, 2 could not verify).",
    no_args_is_help=True,
)

VerifierKeyOption = Annotated[
    str | None,
    typer.Option(
        "--verifier-key", envvar="SCR_VERIFIER_KEY",
        help="The checkpoint verifier key (<name>+<key id>+<base64 key>, as GET /v1/ledger/public-key "
        "answers), or a file holding it. Pins the key instead of trusting the one found.",
    ),
]
UrlOption = Annotated[str | None, typer.Option("--url", envvar="SCR_URL", help="The scr server.")]
KeyOption = Annotated[
    str | None, typer.Option("--key", envvar="SCR_KEY", help="An API key of role read, admin or auditor.")
]
TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="The tenant, for keys that span tenants.")
]


def _verifier_key(value: str | None) -> str | None:
    if value is not None and os.path.isfile(value):
        return Path(value).read_text().strip()
    return value


def _print_report(report: Report, what: str) -> None:
    for note in report.notes:
        typer.echo(f"note: {note}")
    if report.findings:
        headline = f"TAMPERING FOUND in {what}: {len(report.findings)} problem(s)"
        typer.secho(headline, fg="red", bold=True, err=True)
        typer.secho(f"first: {report.findings[0]}", fg="red", err=True)
        for finding in report.findings[1:MAX_LISTED_FINDINGS]:
            typer.echo(f"  {finding}", err=True)
        if len(report.findings) > MAX_LISTED_FINDINGS:
            typer.echo(f"  … and {len(report.findings) - MAX_LISTED_FINDINGS} more", err=True)
    elif report.unverifiable is not None:
        typer.secho(f"could not verify {what}: {report.unverifiable}", fg="yellow", err=True)
    else:
        typer.secho(
            f"verified {what}: {report.entries} entries, {report.checkpoints} checkpoint(s)", fg="green"
        )


@app.command()
def verify(
    data: Annotated[Path | None, typer.Option("--data", help="A data folder to verify offline.")] = None,
    bundle: Annotated[Path | None, typer.Option("--bundle", help="An evidence bundle to verify.")] = None,
    store: Annotated[
        str | None,
        typer.Option("--store", help="A PostgreSQL store (postgresql://…): chains, trees and checkpoints."),
    ] = None,
    export: Annotated[
        Path | None, typer.Option("--export", help="A subject's export (GET /v1/subjects/{user_id}/export).")
    ] = None,
    verifier_key: VerifierKeyOption = None,
) -> None:
    """Re-check every entry hash, the chain, the trees and every checkpoint (or one bundle,
    or one subject's export)."""
    if [data, bundle, store, export].count(None) != 3:
        typer.echo("give exactly one of --data DIR, --bundle FILE, --export FILE or --store URI", err=True)
        raise typer.Exit(EXIT_UNVERIFIABLE)
    key = _verifier_key(verifier_key)
    if store is not None:
        report = _verify_store(store, key)
        _print_report(report, _redacted(store))
    elif bundle is not None or export is not None:
        document = bundle or export
        assert document is not None
        try:
            raw = document.read_bytes()
        except OSError as error:
            typer.echo(f"cannot read {document}: {error}", err=True)
            raise typer.Exit(EXIT_UNVERIFIABLE) from None
        report = verify_bundle(raw, key) if bundle is not None else verify_export(raw, key)
        _print_report(report, str(document))
    else:
        assert data is not None
        report = verify_data(data, key)
        _print_report(report, str(data))
    raise typer.Exit(report.exit_code)


def _verify_store(uri: str, verifier_key: str | None) -> Report:
    import psycopg
    import psycopg_pool

    from scr.ledger.verify import verify_store
    from scr.store.postgres import PostgresStore, is_postgres_uri

    if not is_postgres_uri(uri):
        return Report(unverifiable="--store must be a postgresql:// URI")
    try:
        opened = PostgresStore(uri, apply_migrations=False)  # verifying never changes the store
        try:
            return verify_store(opened, verifier_key)
        except CheckpointError as error:
            return Report(unverifiable=f"no usable verifier key: {error}")
        finally:
            opened.close()
    except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
        return Report(unverifiable=f"cannot read the store: {error}")


def _redacted(uri: str) -> str:
    from scr.store.postgres import redact

    return redact(uri)


def _client(url: str | None, key: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url or DEFAULT_URL, headers=headers)


@app.command()
def audit(
    state: Annotated[
        Path, typer.Option("--state", help="The auditor's state file (created on the first run).")
    ],
    url: UrlOption = None,
    key: KeyOption = None,
    tenant: TenantOption = None,
    samples: Annotated[
        int, typer.Option("--samples", min=0, help="Entries to spot-check.")
    ] = DEFAULT_SAMPLES,
    verifier_key: VerifierKeyOption = None,
) -> None:
    """Check a server's newest checkpoint against the one saved last time, and spot-check entries."""
    try:
        saved = load_state(state)
    except (OSError, ValueError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_UNVERIFIABLE) from None
    with _client(url, key) as client:
        outcome = run_audit(HttpSource(client, tenant), saved, _verifier_key(verifier_key), samples)
    _print_report(outcome.report, url or DEFAULT_URL)
    if outcome.new_state is not None and outcome.checkpoint is not None:
        save_state(state, outcome.new_state)
        first = "trusted on first use" if saved is None else "saved"
        checkpoint = outcome.checkpoint
        typer.echo(f"checkpoint {checkpoint.origin} at {checkpoint.tree_size} entries {first}")
    raise typer.Exit(outcome.report.exit_code)


@app.command()
def export(
    file: Annotated[Path, typer.Argument(help="Where to write the bundle (JSON).")],
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant whose entries to export.")],
    from_: Annotated[
        str | None, typer.Option("--from", help="First append time, RFC 3339, inclusive.")
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last append time, RFC 3339, exclusive.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Read a data folder (no server).")] = None,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Write a self-contained evidence bundle: entries, the checkpoint, their proofs and the public key."""
    try:
        start = ledger_time(from_) if from_ else None
        end = ledger_time(to) if to else None
    except ValueError as error:
        typer.echo(f"--from/--to must be RFC 3339 times: {error}", err=True)
        raise typer.Exit(EXIT_UNVERIFIABLE) from None
    try:
        if data is not None:
            bundle = export_bundle(DataSource(data), tenant, start, end)
        else:
            with _client(url, key) as client:
                source: LedgerSource = HttpSource(client, tenant)
                bundle = export_bundle(source, tenant, start, end)
    except SourceError as error:
        typer.echo(f"could not export: {error}", err=True)
        raise typer.Exit(EXIT_UNVERIFIABLE) from None
    except CheckpointError as error:
        typer.secho(f"TAMPERING FOUND: the ledger's checkpoint is rejected: {error}", fg="red", err=True)
        raise typer.Exit(EXIT_TAMPERED) from None
    file.write_bytes(encode_bundle(bundle))
    typer.echo(f"wrote {len(bundle.entries)} entries of {tenant} with their proofs to {file}")
    raise typer.Exit(EXIT_VERIFIED)
