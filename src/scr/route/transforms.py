"""Transforms: the shape each destination wants an event in.

A transform is a pure function ``(event, entry_ref) -> dict`` whose result is JSON-compatible
(strings, integers, booleans, ``None``, lists and dicts). Every output carries ``event_id``,
so a receiver of a batch dedupes per item. Money is a decimal string, never a float; times
are RFC 3339 strings.

``billing_v1`` — what a billing system reconciles; no message text, no IP, no tags::

    {schema: "billing_v1", event_id, tenant_id, user_id, session_id, session_type, model,
     provider, input_tokens, output_tokens, total_tokens, cache_read_tokens,
     cache_write_tokens, reasoning_tokens, cost_usd, price_table_version, model_priced,
     estimated_cost_usd, outcome_status, start_time, end_time, timestamp}

  Token counts are integers; a count the client did not report is ``0`` (which is how the
  cost is computed). ``cost_usd`` is computed by the server from the price table (see
  ``scr.route.prices``) as a string with 10 decimal places, or ``null`` when the model is
  unknown (then ``model_priced`` is false). ``estimated_cost_usd`` is the client's figure,
  digit for digit. ``provider`` is ``null`` when the client did not send one. Times are
  normalized to UTC (``Z``).

``analytics_v2`` — one flat row for an analytics pipeline; no message text, no full IP::

    {schema: "analytics_v2", event_id, tenant_id, user_id, tier, session_id, session_type,
     start_time, end_time, duration_ms, model, provider, input_tokens, output_tokens,
     total_tokens, cache_read_tokens, reasoning_tokens, estimated_cost_usd, outcome_status,
     error_code, client_version, source_ip_prefix, tag_<key>...}

  Optional fields the client did not send are ``null``. ``source_ip_prefix`` is the network
  of the source IP: IPv4 truncated to /24 (``"203.0.113.0/24"``), IPv6 to /48
  (``"2001:db8:85a3::/48"``); an IPv6 address that embeds an IPv4 one (IPv4-mapped
  ``::ffff:a.b.c.d`` or 6to4 ``2002::/16``) is reduced to that IPv4 address's /24, because
  its /48 would still hold the whole IPv4 address. Each custom tag becomes a column
  ``tag_<key>``. Times are normalized to UTC (``Z``).

``audit_v1`` — the whole event with the ledger facts that make it verifiable::

    {schema: "audit_v1", event_id, ledger_seq, tenant_seq, entry_hash (lower-case hex),
     event: the whole event as a JSON-compatible dict}

``raw_v1`` — the whole event as a JSON-compatible dict, as received after normalization
(times as sent, including their offset; money as the client's decimal string; absent
optional fields omitted).

Each output is sent as ``encode_output`` writes it. ``transform_events`` shapes a batch of
events (JSON lines) with a built-in transform: the reference of the native core's
function of the same name (``scr.native``), which the destinations use when the core is on
(``scr.route.outputs``).

Custom — a destination's ``transform`` may be ``{python: "module:function"}`` (or the string
``"module:function"``). The function is imported once, when the destination is set up, and
called as ``function(event_dict, entry_ref)`` with the event as ``raw_v1`` gives it and the
``EntryRef``; it returns a dict. That dict must carry the event's own ``event_id``: scr does
not add it, and a result that is not a dict or lacks the right ``event_id`` raises
``ValueError`` naming the transform (the delivery is not sent). An unknown transform name or a
custom import that fails raises ``scr.errors.ConfigError``.
"""

from __future__ import annotations

import importlib
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

from scr.errors import ConfigError, Detail
from scr.route.price_file import PriceSource
from scr.route.prices import PriceTable, default_prices, format_usd
from scr.schema import Event

IPV4_ANALYTICS_PREFIX_BITS = 24
IPV6_ANALYTICS_PREFIX_BITS = 48
TAG_COLUMN_PREFIX = "tag_"


# How every output is written: money as decimal strings, never floats.
_output_encoder = msgspec.json.Encoder(decimal_format="string")
encode_output = _output_encoder.encode
# Events as JSON lines, one a line, each as ``encode_output`` writes it (``transform_events``).
encode_lines = _output_encoder.encode_lines
_event_decoder = msgspec.json.Decoder(Event)


def json_lines(lines: Sequence[bytes]) -> bytes:
    """Lines of JSON (without their newlines) as the core reads them: each line ended by a
    newline, in one join (no line copied on its own first)."""
    return b"\n".join([*lines, b""])


@dataclass(frozen=True, slots=True)
class EntryRef:
    """The ledger facts of the entry an event was committed as."""

    seq: int
    tenant_seq: int
    entry_hash: bytes


Transform = Callable[[Event, EntryRef], dict[str, Any]]
CustomTransform = Callable[[dict[str, Any], EntryRef], Any]


class PythonTransformLike(Protocol):
    """A config object naming a custom transform as ``module:function``."""

    @property
    def python(self) -> str: ...


def event_as_dict(event: Event) -> dict[str, Any]:
    """The whole event as a JSON-compatible dict: decimals as strings, times RFC 3339."""
    builtins: dict[str, Any] = msgspec.to_builtins(event)
    return builtins


def raw_v1(event: Event, entry: EntryRef) -> dict[str, Any]:
    """The whole event, as received (normalized)."""
    return event_as_dict(event)


def audit_v1(event: Event, entry: EntryRef) -> dict[str, Any]:
    """The whole event and the ledger position and hash it was committed with."""
    return {
        "schema": "audit_v1",
        "event_id": event.event_id,
        "ledger_seq": entry.seq,
        "tenant_seq": entry.tenant_seq,
        "entry_hash": entry.entry_hash.hex(),
        "event": event_as_dict(event),
    }


def billing_transform(source: PriceSource) -> Transform:
    """``billing_v1`` costed with the table ``source`` has in force at each event."""

    def billing_v1(event: Event, entry: EntryRef) -> dict[str, Any]:
        usage, session = event.usage, event.session
        prices = source.current()
        cost = prices.cost(usage)
        return {
            "schema": "billing_v1",
            "event_id": event.event_id,
            "tenant_id": event.user.organization_id,
            "user_id": event.user.user_id,
            "session_id": session.session_id,
            "session_type": session.session_type,
            "model": usage.model,
            "provider": usage.provider,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
            "cache_read_tokens": usage.cache_read_tokens or 0,
            "cache_write_tokens": usage.cache_write_tokens or 0,
            "reasoning_tokens": usage.reasoning_tokens or 0,
            "cost_usd": None if cost is None else format_usd(cost),
            "price_table_version": prices.version,
            "model_priced": cost is not None,
            "estimated_cost_usd": str(usage.estimated_cost_usd),
            "outcome_status": event.outcome.status,
            "start_time": rfc3339_utc(session.start_time),
            "end_time": rfc3339_utc(session.end_time),
            "timestamp": rfc3339_utc(event.timestamp),
        }

    return billing_v1


def analytics_v2(event: Event, entry: EntryRef) -> dict[str, Any]:
    """One flat analytics row: no message text, the source IP reduced to its network."""
    usage, session, metadata = event.usage, event.session, event.metadata
    row: dict[str, Any] = {
        "schema": "analytics_v2",
        "event_id": event.event_id,
        "tenant_id": event.user.organization_id,
        "user_id": event.user.user_id,
        "tier": event.user.tier,
        "session_id": session.session_id,
        "session_type": session.session_type,
        "start_time": rfc3339_utc(session.start_time),
        "end_time": rfc3339_utc(session.end_time),
        "duration_ms": session.duration_ms,
        "model": usage.model,
        "provider": usage.provider,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "estimated_cost_usd": str(usage.estimated_cost_usd),
        "outcome_status": event.outcome.status,
        "error_code": event.outcome.error_code,
        "client_version": metadata.client_version,
        "source_ip_prefix": None if metadata.source_ip is None else ip_prefix(metadata.source_ip),
    }
    for key, value in metadata.custom_tags.items():
        row[TAG_COLUMN_PREFIX + key] = value
    return row


def ip_prefix(address: str) -> str | None:
    """The analytics network of an IP address (/24 or /48); ``None`` if it is not an address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None:
            # From the integer, so a zone index ("%eth0") never reaches the output.
            return str(ipaddress.IPv6Network((int(ip), IPV6_ANALYTICS_PREFIX_BITS), strict=False))
        ip = embedded
    return str(ipaddress.IPv4Network((int(ip), IPV4_ANALYTICS_PREFIX_BITS), strict=False))


def rfc3339_utc(moment: datetime) -> str:
    """An aware datetime as RFC 3339 in UTC, ``Z``-suffixed."""
    text: str = msgspec.to_builtins(moment.astimezone(UTC))
    return text


BUILTIN_TRANSFORMS = ("billing_v1", "analytics_v2", "audit_v1", "raw_v1")


def resolve_transform(
    spec: str | PythonTransformLike, prices: PriceSource | None = None
) -> Transform:
    """The transform a destination names; raise ``ConfigError`` if it cannot be used.

    ``spec`` is a built-in name, ``"module:function"``, or an object whose ``python``
    attribute is ``"module:function"``. ``prices`` costs ``billing_v1`` (default: the bundled
    table; the server passes its data folder's ``LivePrices``).
    """
    if not isinstance(spec, str):
        return _custom(spec.python)
    if spec == "billing_v1":
        return billing_transform(prices or default_prices())
    if spec == "analytics_v2":
        return analytics_v2
    if spec == "audit_v1":
        return audit_v1
    if spec == "raw_v1":
        return raw_v1
    if ":" in spec:
        return _custom(spec)
    raise ConfigError(
        f"unknown transform {spec!r}",
        [Detail("transform", f"use one of {', '.join(BUILTIN_TRANSFORMS)} or {{python: module:function}}")],
    )


class Prices:
    """A price table read once for every ``transform_events`` call that costs with it, from
    ``PriceTable.plain``'s version and rows (the reference of ``scr._core.Prices``)."""

    def __init__(self, version: str, rows: list[tuple[str, str, str, str]]) -> None:
        self.table = PriceTable.from_plain((version, rows))


def transform_events(
    transform: str, prices: Prices | None, events: bytes, seqs: Sequence[int],
    tenant_seqs: Sequence[int], entry_hashes: Sequence[bytes],
) -> list[bytes | None]:
    """Each event's output of the built-in ``transform``, as ``encode_output`` writes it.

    ``events`` are JSON lines, one event a line (as ``encode_lines`` writes them, or as the
    ledger holds them: the same with their keys sorted); event ``i``
    was committed at ``seqs[i]``, ``tenant_seqs[i]`` with ``entry_hashes[i]``; ``billing_v1``
    costs them with ``prices``. The reference of the native
    core's function, which may answer ``None`` for an event it leaves to this one; this one
    never does. Raise ``ValueError`` for a transform that is not built in, a billing batch
    without prices or lengths that differ.
    """
    if transform not in BUILTIN_TRANSFORMS:
        raise ValueError(f"{transform!r} is not a built-in transform")
    if transform == "billing_v1" and prices is None:
        raise ValueError("billing_v1 needs a price table")
    shape = resolve_transform(transform, None if prices is None else prices.table)
    try:
        decoded = _event_decoder.decode_lines(events)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise ValueError(f"the events are not JSON lines of events: {error}") from None
    if not len(decoded) == len(seqs) == len(tenant_seqs) == len(entry_hashes):
        raise ValueError("events, seqs, tenant_seqs and entry_hashes differ in length")
    return [
        encode_output(shape(event, EntryRef(seq, tenant_seq, entry_hash)))
        for event, seq, tenant_seq, entry_hash in zip(decoded, seqs, tenant_seqs, entry_hashes, strict=True)
    ]


def _custom(target: str) -> Transform:
    function = _import(target)

    def custom(event: Event, entry: EntryRef) -> dict[str, Any]:
        output = function(event_as_dict(event), entry)
        if not isinstance(output, dict):
            raise ValueError(
                f"transform {target} returned {type(output).__name__}, not a dict"
            )
        if output.get("event_id") != event.event_id:
            raise ValueError(
                f"transform {target} must return the event's event_id ({event.event_id!r}); "
                f"got {output.get('event_id')!r}"
            )
        return output

    return custom


def _import(target: str) -> CustomTransform:
    module_name, _, function_name = target.partition(":")
    if not module_name or not function_name:
        raise ConfigError(
            f"custom transform {target!r} must be written module:function",
            [Detail("transform.python", "expected module:function, e.g. mypkg.shapes:to_crm")],
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # any failure of the user's module is a config problem
        raise ConfigError(
            f"custom transform {target!r}: cannot import module {module_name!r}: "
            f"{type(error).__name__}: {error}",
            [Detail("transform.python", f"cannot import {module_name}")],
        ) from error
    function = getattr(module, function_name, None)
    if function is None or not callable(function):
        raise ConfigError(
            f"custom transform {target!r}: module {module_name!r} has no function {function_name!r}",
            [Detail("transform.python", f"{function_name} is not a callable in {module_name}")],
        )
    resolved: CustomTransform = function
    return resolved
