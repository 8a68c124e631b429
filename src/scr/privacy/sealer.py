"""The writer's side of sealing: each new event's personal fields, under its subject's key."""

from __future__ import annotations

from scr.privacy.sealing import Seal, seal
from scr.privacy.subjects import KeyRing, Subjects
from scr.schema import Event, canonical_bytes
from scr.store.protocol import Transaction


class Sealer:
    """Seals events for the committer (``scr.log.commit.Sealing``)."""

    def __init__(self, subjects: Subjects) -> None:
        self.subjects = subjects
        self.ring = KeyRing(subjects)

    def seal(self, tx: Transaction, event: Event) -> tuple[bytes, Seal, str]:
        tenant = event.user.organization_id
        subject = self.subjects.subject_of(tenant, event.user.user_id)
        key = self.ring.key_for(tx, tenant, subject)
        ledgered, sealed = seal(event, key.cipher, key.key, subject, key.generation)
        return canonical_bytes(ledgered), sealed, subject

    def mark(self) -> int:
        return self.ring.mark()

    def restore(self, mark: int) -> None:
        self.ring.restore(mark)

    def settle(self, committed: bool) -> None:
        self.ring.settle(committed)

    def forget(self, tenant: str, subject: str) -> None:
        self.ring.forget(tenant, subject)
