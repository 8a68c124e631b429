"""Erasing a subject: its data keys destroyed, its session vectors (``scr.enrich``) deleted
and an ERASURE entry, in one transaction.

The subject's sealed fields stay in the ledger as ciphertext nobody can open, so every leaf
hash, proof and checkpoint stays valid. The ERASURE entry is a leaf of the tenant's tree:
the erasure id, the subject's keyed hash, the key generations destroyed, the leaf indexes
they sealed and the acting key's id; never the user id. A subject already erased answers
with the same body (idempotent); one with no sealed events is ``404``; under a legal hold,
``409`` naming the hold.
"""

from __future__ import annotations

import secrets
from typing import Protocol

import msgspec

from scr.errors import Conflict, Detail, NotFound
from scr.log.commit import Committer, utc_now
from scr.log.entry import Kind
from scr.privacy.subjects import Subjects
from scr.security.audit import append_admin_action
from scr.store.protocol import Store, Transaction


class HoldsOn(Protocol):
    """The ids of the legal holds on a tenant's subject (``scr.retention.holds``), read in the
    writer's transaction ``tx`` when given."""

    def __call__(self, tenant: str, subject: str, tx: Transaction | None = None) -> list[str]: ...


def no_holds(tenant: str, subject: str, tx: Transaction | None = None) -> list[str]:
    return []


class Erasure(msgspec.Struct, frozen=True):
    """The ERASURE entry's payload."""

    erasure_id: str
    subject: str
    generations: list[int]
    leaves: list[int]  # the tenant's leaf indexes whose sealed fields can no longer be opened
    key_id: str


class _SealGeneration(msgspec.Struct):
    g: int


class _SealedOnly(msgspec.Struct):
    tenant_seq: int = 0
    seal: _SealGeneration | None = None


_sealed_only = msgspec.json.Decoder(_SealedOnly)


def sealed_leaves(store: Store, tenant: str, subject: str) -> dict[int, tuple[int, int]]:
    """The subject's sealed events: seq → (leaf index, key generation)."""
    seqs = store.subject_entries(tenant, subject)
    found = {}
    for seq, stored in store.entries_by_seq(seqs).items():
        sealed = _sealed_only.decode(stored.entry).seal
        if sealed is not None:
            found[seq] = (stored.tenant_seq, sealed.g)
    return found


def answer(erasure: Erasure) -> dict[str, object]:
    """What ``DELETE /v1/subjects/{user_id}`` answers."""
    return {"erasure_id": erasure.erasure_id, "events": len(erasure.leaves)}


def erase(
    tx: Transaction, committer: Committer, subjects: Subjects, tenant: str, subject: str,
    leaves: dict[int, tuple[int, int]], key_id: str,
) -> Erasure:
    """Destroy the subject's live keys and append its ERASURE entry (in the writer)."""
    store = subjects.store
    generations = store.subject_keys(tenant, subject, tx)
    live = sorted(g for g, wrapped in generations.items() if wrapped is not None)
    if not live:
        done = last_erasure(store, tenant, subject)
        if done is None:
            raise NotFound("no events of this user are stored encrypted here")
        return done
    store.erase_subject_keys(tx, tenant, subject, utc_now())
    store.vectors.delete_subject(tx, tenant, subject)  # a vector is personal data too
    erased = Erasure(
        erasure_id=f"era_{secrets.token_hex(12)}", subject=subject, generations=live,
        leaves=sorted(index for index, g in leaves.values() if g in live), key_id=key_id,
    )
    append_admin_action(committer, tx, tenant, Kind.ERASURE, msgspec.to_builtins(erased), key_id,
                        erased.erasure_id)
    return erased


def last_erasure(store: Store, tenant: str, subject: str) -> Erasure | None:
    """The newest ERASURE entry of the subject, if any."""
    found = None
    for stored in store.tenant_entries_of_kinds(tenant, [Kind.ERASURE.value], 0):
        payload = msgspec.json.decode(stored.entry)["payload"]
        if payload.get("subject") == subject:
            found = msgspec.convert(payload, Erasure)
    return found


def refuse_held(holds_on: HoldsOn, tenant: str, subject: str, tx: Transaction | None = None) -> None:
    holds = holds_on(tenant, subject, tx)
    if holds:
        raise Conflict("this subject is under a legal hold; release it first",
                       [Detail(path="legal_hold", message=hold) for hold in holds])
