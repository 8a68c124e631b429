"""Authentication: from an ``Authorization`` header to a ``Principal``, and key creation."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from scr.errors import NotFound, Unauthorized
from scr.log.commit import Committer, utc_now
from scr.log.entry import Kind
from scr.security.audit import append_admin_action
from scr.security.keys import (
    ANONYMOUS,
    KeyGrant,
    Principal,
    Role,
    bearer_key,
    hash_key,
    key_origins,
    key_row,
)
from scr.store.protocol import Store, Transaction

log = logging.getLogger("scr.security")

KEY_CACHE_SIZE = 10_000
# A key checked against the store is served from memory; once it is this old, the next request
# that uses it has it checked again in the background (the request itself never waits for the
# store). A key revoked by any process (`scr keys revoke`, another instance) is refused within
# about this long everywhere; while the store cannot be read, a key checked before stays good, so
# a cluster keeps acknowledging into its bus through a store outage.
KEY_CACHE_TTL_S = 5.0


class Authenticator:
    """Checks keys against the store, remembering recent answers."""

    def __init__(self, store: Store, required: bool = True) -> None:
        self.store = store
        self.required = required
        self._cache: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()  # the cache is shared with the re-checking thread
        self._rechecker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scr-key-check")

    def principal(self, authorization: str | None) -> Principal:
        """The caller; raises ``Unauthorized`` for a missing, unknown or revoked key."""
        if not self.required:
            return ANONYMOUS
        return self.key_principal(bearer_key(authorization))

    def key_principal(self, key: str) -> Principal:
        """The holder of ``key``, checked even when authentication is off (a publishable
        key is how a browser beacon names its tenant and origins)."""
        key_hash = hash_key(key)
        now = time.monotonic()
        with self._lock:
            known = self._cache.get(key_hash)
            if known is not None:
                self._cache.move_to_end(key_hash)
                if now - known[1] >= KEY_CACHE_TTL_S:  # one re-check per period, off this path
                    self._cache[key_hash] = (known[0], now)
                    self._rechecker.submit(self._recheck, key_hash)
        if known is None:
            return self._check(key_hash)
        return known[0]

    def _check(self, key_hash: bytes) -> Principal:
        """Ask the store about a key and remember the answer (a refused key is forgotten)."""
        record = self.store.find_key(key_hash)
        if record is None or record.revoked_at is not None:
            with self._lock:
                self._cache.pop(key_hash, None)
            raise Unauthorized("invalid API key")
        role = Role(record.role)
        origins = self.store.find_key_origins(record.key_id) if role is Role.PUBLISHABLE else frozenset()
        principal = Principal(record.key_id, record.tenant, role, origins)
        with self._lock:
            self._cache[key_hash] = (principal, time.monotonic())
            self._cache.move_to_end(key_hash)
            if len(self._cache) > KEY_CACHE_SIZE:
                self._cache.popitem(last=False)
        return principal

    def _recheck(self, key_hash: bytes) -> None:
        try:
            self._check(key_hash)
        except Unauthorized:
            pass  # revoked: forgotten, so the next request is refused
        except Exception as error:  # the store is away: keep the key, ask again next period
            log.warning("could not re-check an API key: %s", error)


def create_key(
    committer: Committer, tenant: str, role: Role, label: str = "", origins: Sequence[str] = ()
) -> KeyGrant:
    """Store a new key (hashed) and ledger its creation; the only time the key is seen.

    A publishable key needs ``origins`` (the web origins it is accepted from); others refuse them.
    """
    allowed = key_origins(role, list(origins))
    grant, key_hash = key_row(tenant, role)
    grant = dataclasses.replace(grant, origins=allowed)

    def write(tx: Transaction) -> None:
        committer.store.insert_key(tx, key_hash, grant.key_id, tenant, role.value, label, utc_now())
        committer.store.insert_key_origins(tx, grant.key_id, sorted(allowed))
        created: dict[str, object] = {"key_id": grant.key_id, "role": role.value, "label": label}
        if allowed:
            created["origins"] = sorted(allowed)
        append_admin_action(committer, tx, tenant, Kind.KEY_CREATED, created, key_id=None,
                            ref=grant.key_id)

    committer.run_sync(write)
    return grant


def revoke_key(committer: Committer, key_id: str) -> str:
    """Revoke the key ``key_id`` and ledger it; its tenant. Servers refuse it within
    ``KEY_CACHE_TTL_S``."""

    def write(tx: Transaction) -> str:
        tenant = committer.store.revoke_key(tx, key_id, utc_now())
        if tenant is None:
            raise NotFound(f"no active key {key_id!r} (unknown, or revoked already)")
        append_admin_action(committer, tx, tenant, Kind.KEY_REVOKED, {"key_id": key_id}, key_id=None,
                            ref=key_id)
        return tenant

    return committer.run_sync(write)
