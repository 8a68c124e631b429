"""``scr prices``: show and update the data folder's price table (no release needed).

Exit codes: 0 done, 2 the file is not a usable price table (nothing is changed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scr.errors import ConfigError
from scr.route.price_file import PRICES_FILE, LivePrices, install_prices

EXIT_INVALID = 2

app = typer.Typer(help="The price table (USD per 1M tokens) costing every event.", no_args_is_help=True)

DataOption = Annotated[Path, typer.Option("--data", help="The data folder.")]
DEFAULT_DATA = Path(".scr-data")


@app.command("update")
def update(
    file: Annotated[Path, typer.Argument(help="A price table JSON file (the shape of prices.json).")],
    data: DataOption = DEFAULT_DATA,
) -> None:
    """Validate FILE and install it as the data folder's price table (a running server uses it within 1 s)."""
    try:
        table = install_prices(file, data)
    except ConfigError as error:
        typer.echo(f"price table not updated: {error.message}", err=True)
        for detail in error.details:
            typer.echo(f"  {detail.path}: {detail.message}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    typer.echo(f"installed price table {table.version} ({len(table)} models) as {data / PRICES_FILE}")


@app.command("show")
def show(data: DataOption = DEFAULT_DATA) -> None:
    """Print the price table in force for the data folder: its version, source and models."""
    live = LivePrices(data)
    table = live.current()
    source = str(live.path) if live.path.exists() else "bundled"
    typer.echo(f"price table {table.version} ({source}), USD per 1M tokens: input / cached input / output")
    for name, price in table.models().items():
        typer.echo(f"  {name}: {price.input_per_mtok} / {price.cached_input_per_mtok} / "
                   f"{price.output_per_mtok}")
