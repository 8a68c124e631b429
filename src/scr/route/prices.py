"""One versioned price table: what a session's tokens cost, in exact decimal USD.

Prices are USD per 1M tokens for three kinds of token: input, output and cached input.

Cost rule (the one ``billing_v1`` reports as ``cost_usd``):

- ``cache_read_tokens`` are part of ``input_tokens`` and are billed at the cached-input rate;
  the rest of ``input_tokens`` is billed at the input rate. A client that reports more cache
  reads than input tokens is taken at its input count (cache reads are capped at
  ``input_tokens``), so no part of the bill is ever negative.
- ``output_tokens`` are billed at the output rate; ``reasoning_tokens`` are part of
  ``output_tokens`` and are not billed again. ``cache_write_tokens`` are part of the input and
  are billed at the input rate (providers that charge a cache-write premium are not modelled).
- Arithmetic is exact ``Decimal``; the result is quantized to 10 decimal places with
  ROUND_HALF_EVEN (banker's rounding), and formatted without an exponent by ``format_usd``.

Model lookup: the exact name, else the longest known name that is a prefix of the model and
ends where the model has a separator (``-``, ``_``, ``@`` or ``:``), so a dated snapshot
``gpt-4o-2024-08-06`` is priced as ``gpt-4o`` and ``claude-3-5-sonnet@20240620`` as
``claude-3-5-sonnet``, but ``gpt-4`` never prices ``gpt-4o``. Lookup ignores case. An
unknown model has no price: ``cost`` answers ``None`` rather than guess.

The bundled ``prices.json`` holds public list prices (see its ``note``); ``PriceTable.load``
reads a table of the same shape from any path. The server uses its data folder's table when
one is installed (``scr prices update``; see ``scr.route.price_file``); the SDK uses the
bundled one unless given another (``scr.Client(prices=PriceTable.load(path))``).
"""

from __future__ import annotations

import decimal
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import msgspec

from scr.errors import ConfigError, Detail
from scr.money import money_problem
from scr.schema import Usage

TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)
# The custom tags on an event whose model the table does not know (SDK and server sources alike).
UNKNOWN_PRICE_TAG, UNKNOWN_PRICE_VALUE, PRICE_VERSION_TAG = "price", "unknown", "price_table_version"
COST_QUANTUM = Decimal("1E-10")  # 10 decimal places of a US dollar
# Enough significant digits that no product of a 2**53 token count and a price rounds.
_COST_PRECISION_DIGITS = 60
_SNAPSHOT_SEPARATORS = frozenset("-_@:")


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per 1M tokens for one model."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal


class _PriceRow(msgspec.Struct, forbid_unknown_fields=True):
    input: Decimal
    output: Decimal
    cached_input: Decimal
    provider: str | None = None


class _PriceFile(msgspec.Struct, forbid_unknown_fields=True):
    version: str
    currency: Literal["USD"]
    unit: Literal["per 1M tokens"]
    models: dict[str, _PriceRow]
    note: str = ""


class _PriceRowSpelling(msgspec.Struct):
    input: Any  # as written: a string, or a number read as an exact Decimal
    output: Any
    cached_input: Any


class _PriceFileSpelling(msgspec.Struct):
    """The prices as the file writes them: a decimal string's spelling is part of the money rule."""

    models: dict[str, _PriceRowSpelling]


_spelling_decoder = msgspec.json.Decoder(_PriceFileSpelling, float_hook=Decimal)


# A price table as the native core reads it (``PriceTable.plain``): its version, and per model
# its case-folded name and its input, output and cached-input prices as ``str(Decimal)`` writes them.
PlainPrices = tuple[str, list[tuple[str, str, str, str]]]


class PriceTable:
    """A named version of per-model prices, and the cost rule applied to them."""

    def __init__(self, version: str, models: Mapping[str, ModelPrice]) -> None:
        self.version = version
        self._listed = dict(models)
        self._models = {name.casefold(): price for name, price in models.items()}

    def __len__(self) -> int:
        return len(self._models)

    @functools.cached_property
    def plain(self) -> PlainPrices:
        """The table in the plain form the native core costs events with (made once)."""
        rows = [
            (name, str(price.input_per_mtok), str(price.output_per_mtok), str(price.cached_input_per_mtok))
            for name, price in self._models.items()
        ]
        return self.version, rows

    @classmethod
    def from_plain(cls, plain: PlainPrices) -> PriceTable:
        """The table ``plain`` writes (the reference of the native core reads it back so)."""
        version, rows = plain
        return cls(version, {
            name: ModelPrice(Decimal(input_price), Decimal(output_price), Decimal(cached_price))
            for name, input_price, output_price, cached_price in rows
        })

    def models(self) -> dict[str, ModelPrice]:
        """Every model's price, by the name the table gives it."""
        return dict(self._listed)

    def current(self) -> PriceTable:
        """This table (a fixed ``PriceSource``; see ``scr.route.price_file``)."""
        return self

    def price(self, model: str) -> ModelPrice | None:
        """The price of ``model``: exact name, else its longest known snapshot prefix."""
        name = model.casefold()
        found = self._models.get(name)
        if found is not None:
            return found
        for end in range(len(name) - 1, 0, -1):
            if name[end] in _SNAPSHOT_SEPARATORS:
                found = self._models.get(name[:end])
                if found is not None:
                    return found
        return None

    def cost(self, usage: Usage) -> Decimal | None:
        """The exact cost of ``usage`` in USD (10 decimal places); ``None`` for an unknown model."""
        price = self.price(usage.model)
        if price is None:
            return None
        cached = min(usage.cache_read_tokens or 0, usage.input_tokens)
        with decimal.localcontext() as context:
            context.prec = _COST_PRECISION_DIGITS
            total = (
                cached * price.cached_input_per_mtok
                + (usage.input_tokens - cached) * price.input_per_mtok
                + usage.output_tokens * price.output_per_mtok
            ) / TOKENS_PER_PRICE_UNIT
            return total.quantize(COST_QUANTUM, rounding=decimal.ROUND_HALF_EVEN)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        """Read a price table file; ``None`` reads the bundled one. Raise ``ConfigError`` if unusable."""
        if path is None:
            source = "bundled prices.json"
            raw = resources.files("scr.route").joinpath("prices.json").read_bytes()
        else:
            source = str(path)
            try:
                raw = Path(path).read_bytes()
            except OSError as error:
                raise ConfigError(f"cannot read price table {source}: {error.strerror}") from None
        return _parse(raw, source)


def _parse(raw: bytes, source: str) -> PriceTable:
    try:
        parsed = msgspec.json.decode(raw, type=_PriceFile)
        written = _spelling_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise ConfigError(f"price table {source} is not valid: {error}") from None
    problems: list[Detail] = []
    models: dict[str, ModelPrice] = {}
    seen: set[str] = set()
    for name, row in parsed.models.items():
        if not name or name.casefold() in seen:
            problems.append(Detail(f"models.{name}", "model names must be non-empty and unique"))
        seen.add(name.casefold())
        for field_name in ("input", "output", "cached_input"):
            # A price per 1M tokens is an amount like any other (scr.money), as written.
            problem = money_problem(getattr(written.models[name], field_name))
            if problem is not None:
                problems.append(Detail(f"models.{name}.{field_name}", problem))
        models[name] = ModelPrice(row.input, row.output, row.cached_input)
    if not parsed.version:
        problems.append(Detail("version", "must not be empty"))
    if problems:
        raise ConfigError(f"price table {source} has invalid entries", problems)
    return PriceTable(parsed.version, models)


@functools.cache
def default_prices() -> PriceTable:
    """The bundled price table, read once."""
    return PriceTable.load()


def format_usd(amount: Decimal) -> str:
    """A money amount as a plain decimal string (never exponent notation)."""
    return format(amount, "f")
