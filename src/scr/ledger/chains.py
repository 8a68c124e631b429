"""Verify a ledger through the store protocol: every tenant's chain, entry by entry.

This is what ``scr ledger verify --store URI`` runs on a PostgreSQL store (then
``scr.ledger.verify.verify_store`` checks each tenant's tree and checkpoints with the leaf
hashes gathered here). A tenant's entries must be numbered 0, 1, 2, … without a gap; each
stored entry must name its own seq and tenant; each chain hash must be SHA-256(previous hash ‖
stored bytes), from the genesis hash; and every accepted event must be in the dedup index
exactly once.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable

import msgspec

from scr.ledger.report import Report
from scr.log.entry import GENESIS_HASH, Kind, chain_hash, decode_entry
from scr.log.merkle import HASH_SIZE, LEAF_PREFIX
from scr.retention.segments import covers
from scr.store.protocol import Store

PAGE_ENTRIES = 1000

TenantLeaves = Callable[[str, bytes | None], None]
"""``check(tenant, packed leaf hashes)`` after the tenant's chain (``None``: some of its entries
left the hot store with their archive segments, so its leaves are not all here)."""


def verify_chains(store: Store, then: TenantLeaves | None = None, report: Report | None = None) -> Report:
    """Check every tenant's chain in ``store``; the findings (added to ``report``) name tenant,
    index, event and seq. ``then`` is given each tenant's leaf hashes, one tenant at a time."""
    report = report if report is not None else Report()
    for tenant in store.tenants():
        leaves = _verify_tenant(store, tenant, report)
        if then is not None:
            then(tenant, leaves)
    return report


def _verify_tenant(store: Store, tenant: str, report: Report) -> bytes | None:
    """A tenant's chain, page by page of leaf indexes; leaves purged with their archive
    segments are skipped, and the chain resumes from the next stored hash. The packed leaf
    hashes of its entries (``None`` if some were archived)."""
    previous, index, events, window = GENESIS_HASH, 0, 0, 0
    leaves: bytearray | None = bytearray()
    sha256 = hashlib.sha256
    purged = [(s.first_leaf, s.last_leaf) for s in store.archive_segments(tenant) if s.purged_at]
    while True:
        page = store.tenant_entries(tenant, window, window + PAGE_ENTRIES)
        if not page and all(high < window for _, high in purged):
            break
        for stored in page:
            where = (tenant, stored.tenant_seq, stored.event_id, stored.seq)
            resumed = stored.tenant_seq != index and covers(purged, index, stored.tenant_seq - 1)
            if stored.tenant_seq != index and not resumed:
                report.found(f"entries {index}..{stored.tenant_seq - 1} are missing", *where)
            index = stored.tenant_seq
            try:
                entry = decode_entry(stored.entry)
            except msgspec.DecodeError as error:
                report.found(f"the stored entry is not a ledger entry: {error}", *where)
            else:
                if entry.id != stored.seq or entry.tenant_id != tenant or entry.kind != stored.kind:
                    report.found("the stored entry names another seq, tenant or kind than its row", *where)
            if not resumed and chain_hash(previous, stored.entry) != stored.hash:
                report.found("the chain hash does not follow from the previous entry", *where)
            previous = stored.hash
            if leaves is not None and stored.entry and stored.tenant_seq * HASH_SIZE == len(leaves):
                leaves += sha256(LEAF_PREFIX + stored.entry).digest()
            else:
                leaves = None  # archived, purged or out of order: the tree is not rebuilt from here
            events += stored.kind == Kind.SESSION_COMPLETION.value
            index += 1
            report.entries += 1
        window += PAGE_ENTRIES
    indexed = Counter(event_id for event_id, _ in store.accepted_events(tenant))
    if sum(indexed.values()) != events:
        report.found(f"{events} session completions but {sum(indexed.values())} dedup keys", tenant=tenant)
    for event_id, count in indexed.items():
        if count > 1:
            report.found(f"event id held {count} times", tenant=tenant, event_id=event_id)
    return bytes(leaves) if leaves is not None else None

