"""API keys: created once, shown once, stored as a SHA-256 hash, checked per request.

A key is ``scr_<key id>_<secret>``: the key id (8 hex characters) is public and appears in
logs and ledger entries; the secret is 32 random bytes. Keys carry 256 bits of entropy, so a
plain SHA-256 is the right store (a slow password hash protects low-entropy secrets only).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from enum import Enum

from scr.errors import BadRequest, Forbidden, Unauthorized
from scr.schema import ID_PATTERN

KEY_PREFIX = "scr_"
KEY_ACTOR_PREFIX = "key:"  # a key as the actor of the ledger entries it causes
KEY_ID_BYTES = 4
KEY_SECRET_BYTES = 32
MAX_KEY_LENGTH = 128


class Role(str, Enum):
    """What a key may do. ``platform`` posts events for any tenant (a trusted gateway)."""

    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"
    PLATFORM = "platform"
    AUDITOR = "auditor"
    # Embedded in web pages, so public by design: it may only post browser beacons for its
    # tenant, from its configured origins, under a rate limit (scr.capture.browser).
    PUBLISHABLE = "publishable"


# What each role may do, by the permission names routes ask for.
PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.INGEST: frozenset({"ingest", "decide"}),
    Role.READ: frozenset({"read", "ledger"}),
    Role.ADMIN: frozenset({"ingest", "read", "ledger", "admin", "audit", "decide", "cluster"}),
    Role.PLATFORM: frozenset({"ingest", "any_tenant", "cluster"}),
    Role.AUDITOR: frozenset({"ledger", "audit"}),
    Role.PUBLISHABLE: frozenset({"beacon"}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key id, its tenant and role (``None`` tenant = all tenants)."""

    key_id: str
    tenant: str | None
    role: Role | None
    # Web origins (``scheme://host[:port]``) a publishable key is accepted from.
    origins: frozenset[str] = frozenset()

    @property
    def actor(self) -> str:
        return f"{KEY_ACTOR_PREFIX}{self.key_id}"

    def can(self, permission: str) -> bool:
        return self.role is None or permission in PERMISSIONS[self.role]

    def require(self, permission: str) -> None:
        if not self.can(permission):
            role = self.role.value if self.role else "none"
            raise Forbidden(f"a key with role '{role}' may not do this (needs '{permission}')")

    def scope(self, requested: str | None) -> str:
        """The tenant a read is scoped to: the key's own, or ``requested`` (``?tenant=``)
        for a caller that spans tenants."""
        if self.tenant is not None:
            return self.tenant
        if not requested:
            raise BadRequest("this caller spans tenants: name one with ?tenant=")
        return requested

    def may_write_for(self, tenant: str) -> bool:
        return self.tenant is None or self.tenant == tenant or self.can("any_tenant")


# With validation.require_authentication false: one local caller that may do everything.
ANONYMOUS = Principal("anonymous", None, None)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_key() -> tuple[str, str]:
    """A fresh (key id, full key)."""
    key_id = secrets.token_hex(KEY_ID_BYTES)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(KEY_SECRET_BYTES)}"


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        names = ", ".join(r.value for r in Role)
        raise BadRequest(f"unknown role '{value}'; roles are {names}") from None


def check_tenant_id(tenant: str) -> None:
    if not re.fullmatch(ID_PATTERN.strip("^$"), tenant):
        raise BadRequest(f"tenant '{tenant}' must be 1-128 characters of [A-Za-z0-9_.:-]")


# An origin as browsers send it: scheme, host and an optional port, nothing more.
_ORIGIN = re.compile(r"^(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?$")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
MAX_ORIGINS = 64


def normalize_origin(origin: str) -> str:
    """An origin in the form browsers send in the ``Origin`` header (lower case, no default
    port); ``BadRequest`` for anything else (a path, a wildcard, another scheme)."""
    value = origin.strip().lower().rstrip("/")
    match = _ORIGIN.fullmatch(value)
    if match is None:
        raise BadRequest(
            f"origin '{origin}' must be scheme://host[:port] with http or https, e.g. https://app.example"
        )
    scheme, host, port = match.groups()
    if port == _DEFAULT_PORTS[scheme]:
        port = None
    return f"{scheme}://{host}{port or ''}"


def key_origins(role: Role, origins: list[str]) -> frozenset[str]:
    """The checked origins of a new key: required for a publishable key, refused for others."""
    if role is not Role.PUBLISHABLE:
        if origins:
            raise BadRequest("only a publishable key has origins")
        return frozenset()
    if not origins:
        raise BadRequest("a publishable key needs at least one --origin (e.g. https://app.example)")
    if len(origins) > MAX_ORIGINS:
        raise BadRequest(f"a key has at most {MAX_ORIGINS} origins")
    return frozenset(normalize_origin(origin) for origin in origins)


def bearer_key(authorization: str | None) -> str:
    """The key in an ``Authorization: Bearer`` header; 401 when absent or malformed."""
    if not authorization:
        raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <api key>'")
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized("Authorization must be 'Bearer <api key>'")
    if len(key) > MAX_KEY_LENGTH or not key.startswith(KEY_PREFIX):
        raise Unauthorized("invalid API key")
    return key


@dataclass(frozen=True, slots=True)
class KeyGrant:
    key_id: str
    key: str
    tenant: str
    role: Role
    origins: frozenset[str] = frozenset()


def key_row(tenant: str, role: Role) -> tuple[KeyGrant, bytes]:
    """A new key for ``tenant`` and its hash, ready to store."""
    check_tenant_id(tenant)
    key_id, key = new_key()
    return KeyGrant(key_id, key, tenant, role), hash_key(key)
