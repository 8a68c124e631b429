"""``scr archive run|list|verify|restore`` (``--config FILE --data DIR``, or ``--store URI``).

``run`` does one archiver pass now (or at ``--now T``: ages are evaluated at T) with a
progress bar; it takes the archive directory's lock, so it waits for no one and refuses to
run beside the server's own archiver. ``list`` prints the segments the hot store lists.
``verify`` checks every segment against its manifest and checkpoint and names every missing,
altered or extra file (exit 0 verified, 1 something found, 2 could not verify). ``restore``
writes a tenant's archived entries, checked first, as JSON lines: the stored bytes of each
entry, as the ledger hashed them.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from scr.config import Config, default_config, load_config
from scr.errors import ConfigError, ScrError
from scr.ledger.checkpoints import CHECKPOINTS_FILE, CheckpointLog
from scr.ledger.report import EXIT_TAMPERED, EXIT_UNVERIFIABLE, Report
from scr.log.checkpoint import VerifierKey
from scr.log.commit import writing_alone
from scr.retention.archiver import ARCHIVER_STATE, AnotherArchiver, Archiver, PassReport
from scr.retention.segments import ArchiveError
from scr.retention.tiers import ArchiveTier
from scr.retention.verify import verify_archive
from scr.retention.writes import LocalArchiveWrites
from scr.store import Store, open_store
from scr.store.records import SegmentRow

EXIT_FAILED = 2
ARCHIVE_FOLDER = "archive"  # in the data folder, when the config names no archive_dir

app = typer.Typer(help="Retention: archive segments, purge and their checks.", no_args_is_help=True)
err = Console(stderr=True)

DataOption = Annotated[Path, typer.Option("--data", help="The data folder.")]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="The YAML config (its `retention:`).")]
StoreOption = Annotated[str | None, typer.Option(
    "--store", envvar="SCR_STORE", help="A PostgreSQL store instead of the data folder's SQLite.")]
ArchiveDirOption = Annotated[Path | None, typer.Option(
    "--archive-dir", help="Where the segments are (overrides the config's archive_dir).")]


def archive_folder(settings: Config, data: Path) -> Path:
    """Where the segments go: the config's ``retention.archive_dir``, else the data folder's."""
    retention = settings.retention
    return Path(retention.archive_dir) if retention and retention.archive_dir else data / ARCHIVE_FOLDER


def open_checkpoints(store: Store, data: Path) -> CheckpointLog | None:
    """The data folder's signed checkpoints, read-only; None on a store that keeps none."""
    path = data / CHECKPOINTS_FILE
    from scr.store.sqlite import SqliteStore

    return CheckpointLog(path, read_only=True) if isinstance(store, SqliteStore) and path.is_file() else None


@app.command("run")
def run_command(
    data: DataOption, config: ConfigOption = None, store: StoreOption = None,
    archive_dir: ArchiveDirOption = None,
    now: Annotated[str | None, typer.Option(
        "--now", help="Evaluate ages at this RFC 3339 time instead of now (a later time archives "
        "and purges what would be due then).")] = None,
) -> None:
    """Archive entries past their hot days and purge segments past their cold days, now."""
    settings = _settings(config)
    if settings.retention is None:
        _fail("the config has no `retention:` section: nothing is due")
    at = _time(now)
    opened = _open(data, settings, store)
    with writing_alone(opened) as committer:
        try:
            archiver = Archiver(opened, settings.retention, archive_dir or archive_folder(settings, data),
                                LocalArchiveWrites(committer), open_checkpoints(opened, data))
            with Progress(console=err, transient=True) as bar:
                task = bar.add_task("archiving", total=None)
                report = asyncio.run(archiver.run(
                    at, lambda tenant, entries: bar.update(task, advance=entries, description=tenant)))
        except AnotherArchiver as error:
            _fail(str(error))
    _print_pass(report)
    if report.errors:
        raise typer.Exit(EXIT_FAILED)


@app.command("list")
def list_command(
    data: DataOption, config: ConfigOption = None, store: StoreOption = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="One tenant's.")] = None,
) -> None:
    """The archive segments: tenant, leaves, entries, newest entry, when archived or purged."""
    opened = _open(data, _settings(config), store)
    try:
        segments = opened.archive_segments(tenant)
        state, reason = opened.destination_state(ARCHIVER_STATE)
    finally:
        opened.close()
    typer.echo(f"archiver: {state}" + (f": {reason}" if reason else ""))
    table = Table("tenant", "segment", "leaves", "entries", "newest entry", "archived", "purged")
    for s in segments:
        table.add_row(s.tenant, s.name, f"{s.first_leaf}..{s.last_leaf}", str(s.last_leaf - s.first_leaf + 1),
                      s.max_ts, s.created_at, s.purged_at or "")
    Console().print(table)


@app.command("verify")
def verify_command(data: DataOption, config: ConfigOption = None, store: StoreOption = None,
                   archive_dir: ArchiveDirOption = None) -> None:
    """Check every segment against its manifest and checkpoint; name every missing, altered or
    extra file (exit 0 verified, 1 something found, 2 could not verify)."""
    opened = _open(data, _settings(config), store)
    try:
        segments = opened.archive_segments()
        report = Report()
        keys = verifier_keys(opened, data)
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("verifying", total=sum(s.last_leaf - s.first_leaf + 1 for s in segments))
            verify_archive(segments, archive_dir, keys, report, lambda n: bar.update(task, advance=n))
    finally:
        opened.close()
    for note in report.notes:
        typer.echo(f"note: {note}")
    for finding in report.findings:
        typer.secho(str(finding), fg="red", err=True)
    if report.findings:
        typer.secho(f"ARCHIVE PROBLEMS: {len(report.findings)}", fg="red", bold=True, err=True)
        raise typer.Exit(EXIT_TAMPERED)
    typer.secho(f"verified the archive: {len(segments)} segment(s), {report.entries} entries", fg="green")


def verifier_keys(store: Store, data: Path) -> list[VerifierKey]:
    log_ = open_checkpoints(store, data)
    if log_ is None:
        return []
    try:
        return [VerifierKey.parse(text) for text in log_.verifier_keys()]
    finally:
        log_.close()


@app.command("restore")
def restore_command(
    data: DataOption, tenant: Annotated[str, typer.Option("--tenant", help="The tenant.")],
    out: Annotated[Path, typer.Option("--out", help="The JSON-lines file to write (- for stdout).")],
    config: ConfigOption = None, store: StoreOption = None, archive_dir: ArchiveDirOption = None,
    first: Annotated[int, typer.Option("--from", help="The first leaf index.")] = 0,
    last: Annotated[int | None, typer.Option("--to", help="The last leaf index (default: all).")] = None,
) -> None:
    """Write a tenant's archived entries (checked against their segments first) as JSON lines."""
    opened = _open(data, _settings(config), store)
    try:
        segments = [s for s in opened.archive_segments(tenant) if s.purged_at is None
                    and s.last_leaf >= first and (last is None or s.first_leaf <= last)]
        report = Report()
        verify_archive(segments, archive_dir, verifier_keys(opened, data), report, every_file=False)
        if report.findings:
            _fail("the segments do not verify; run `scr archive verify`: " + str(report.findings[0]))
        tier = ArchiveTier(lambda _: segments, archive_dir)
        written = _write_entries(tier, tenant, segments, first, last, out)
    except ArchiveError as error:
        _fail(str(error))
    finally:
        opened.close()
    err.print(f"restored {written} entries of {tenant}")


def _write_entries(tier: ArchiveTier, tenant: str, segments: list[SegmentRow], first: int, last: int | None,
                   out: Path) -> int:
    target = sys.stdout.buffer if str(out) == "-" else open(out, "wb")  # noqa: SIM115
    written = 0
    try:
        for segment in segments:
            end = segment.last_leaf if last is None else min(segment.last_leaf, last)
            for leaf in range(max(first, segment.first_leaf), end + 1):
                stored = tier.entry(tenant, leaf)
                if stored is not None:
                    target.write(stored + b"\n")
                    written += 1
    finally:
        if target is not sys.stdout.buffer:
            target.close()
    return written


def _print_pass(report: PassReport) -> None:
    typer.echo(f"archived {report.archived} entries in {report.segments} segment(s); "
               f"{report.stubbed} hot rows shrunk; {report.purged} rows purged")
    for held in report.held:
        typer.echo(f"held: {held}")
    for error in report.errors:
        typer.secho(f"error: {error}", fg="red", err=True)


def _settings(config: Path | None) -> Config:
    try:
        return load_config(config) if config else default_config()
    except ConfigError as error:
        _fail(error.message)


def _open(data: Path, settings: Config, store: str | None) -> Store:
    try:
        return open_store(data, store or settings.store)
    except ScrError as error:
        _fail(error.message)


def _time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"--now {text!r} is not an RFC 3339 time")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(EXIT_FAILED)


__all__ = ["EXIT_UNVERIFIABLE", "app", "archive_folder", "open_checkpoints"]
