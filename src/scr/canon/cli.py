"""``scr canon``: list canon items, promote one, make a decision, audit the invariants.

Each command opens the ledger in the data folder, or in a PostgreSQL store (``--store`` or
``SCR_STORE``; ``scr.canon.store_ledger.open_ledger``) and works on it directly, with no
server. The work itself is done by the ``run_*`` and
``show_*`` functions, which take a ``Canon`` (or a ledger) and a console, so they can be
used and tested on any ``CanonLedger``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, cast, get_args

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from scr.canon.audit import audit_ledger
from scr.canon.canon import Canon
from scr.canon.config import CanonConfig
from scr.canon.ledger import CanonLedger
from scr.canon.model import AuditReport, Decision, ItemKind, Level, PromotionResult
from scr.canon.store_ledger import open_ledger
from scr.errors import BadRequest, Detail, ScrError

DEFAULT_DATA = Path(".scr-data")
EXIT_REFUSED = 1
EXIT_ERROR = 2

app = typer.Typer(
    help="The Bickford Canon: canon items, promotions, decisions and the invariant audit.",
    no_args_is_help=True,
)

DataOption = Annotated[Path, typer.Option("--data", help="The data folder (SQLite database).")]
StoreOption = Annotated[
    str | None, typer.Option("--store", envvar="SCR_STORE", help="A PostgreSQL store instead (postgresql://…).")
]
TenantOption = Annotated[str, typer.Option("--tenant", envvar="SCR_TENANT", help="The tenant.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


_encoder = msgspec.json.Encoder(decimal_format="string")


def _json(value: object) -> str:
    return msgspec.json.format(_encoder.encode(value)).decode()


# ----- the work, on any ledger ---------------------------------------------------------------


def show_items(
    canon: Canon, out: Console, level: Level | None = None, kind: ItemKind | None = None,
    as_json: bool = False,
) -> None:
    """Print the tenant's canon items (a table, or JSON)."""
    items = canon.items(level=level, kind=kind)
    if as_json:
        out.print_json(_json({"items": items}))
        return
    table = Table("id", "kind", "level", "severity", "title", "ts", "source", "entry")
    for item in items:
        table.add_row(
            item.id, item.kind, item.level, item.severity or "", item.title,
            item.ts.isoformat(), item.provenance.source, str(item.entry_id),
        )
    out.print(table)


def run_promote(
    canon: Canon, item_id: str, out: Console, to_level: Level | None = None, reason: str = ""
) -> PromotionResult:
    """Run the promotion gate for one item, print the result and return it."""
    result = canon.promote(item_id, to_level=to_level, reason=reason, actor="cli")
    out.print_json(_json(result))
    return result


def run_decide(canon: Canon, request_file: Path, out: Console) -> Decision:
    """Decide the JSON request in ``request_file``, print the decision and return it."""
    try:
        request = msgspec.json.decode(request_file.read_bytes())
    except (OSError, msgspec.DecodeError) as error:
        raise BadRequest(f"cannot read {request_file}: {error}",
                         [Detail(str(request_file), str(error))]) from None
    decision = canon.decide(request, actor="cli")
    out.print_json(_json(decision))
    return decision


def run_audit(
    ledger: CanonLedger, tenants: Iterable[str], out: Console, config: CanonConfig | None = None,
    as_json: bool = False,
) -> list[AuditReport]:
    """Audit the six invariants for each tenant; print and return the reports."""
    reports = [audit_ledger(ledger, tenant, config) for tenant in tenants]
    if as_json:
        out.print_json(_json({"reports": reports}))
        return reports
    for report in reports:
        verdict = "[green]passed[/green]" if report.passed else "[red]FAILED[/red]"
        out.print(f"tenant {report.tenant}: {verdict} ({report.entries} entries)")
        table = Table("invariant", "result", "checked", "violations")
        for check in report.checks:
            shown = "; ".join(
                f"#{v.entry_id}: {v.message}" if v.entry_id is not None else v.message
                for v in check.violations[:5]
            )
            more = len(check.violations) - 5
            table.add_row(
                check.invariant_id, "ok" if check.passed else "FAIL", str(check.checked),
                shown + (f" (+{more} more)" if more > 0 else ""),
            )
        out.print(table)
    return reports


# ----- the commands --------------------------------------------------------------------------


@contextlib.contextmanager
def _ledger(data: Path, store: str | None) -> Iterator[CanonLedger]:
    ledger = open_ledger(data, store)
    try:
        yield ledger
    finally:
        ledger.close()


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    import psycopg

    try:
        yield
    except ScrError as error:
        err = Console(stderr=True)
        err.print(f"[red]error:[/red] {error.message}")
        for detail in error.details:
            err.print(f"  {detail.path}: {detail.message}")
        raise typer.Exit(EXIT_ERROR) from None
    except (ValueError, psycopg.OperationalError) as error:  # a store URI that is not one, or out of reach
        Console(stderr=True).print(f"[red]error:[/red] cannot open the store: {error}")
        raise typer.Exit(EXIT_ERROR) from None


@app.command()
def items(
    tenant: TenantOption,
    data: DataOption = DEFAULT_DATA,
    store: StoreOption = None,
    level: Annotated[str | None, typer.Option(help="Only items at this level.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only items of this kind.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List a tenant's canon items with their level and provenance."""
    with _errors(), _ledger(data, store) as ledger:
        show_items(Canon(ledger, tenant), Console(), _level(level), _kind(kind), as_json)


@app.command()
def promote(
    item_id: Annotated[str, typer.Argument(help="The canon item to promote.")],
    tenant: TenantOption,
    data: DataOption = DEFAULT_DATA,
    store: StoreOption = None,
    to: Annotated[str | None, typer.Option("--to", help="The level (the next one).")] = None,
    reason: Annotated[str, typer.Option(help="Why, for the ledger.")] = "",
) -> None:
    """Run the promotion gate for one item; exit 1 if the promotion is refused."""
    with _errors(), _ledger(data, store) as ledger:
        result = run_promote(Canon(ledger, tenant), item_id, Console(), _level(to), reason)
    if not result.approved:
        raise typer.Exit(EXIT_REFUSED)


@app.command()
def decide(
    request_file: Annotated[Path, typer.Argument(help="A JSON decide request.")],
    tenant: TenantOption,
    data: DataOption = DEFAULT_DATA,
    store: StoreOption = None,
) -> None:
    """Decide a request read from a JSON file and print the decision (ledgered)."""
    with _errors(), _ledger(data, store) as ledger:
        run_decide(Canon(ledger, tenant), request_file, Console())


@app.command()
def audit(
    data: DataOption = DEFAULT_DATA,
    store: StoreOption = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="One tenant (default: every tenant).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check the six hard-fail invariants over the whole store; exit 1 if any is broken."""
    with _errors(), _ledger(data, store) as ledger:
        tenants = [tenant] if tenant else list(ledger.tenants())
        reports = run_audit(ledger, tenants, Console(), as_json=as_json)
    if not all(report.passed for report in reports):
        raise typer.Exit(EXIT_REFUSED)


def _level(value: str | None) -> Level | None:
    if value is not None and value not in get_args(Level):
        raise typer.BadParameter(f"must be one of {', '.join(get_args(Level))}")
    return cast(Level | None, value)


def _kind(value: str | None) -> ItemKind | None:
    if value is not None and value not in get_args(ItemKind):
        raise typer.BadParameter(f"must be one of {', '.join(get_args(ItemKind))}")
    return cast(ItemKind | None, value)
