"""``scr ledger``: verify, audit and export the ledger."""

from __future__ import annotations

import typer

app = typer.Typer(help="Verify, audit and export the ledger.", no_args_is_help=True)
