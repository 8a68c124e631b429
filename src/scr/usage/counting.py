"""What each event of a group adds to the usage counters: the reference of the native core's
``count_usage`` (``scr.native``), which ``scr.usage.aggregate.count_group`` calls.

The entries cross as JSON lines (each a SESSION_COMPLETION entry as stored), with their
tenants beside them, and the answer is plain data: each key with its 13 counters (in the
order first seen), the first event of each (tenant, session id), and the events whose cost
only Python decides (never any here; the core leaves it those of a model name only Python's
case folding looks up, or of a price off its 10**-18 grid, which ``count_group`` costs).
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import msgspec

from scr.route.transforms import Prices
from scr.schema import Usage

COST_PLACES = 10  # billing_v1's cost_usd: 10 decimal places
ESTIMATE_PLACES = 18  # scr.money: an amount has at most 18 decimals
SECONDS_PER_MINUTE = 60

# (tenant, minute, model, user_id, session_type, status, tier, provider)
UsageKey = tuple[str, int, str, str, str, str, str, str]
# keys, their counters, (tenant, session id, key position, duration_ms) of each session's
# first event, (entry position, key position) of each event whose cost Python decides
Counted = tuple[list[UsageKey], list[list[int]], list[tuple[str, str, int, int]], list[tuple[int, int]]]

# positions in a counter list
COUNTERS = 13
EVENTS, SESSIONS, INPUT, OUTPUT, TOTAL, CACHE_READ, CACHE_WRITE, REASONING, DURATION, \
    UNPRICED, ERRORS, COST, ESTIMATE = range(COUNTERS)


class _Session(msgspec.Struct, gc=False):
    session_id: str
    session_type: str
    duration_ms: int


class _User(msgspec.Struct, gc=False):
    user_id: str
    tier: str


class _Outcome(msgspec.Struct, gc=False):
    status: str


class CountedEvent(msgspec.Struct, gc=False):
    """The part of an event that usage counts."""

    timestamp: datetime
    session: _Session
    user: _User
    usage: Usage
    outcome: _Outcome


class _CountedEntry(msgspec.Struct, gc=False):
    payload: CountedEvent


_counted_entry = msgspec.json.Decoder(_CountedEntry)


def counted_event(entry: bytes) -> CountedEvent:
    """The counted part of one stored SESSION_COMPLETION entry."""
    return _counted_entry.decode(entry).payload


# Decimal's default context keeps 28 digits: a cost of 2**53 tokens at a price near 10**9 USD
# has 29 and more, and sums of many have more still. Exact for every sum of usage.
EXACT = decimal.Context(prec=80)


def scaled(amount: Decimal, places: int) -> int:
    """An exact decimal with at most ``places`` decimals as an integer of 10^-places."""
    return int(amount.scaleb(places, EXACT))


def unscaled(amount: int, places: int) -> str:
    """The decimal text of an integer of 10^-places (exact, no exponent)."""
    return format(Decimal(amount).scaleb(-places, EXACT), "f")


def add_cost(counters: list[int], cost: Decimal | None) -> None:
    """Add an event's ``cost_usd`` (``None``: its model is not in the price table)."""
    if cost is None:
        counters[UNPRICED] += 1
    else:
        counters[COST] += scaled(cost, COST_PLACES)


def count_usage(prices: Prices, tenants: Sequence[str], entries: bytes) -> Counted:
    """What the entries (JSON lines), entry ``i`` of tenant ``tenants[i]``, add to the
    counters, costed with ``prices``. Raise ``ValueError`` for lines that are not such
    entries, or lengths that differ."""
    try:
        decoded = _counted_entry.decode_lines(entries)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise ValueError(f"the entries are not JSON lines of events: {error}") from None
    if len(decoded) != len(tenants):
        raise ValueError(f"{len(decoded)} entries but {len(tenants)} tenants: the lengths differ")
    positions: dict[UsageKey, int] = {}
    keys: list[UsageKey] = []
    counters: list[list[int]] = []
    firsts: list[tuple[str, str, int, int]] = []
    seen: set[tuple[str, str]] = set()
    cost_of = prices.table.cost
    for entry, tenant in zip(decoded, tenants, strict=True):
        event = entry.payload
        usage, session = event.usage, event.session
        key: UsageKey = (
            tenant, int(event.timestamp.timestamp()) // SECONDS_PER_MINUTE, usage.model,
            event.user.user_id, session.session_type, event.outcome.status, event.user.tier,
            usage.provider or "",
        )
        position = positions.get(key)
        if position is None:
            position = positions[key] = len(keys)
            keys.append(key)
            counters.append([0] * COUNTERS)
        c = counters[position]
        c[EVENTS] += 1
        c[INPUT] += usage.input_tokens
        c[OUTPUT] += usage.output_tokens
        c[TOTAL] += usage.total_tokens
        c[CACHE_READ] += usage.cache_read_tokens or 0
        c[CACHE_WRITE] += usage.cache_write_tokens or 0
        c[REASONING] += usage.reasoning_tokens or 0
        c[DURATION] += session.duration_ms
        if event.outcome.status != "success":
            c[ERRORS] += 1
        add_cost(c, cost_of(usage))
        c[ESTIMATE] += scaled(usage.estimated_cost_usd, ESTIMATE_PLACES)
        if (tenant, session.session_id) not in seen:
            seen.add((tenant, session.session_id))
            firsts.append((tenant, session.session_id, position, session.duration_ms))
    return keys, counters, firsts, []
