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
import threading
from collections.abc import Collection, Iterable, Mapping
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
    """Append and read ledger entries. Entry ids increase in ledger order."""

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


def utc_now() -> str:
    """Now as RFC 3339 UTC with microseconds, the ledger's timestamp format."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class MemoryLedger:
    """An in-memory ledger: ordered, tenant-scoped, thread-safe; nothing survives the process."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entrant: accept() appends while holding it
        self._next_id = 1
        self._by_tenant: dict[str, list[LedgerEntry]] = {}
        # (tenant, event id) → entry id: the dedup index a durable store keeps beside its log.
        self.accepted: dict[tuple[str, str], int] = {}

    def append(
        self, tenant: str, kind: str, payload: dict[str, Any], *, actor: str, source: str,
        ref: str,
    ) -> int:
        """Append one entry; ``kind`` must be a ledger ``Kind``. Returns the entry id."""
        kind_name = Kind(kind).value
        stored = msgspec.json.decode(canonical_bytes(payload))
        with self._lock:
            entry = LedgerEntry(
                self._next_id, utc_now(), actor, tenant, kind_name, stored,
                Provenance(source, ref, actor),
            )
            self._next_id += 1
            self._by_tenant.setdefault(tenant, []).append(entry)
            return entry.id

    def read(
        self, tenant: str, kinds: Collection[str], *, after: int = 0
    ) -> list[LedgerEntry]:
        """The tenant's entries of these kinds with id > ``after``, in ledger order."""
        wanted = {Kind(kind).value for kind in kinds}
        with self._lock:
            entries = self._by_tenant.get(tenant, [])
            start = bisect.bisect_right(entries, after, key=lambda entry: entry.id)
            return [entry for entry in entries[start:] if entry.kind in wanted]

    def tenants(self) -> list[str]:
        """Every tenant with at least one entry."""
        with self._lock:
            return sorted(self._by_tenant)

    def accept(self, event: Event | Mapping[str, Any], *, actor: str = "memory") -> int:
        """Accept a session completion as ingest does: validate, dedupe exactly, append.

        The same event id with the same body returns the first entry's id; with a different
        body it is a ``Conflict``.
        """
        valid = event if isinstance(event, Event) else convert_event(dict(event))
        body = msgspec.json.decode(canonical_bytes(valid))
        key = (valid.tenant, valid.event_id)
        with self._lock:
            known = self.accepted.get(key)
            if known is not None:
                first = next(e for e in self._by_tenant[valid.tenant] if e.id == known)
                if first.payload != body:
                    raise Conflict(f"event '{valid.event_id}' was accepted with a different body")
                return known
            entry_id = self.append(
                valid.tenant, Kind.SESSION_COMPLETION.value, body, actor=actor,
                source="memory", ref=valid.event_id,
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
