"""Authentication: from an ``Authorization`` header to a ``Principal``, and key creation."""

from __future__ import annotations

import sqlite3
from collections import OrderedDict

from scr.errors import Unauthorized
from scr.log.commit import Committer, utc_now
from scr.log.entry import Kind
from scr.security.keys import (
    ANONYMOUS,
    KeyGrant,
    Principal,
    Role,
    bearer_key,
    hash_key,
    key_row,
)
from scr.store.sqlite import SqliteStore

KEY_CACHE_SIZE = 10_000


class Authenticator:
    """Checks keys against the store, remembering recent answers."""

    def __init__(self, store: SqliteStore, required: bool = True) -> None:
        self.store = store
        self.required = required
        self._cache: OrderedDict[bytes, Principal] = OrderedDict()

    def principal(self, authorization: str | None) -> Principal:
        """The caller; raises ``Unauthorized`` for a missing, unknown or revoked key."""
        if not self.required:
            return ANONYMOUS
        key_hash = hash_key(bearer_key(authorization))
        known = self._cache.get(key_hash)
        if known is not None:
            self._cache.move_to_end(key_hash)
            return known
        record = self.store.find_key(key_hash)
        if record is None or record.revoked_at is not None:
            raise Unauthorized("invalid API key")
        principal = Principal(record.key_id, record.tenant, Role(record.role))
        self._cache[key_hash] = principal
        if len(self._cache) > KEY_CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal


def create_key(committer: Committer, tenant: str, role: Role, label: str = "") -> KeyGrant:
    """Store a new key (hashed) and ledger its creation; the only time the key is seen."""
    grant, key_hash = key_row(tenant, role)

    def write(conn: sqlite3.Connection) -> None:
        committer.store.insert_key(conn, key_hash, grant.key_id, tenant, role.value, label, utc_now())
        committer.append_entry(
            conn, tenant, Kind.KEY_CREATED,
            {"key_id": grant.key_id, "role": role.value, "label": label},
            actor="cli", source="cli", ref=grant.key_id,
        )

    committer.run_sync(write)
    return grant
