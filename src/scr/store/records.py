"""What the stores hold, in the user's words: ledger rows, API keys, deliveries.

Shared by every backend (``scr.store.sqlite``, ``scr.store.postgres``) and by their callers,
so a caller never imports a backend to name a row.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from scr.log.keys import event_key

ENTRY_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # entry times as scr.log.commit.utc_now writes them

# The dedup key of an event: (tenant, event_id), unique in the ledger.
EventKey = tuple[str, str]


class NewEntry(NamedTuple):
    """A ledger row the committer appends (the store adds its own indexes)."""

    seq: int
    tenant: str
    tenant_seq: int
    kind: str
    ts: str
    event_id: str | None  # set for SESSION_COMPLETION entries: the dedup key with tenant
    session_id: str | None
    payload_digest: bytes | None  # digest of the event's canonical bytes, compared on duplicates
    entry: bytes  # the exact stored entry bytes (what the chain and the Merkle tree hash)
    hash: bytes  # the chain hash: H(previous hash ‖ entry)


class Hit(NamedTuple):
    """An event already in the ledger: its seq and payload digest."""

    seq: int
    payload_digest: bytes


class StoredEntry(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """A ledger row as read back (a Struct: readers build one an event, and a frozen
    dataclass's ``__init__`` took 2.6 µs where the Struct's takes 0.17)."""

    seq: int
    tenant: str
    tenant_seq: int
    kind: str
    ts: str
    event_id: str | None
    entry: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class SegmentRow:
    """An archive segment as the hot store lists it (``scr.retention``): a tenant's leaves
    ``first_leaf..last_leaf`` in the files ``<folder>/<name>.*``, whose manifest has the SHA-256
    ``manifest_sha256``; its SESSION_COMPLETION rows below ``stubbed_to`` keep only their keys
    and hashes in the hot store; ``purged_at`` once its files are deleted."""

    tenant: str
    first_leaf: int
    last_leaf: int
    first_seq: int
    last_seq: int
    folder: str
    name: str
    manifest_sha256: bytes
    max_ts: str
    created_at: str
    stubbed_to: int = 0
    purged_at: str | None = None


@dataclass(frozen=True, slots=True)
class LegalHold:
    """A legal hold (``scr.retention.holds``): on a whole tenant (``subject`` None) or on one
    subject (the keyed hash of a user id, ``scr.privacy.subjects``); it blocks purge and erasure
    until released."""

    hold_id: str
    tenant: str
    subject: str | None
    user_id: str | None  # as the admin gave it (shown back to admins; never in the ledger)
    reason: str
    created_at: str
    key_id: str
    released_at: str | None = None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key as stored (its hash is the lookup key; the key itself is never stored)."""

    key_id: str
    tenant: str
    role: str
    label: str
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """A destination's delivery of one ledger entry that did not succeed at once."""

    destination: str
    seq: int
    tenant: str
    event_id: str
    session_key: int
    webhook_id: str
    status: str
    attempts: int
    next_attempt_ms: int
    last_status: int | None
    last_error: str
    updated_at: str


class AttemptRow(NamedTuple):
    """One delivery attempt, as logged."""

    destination: str
    webhook_id: str
    seqs: list[int]
    attempt: int
    status: int | None
    error: str
    latency_ms: float
    response_excerpt: str
    ts: str


def session_key(tenant: str, session_id: str) -> int:
    """The signed 64-bit lookup key of ``(tenant, session_id)``: ``event_key``'s hash moved to
    a key space of its own (negative, minus one)."""
    return -event_key(tenant, session_id) - 1


def pack_seqs(seqs: Sequence[int]) -> bytes:
    """Pack ledger sequence numbers for the attempts log."""
    return struct.pack(f"<{len(seqs)}q", *seqs)


def unpack_seqs(blob: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(blob) // 8}q", blob))


# The usage aggregator's cursor in the cursors table: no destination can take this name
# (destination names are lower-case letters, digits, '_' and '-').
USAGE_CURSOR = "usage:aggregates"


class UsageRow(msgspec.Struct, array_like=True, gc=False):
    """The usage of one tenant in one minute for one group key (``scr.usage``): counts and
    tokens are integers, money is an exact decimal string. ``minute`` is Unix time // 60;
    ``provider`` is ``""`` when the events named none."""

    tenant: str
    minute: int
    model: str
    user_id: str
    session_type: str
    status: str
    tier: str
    provider: str
    events: int
    sessions: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    duration_ms: int
    unpriced_events: int
    errors: int
    cost_usd: str
    estimated_cost_usd: str


class DurationRow(msgspec.Struct, array_like=True, gc=False):
    """Sessions of one user in one quarter hour whose duration falls in one histogram bucket
    (``scr.usage.durations``): a session counts once, at its first event, like ``sessions``.
    ``minute`` is the quarter hour's first minute (Unix time // 60)."""

    tenant: str
    minute: int
    user_id: str
    bucket: int
    sessions: int


class UsageSum(NamedTuple):
    """The usage rows of one tenant, time bucket and group summed by the store: ``bucket`` is
    (minute − from) // bucket minutes, ``keys`` the values of the grouped columns, ``counts``
    the integer counters in ``USAGE_COUNT_COLUMNS`` order, money as exact decimal text."""

    tenant: str
    bucket: int
    keys: tuple[str, ...]
    counts: tuple[int, ...]
    cost_usd: str
    estimated_cost_usd: str


# The key columns of a UsageRow, then its integer counters, then its money (decimal strings).
USAGE_KEY_COLUMNS = ("tenant", "minute", "model", "user_id", "session_type", "status", "tier",
                     "provider")
USAGE_COUNT_COLUMNS = ("events", "sessions", "input_tokens", "output_tokens", "total_tokens",
                       "cache_read_tokens", "cache_write_tokens", "reasoning_tokens",
                       "duration_ms", "unpriced_events", "errors")
USAGE_MONEY_COLUMNS = ("cost_usd", "estimated_cost_usd")
USAGE_COLUMNS = USAGE_KEY_COLUMNS + USAGE_COUNT_COLUMNS + USAGE_MONEY_COLUMNS


# The enricher's cursor and the ledger position it started from when first turned on
# (``scr.enrich``): names no destination can take, like the usage cursor's.
ENRICH_CURSOR = "enrich:vectors"
ENRICH_START = "enrich:start"
BACKFILL_CURSOR = "enrich:backfill"
# backfills asked through the API, and the last one the enricher finished (both only grow)
BACKFILL_ASKED = "enrich:backfill_asked"
BACKFILL_ANSWERED = "enrich:backfill_answered"


class VectorRow(msgspec.Struct, array_like=True, gc=False):
    """One event's embedding (``scr.enrich``) with what a search filters on.

    ``key`` is the store's (0 before it is stored; never reused after a deletion, so an
    index can name vectors by it); ``vector`` is float32, little-endian, L2-normalised;
    ``user_key`` is the event's ``user.user_id``, or the subject's keyed hash when its personal
    fields are sealed (what erasure and ``scr.privacy.subjects`` name a subject by);
    ``at_ms`` is the event's ``timestamp`` in Unix milliseconds.
    """

    key: int
    tenant: str
    session_id: str
    event_id: str
    seq: int
    source_fields: list[str]
    model: str
    dimensions: int
    vector: bytes
    event_model: str
    status: str
    session_type: str
    user_key: str
    at_ms: int
