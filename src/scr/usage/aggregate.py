"""What the ledger's events add to the usage aggregates.

Each SESSION_COMPLETION entry is decoded into a Struct of only the fields usage needs (the
rest of the event is skipped by the decoder, never built), and added, in memory, to the
counters of its key: (tenant, minute of its ``timestamp``, model, user_id, session_type,
status, tier, provider). A group of entries then becomes one ``UsageRow`` per distinct key,
written with one upsert each (``scr.store.usage``).

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

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import msgspec

from scr.log.entry import Kind
from scr.route.prices import PriceTable
from scr.schema import Usage
from scr.store.protocol import Store
from scr.store.records import DurationRow, StoredEntry, UsageRow
from scr.store.usage import ROLLUP_MINUTES
from scr.usage.durations import bucket_of

COST_PLACES = 10  # billing_v1's cost_usd: 10 decimal places
ESTIMATE_PLACES = 18  # scr.money: an amount has at most 18 decimals
SECONDS_PER_MINUTE = 60
_SESSION_COMPLETION = Kind.SESSION_COMPLETION.value


class _Session(msgspec.Struct, gc=False):
    session_id: str
    session_type: str
    duration_ms: int


class _User(msgspec.Struct, gc=False):
    user_id: str
    tier: str


class _Outcome(msgspec.Struct, gc=False):
    status: str


class _Counted(msgspec.Struct, gc=False):
    """The part of an event that usage counts."""

    timestamp: datetime
    session: _Session
    user: _User
    usage: Usage
    outcome: _Outcome


class _CountedEntry(msgspec.Struct, gc=False):
    payload: _Counted


class _SessionOnly(msgspec.Struct, gc=False):
    session: _Session


class _SessionEntry(msgspec.Struct, gc=False):
    payload: _SessionOnly


_decode_counted = msgspec.json.Decoder(_CountedEntry).decode
_decode_session = msgspec.json.Decoder(_SessionEntry).decode

# (tenant, minute, model, user_id, session_type, status, tier, provider)
UsageKey = tuple[str, int, str, str, str, str, str, str]

# positions in a counter list
EVENTS, SESSIONS, INPUT, OUTPUT, TOTAL, CACHE_READ, CACHE_WRITE, REASONING, DURATION, \
    UNPRICED, ERRORS, COST, ESTIMATE = range(13)


def scaled(amount: Decimal, places: int) -> int:
    """An exact decimal with at most ``places`` decimals as an integer of 10^-places."""
    return int(amount.scaleb(places))


def unscaled(amount: int, places: int) -> str:
    """The decimal text of an integer of 10^-places (exact, no exponent)."""
    return format(Decimal(amount).scaleb(-places), "f")


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
    """Add up a group of ledger entries (sessions not yet counted: ``count_sessions``)."""
    group = GroupUsage()
    counters, first_in_group = group.counters, group.first_in_group
    cost_of = prices.cost
    for row in entries:
        if row.kind != _SESSION_COMPLETION:
            continue
        event = _decode_counted(row.entry).payload
        usage, session = event.usage, event.session
        key: UsageKey = (
            row.tenant, int(event.timestamp.timestamp()) // SECONDS_PER_MINUTE, usage.model,
            event.user.user_id, session.session_type, event.outcome.status, event.user.tier,
            usage.provider or "",
        )
        c = counters.get(key)
        if c is None:
            c = counters[key] = [0] * 13
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
        cost = cost_of(usage)
        if cost is None:
            c[UNPRICED] += 1
        else:
            c[COST] += scaled(cost, COST_PLACES)
        c[ESTIMATE] += scaled(usage.estimated_cost_usd, ESTIMATE_PLACES)
        firsts = first_in_group.get(row.tenant)
        if firsts is None:
            firsts = first_in_group[row.tenant] = {}
        if session.session_id not in firsts:
            firsts[session.session_id] = (key, session.duration_ms)
    return group


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
