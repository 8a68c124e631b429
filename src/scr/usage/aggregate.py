"""What the ledger's events add to the usage aggregates.

Each SESSION_COMPLETION entry of a group is read for the fields usage needs alone and added,
in memory, to the counters of its key: (tenant, minute of its ``timestamp``, model, user_id,
session_type, status, tier, provider), in one call for the whole group (the native core's
``count_usage``, or its reference, ``scr.usage.counting``). A group of entries then becomes
one ``UsageRow`` per distinct key, written with one upsert each (``scr.store.usage``).

Money stays exact: ``cost_usd`` is what ``billing_v1`` reports (``PriceTable.cost``, already
rounded half-even to 10 places), kept as an integer of 10^-10 USD; the client's
``estimated_cost_usd`` (at most 18 decimals, ``scr.money``) as an integer of 10^-18 USD.

Sessions: an event counts as a session when it is the first SESSION_COMPLETION entry of its
``(tenant, session_id)`` in the ledger (the lowest seq). Every session is then counted once,
in the window and group of its first event, so ``sessions`` adds up exactly over minutes,
windows and groups, and no row per session is kept: the ledger's own session index answers
"was this session seen before?" once per group, for the group's new session ids.

Durations: each counted session adds its first event's ``session.duration_ms`` to a
histogram of its user and quarter hour (``scr.usage.durations``), so a median is by session,
over the same sessions as ``sessions``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from scr import native
from scr.log.entry import Kind
from scr.route.prices import PriceTable
from scr.route.transforms import Prices
from scr.schema import EventSessionId
from scr.store.protocol import Store
from scr.store.records import DurationRow, StoredEntry, UsageRow
from scr.store.usage import ROLLUP_MINUTES
from scr.usage import counting
from scr.usage.counting import (
    COST,
    COST_PLACES,
    ESTIMATE,
    ESTIMATE_PLACES,
    SESSIONS,
    UsageKey,
    add_cost,
    counted_event,
    unscaled,
)
from scr.usage.durations import bucket_of

log = logging.getLogger("scr.usage")
_SESSION_COMPLETION = Kind.SESSION_COMPLETION.value


class _SessionEntry(msgspec.Struct, gc=False):
    payload: EventSessionId


_decode_session = msgspec.json.Decoder(_SessionEntry).decode


@dataclass
class GroupUsage:
    """The usage of one group of ledger entries, by key, and its new session candidates."""

    counters: dict[UsageKey, list[int]] = field(default_factory=dict)
    # per tenant: session id -> the key and duration of its first event in this group
    first_in_group: dict[str, dict[str, tuple[UsageKey, int]]] = field(default_factory=dict)
    # (tenant, quarter's first minute, user_id, bucket) -> sessions
    durations: dict[tuple[str, int, str, int], int] = field(default_factory=dict)

    def rows(self) -> list[UsageRow]:
        return [
            UsageRow(*key, *c[:COST], unscaled(c[COST], COST_PLACES),  # type: ignore[arg-type, call-arg]
                     unscaled(c[ESTIMATE], ESTIMATE_PLACES))
            for key, c in self.counters.items()
        ]

    def duration_rows(self) -> list[DurationRow]:
        return [DurationRow(*key, sessions) for key, sessions in self.durations.items()]

    def count_session(self, key: UsageKey, duration_ms: int) -> None:
        """A session first seen at an event of ``key``: counted there, its duration kept."""
        self.counters[key][SESSIONS] += 1
        tenant, minute, user_id = key[0], key[1], key[3]
        place = (tenant, minute - minute % ROLLUP_MINUTES, user_id, bucket_of(duration_ms))
        self.durations[place] = self.durations.get(place, 0) + 1


def count_group(entries: Sequence[StoredEntry], prices: PriceTable) -> GroupUsage:
    """Add up a group of ledger entries (sessions not yet counted: ``count_sessions``), in
    one call of the native core (or its reference, ``scr.usage.counting``)."""
    events = [row for row in entries if row.kind == _SESSION_COMPLETION]
    group = GroupUsage()
    if not events:
        return group
    tenants, lines = [row.tenant for row in events], b"".join(row.entry + b"\n" for row in events)
    try:
        keys, counters, firsts, undecided = native.count_usage(_read(prices), tenants, lines)
    except ValueError as error:  # an entry the core cannot read: the reference counts the group
        log.warning("usage counted in Python: %s", error)
        keys, counters, firsts, undecided = counting.count_usage(Prices(*prices.plain), tenants, lines)
    for index, position in undecided:  # a cost only Python decides
        add_cost(counters[position], prices.cost(counted_event(events[index].entry).usage))
    group.counters = dict(zip(keys, counters, strict=True))
    for tenant, session_id, position, duration_ms in firsts:
        group.first_in_group.setdefault(tenant, {})[session_id] = (keys[position], duration_ms)
    return group


@functools.lru_cache(maxsize=2)
def _read(table: PriceTable) -> Prices:
    """A price table as the native core (or its reference) reads it, once per table."""
    return native.Prices(*table.plain)


def count_sessions(group: GroupUsage, first_seq: int, store: Store) -> None:
    """Count each session whose first event in the ledger is in the group (``first_seq`` is
    the group's first seq: every earlier entry lies before it)."""
    for tenant, firsts in group.first_in_group.items():
        seen_before: set[str] = set()
        collided = False
        for entry in store.first_session_entries(tenant, list(firsts), first_seq):
            # SQLite finds sessions by a 64-bit key: the stored session id decides
            session_id = _session_id(entry)
            if session_id in firsts:
                seen_before.add(session_id)
            else:
                collided = True
        if collided:  # another session shares a key: look at each unconfirmed one exactly
            seen_before |= {
                session_id for session_id in set(firsts) - seen_before
                if any(e.seq < first_seq and e.kind == _SESSION_COMPLETION
                       and _session_id(e) == session_id
                       for e in store.session_entries(tenant, session_id))
            }
        for session_id, (key, duration_ms) in firsts.items():
            if session_id not in seen_before:
                group.count_session(key, duration_ms)


def _session_id(entry: StoredEntry) -> str:
    return _decode_session(entry.entry).payload.session.session_id
