"""Money: the one bound on every USD amount scr accepts, and how JSON carries it.

An amount is ``0 <= amount < 10**9`` USD with at most 18 fractional digits (trailing zeros do
not count: ``1.50`` has one). JSON carries it as a number, whose digits are read exactly
(never through a binary float), or as a decimal string written the way a JSON number is
(``"0.0075"``, ``"7.5E-3"``; no sign, spaces, ``_`` or leading zeros) whose exponent, for a
nonzero amount, is from -18 to 8: the exponents scientific notation needs for amounts in
bounds. A zero may carry a ``-`` and any exponent a ``Decimal`` holds (``str(Decimal)`` writes
a zero read from ``0.00000000000000000000`` as ``0E-20``, and it must read back).

Every field that takes money takes this rule from here: the event's
``usage.estimated_cost_usd`` (``scr.schema``), an OBSERVATION's ``cost`` (``scr.canon``) and
a price table's per-1M-token prices (``scr.route.prices``). ``MONEY_JSON_SCHEMA`` states the
same rule in JSON Schema (bounds and ``multipleOf`` for a number, ``pattern`` for a string);
the pattern is generated from the constants below. ``read_amount`` is how the canon reads
amounts back from a ledger, where one written before this bound may hold anything.
"""

from __future__ import annotations

import decimal
import re
from decimal import Decimal
from typing import Any

MAX_USD = 10**9  # exclusive: no amount reaches a billion dollars
USD_FRACTION_DIGITS = 18  # finer than any provider bills
USD_QUANTUM = Decimal(1).scaleb(-USD_FRACTION_DIGITS)
MAX_INTEGER_DIGITS = len(str(MAX_USD - 1))
# The exponents of a nonzero amount written with one: its smallest unit to its largest power.
MIN_EXPONENT, MAX_EXPONENT = -USD_FRACTION_DIGITS, MAX_INTEGER_DIGITS - 1
# Holds every amount in bounds exactly (all its integer and fractional digits).
_EXACT = decimal.Context(prec=MAX_INTEGER_DIGITS + USD_FRACTION_DIGITS, traps=[decimal.Inexact])

RULE = (
    f"0 <= amount < {MAX_USD} USD with at most {USD_FRACTION_DIGITS} fractional digits, "
    "as a JSON number or a decimal string"
)
TEXT_RULE = (
    "a decimal string is written like a JSON number (e.g. \"0.0075\" or \"7.5E-3\"), "
    f"a nonzero amount's exponent from {MIN_EXPONENT} to {MAX_EXPONENT}"
)

# What the API matches strings with: the grammar alone, in linear time whatever the length;
# the sign, the exponent and the value are then checked in Python.
_DECIMAL_TEXT = re.compile(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?)([0-9]+))?")
_EXPONENT_DIGITS = len(str(abs(MIN_EXPONENT)))
_ZERO, _MAX = Decimal(0), Decimal(MAX_USD)


def amount_problem(amount: Decimal) -> str | None:
    """Why ``amount`` (read exactly) is out of bounds; ``None`` if it is in."""
    if amount.is_finite() and _ZERO <= amount < _MAX:
        exponent = amount.as_tuple().exponent
        if isinstance(exponent, int) and exponent >= -USD_FRACTION_DIGITS:
            return None  # the common case, decided without counting digits
    if not amount.is_finite():
        return f"must be a finite amount: {RULE}"
    if amount < 0:
        return f"must be >= 0: {RULE}"
    if amount >= _MAX:  # an exact comparison, whatever the exponent
        return f"must be below {MAX_USD} USD: {RULE}"
    if _fraction_digits(amount) > USD_FRACTION_DIGITS:
        return f"has more than {USD_FRACTION_DIGITS} fractional digits: {RULE}"
    return None


def _fraction_digits(amount: Decimal) -> int:
    """How many fractional digits a finite ``amount`` has, trailing zeros not counted."""
    _, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite, so not 'n', 'N' or 'F'
    if exponent >= 0 or amount.is_zero():
        return 0
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(exponent + trailing_zeros))


def text_problem(text: str) -> str | None:
    """Why ``text`` is not the decimal string of an amount in bounds; ``None`` if it is."""
    return spelling_problem(text) or amount_problem(Decimal(text))


def spelling_problem(text: str) -> str | None:
    """Why ``text`` is not spelled as a decimal string must be (its value aside: a caller that
    checked the value already, as ``scr.schema`` does, needs only this); ``None`` if it is."""
    match = _DECIMAL_TEXT.fullmatch(text)
    if match is not None:
        sign, integer, fraction, exponent_sign, exponent = match.groups()
        if integer == "0" and not (fraction or "").strip("0"):
            if _holds(text):
                return None
        elif not sign and _exponent_in_range(exponent_sign, exponent):
            return None
    return f"{text[:40]!r} is not an amount: {RULE}; {TEXT_RULE}"


def _holds(text: str) -> bool:
    """Whether a ``Decimal`` can hold ``text`` (its exponent within about ±10^18)."""
    try:
        Decimal(text)
    except decimal.InvalidOperation:
        return False
    return True


def _exponent_in_range(sign: str | None, digits: str | None) -> bool:
    if digits is None:
        return True
    significant = digits.lstrip("0")  # never int() a long string: Python refuses past 4300 digits
    if len(significant) > _EXPONENT_DIGITS:
        return False
    value = int(significant or "0")
    return MIN_EXPONENT <= (-value if sign == "-" else value) <= MAX_EXPONENT


def money_problem(value: object) -> str | None:
    """Why ``value``, as JSON carried it, is not an amount: a string is checked as written,
    a number (an ``int``, or a ``Decimal`` read exactly from its digits) by its value."""
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return f"must be {RULE}"
    return amount_problem(Decimal(value))


def read_amount(value: Any) -> Decimal | None:
    """An amount read back from stored JSON (a decimal string or a number), on the grid of
    ``USD_QUANTUM`` so that sums of amounts stay exact and small; ``None`` when ``value`` is
    not an amount in bounds (a ledger written before the bound may hold any)."""
    if isinstance(value, float):
        value = Decimal(repr(value))  # as the number was written, not its binary expansion
    if money_problem(value) is not None:
        return None
    return Decimal(value).quantize(USD_QUANTUM, context=_EXACT)


# ----- the same rule in JSON Schema ------------------------------------------------------------


def _mantissa(exponent: int) -> str:
    """Digits whose value times 10**exponent is in bounds: at most 9 - exponent integer
    digits, and 18 + exponent significant fractional digits (then only zeros)."""
    integer = f"(?:0|[1-9][0-9]{{0,{MAX_INTEGER_DIGITS - 1 - exponent}}})"
    fraction = f"(?:\\.(?=[0-9])[0-9]{{0,{USD_FRACTION_DIGITS + exponent}}}0*)?"
    return integer + fraction


def _exponent(value: int) -> str:
    """The exponent part that writes ``value`` (e or E, optional + and leading zeros)."""
    if value == 0:
        return "[eE][+-]?0+"
    sign = "-" if value < 0 else "\\+?"
    return f"[eE]{sign}0*{abs(value)}"


def _money_pattern() -> str:
    """The regular expression (ECMA-262 and Python alike) of the strings ``text_problem``
    accepts, exactly but for a zero whose exponent no decimal holds: one alternative per
    exponent, as no regular expression can relate an unbounded exponent to the digits it
    scales."""
    # A zero's exponent is bounded only by what a decimal holds, which no pattern states.
    zero = "-?0(?:\\.0+)?(?:[eE][+-]?[0-9]+)?"
    plain = _mantissa(0)
    scaled = "|".join(
        _mantissa(exponent) + _exponent(exponent)
        for exponent in range(MIN_EXPONENT, MAX_EXPONENT + 1)
    )
    # `$(?!\n)`: Python's `$` also matches before a final newline, ECMA-262's never does.
    return f"^(?:{zero}|{plain}|{scaled})$(?!\\n)"


MONEY_PATTERN = _money_pattern()

MONEY_JSON_SCHEMA: dict[str, Any] = {
    "type": ["number", "string"],
    "description": f"USD, exact: {RULE}; {TEXT_RULE}",
    "minimum": 0,
    "exclusiveMaximum": MAX_USD,
    # Exact for validators that read JSON numbers as decimals; binary floats may misjudge it.
    "multipleOf": float(USD_QUANTUM),
    "pattern": MONEY_PATTERN,
}
