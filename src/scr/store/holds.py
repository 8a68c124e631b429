"""The legal holds' table (``legal_holds``) in both backends (``scr.retention.holds``).

One row per hold: on a whole tenant (``subject`` NULL) or on one subject (its keyed hash).
Releasing a hold sets ``released_at`` and forgets the user id (NULL), so personal data is
kept no longer than the hold needs it; the subject's keyed hash stays with the record. The
SQL is the same in both dialects but for the placeholder (``mark``: ``?`` or ``%s``), and
every statement names the tenant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scr.store.records import LegalHold

SCHEMA = """
CREATE TABLE IF NOT EXISTS legal_holds (
    hold_id text PRIMARY KEY,
    tenant text NOT NULL,
    subject text,
    user_id text,
    reason text NOT NULL,
    created_at text NOT NULL,
    key_id text NOT NULL,
    released_at text
);
CREATE INDEX IF NOT EXISTS legal_holds_tenant ON legal_holds (tenant, created_at);
"""

_COLUMNS = "hold_id, tenant, subject, user_id, reason, created_at, key_id, released_at"


def insert(mark: str) -> str:
    return f"INSERT INTO legal_holds ({_COLUMNS}) VALUES ({', '.join([mark] * 8)})"


def release(mark: str) -> str:
    """Release one active hold of a tenant: parameters (released_at, tenant, hold_id)."""
    return (f"UPDATE legal_holds SET released_at = {mark}, user_id = NULL "
            f"WHERE tenant = {mark} AND hold_id = {mark} AND released_at IS NULL "
            f"RETURNING {_COLUMNS}")


def select(mark: str, tenant: str | None, active: bool) -> tuple[str, list[str]]:
    """The holds of ``tenant`` (every tenant: None), only unreleased ones when ``active``,
    oldest first: the query and its parameters."""
    clauses, params = [], []
    if tenant is not None:
        clauses.append(f"tenant = {mark}")
        params.append(tenant)
    if active:
        clauses.append("released_at IS NULL")
    where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
    return f"SELECT {_COLUMNS} FROM legal_holds {where}ORDER BY created_at, hold_id", params


def values(hold: LegalHold) -> tuple[Any, ...]:
    """A hold's column values, in ``insert``'s order."""
    return (hold.hold_id, hold.tenant, hold.subject, hold.user_id, hold.reason, hold.created_at,
            hold.key_id, hold.released_at)


def as_hold(row: Sequence[Any]) -> LegalHold:
    return LegalHold(*row)
