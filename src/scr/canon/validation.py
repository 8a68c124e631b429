"""From caller input to validated Structs, with errors that name the JSON path.

The Struct declarations are the validation; this module only turns msgspec's errors into
``BadRequest`` with a located ``Detail``, the same way for Python callers and HTTP bodies.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import msgspec

from scr.errors import BadRequest, Detail
from scr.jsontext import check_json_text
from scr.schema import error_location

T = TypeVar("T")
Locate = Callable[[msgspec.ValidationError | msgspec.DecodeError], Detail]
_PATH = re.compile(r" - at `(\$[^`]*)`$")
_exact = msgspec.json.Decoder(float_hook=Decimal)


def error_detail(error: msgspec.ValidationError | msgspec.DecodeError) -> Detail:
    """A msgspec error as a (JSON path, message) detail."""
    text = str(error)
    match = _PATH.search(text)
    if match is None:
        return Detail("$", text)
    return Detail(match.group(1), text[: match.start()])


def field_detail(error: msgspec.ValidationError | msgspec.DecodeError) -> Detail:
    """``error_detail``, with a missing or unknown field's path naming that field."""
    return Detail(*error_location(error))


def validated(kind: type[T], value: Any, what: str) -> T:
    """``value`` (a Struct of ``kind`` or plain JSON values) validated as ``kind``.

    A Struct built in Python skips its constraints, so it is checked through its builtins.
    """
    raw = msgspec.to_builtins(value) if isinstance(value, msgspec.Struct) else value
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as error:
        detail = error_detail(error)
        raise BadRequest(f"invalid {what}: {detail.message}", [detail]) from None


def decode_json(kind: type[T], body: bytes, what: str, locate: Locate = error_detail) -> T:
    """A JSON body decoded and validated as ``kind`` (its text checked first: UTF-8, depth);
    ``locate`` turns an error into its detail."""
    check_json_text(body)
    try:
        return msgspec.json.decode(body, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        detail = locate(error)
        raise BadRequest(f"invalid {what}: {detail.message}", [detail]) from None


def decode_exact(body: bytes, what: str) -> Any:
    """A JSON body as plain values for ``validated``, every number with a fraction or an
    exponent read as an exact ``Decimal``: money keeps its digits, and a decimal string its
    spelling, until the money rule (``scr.money``) has seen them. The text is checked first
    (UTF-8, depth), as ``decode_json`` does."""
    check_json_text(body)
    try:
        return _exact.decode(body)
    except msgspec.DecodeError as error:
        detail = error_detail(error)
        raise BadRequest(f"invalid {what}: {detail.message}", [detail]) from None
