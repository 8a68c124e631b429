"""The canon's ledger on the durable store: appends go through the one committer.

``StoreLedger`` implements ``CanonLedger`` (and ``AcceptedEvents``) over the store the
runtime appends to (SQLite or PostgreSQL), so canon items, promotions and decisions sit in
the same hash-chained log as the session completions they are judged by.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from scr.log.commit import Committer
from scr.log.entry import Kind, LedgerEntry, decode_entry
from scr.store import open_store
from scr.store.protocol import Store, Transaction


class StoreLedger:
    """A ``CanonLedger`` on a ``Store``; appends are durable before they return."""

    blocking = True  # an append waits for the group commit's fsync

    def __init__(self, store: Store, committer: Committer) -> None:
        self.store = store
        self.committer = committer
        # (tenant, kinds) → (after, scanned up to): a cursor that found nothing new last time
        # resumes where that scan ended instead of re-reading other kinds' entries again.
        self._scanned: dict[tuple[str, frozenset[str]], tuple[int, int]] = {}

    def append(
        self, tenant: str, kind: str, payload: dict[str, Any], *, actor: str, source: str,
        ref: str,
    ) -> int:
        def write(tx: Transaction) -> int:
            entry = self.committer.append_entry(
                tx, tenant, kind, payload, actor=actor, source=source, ref=ref
            )
            return entry.seq

        return self.committer.run_sync(write)

    async def append_async(
        self, tenant: str, kind: str, payload: dict[str, Any], *, actor: str, source: str,
        ref: str,
    ) -> int:
        """``append`` for callers on the event loop: durable when the await returns."""
        def write(tx: Transaction) -> int:
            return self.committer.append_entry(
                tx, tenant, kind, payload, actor=actor, source=source, ref=ref
            ).seq

        return await self.committer.run(write)

    def read(
        self, tenant: str, kinds: Collection[str], *, after: int = 0
    ) -> Iterator[LedgerEntry]:
        wanted = frozenset(kinds)
        if Kind.SESSION_COMPLETION.value not in wanted:  # the canon's own kinds: indexed
            for row in self.store.tenant_entries_of_kinds(tenant, sorted(wanted), after):
                yield decode_entry(row.entry)
            return
        start = after
        memo = self._scanned.get((tenant, wanted))
        if memo is not None and memo[0] == after:
            start = max(after, memo[1])
        last = start
        for row in self.store.tenant_entries_after(tenant, start):
            last = row.seq
            if row.kind in wanted:
                yield decode_entry(row.entry)
        self._scanned[(tenant, wanted)] = (after, last)

    def tenants(self) -> Iterable[str]:
        return self.store.tenants()

    def accepted_events(self, tenant: str) -> Iterable[tuple[str, int]]:
        return self.store.accepted_events(tenant)


class OwnedStoreLedger(StoreLedger):
    """A ``StoreLedger`` that opened its own store and committer (the CLI's); close it."""

    def close(self) -> None:
        self.committer.close()
        self.store.close()


def open_ledger(data_dir: Path, store_uri: str | None = None) -> OwnedStoreLedger:
    """The ledger of a data folder, or of a PostgreSQL store (``store_uri``), for commands
    that run without a server."""
    store = open_store(data_dir, store_uri)
    committer = Committer(store, buffer_size=1)
    committer.start()
    return OwnedStoreLedger(store, committer)
