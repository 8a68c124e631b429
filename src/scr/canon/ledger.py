"""The canon's one dependency on the store: a small ledger protocol, and an in-memory ledger.

The canon keeps no table of its own: canon items, promotions, decisions and denials are
ledger entries, and evidence is read from the session completions and observations already
there. Any store that can append an entry durably and read a tenant's entries of some kinds
in ledger order can carry the canon. ``MemoryLedger`` is a complete implementation for
library use without a server and for tests; it stores payloads as the canonical JSON the
durable store writes, so what goes in comes back as plain JSON values.
"""

from __future__ import annotations

import bisect
import heapq
import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import msgspec

from scr.errors import Conflict
from scr.log.entry import Kind, LedgerEntry, Provenance
from scr.schema import Event, canonical_bytes, convert_event


class LedgerEntryLike(Protocol):
    """What the canon reads of an entry; ``payload`` is a plain JSON value."""

    @property
    def id(self) -> int: ...

    @property
    def ts(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def payload(self) -> Any: ...

    @property
    def tenant_id(self) -> str: ...


class CanonLedger(Protocol):
    """Append and read ledger entries. Entry ids increase in ledger order.

    A payload given to ``append`` is a JSON object whose values may be msgspec Structs; the
    store writes it with ``scr.schema.canonical_bytes``, and reads give plain JSON values.
    A ledger whose ``append`` never waits on I/O may say so with ``blocking = False``; the
    HTTP routes then call the canon on the event loop instead of in a worker thread.
    """

    def append(
        self, tenant: str, kind: str, payload: dict[str, Any], *, actor: str, source: str,
        ref: str,
    ) -> int:
        """Append one entry durably (``payload`` is plain JSON); return its entry id."""
        ...

    def read(
        self, tenant: str, kinds: Collection[str], *, after: int = 0
    ) -> Iterable[LedgerEntryLike]:
        """The tenant's entries of these kinds with id > ``after``, in ledger order."""
        ...

    def tenants(self) -> Iterable[str]:
        """Every tenant with at least one entry (for store-wide audits)."""
        ...


@runtime_checkable
class AcceptedEvents(Protocol):
    """Optional: a store that indexes accepted events apart from the ledger (its dedup index)
    lets the audit check that every accepted session completion is a ledger entry."""

    def accepted_events(self, tenant: str) -> Iterable[tuple[str, int]]:
        """(event id, ledger entry id the index claims) for every accepted event."""
        ...


@dataclass(frozen=True, slots=True)
class _Stored:
    """One entry as the memory ledger keeps it: its fields and the payload's bytes."""

    id: int
    ts: str
    actor: str
    kind: str
    source: str
    ref: str
    payload: bytes

    def entry(self, tenant: str) -> LedgerEntry:
        return LedgerEntry(
            self.id, self.ts, self.actor, tenant, self.kind, msgspec.json.decode(self.payload),
            Provenance(self.source, self.ref, self.actor),
        )


def utc_now() -> str:
    """Now as RFC 3339 UTC with microseconds, the ledger's timestamp format."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class MemoryLedger:
    """An in-memory ledger: ordered, tenant-scoped, thread-safe; nothing survives the process."""

    blocking = False  # appends never wait on I/O

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entrant: accept() appends while holding it
        self._next_id = 1
        # Payloads are kept as canonical JSON bytes, as a durable store keeps them: a long run
        # holds few Python objects, so garbage collection stays cheap. Entries are indexed by
        # (tenant, kind), so reading one kind never scans the others.
        self._by_kind: dict[tuple[str, str], list[_Stored]] = {}
        # (tenant, event id) → entry id: the dedup index a durable store keeps beside its log.
        self.accepted: dict[tuple[str, str], int] = {}

    def append(
        self, tenant: str, kind: str, payload: dict[str, Any], *, actor: str, source: str,
        ref: str,
    ) -> int:
        """Append one entry; ``kind`` must be a ledger ``Kind``. Returns the entry id."""
        kind_name = Kind(kind).value
        stored = canonical_bytes(payload)
        with self._lock:
            entry = _Stored(self._next_id, utc_now(), actor, kind_name, source, ref, stored)
            self._next_id += 1
            self._by_kind.setdefault((tenant, kind_name), []).append(entry)
            return entry.id

    def read(
        self, tenant: str, kinds: Collection[str], *, after: int = 0
    ) -> list[LedgerEntry]:
        """The tenant's entries of these kinds with id > ``after``, in ledger order."""
        wanted = {Kind(kind).value for kind in kinds}
        with self._lock:
            runs = []
            for kind in wanted:
                entries = self._by_kind.get((tenant, kind), [])
                start = bisect.bisect_right(entries, after, key=lambda entry: entry.id)
                runs.append(entries[start:])
        chosen = heapq.merge(*runs, key=lambda entry: entry.id)
        return [entry.entry(tenant) for entry in chosen]

    def tenants(self) -> list[str]:
        """Every tenant with at least one entry."""
        with self._lock:
            return sorted({tenant for tenant, _ in self._by_kind})

    def accept(self, event: Event | Mapping[str, Any], *, actor: str = "memory") -> int:
        """Accept a session completion as ingest does: validate, dedupe exactly, append.

        The same event id with the same body returns the first entry's id; with a different
        body it is a ``Conflict``.
        """
        valid = event if isinstance(event, Event) else convert_event(dict(event))
        stored = canonical_bytes(valid)
        key = (valid.tenant, valid.event_id)
        with self._lock:
            known = self.accepted.get(key)
            if known is not None:
                kind = (valid.tenant, Kind.SESSION_COMPLETION.value)
                first = next(e for e in self._by_kind[kind] if e.id == known)
                if first.payload != stored:
                    raise Conflict(f"event '{valid.event_id}' was accepted with a different body")
                return known
            entry_id = self.append(
                valid.tenant, Kind.SESSION_COMPLETION.value, msgspec.json.decode(stored),
                actor=actor, source="memory", ref=valid.event_id,
            )
            self.accepted[key] = entry_id
            return entry_id

    def accepted_events(self, tenant: str) -> list[tuple[str, int]]:
        """(event id, entry id) of every event this ledger accepted for ``tenant``."""
        with self._lock:
            return sorted(
                (event_id, entry_id)
                for (owner, event_id), entry_id in self.accepted.items()
                if owner == tenant
            )
