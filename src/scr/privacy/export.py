"""A subject's export (GDPR Art. 20): every event of the user, each provable offline.

``GET /v1/subjects/{user_id}/export`` answers::

    {"user_id": "alice@example.com", "tenant": "org_acme", "public_key": "scr+…",
     "checkpoint": "<a signed checkpoint issued for the export>",
     "events": [{"event": {…}, "leaf_index": 17, "leaf": "<base64 of the leaf bytes>",
                 "salt": "<base64>", "inclusion_proof": ["<base64 hash>", …]}, …]}

``scr ledger verify --export FILE`` checks it with no access to the server: the checkpoint's
signature, each leaf's inclusion proof in the checkpoint's tree, that the leaf records the
event without its personal fields, and that the personal fields match the leaf's salted
commitment. An erased event is listed as the API shows it (``"erased": true``, no salt):
its leaf still proves it was ledgered, its personal fields are gone.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import msgspec

from scr.errors import NotFound
from scr.ledger.bundle import signed_checkpoint
from scr.ledger.checkpoints import StoredCheckpoint
from scr.ledger.leaves import check_leaf
from scr.ledger.report import Report
from scr.log.entry import LedgerEntry
from scr.privacy.opening import EventOpener
from scr.privacy.sealing import Seal, commitment, personal_values, redacted, salt
from scr.privacy.subjects import Subjects
from scr.schema import canonical_bytes, decode_accepted_event
from scr.store.protocol import Store


class ExportedEvent(msgspec.Struct, forbid_unknown_fields=True):
    event: dict[str, Any]
    leaf_index: int
    leaf: bytes  # base64 in JSON
    salt: bytes | None
    inclusion_proof: list[bytes]


class SubjectExport(msgspec.Struct, forbid_unknown_fields=True):
    user_id: str
    tenant: str
    public_key: str
    checkpoint: str
    events: list[ExportedEvent]


class Ledger(Protocol):
    """What the export needs of the verifiable ledger (``scr.ledger.service.LedgerService``)."""

    async def issue_now(self, tenant: str) -> StoredCheckpoint: ...

    async def inclusion_proof(self, tenant: str, index: int, tree_size: int) -> list[bytes]: ...

    def verifier_key(self) -> str: ...


async def export_subject(
    ledger: Ledger, store: Store, subjects: Subjects, opener: EventOpener, tenant: str, user_id: str,
) -> SubjectExport:
    """The user's export, against a checkpoint issued for it."""
    subject = subjects.subject_of(tenant, user_id)
    seqs = await asyncio.to_thread(store.subject_entries, tenant, subject)
    if not seqs:
        raise NotFound("no events of this user are stored encrypted here")
    checkpoint = await ledger.issue_now(tenant)
    entries = await asyncio.to_thread(store.entries_by_seq, seqs)
    events = []
    for seq in seqs:
        stored = entries[seq]
        if stored.tenant_seq >= checkpoint.tree_size:
            continue  # appended after the checkpoint was issued: the next export has it
        entry = json.loads(stored.entry)
        sealed = msgspec.convert(entry["seal"], Seal)
        key = opener.keys.key(tenant, sealed.subject, sealed.g)
        events.append(ExportedEvent(
            event=opener.open_json(tenant, entry), leaf_index=stored.tenant_seq, leaf=stored.entry,
            salt=None if key is None else salt(key, stored.event_id or ""),
            inclusion_proof=await ledger.inclusion_proof(tenant, stored.tenant_seq, checkpoint.tree_size),
        ))
    return SubjectExport(user_id, tenant, ledger.verifier_key(), checkpoint.note, events)


def verify_export(raw: bytes, verifier_key: str | None = None) -> Report:
    """Check an export offline (see the module docstring)."""
    report = Report()
    try:
        export = msgspec.json.decode(raw, type=SubjectExport)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        report.unverifiable = f"not a subject export: {error}"
        return report
    checkpoint = signed_checkpoint(report, "export", export.tenant, export.checkpoint,
                                   export.public_key, verifier_key)
    if checkpoint is None:
        return report
    for item in export.events:
        event_id = str(item.event.get("event_id"))
        stored = check_leaf(report, export.tenant, item.leaf_index, event_id, item.leaf,
                            item.inclusion_proof, checkpoint)
        if stored is not None:
            _check_event(report, export, item, stored)
        report.entries += 1
    return report


def _check_event(report: Report, export: SubjectExport, item: ExportedEvent, stored: LedgerEntry) -> None:
    where = (export.tenant, item.leaf_index, str(item.event.get("event_id")))
    if stored.seal is None:
        report.found("the leaf holds no sealed fields", *where)
        return
    sealed = msgspec.convert(stored.seal, Seal)
    if item.event.get("erased") is True:
        return  # only the leaf can be proven: the personal fields are gone
    if item.salt is None:
        report.found("no salt to check the personal fields with", *where)
        return
    try:
        event = decode_accepted_event(json.dumps(item.event).encode())
    except Exception as error:  # a decode error names the field; any other is a bad export
        report.found(f"the exported event is not a valid event: {error}", *where)
        return
    if event.user.user_id != export.user_id:
        report.found("the event belongs to another user", *where)
    if canonical_bytes(redacted(event, sealed.subject)) != canonical_bytes(stored.payload):
        report.found("the event differs from what the leaf records", *where)
    if commitment(item.salt, personal_values(event)) != sealed.commitment:
        report.found("the personal fields do not match the leaf's commitment", *where)
