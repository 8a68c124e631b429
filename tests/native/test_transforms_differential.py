"""The built-in transforms in the native core against the Python ones: the same bytes.

Events are generated as clients may send them (schema v1.2, validated by ``scr.schema``):
times with offsets and fractions, Unicode and control characters in every text, IPv4, IPv6,
IPv4-mapped and 6to4 addresses, optional fields absent, tags, token counts up to 2**53, and
models in and out of the price table (non-ASCII ones too, which the core leaves to Python).
Each native output must be what the worker's Python path sends for the event, byte for byte;
``Outputs`` must send the same with the core on and off (long messages and content left out
of what crosses for the transforms that never show them). Bounded: 100 examples a property,
40 through ``Outputs``.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import ModuleType
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scr import native
from scr.log.commit import Committed
from scr.route import transforms
from scr.route.outputs import TEXT_CROSSING_MAX_CHARS, TEXTLESS_TRANSFORMS, Outputs
from scr.route.prices import ModelPrice, PriceTable, default_prices
from scr.route.transforms import (
    BUILTIN_TRANSFORMS,
    EntryRef,
    encode_lines,
    encode_output,
    resolve_transform,
)
from scr.schema import Event, canonical_bytes, decode_accepted_event, read_stored_event
from support import make_event

EXAMPLES = 100
SENT_EXAMPLES = 40  # through Outputs, twice each: the core on and off
bounded = settings(max_examples=EXAMPLES, deadline=None)

MAX_TOKENS = 2**53
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2030, 12, 31, tzinfo=UTC)
MAX_OFFSET_MINUTES = 23 * 60 + 59
ID_ALPHABET = string.ascii_letters + string.digits + "_.:-"

# Text with what JSON must escape, what it must not (DEL, U+2028, non-ASCII) and quotes.
awkward = st.sampled_from(["\0", "\x1f", "\n\t\r\b\f", '"', "\\", "\x7f", "\u2028", "é", "😀", "/"])
texts = st.one_of(st.text(max_size=30), st.lists(awkward, max_size=6).map("".join))
names = texts.filter(lambda text: 1 <= len(text) <= 256 and "\0" not in text)  # NAME_PATTERN
ids = st.text(ID_ALPHABET, min_size=1, max_size=40)
# Longer than what crosses to the core with the text billing and analytics never show.
long_messages = st.integers(1, 3).map(lambda n: "é\n" * (TEXT_CROSSING_MAX_CHARS // 2 + n))
# Bundled names, their snapshots, other cases, unknown names and names only Python folds.
models = st.one_of(
    st.sampled_from(["gpt-4o", "GPT-4o", "gpt-4o-2024-08-06", "gpt-4o-mini", "gpt-4", "gpt-4omni",
                     "claude-opus-4-5@20250101", "o3:latest", "house-llm", "gpt-4o-ünï",
                     "gpt-4\u212a", "custom-model", "CUSTOM-model_v2"]),
    names,
)


def ipv4_mapped(address: Any) -> str:
    return f"::ffff:{address}"


def sixtofour(address: Any) -> str:
    return "2002:" + f"{int(address):08x}"[:4] + ":" + f"{int(address):08x}"[4:] + "::1"


addresses = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=6).map(lambda ip: ip.exploded.upper()),
    st.ip_addresses(v=4).map(ipv4_mapped),
    st.ip_addresses(v=4).map(sixtofour),
    st.sampled_from(["::", "::1", "2001:db8::", "0:0:1::", "::ffff:0.0.0.0", "2002::", "1:0:0:2::3"]),
)
# Amounts as a client writes them: a JSON number or a decimal string, up to 18 fractional digits.
amounts = st.decimals(0, 10**9 - 1, places=18).map(lambda amount: amount.normalize())
written_amounts = st.one_of(amounts.map(str), amounts.map(lambda a: msgspec.Raw(str(a).encode())),
                            st.sampled_from(["0", "7.5E-3", "0E-20", "-0", "1E+2"]))


@st.composite
def written_times(draw: st.DrawFn) -> tuple[datetime, str]:
    """How a client writes an instant (any offset, a fraction of 0 to 9 digits), and the
    instant it is read as."""
    instant = draw(st.datetimes(EARLIEST.replace(tzinfo=None), LATEST.replace(tzinfo=None),
                                timezones=st.just(UTC)))
    offset = timedelta(minutes=draw(st.integers(-MAX_OFFSET_MINUTES, MAX_OFFSET_MINUTES)))
    local = instant.astimezone(timezone(offset))
    digits = draw(st.integers(0, 9))
    fraction = f"{local.microsecond:06d}{draw(st.integers(0, 999)):03d}"[:digits]
    zone = "Z" if offset == timedelta(0) and draw(st.booleans()) else local.strftime("%z")
    zone = zone if zone == "Z" else f"{zone[:3]}:{zone[3:]}"
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + zone
    return msgspec.json.decode(msgspec.json.encode(text), type=datetime), text  # as read


def optional(draw: st.DrawFn, target: dict[str, Any], key: str, values: st.SearchStrategy[Any]) -> None:
    """Set ``key`` to a drawn value, or leave it out."""
    if draw(st.booleans()):
        target[key] = draw(values)


@st.composite
def events(draw: st.DrawFn) -> Event:
    """A valid v1.2 event, with every optional field present or absent."""
    start, start_text = draw(written_times())
    elapsed_ms = draw(st.integers(0, 10**8))
    end_instant = start + timedelta(milliseconds=elapsed_ms)
    end_text = end_instant.astimezone(timezone(timedelta(minutes=draw(
        st.integers(-MAX_OFFSET_MINUTES, MAX_OFFSET_MINUTES))))).isoformat()
    _, timestamp = draw(written_times())
    input_tokens, output_tokens = draw(st.integers(0, MAX_TOKENS // 2)), draw(st.integers(0, MAX_TOKENS // 2))
    usage: dict[str, Any] = {
        "input_tokens": input_tokens, "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens, "model": draw(models),
        "estimated_cost_usd": draw(written_amounts),
    }
    optional(draw, usage, "provider", names)
    for count in ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens"):
        optional(draw, usage, count, st.integers(0, MAX_TOKENS))
    outcome: dict[str, Any] = {"status": draw(st.sampled_from(["success", "error", "timeout",
                                                                "user_terminated"]))}
    optional(draw, outcome, "final_message", st.one_of(st.none(), texts, long_messages))
    optional(draw, outcome, "error_code", st.one_of(st.none(), texts))
    document: dict[str, Any] = {
        "event_type": "session.completed", "event_id": draw(ids), "timestamp": timestamp,
        "session": {"session_id": draw(names), "session_type": draw(st.sampled_from(
            ["chat", "api", "autonomous", "webhook", "realtime"])), "start_time": start_text,
            "end_time": end_text, "duration_ms": elapsed_ms},
        "user": {"user_id": draw(names), "organization_id": draw(ids),
                 "tier": draw(st.sampled_from(["free", "pro", "enterprise"]))},
        "usage": usage, "outcome": outcome,
    }
    if draw(st.booleans()):
        metadata: dict[str, Any] = {}
        optional(draw, metadata, "client_version", st.one_of(st.none(), texts))
        optional(draw, metadata, "source_ip", st.one_of(st.none(), addresses))
        optional(draw, metadata, "custom_tags", st.dictionaries(names.filter(lambda k: len(k) <= 128),
                                                                 texts, max_size=5))
        document["metadata"] = metadata
    if draw(st.booleans()):
        document["content"] = {"user_request": draw(texts)}
    return decode_accepted_event(msgspec.json.encode(document))


# Prices as a table may hold them: many digits, exponents, signed zeros, and (made in Python
# only, never loaded from a file) one off the 10**-18 grid, which the core leaves to Python.
prices = st.one_of(amounts, st.sampled_from([Decimal("-0"), Decimal("0E-20"), Decimal("1.5E-7"),
                                             Decimal("999999999.999999999999999999")]))


@st.composite
def price_tables(draw: st.DrawFn) -> PriceTable:
    """The bundled table, or one of generated prices (``custom-model`` among its names)."""
    if draw(st.booleans()):
        return default_prices()
    rows = {name: ModelPrice(draw(prices), draw(prices), draw(prices))
            for name in ("custom-model", "gpt-4o", "Other_Model", "zero")}
    rows["zero"] = ModelPrice(Decimal("-0"), Decimal("-0"), Decimal("-0"))
    if draw(st.booleans()):
        rows["gpt-4"] = ModelPrice(Decimal("1E-19"), Decimal(1), Decimal(1))
    return PriceTable(draw(st.sampled_from(["2026-11-01", "v\u2028\"2\""])), rows)


entry_refs = st.builds(EntryRef, st.integers(1, 2**62), st.integers(1, 2**62),
                       st.binary(min_size=32, max_size=32))
batches = st.lists(st.tuples(events(), entry_refs), min_size=1, max_size=4)


def by_python(name: str, table: PriceTable, batch: list[tuple[Event, EntryRef]]) -> list[bytes]:
    """What the worker's Python path sends for each event."""
    shape = resolve_transform(name, table)
    return [encode_output(shape(event, entry)) for event, entry in batch]


def as_ledgered(events: list[Event]) -> bytes:
    """The events as JSON lines of their canonical bytes (keys sorted), as the ledger holds them."""
    return b"".join(canonical_bytes(event) + b"\n" for event in events)


CROSSINGS = {"encoded": encode_lines, "ledgered": as_ledgered}


def arguments(
    prices: Any, name: str, table: PriceTable, batch: list[tuple[Event, EntryRef]],
    crossing: str = "encoded",
) -> tuple[Any, ...]:
    """``transform_events``'s arguments for a batch; ``prices`` is the ``Prices`` class of the
    core or of the reference; ``crossing`` how the events are written."""
    return (name, prices(*table.plain) if name == "billing_v1" else None,
            CROSSINGS[crossing]([event for event, _ in batch]), [entry.seq for _, entry in batch],
            [entry.tenant_seq for _, entry in batch], [entry.entry_hash for _, entry in batch])


def left_to_python(name: str, table: PriceTable, event: Event) -> bool:
    """Whether the core may leave this event to Python: only ``billing_v1``, for a model name
    only Python's case folding looks up, or a price off the 10**-18 grid."""
    if name != "billing_v1":
        return False
    price = table.price(event.usage.model)
    off_grid = price is not None and any(
        amount != amount.quantize(Decimal("1E-18")) for amount in
        (price.input_per_mtok, price.output_per_mtok, price.cached_input_per_mtok))
    return not event.usage.model.isascii() or off_grid


@pytest.mark.parametrize("crossing", CROSSINGS)
@pytest.mark.parametrize("name", BUILTIN_TRANSFORMS)
@bounded
@given(price_tables(), batches)
def test_each_native_output_is_the_python_one(
    core: ModuleType, name: str, crossing: str, table: PriceTable, batch: list[tuple[Event, EntryRef]]
) -> None:
    if crossing == "ledgered":  # the events as a reader decodes them from the ledger (tags sorted)
        batch = [(read_stored_event(canonical_bytes(event)), entry) for event, entry in batch]
    expected = by_python(name, table, batch)
    reference = transforms.transform_events(*arguments(transforms.Prices, name, table, batch, crossing))
    assert reference == expected
    outputs = core.transform_events(*arguments(core.Prices, name, table, batch, crossing))
    for output, wanted, (event, _) in zip(outputs, expected, batch, strict=True):
        if output is None:
            assert left_to_python(name, table, event), wanted
        else:
            assert output == wanted


@st.composite
def committed(draw: st.DrawFn) -> list[Committed]:
    """Committed events, as a destination reads them from the ledger's tail: decoded (with
    their ledgered line or without), or left undecoded with their line (``from_store``)."""
    entries = []
    for event, entry in draw(batches):
        line = canonical_bytes(event)
        kept, decoded = {"decoded": (b"", event), "decoded with its line": (line, read_stored_event(line)),
                         "undecoded": (line, None)}[draw(st.sampled_from(READ_AS))]
        entries.append(Committed(entry.seq, event.tenant, entry.tenant_seq, "SESSION_COMPLETION",
                                 entry.entry_hash, decoded, line=kept, event_id=event.event_id,
                                 session_id=event.session.session_id))
    return entries


READ_AS = ("decoded", "decoded with its line", "undecoded")


class FixedPrices:
    """A price source whose table never changes."""

    def __init__(self, table: PriceTable) -> None:
        self.table = table

    def current(self) -> PriceTable:
        return self.table


def keep(event: Event) -> Event:
    """Every field shown, by a function (as ``personal_fields: false`` shows events: each
    one given to it)."""
    return event


@pytest.mark.parametrize("shown", [None, keep])
@pytest.mark.parametrize("name", BUILTIN_TRANSFORMS)
@settings(max_examples=SENT_EXAMPLES, deadline=None)
@given(price_tables(), committed())
def test_a_destination_sends_the_same_with_the_core_on_and_off(
    core: ModuleType, name: str, shown: Any, table: PriceTable, entries: list[Committed]
) -> None:
    sent = {}
    with pytest.MonkeyPatch.context() as patch:
        for on in (True, False):
            patch.setattr(native, "NATIVE", on)
            if on:
                patch.setattr(native, "transform_events", core.transform_events)
            outputs = Outputs(name, FixedPrices(table), shown)
            assert (outputs.native_transform is not None) == on
            sent[on] = outputs.of(entries)
    assert sent[True] == sent[False]


@pytest.mark.parametrize("address", [
    "::ffff:01.2.3.4", "1.2.3.4 ", "1.2.3.256", "::1:2:3:4:5:6:7", "1:2:3:4:5:6:7::", "1::2::3",
    "::FFFF:1.2.3.4", "fe80::1%eth0", "::ffff:1.2.3.4%1", "1:2:3:4:5:6:1.2.3.4", "::1.2.3.4",
    "2002:0102:0304::", "00000::1", "1.2.3.4/24", "١.٢.٣.٤", "1.02.3.4", "not an address",
])
def test_an_address_no_event_may_carry_now_is_shaped_as_python_shapes_it(
    core: ModuleType, address: str
) -> None:
    """A ledger written before today's rules may hold any text as a source IP."""
    sent = decode_accepted_event(msgspec.json.encode(make_event()))
    event = msgspec.structs.replace(sent, metadata=msgspec.structs.replace(sent.metadata, source_ip=address))
    batch = [(event, EntryRef(1, 1, b"h"))]
    output = core.transform_events(*arguments(core.Prices, "analytics_v2", default_prices(), batch))[0]
    assert output in (None, *by_python("analytics_v2", default_prices(), batch))


@pytest.mark.parametrize("name", sorted(TEXTLESS_TRANSFORMS))
@bounded
@given(price_tables(), batches)
def test_events_read_from_their_ledgered_bytes_are_shaped_as_encoded_ones(
    core: ModuleType, name: str, table: PriceTable, batch: list[tuple[Event, EntryRef]]
) -> None:
    """A reader hands the transforms that read fields each unsealed event's canonical bytes as
    ledgered (keys sorted), not the event encoded again: both give every output byte for byte."""
    # each event as a reader reads it back from the ledger (its tags in the ledgered order)
    batch = [(msgspec.json.decode(canonical_bytes(event), type=Event), ref) for event, ref in batch]
    encoded = arguments(core.Prices, name, table, batch)
    ledgered = b"".join(canonical_bytes(event) + b"\n" for event, _ in batch)
    assert core.transform_events(*encoded[:2], ledgered, *encoded[3:]) == core.transform_events(*encoded)
    reference = arguments(transforms.Prices, name, table, batch)
    expected = by_python(name, table, batch)
    assert transforms.transform_events(*reference[:2], ledgered, *reference[3:]) == expected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"transform": "mypkg:shape"}, "is not a built-in transform"),
        ({"prices": None}, "billing_v1 needs a price table"),
        ({"events": b"{}\n\n"}, "not JSON lines"),
        ({"seqs": []}, "differ"),
        ({"seqs": [], "tenant_seqs": [], "entry_hashes": []}, "differ"),
    ],
)
def test_a_batch_that_cannot_be_shaped_is_refused(
    core: ModuleType, change: dict[str, Any], message: str
) -> None:
    event = decode_accepted_event(msgspec.json.encode(make_event()))
    for transform_events, prices in ((core.transform_events, core.Prices),
                                     (transforms.transform_events, transforms.Prices)):
        call = dict(zip(("transform", "prices", "events", "seqs", "tenant_seqs", "entry_hashes"),
                        arguments(prices, "billing_v1", default_prices(), [(event, EntryRef(1, 1, b"h"))]),
                        strict=True))
        call.update(change)
        with pytest.raises(ValueError, match=message):
            transform_events(*call.values())
