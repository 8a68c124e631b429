"""What the stores hold, in the user's words: ledger rows, API keys, deliveries.

Shared by every backend (``scr.store.sqlite``, ``scr.store.postgres``) and by their callers,
so a caller never imports a backend to name a row.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

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


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """A ledger row as read back."""

    seq: int
    tenant: str
    tenant_seq: int
    kind: str
    ts: str
    event_id: str | None
    entry: bytes
    hash: bytes


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


def event_key(tenant: str, event_id: str) -> int:
    """The signed 64-bit hash of ``(tenant, event_id)`` (SQLite's dedup index key)."""
    digest = hashlib.blake2b(f"{tenant}\0{event_id}".encode(), digest_size=8).digest()
    return int(struct.unpack("<q", digest)[0])


def session_key(tenant: str, session_id: str) -> int:
    """The signed 64-bit lookup key of ``(tenant, session_id)``."""
    digest = hashlib.blake2b(f"{tenant}\0{session_id}".encode(), digest_size=8).digest()
    return -int(struct.unpack("<q", digest)[0]) - 1  # a different key space from event_key


def pack_seqs(seqs: Sequence[int]) -> bytes:
    """Pack ledger sequence numbers for the attempts log."""
    return struct.pack(f"<{len(seqs)}q", *seqs)


def unpack_seqs(blob: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(blob) // 8}q", blob))
