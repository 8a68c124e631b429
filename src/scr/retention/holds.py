"""Legal holds: a tenant, or one of its users, kept from purge and erasure until released.

An admin places a hold on a whole tenant or on one of its users and later releases it. Each
is an admin action: a LEGAL_HOLD_PLACED or LEGAL_HOLD_RELEASED entry of the tenant's ledger,
appended in the write that stores the change, naming the acting key. The entry names a user
by its subject (the keyed hash of ``scr.privacy.subjects``), never by its user id; the store
keeps the user id while the hold is active, for the admins who list it, and forgets it on
release.

Without a master key there is no hash key: a user's subject is then an unkeyed digest of the
same text (the ledger holds user ids in plaintext then anyway, and erasure is off). So that
a hold placed then still blocks erasure once a master key is configured, ``holds_on`` also
matches a user hold by its user id under the data's hash key.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated

import msgspec
from msgspec import Meta

from scr.errors import NotFound
from scr.log.commit import Committer, utc_now
from scr.log.entry import Kind
from scr.privacy.erasure import HoldsOn
from scr.privacy.subjects import SUBJECT_BYTES, Subjects, subject_text
from scr.schema import Name, TenantId
from scr.security.audit import append_admin_action
from scr.store.protocol import Store, Transaction
from scr.store.records import LegalHold

HELD = -1  # what a purge answers when a hold keeps its segment (scr.serve.writes)
HOLD_ID_PREFIX = "hold_"
HOLD_ID_BYTES = 12
MAX_REASON_CHARS = 1_000

Reason = Annotated[str, Meta(min_length=1, max_length=MAX_REASON_CHARS)]


class HoldRequest(msgspec.Struct, forbid_unknown_fields=True):
    """What placing a hold asks: the tenant, the user when the hold is on one, and why."""

    tenant: TenantId
    reason: Reason
    user_id: Name | None = None


class HoldAction(msgspec.Struct, frozen=True, omit_defaults=True):
    """The payload of a LEGAL_HOLD_PLACED or LEGAL_HOLD_RELEASED entry (never a user id)."""

    hold_id: str
    tenant: str
    reason: str
    key_id: str  # the acting key: the one placing, or the one releasing
    subject: str | None = None  # a hold on one user: its subject


def subject_of(subjects: Subjects | None, tenant: str, user_id: str) -> str:
    """The user's subject: its keyed hash, or an unkeyed digest without a master key."""
    if subjects is not None:
        return subjects.subject_of(tenant, user_id)
    return hashlib.sha256(subject_text(tenant, user_id)).digest()[:SUBJECT_BYTES].hex()


async def place_hold(
    committer: Committer, subjects: Subjects | None, ask: HoldRequest, key_id: str
) -> LegalHold:
    """Store a new hold and ledger it, in one write; the hold."""
    subject = None if ask.user_id is None else subject_of(subjects, ask.tenant, ask.user_id)
    hold = LegalHold(
        hold_id=f"{HOLD_ID_PREFIX}{secrets.token_hex(HOLD_ID_BYTES)}", tenant=ask.tenant,
        subject=subject, user_id=ask.user_id, reason=ask.reason, created_at=utc_now(),
        key_id=key_id,
    )

    def write(tx: Transaction) -> LegalHold:
        committer.store.add_legal_hold(tx, hold)
        _ledger(committer, tx, Kind.LEGAL_HOLD_PLACED, hold, key_id)
        return hold

    return await committer.run(write)


async def release_hold(committer: Committer, tenant: str, hold_id: str, key_id: str) -> LegalHold:
    """Release a tenant's active hold and ledger it, in one write; the released hold (its
    user id forgotten). ``NotFound`` for an unknown, released or other tenant's hold."""

    def write(tx: Transaction) -> LegalHold:
        released = committer.store.release_legal_hold(tx, tenant, hold_id, utc_now())
        if released is None:
            raise NotFound("no active legal hold of this id in the tenant")
        _ledger(committer, tx, Kind.LEGAL_HOLD_RELEASED, released, key_id)
        return released

    return await committer.run(write)


def holds_on(store: Store, subjects: Subjects | None = None) -> HoldsOn:
    """What blocks erasing a subject: the ids of the tenant's active holds on the whole
    tenant or on that subject (``subjects``: the data's hash key, when configured)."""

    def holds(tenant: str, subject: str, tx: Transaction | None = None) -> list[str]:
        return [hold.hold_id for hold in store.legal_holds(tenant, tx=tx)
                if hold.subject is None or _holds_subject(hold, subject, subjects)]

    return holds


def segment_holds(store: Store, tenant: str, first_seq: int, last_seq: int,
                  holds: list[LegalHold]) -> list[str]:
    """The ids of the holds that keep a tenant's archive segment (its seqs ``first_seq`` to
    ``last_seq``) from its purge: holds on the whole tenant, and holds on a subject with a
    sealed event among the segment's."""
    return [hold.hold_id for hold in holds if hold.subject is None or any(
        first_seq <= seq <= last_seq for seq in store.subject_entries(tenant, hold.subject))]


def _holds_subject(hold: LegalHold, subject: str, subjects: Subjects | None) -> bool:
    if hold.subject == subject:
        return True
    # placed under an unkeyed digest (no master key then): its user id names the subject
    return (subjects is not None and hold.user_id is not None
            and subjects.subject_of(hold.tenant, hold.user_id) == subject)


def _ledger(committer: Committer, tx: Transaction, kind: Kind, hold: LegalHold, key_id: str) -> None:
    action = HoldAction(hold_id=hold.hold_id, tenant=hold.tenant, reason=hold.reason,
                        key_id=key_id, subject=hold.subject)
    append_admin_action(committer, tx, hold.tenant, kind, msgspec.to_builtins(action), key_id,
                        hold.hold_id)
