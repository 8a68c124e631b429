"""Evidence bundles: ``scr ledger export`` writes one, ``scr ledger verify --bundle`` checks it.

A bundle is one JSON document holding everything needed to check a tenant's entries of a time
range with no access to the server: the signed checkpoint, the public verifier key, and each
entry's exact stored bytes with its inclusion proof in the checkpoint's tree::

    {"format": "scr-ledger-bundle/1", "tenant": "org_acme",
     "from": "2026-11-01T00:00:00.000000Z", "to": "2026-12-01T00:00:00.000000Z",
     "public_key": "scr+d263a8fe+AZ3e…", "checkpoint": "scr/org_acme\\n2401\\n…",
     "entries": [{"index": 17, "event_id": "evt_…", "leaf": "<base64 of the stored bytes>",
                  "inclusion_proof": ["<base64 hash>", …]}, …]}

``from`` is inclusive and ``to`` exclusive (entry append times); either may be null.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from scr.ledger.leaves import check_leaf
from scr.ledger.report import Report
from scr.ledger.sources import Leaf, LedgerSource, SourceError, all_leaves
from scr.log.checkpoint import Checkpoint, CheckpointError, VerifierKey, origin_for, verify_note

BUNDLE_FORMAT = "scr-ledger-bundle/1"
LEDGER_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # how entries record their time (sorts as text)


class BundleEntry(msgspec.Struct, forbid_unknown_fields=True):
    """One entry: its leaf index, event id, exact stored bytes and inclusion proof."""

    index: int
    event_id: str | None
    leaf: bytes  # base64 in JSON
    inclusion_proof: list[bytes]


class Bundle(msgspec.Struct, forbid_unknown_fields=True):
    """A self-contained evidence bundle (see the module docstring)."""

    format: str
    tenant: str
    from_: str | None = msgspec.field(name="from")
    to: str | None
    public_key: str
    checkpoint: str
    entries: list[BundleEntry]


def ledger_time(text: str) -> str:
    """An RFC 3339 time as the ledger writes entry times; ``ValueError`` if it is not one."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (add Z or an offset)")
    return moment.astimezone(UTC).strftime(LEDGER_TIME_FORMAT)


def _first_at_or_after(source: LedgerSource, tenant: str, moment: str, size: int) -> int:
    """The first leaf index whose time is ``moment`` or later (entry times grow with the index)."""
    low, high = 0, size
    while low < high:
        middle = (low + high) // 2
        (leaf,) = source.leaves(tenant, middle, middle + 1)
        if leaf.ts < moment:
            low = middle + 1
        else:
            high = middle
    return low


def export_bundle(source: LedgerSource, tenant: str, start: str | None, end: str | None) -> Bundle:
    """The tenant's entries appended in ``[start, end)``, proven against its newest checkpoint.

    Raises ``CheckpointError`` if the source's checkpoint does not verify, ``SourceError`` if the
    ledger cannot be read.
    """
    key_text = source.verifier_key()
    key = VerifierKey.parse(key_text)
    note = source.checkpoint(tenant)
    checkpoint = verify_note(note, key)
    if checkpoint.origin != origin_for(key.name, tenant):  # e.g. an API key of another tenant
        raise SourceError(f"the ledger answered with the checkpoint of {checkpoint.origin!r}, "
                          f"not of tenant {tenant!r}")
    size = checkpoint.tree_size
    low = _first_at_or_after(source, tenant, start, size) if start else 0
    high = _first_at_or_after(source, tenant, end, size) if end else size
    entries = [
        BundleEntry(leaf.index, leaf.event_id, leaf.stored, source.inclusion_proof(tenant, leaf, size))
        for leaf in all_leaves(source, tenant, low, high)
        if _within(leaf, start, end)
    ]
    return Bundle(BUNDLE_FORMAT, tenant, start, end, key_text, note, entries)


def _within(leaf: Leaf, start: str | None, end: str | None) -> bool:
    ts = leaf.ts
    return (start is None or ts >= start) and (end is None or ts < end)


def encode_bundle(bundle: Bundle) -> bytes:
    """The bundle as JSON."""
    return msgspec.json.format(msgspec.json.encode(bundle), indent=1)


def verify_bundle(raw: bytes, verifier_key: str | None = None) -> Report:
    """Check a bundle: checkpoint signature, and each entry's bytes, identity and inclusion proof.

    With ``verifier_key`` (obtained independently) the checkpoint must be signed by that key;
    without it, by the key in the bundle, which proves only that the bundle is consistent.
    """
    report = Report()
    try:
        bundle = msgspec.json.decode(raw, type=Bundle)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        report.unverifiable = f"not an evidence bundle: {error}"
        return report
    if bundle.format != BUNDLE_FORMAT:
        report.unverifiable = f"unknown bundle format {bundle.format!r} (expected {BUNDLE_FORMAT})"
        return report
    checkpoint = signed_checkpoint(report, "bundle", bundle.tenant, bundle.checkpoint,
                                   bundle.public_key, verifier_key)
    if checkpoint is None:
        return report
    for entry in bundle.entries:
        _check_entry(bundle, entry, checkpoint, report)
        report.entries += 1
    return report


def signed_checkpoint(
    report: Report, what: str, tenant: str, note: str, key_inside: str, verifier_key: str | None,
) -> Checkpoint | None:
    """A document's checkpoint (a bundle's, an export's), verified with ``verifier_key``
    (obtained independently) or else the key the document carries; None when it cannot be
    (the report says why)."""
    try:
        key = VerifierKey.parse(verifier_key or key_inside)
    except CheckpointError as error:
        report.unverifiable = f"unusable verifier key: {error}"
        return None
    if verifier_key is None:
        report.notes.append(f"checked with the key inside the {what}; pass --verifier-key to check it "
                            "against a key obtained independently")
    elif key.public_key != _public_key(key_inside):
        report.notes.append(f"the {what} names another public key than the one given")
    try:
        checkpoint = verify_note(note, key, origin_for(key.name, tenant))
    except CheckpointError as error:
        report.found(f"the {what}'s checkpoint is rejected: {error}", tenant)
        return None
    report.checkpoints = 1
    return checkpoint


def _public_key(text: str) -> bytes | None:
    try:
        return VerifierKey.parse(text).public_key
    except CheckpointError:
        return None


def _check_entry(bundle: Bundle, entry: BundleEntry, checkpoint: Checkpoint, report: Report) -> None:
    stored = check_leaf(report, bundle.tenant, entry.index, entry.event_id, entry.leaf,
                        entry.inclusion_proof, checkpoint)
    if stored is None:
        return
    where = (bundle.tenant, entry.index, entry.event_id)
    early = bundle.from_ is not None and stored.ts < bundle.from_
    if early or (bundle.to is not None and stored.ts >= bundle.to):
        report.found(f"appended at {stored.ts}, outside the bundle's time range", *where)

