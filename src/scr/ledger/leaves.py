"""Checking one leaf someone handed us (a server, a bundle) against a signed checkpoint."""

from __future__ import annotations

import msgspec

from scr.ledger.report import Report
from scr.log.checkpoint import Checkpoint
from scr.log.entry import Kind, LedgerEntry, decode_entry
from scr.log.merkle import ProofError, leaf_hash, verify_inclusion


def check_leaf(
    report: Report, tenant: str, index: int, event_id: str | None, leaf: bytes,
    proof: list[bytes], checkpoint: Checkpoint,
) -> LedgerEntry | None:
    """Report what is wrong with the leaf at ``index``; its entry when it is in the tree.

    The leaf must be in the checkpoint's tree, be a ledger entry of ``tenant``, and, when it
    is named by an event id, be that event's SESSION_COMPLETION entry.
    """
    where = (tenant, index, event_id)
    try:
        verify_inclusion(leaf_hash(leaf), index, checkpoint.tree_size, proof, checkpoint.root_hash)
    except ProofError as error:
        report.found(f"not in the checkpoint's tree: {error}", *where)
        return None
    try:
        stored = decode_entry(leaf)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        report.found(f"its leaf is not a ledger entry: {error}", *where)
        return None
    if stored.tenant_id != tenant:
        report.found(f"the entry belongs to tenant {stored.tenant_id!r}", *where)
    if event_id is not None and (
        stored.kind != Kind.SESSION_COMPLETION.value or stored.provenance.ref != event_id
    ):
        report.found(f"the entry records event {stored.provenance.ref!r}, not this one", *where)
    return stored
