"""The admin audit trail: every admin action is a ledger entry of its tenant naming the acting key.

An action appends its entry with ``append_admin_action`` inside the write that does it (the
same transaction), so the action and its record commit together or not at all. The acting key
is the entry's ``actor`` (``key:<key id>``, the id ``scr keys create`` prints; ``cli`` for
the operator's own commands, which hold no key); the payload is the action's details and never
holds a secret. ``GET /v1/audit`` (``scr.security.audit_api``) lists a tenant's admin
entries in ledger order.

Actions added later (erasure, legal holds, master-key rotation) add their kind to
``ADMIN_KINDS`` and call ``append_admin_action`` in their own write.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from scr.log.entry import Kind
from scr.security.keys import KEY_ACTOR_PREFIX

ADMIN_KINDS: frozenset[str] = frozenset({
    Kind.KEY_CREATED.value, Kind.KEY_REVOKED.value, Kind.DELIVERIES_REPLAYED.value,
    Kind.DESTINATION_ENABLED.value, Kind.ERASURE.value, Kind.MASTER_KEY_ROTATED.value,
    Kind.LEGAL_HOLD_PLACED.value, Kind.LEGAL_HOLD_RELEASED.value, Kind.SEGMENT_PURGED.value,
})
OPERATOR_ACTOR = "cli"  # the operator's commands on the data folder or store hold no key
ADMIN_SOURCE = "admin"


class EntryAppender(Protocol):
    """What appends a non-event entry inside a write: the writer's ``Committer``, or a reader
    process's ``RemoteCommitter`` (which hands it to the writer's same transaction)."""

    def append_entry(self, tx: Any, tenant: str, kind: Kind | str, payload: Any,
                     actor: str, source: str, ref: str) -> object: ...


class Acting(msgspec.Struct, frozen=True):
    """Who does an admin action through the API: the tenant whose ledger records it, and the
    acting key's id."""

    tenant: str
    key_id: str


def append_admin_action(
    committer: EntryAppender, tx: Any, tenant: str, kind: Kind, details: dict[str, Any],
    key_id: str | None, ref: str = "",
) -> None:
    """Ledger an admin action of ``tenant`` in the write ``tx`` that does it; ``key_id`` is the
    acting key's id (``None`` for the operator's CLI). ``details`` must hold no secret."""
    assert kind.value in ADMIN_KINDS, f"{kind.value} is not an admin kind (add it to ADMIN_KINDS)"
    actor = f"{KEY_ACTOR_PREFIX}{key_id}" if key_id is not None else OPERATOR_ACTOR
    source = ADMIN_SOURCE if key_id is not None else OPERATOR_ACTOR
    committer.append_entry(tx, tenant, kind, details, actor=actor, source=source, ref=ref)
