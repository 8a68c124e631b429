"""The usage counting in the native core against its Python reference: the same counters.

Events are generated as in ``test_transforms_differential`` (times with offsets, amounts as
numbers and strings, optional fields absent, models in and out of the price table, names
only Python case-folds), stored as the ledger stores them, in groups of a few tenants and
sessions. Bounded: 100 examples a property.
"""

from __future__ import annotations

import decimal
import functools
from decimal import Decimal
from types import ModuleType

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native.test_transforms_differential import events, left_to_python, price_tables
from scr import native
from scr.log.entry import Kind, LedgerEntry, Provenance, entry_bytes
from scr.route import transforms
from scr.route.prices import ModelPrice, PriceTable
from scr.schema import Event, canonical_bytes, decode_accepted_event
from scr.store.records import StoredEntry
from scr.usage import aggregate, counting
from support import make_event

bounded = settings(max_examples=100, deadline=None)
TENANTS = ("org_a", "org_b")
SESSIONS = ("s_1", "s_2", "s_3")


@st.composite
def group(draw: st.DrawFn) -> list[tuple[str, Event]]:
    """Events of a few tenants and sessions, each with its tenant."""
    drawn = []
    for event in draw(st.lists(events(), min_size=1, max_size=6)):
        session = msgspec.structs.replace(event.session, session_id=draw(st.sampled_from(SESSIONS)))
        drawn.append((draw(st.sampled_from(TENANTS)), msgspec.structs.replace(event, session=session)))
    return drawn


def stored(seq: int, tenant: str, event: Event) -> bytes:
    """The event's entry as the ledger stores it."""
    return entry_bytes(LedgerEntry(seq, "2026-12-07T00:00:00.000000Z", "key:test", tenant,
                                   Kind.SESSION_COMPLETION.value, msgspec.Raw(canonical_bytes(event)),
                                   Provenance("http", event.event_id, "key:test")))


@bounded
@given(price_tables(), group())
def test_the_core_counts_what_the_reference_counts(
    core: ModuleType, table: PriceTable, events: list[tuple[str, Event]]
) -> None:
    tenants = [tenant for tenant, _ in events]
    lines = b"".join(stored(seq, tenant, event) + b"\n" for seq, (tenant, event) in enumerate(events, 1))
    keys, counters, firsts, undecided = core.count_usage(core.Prices(*table.plain), tenants, lines)
    expected = counting.count_usage(transforms.Prices(*table.plain), tenants, lines)
    assert expected[3] == []  # the reference decides every cost
    for index, position in undecided:  # left to Python: only what its case folding or grid decides
        event = events[index][1]
        assert left_to_python("billing_v1", table, event)
        counting.add_cost(counters[position], table.cost(event.usage))
    assert (keys, counters, firsts) == expected[:3]


@bounded
@given(price_tables(), group())
def test_a_group_adds_up_the_same_with_the_core_on_and_off(
    core: ModuleType, table: PriceTable, events: list[tuple[str, Event]]
) -> None:
    rows = [StoredEntry(seq, tenant, seq, Kind.SESSION_COMPLETION.value, "", event.event_id,
                        stored(seq, tenant, event), b"") for seq, (tenant, event) in enumerate(events, 1)]
    counted = {}
    with pytest.MonkeyPatch.context() as patch:
        for on in (True, False):
            patch.setattr(native, "count_usage", core.count_usage if on else counting.count_usage)
            patch.setattr(native, "Prices", core.Prices if on else transforms.Prices)
            patch.setattr(aggregate, "_read", functools.lru_cache(maxsize=2)(aggregate._read.__wrapped__))
            group = aggregate.count_group(rows, table)
            counted[on] = (group.counters, group.first_in_group)
    assert counted[True] == counted[False]


def test_a_group_the_core_cannot_read_is_counted_in_python(
    core: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry whose amount the core does not read (finer than an event may carry: a ledger
    written by hand, say) is left, with its group, to the reference: the counts are Python's,
    and the log says so."""
    event = decode_accepted_event(msgspec.json.encode(make_event("evt_1")))
    written = f'"estimated_cost_usd":"{event.usage.estimated_cost_usd}"'.encode()
    entry = stored(1, "org_a", event).replace(written, b'"estimated_cost_usd":"1E-40"')
    assert entry != stored(1, "org_a", event)
    rows = [StoredEntry(1, "org_a", 1, Kind.SESSION_COMPLETION.value, "", "evt_1", entry, b"")]
    table = PriceTable.load()
    with pytest.raises(ValueError, match="entry 0 is not an event usage can count"):
        core.count_usage(core.Prices(*table.plain), ["org_a"], entry + b"\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(native, "count_usage", core.count_usage)
        patch.setattr(native, "Prices", core.Prices)
        patch.setattr(aggregate, "_read", functools.lru_cache(maxsize=2)(aggregate._read.__wrapped__))
        group = aggregate.count_group(rows, table)
    assert "usage counted in Python" in caplog.text
    [counters] = group.counters.values()
    assert counters[counting.EVENTS] == 1 and counters[counting.ESTIMATE] == 0


@pytest.mark.parametrize("on", [True, False])
def test_costs_past_28_digits_are_counted_exactly(core: ModuleType, on: bool) -> None:
    """Decimal's default context keeps 28 digits; 2**52 tokens at a price near 10**9 USD cost
    29 digits of 10^-10 USD, as does the two events' sum: kept exactly either way."""
    price = Decimal("999999999.999999999999999999")
    table = PriceTable("huge", {"huge": ModelPrice(Decimal(0), price, Decimal(0))})
    tokens = 2**52
    made = [decode_accepted_event(msgspec.json.encode(make_event(
        f"evt_{n}", **{"usage.model": "huge", "usage.input_tokens": 0, "usage.output_tokens": tokens + n,
                      "usage.total_tokens": tokens + n}))) for n in range(2)]
    rows = [StoredEntry(seq, "org_a", seq, Kind.SESSION_COMPLETION.value, "", event.event_id,
                        stored(seq, "org_a", event), b"") for seq, event in enumerate(made, 1)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(native, "count_usage", core.count_usage if on else counting.count_usage)
        patch.setattr(native, "Prices", core.Prices if on else transforms.Prices)
        patch.setattr(aggregate, "_read", functools.lru_cache(maxsize=2)(aggregate._read.__wrapped__))
        [row] = aggregate.count_group(rows, table).rows()
    with decimal.localcontext(decimal.Context(prec=80)):
        exact = sum(((tokens + n) * price / 10**6).quantize(Decimal("1E-10"), decimal.ROUND_HALF_EVEN)
                    for n in range(2))
    assert len(exact.as_tuple().digits) == 29
    assert row.cost_usd == str(exact)
