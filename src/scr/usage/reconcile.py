"""Reconciliation: a provider's export compared per (day, model) with the ledger's events.

``ours`` comes from the usage aggregates (``Store.usage_sums`` by UTC day, model and
provider; cost as ``billing_v1`` priced each event), restricted to the export's providers
(``usage.provider``, compared case-insensitively). Each (day, model) that does not agree
exactly is a difference with the first explanation that applies: ``missing_in_ledger``,
``missing_at_provider``, ``token_mismatch``, ``price_mismatch``, ``rounding`` (the costs
differ by less than the export's precision: one unit of the last decimal of each amount it
wrote for the pair). A field the export does
not carry (OpenAI's costs have no tokens, its usage no money) is ``null`` and not compared.

The delivery section counts the events compared (``committed``: those the aggregates hold,
up to the usage reader's cursor) and, per destination, how many are dead or still pending,
the rest being delivered. It never scans the ledger: only the destination's delivery rows
that are not delivered (``Store.list_deliveries``: an entry delivered at once has no row)
and the entries past its cursor (pending) are read and checked, so it costs what is
undelivered, not what the month holds.
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, Inexact, Overflow
from typing import Any

import msgspec

from scr.log.entry import Kind
from scr.store.protocol import Store
from scr.store.records import USAGE_COUNT_COLUMNS, USAGE_CURSOR, StoredEntry
from scr.usage.exports import Charge

MINUTES_PER_DAY = 24 * 60
SECONDS_PER_MINUTE = 60
EXPLANATIONS = ("missing_in_ledger", "missing_at_provider", "token_mismatch", "price_mismatch",
                "rounding")
_EVENTS = USAGE_COUNT_COLUMNS.index("events")
_INPUT = USAGE_COUNT_COLUMNS.index("input_tokens")
_OUTPUT = USAGE_COUNT_COLUMNS.index("output_tokens")
_SESSION_COMPLETION = Kind.SESSION_COMPLETION.value
# The aggregates and the usage cursor are read apart: read again while the cursor moved.
CONSISTENT_READ_TRIES = 5
UNDELIVERED = ("dead", "pending", "retrying")  # the delivery rows' statuses that are not done
ALL_ROWS = 2**62  # list_deliveries' limit, when every matching row is wanted
# Exact sums: more digits than any export's amounts can need; a sum that would round raises.
_EXACT = decimal.Context(prec=80, traps=[Inexact, Overflow])


@dataclass(slots=True)
class Side:
    """One side's counts of a (day, model): ``None`` where that side does not say."""

    input_tokens: int | None = 0
    output_tokens: int | None = 0
    cost_usd: Decimal | None = Decimal(0)
    # the provider's precision: one unit of the last decimal of each amount the export wrote
    # (each may be rounded or cut by up to that much), summed over the pair's lines
    precision: Decimal = Decimal(0)

    def add(self, charge: Charge) -> None:
        self.input_tokens = _plus(self.input_tokens, charge.input_tokens)
        self.output_tokens = _plus(self.output_tokens, charge.output_tokens)
        if charge.cost_usd is None:
            self.cost_usd = None
        elif self.cost_usd is not None:
            self.cost_usd = _EXACT.add(self.cost_usd, charge.cost_usd)
        self.precision = _EXACT.add(self.precision, Decimal(1).scaleb(-charge.places))

    def answer(self) -> dict[str, Any]:
        cost = None if self.cost_usd is None else format(self.cost_usd, "f")
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "cost_usd": cost}


def reconcile(charges: Sequence[Charge], store: Store, tenant: str,
              destinations: Sequence[str]) -> dict[str, Any]:
    """The answer of ``POST /v1/usage/reconcile`` for these charges of ``tenant``."""
    providers = {c.provider.casefold() for c in charges}
    theirs: dict[tuple[date, str], Side] = {}
    for charge in charges:
        side = theirs.get((charge.day, charge.model))
        if side is None:
            side = theirs[(charge.day, charge.model)] = _empty_like(charge)
        side.add(charge)
    days = [day for day, _ in theirs]
    first = min(days) if days else datetime.now(UTC).date()
    end = (max(days) if days else first) + timedelta(days=1)
    for _ in range(CONSISTENT_READ_TRIES):  # the cursor the aggregates were read at
        counted_to = store.cursor(USAGE_CURSOR) or 0
        ours, committed = _ours(store, tenant, providers, first, end)
        if (store.cursor(USAGE_CURSOR) or 0) == counted_to:
            break
    matched, differences = 0, []
    for key in sorted(theirs.keys() | ours.keys()):
        explanation = _explain(ours.get(key), theirs.get(key))
        if explanation is None:
            matched += 1
            continue
        mine, provider = ours.get(key) or Side(), theirs.get(key) or Side()
        differences.append({
            "day": key[0].isoformat(), "model": key[1], "ours": mine.answer(),
            "provider": provider.answer(), "delta": _delta(mine, provider), "explanation": explanation,
        })
    compared = _Compared(providers, _utc(first), _utc(end), counted_to)
    return {
        "period": {"from": _midnight(first), "to": _midnight(end)},
        "matched": matched,
        "differences": differences,
        "delivery": {"committed": committed, "destinations": {
            name: _delivered(store, tenant, name, compared, committed) for name in destinations}},
    }


def agrees(answer: dict[str, Any]) -> bool:
    """True when every difference is rounding within the provider's precision (exit 0)."""
    return all(d["explanation"] == "rounding" for d in answer["differences"])


def _empty_like(charge: Charge) -> Side:
    """A provider side that says what this charge's format says (and zero of it)."""
    return Side(None if charge.input_tokens is None else 0, None if charge.output_tokens is None else 0,
                None if charge.cost_usd is None else Decimal(0))


def _ours(store: Store, tenant: str, providers: set[str], first: date, end: date
          ) -> tuple[dict[tuple[date, str], Side], int]:
    """The ledger's side per (day, model) of these providers, and how many events it holds."""
    start = _minute(first)
    sides: dict[tuple[date, str], Side] = {}
    events = 0
    for found in store.usage_sums(tenant, start, _minute(end), MINUTES_PER_DAY, ["model", "provider"]):
        model, provider = found.keys
        if provider.casefold() not in providers:
            continue
        key = (first + timedelta(days=found.bucket), model)
        side = sides.get(key)
        if side is None:
            side = sides[key] = Side()
        side.input_tokens = (side.input_tokens or 0) + found.counts[_INPUT]
        side.output_tokens = (side.output_tokens or 0) + found.counts[_OUTPUT]
        side.cost_usd = _EXACT.add(side.cost_usd or Decimal(0), Decimal(found.cost_usd))
        events += found.counts[_EVENTS]
    return sides, events


def _explain(ours: Side | None, theirs: Side | None) -> str | None:
    """The first explanation that applies, or None when the pair agrees exactly."""
    if ours is None:
        return "missing_in_ledger"
    if theirs is None:
        return "missing_at_provider"
    for mine, provider in ((ours.input_tokens, theirs.input_tokens),
                           (ours.output_tokens, theirs.output_tokens)):
        if provider is not None and mine != provider:
            return "token_mismatch"
    if theirs.cost_usd is None or ours.cost_usd == theirs.cost_usd:
        return None
    assert ours.cost_usd is not None  # the ledger's side always has a cost
    within = abs(_EXACT.subtract(theirs.cost_usd, ours.cost_usd)) < theirs.precision
    return "rounding" if within else "price_mismatch"


def _delta(ours: Side, theirs: Side) -> dict[str, Any]:
    """provider − ours, field by field (``None`` where the export does not say)."""
    cost = None
    if theirs.cost_usd is not None and ours.cost_usd is not None:
        cost = format(_EXACT.subtract(theirs.cost_usd, ours.cost_usd), "f")
    return {"input_tokens": _minus(theirs.input_tokens, ours.input_tokens),
            "output_tokens": _minus(theirs.output_tokens, ours.output_tokens), "cost_usd": cost}


# ----- delivery: what became of the compared events -------------------------------------------


class _Usage(msgspec.Struct):
    provider: str | None = None


class _Event(msgspec.Struct):
    timestamp: datetime
    usage: _Usage


class _Entry(msgspec.Struct):
    payload: _Event


_decode_entry = msgspec.json.Decoder(_Entry).decode


@dataclass(frozen=True, slots=True)
class _Compared:
    """Which entries the comparison counted: events of these providers in [low, high), up
    to the usage reader's cursor when the aggregates were read."""

    providers: set[str]
    low: datetime
    high: datetime
    counted_to: int

    def holds(self, entry: StoredEntry) -> bool:
        if entry.seq > self.counted_to or entry.kind != _SESSION_COMPLETION:
            return False
        event = _decode_entry(entry.entry).payload
        return (self.low <= event.timestamp < self.high
                and (event.usage.provider or "").casefold() in self.providers)


def _delivered(store: Store, tenant: str, destination: str, compared: _Compared,
               committed: int) -> dict[str, int]:
    """delivered / dead / pending of the compared events at one destination. An entry
    without a delivery row was delivered at once when the cursor passed it, else it is
    still pending; so only the rows not delivered and the entries past the cursor are read."""
    cursor = store.cursor(destination) or 0
    status_of = {row.seq: row.status for status in UNDELIVERED
                 for row in store.list_deliveries(tenant, destination, status, ALL_ROWS)
                 if row.seq <= compared.counted_to}
    entries = store.entries_by_seq(sorted(status_of))
    past = [] if cursor >= compared.counted_to else [
        entry for entry in store.tenant_entries_after(tenant, cursor) if entry.seq <= compared.counted_to]
    rows = store.delivery_rows_for(destination, [entry.seq for entry in past])
    for entry in past:  # not reached by the cursor: pending, unless its row says otherwise
        row = rows.get(entry.seq)
        status_of[entry.seq] = "pending" if row is None else row.status
        entries[entry.seq] = entry
    counts = {"delivered": 0, "dead": 0, "pending": 0}
    for seq, entry in entries.items():
        status = status_of[seq]
        if status != "delivered" and compared.holds(entry):
            counts["dead" if status == "dead" else "pending"] += 1
    counts["delivered"] = committed - counts["dead"] - counts["pending"]
    return counts


def _plus(total: int | None, added: int | None) -> int | None:
    return None if total is None or added is None else total + added


def _minus(provider: int | None, ours: int | None) -> int | None:
    return None if provider is None or ours is None else provider - ours


def _utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _minute(day: date) -> int:
    return int(_utc(day).timestamp()) // SECONDS_PER_MINUTE


def _midnight(day: date) -> str:
    return _utc(day).isoformat().replace("+00:00", "Z")
