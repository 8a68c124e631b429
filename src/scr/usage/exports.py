"""Provider exports read into per-(day, model) charges: OpenAI costs and usage, Anthropic's
cost report, FOCUS CSV.

Money is read from the file's own text as ``Decimal`` (msgspec decodes a JSON number into a
Decimal from its digits, never through a float). A bad file is refused whole: every bad line
is a ``Detail`` naming its line number and what is wrong, and nothing is compared.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import TypeVar

import msgspec

from scr.errors import BadRequest, Detail

FORMATS = ("openai-costs", "openai-usage", "anthropic-cost", "focus")
_T = TypeVar("_T")
MAX_DETAILS = 100  # a broken file of a million lines answers with its first hundred problems
MAX_AMOUNT_DIGITS = 15  # before the point: up to 10^15 USD
MAX_AMOUNT_PLACES = 18  # after it: scr.money's own bound
ANTHROPIC_MINOR_UNITS = 2  # the cost report's amounts are in cents ("123.45" is $1.2345)
FOCUS_COLUMNS = ("ChargePeriodStart", "BilledCost", "ConsumedQuantity", "ConsumedUnit", "SkuId",
                 "ProviderName")


@dataclass(frozen=True, slots=True)
class Charge:
    """One line of an export: what the provider counted for a (day, model).

    ``None`` where the format does not say (OpenAI's costs carry no tokens, its usage no
    money); ``places`` is the number of decimals the export wrote for the cost."""

    day: date
    model: str
    provider: str
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: Decimal | None
    places: int


class BadExport(BadRequest):
    """An export that cannot be read: one detail per bad line."""


def read_export(body: bytes, form: str) -> list[Charge]:
    """The charges of an export of format ``form``; ``BadExport`` listing every bad line."""
    reader = _READERS.get(form)
    if reader is None:
        raise BadExport(f"format: must be one of {', '.join(FORMATS)}",
                        [Detail("format", f"unknown format {form!r}")])
    problems: list[Detail] = []
    charges = list(reader(body, problems))
    if problems:
        shown = problems[:MAX_DETAILS]
        raise BadExport(f"the {form} export has {len(problems)} bad line(s); the first: "
                        f"{shown[0].path}: {shown[0].message}", shown)
    if not charges:  # no day and no provider: nothing to compare the ledger with
        raise BadExport(f"the {form} export holds no charges", [Detail("line 1", "no charges")])
    return charges


# ----- OpenAI: GET /v1/organization/costs and /v1/organization/usage/completions pages --------


class _Amount(msgspec.Struct):
    value: Decimal
    currency: str


class _CostResult(msgspec.Struct):
    amount: _Amount
    line_item: str | None = None


class _UsageResult(msgspec.Struct):
    input_tokens: int
    output_tokens: int
    model: str | None = None


class _Bucket(msgspec.Struct):
    start_time: int
    results: list[msgspec.Raw]


class _Page(msgspec.Struct):
    data: list[_Bucket]


class _AnthropicResult(msgspec.Struct):
    amount: Decimal
    currency: str
    model: str | None = None


class _AnthropicBucket(msgspec.Struct):
    starting_at: datetime
    results: list[msgspec.Raw]


class _AnthropicPage(msgspec.Struct):
    data: list[_AnthropicBucket]


# (day, the raw results of that day's bucket) of a page
Buckets = list[tuple[date, list[msgspec.Raw]]]


def _json_charges(body: bytes, problems: list[Detail], buckets: Callable[[bytes], Buckets],
                  kind: type[_T], charge: Callable[[date, _T], Charge]) -> Iterator[Charge]:
    """The charges of a JSON page of buckets: each result decoded as ``kind`` and turned into
    a charge on its own, so every bad result is reported with its line."""
    try:
        days = buckets(body)
    except msgspec.DecodeError as error:
        problems.append(Detail(f"line {_line_of_error(body, str(error))}", str(error)))
        return
    lines = _Lines(body)
    for day, results in days:
        for raw in results:
            line = lines.of(raw)
            try:
                yield charge(day, msgspec.json.decode(raw, type=kind))
            except (msgspec.DecodeError, ValueError) as error:
                problems.append(Detail(f"line {line}", str(error)))


def _openai_buckets(body: bytes) -> Buckets:
    page = msgspec.json.decode(body, type=_Page)
    return [(datetime.fromtimestamp(b.start_time, UTC).date(), b.results) for b in page.data]


def _anthropic_buckets(body: bytes) -> Buckets:
    page = msgspec.json.decode(body, type=_AnthropicPage)
    return [(b.starting_at.astimezone(UTC).date(), b.results) for b in page.data]


def _openai_cost(day: date, result: _CostResult) -> Charge:
    value = _checked(result.amount.value, "amount.value")
    if result.amount.currency.lower() != "usd":
        raise ValueError(f"currency {result.amount.currency!r} is not usd")
    if not result.line_item:  # asked without group_by=line_item: no model to compare
        raise ValueError("line_item is missing: export with group_by=line_item")
    model = result.line_item.split(",", 1)[0].strip()  # "<model>, <input|output|...>"
    return Charge(day, model, "openai", None, None, value, _places(value))


def _openai_usage(day: date, result: _UsageResult) -> Charge:
    if not result.model:
        raise ValueError("model is missing: export with group_by=model")
    return Charge(day, result.model, "openai", result.input_tokens, result.output_tokens, None, 0)


def _anthropic_cost(day: date, result: _AnthropicResult) -> Charge:
    cents = _checked(result.amount, "amount")
    if result.currency.upper() != "USD":
        raise ValueError(f"currency {result.currency!r} is not USD")
    if not result.model:
        raise ValueError("model is missing: export with group_by=description")
    return Charge(day, result.model, "anthropic", None, None, cents.scaleb(-ANTHROPIC_MINOR_UNITS),
                  _places(cents) + ANTHROPIC_MINOR_UNITS)


class _Lines:
    """Line numbers of a JSON document's results, found in document order (each ``Raw`` is
    searched for after the previous one, so the whole file is scanned once)."""

    def __init__(self, body: bytes) -> None:
        self.body, self.counted, self.after, self.line = body, 0, 0, 1

    def of(self, raw: msgspec.Raw) -> int:
        text = bytes(raw)
        found = self.body.find(text, self.after)
        if found < 0:  # cannot happen for a Raw of this body; keep the last line known
            return self.line
        self.line += self.body.count(b"\n", self.counted, found)
        self.counted, self.after = found, found + len(text)
        return self.line


def _line_of_error(body: bytes, message: str) -> int:
    """The line of msgspec's "(byte N)" in a syntax error; 1 when it names none."""
    marker = message.rfind("(byte ")
    if marker < 0:
        return 1
    digits = message[marker + len("(byte "):].rstrip(")")
    return body.count(b"\n", 0, int(digits)) + 1 if digits.isdigit() else 1


# ----- FOCUS 1.x CSV ------------------------------------------------------------------------------


def _focus(body: bytes, problems: list[Detail]) -> Iterator[Charge]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = body.count(b"\n", 0, error.start) + 1
        problems.append(Detail(f"line {line}", "not UTF-8 text"))
        return
    rows = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in FOCUS_COLUMNS if c not in (rows.fieldnames or ())]
    if missing:
        problems.append(Detail("line 1", f"missing column(s): {', '.join(missing)}"))
        return
    for row in rows:
        line = rows.line_num
        try:
            yield _focus_charge(row)
        except ValueError as error:
            problems.append(Detail(f"line {line}", str(error)))


def _focus_charge(row: dict[str, str]) -> Charge:
    day = _focus_day(row["ChargePeriodStart"])
    model = (row.get("x_Model") or "").strip() or row["SkuId"].strip()
    if not model:
        raise ValueError("no model: x_Model and SkuId are both empty")
    provider = row["ProviderName"].strip()
    if not provider:
        raise ValueError("ProviderName is empty")
    currency = (row.get("BillingCurrency") or "USD").strip().upper()
    if currency != "USD":
        raise ValueError(f"BillingCurrency {currency!r} is not USD")
    cost = _decimal(row["BilledCost"], "BilledCost")
    unit = row["ConsumedUnit"].lower()
    inputs = outputs = 0
    if "token" in unit and ("input" in unit or "output" in unit):
        quantity = _decimal(row["ConsumedQuantity"], "ConsumedQuantity")
        if quantity != quantity.to_integral_value() or quantity < 0:
            raise ValueError(f"ConsumedQuantity {row['ConsumedQuantity']!r} is not a whole token count")
        if "input" in unit:
            inputs = int(quantity)
        else:
            outputs = int(quantity)
    return Charge(day, model, provider, inputs, outputs, cost, _places(cost))


def _focus_day(text: str) -> date:
    try:
        instant = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"ChargePeriodStart {text!r} is not an ISO 8601 time") from None
    if instant.tzinfo is None:  # FOCUS times are UTC
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC).date()


def _decimal(text: str, column: str) -> Decimal:
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{column} {text!r} is not a decimal number") from None
    return _checked(amount, column)


def _checked(amount: Decimal, name: str) -> Decimal:
    """The amount; ``ValueError`` when it is out of range (``_out_of_range``)."""
    problem = _out_of_range(amount, name)
    if problem:
        raise ValueError(problem)
    return amount


def _out_of_range(amount: Decimal, name: str) -> str | None:
    """What is wrong with an amount no export can mean (no 1e999999 reaches a sum)."""
    if amount.is_finite() and amount.adjusted() < MAX_AMOUNT_DIGITS and _places(amount) <= MAX_AMOUNT_PLACES:
        return None
    return (f"{name} {amount} is out of range (at most {MAX_AMOUNT_DIGITS} digits before the "
            f"point and {MAX_AMOUNT_PLACES} after)")


def _places(amount: Decimal) -> int:
    """The decimals an amount was written with ("0.0600" → 4, "12" → 0)."""
    exponent = amount.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


_READERS: dict[str, Callable[[bytes, list[Detail]], Iterator[Charge]]] = {
    "openai-costs": lambda body, problems: _json_charges(
        body, problems, _openai_buckets, _CostResult, _openai_cost),
    "openai-usage": lambda body, problems: _json_charges(
        body, problems, _openai_buckets, _UsageResult, _openai_usage),
    "anthropic-cost": lambda body, problems: _json_charges(
        body, problems, _anthropic_buckets, _AnthropicResult, _anthropic_cost),
    "focus": _focus,
}
