"""Pending spans: OpenTelemetry spans kept durably until their session is emitted.

Write methods take the writer's transaction and run inside the committer's group
(``scr.log.commit``), like every write of the store: spans are stored, re-keyed,
emitted as an event and marked emitted atomically with the ledger append. An emitted span
is remembered for ``EMITTED_SPAN_RETENTION_S`` so an exporter that retries a batch it already
delivered does not start a second session with it. ``otlp_segments`` counts the events
already emitted per session, so a later part of a session gets the next segment number (and
event id) even after its earlier spans are gone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from scr.store.protocol import Transaction
from scr.store.sqlite import SqliteStore, SqliteWriter

SCHEMA = """
CREATE TABLE IF NOT EXISTS otlp_spans (
    tenant TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    session_key TEXT NOT NULL,
    actor TEXT NOT NULL,
    span BLOB NOT NULL,
    emitted_at TEXT,  -- NULL while its session is open
    PRIMARY KEY (tenant, trace_id, span_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS otlp_spans_session ON otlp_spans (tenant, session_key)
    WHERE emitted_at IS NULL;
CREATE INDEX IF NOT EXISTS otlp_spans_emitted ON otlp_spans (emitted_at) WHERE emitted_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS otlp_segments (
    tenant TEXT NOT NULL, session_key TEXT NOT NULL, emitted INTEGER NOT NULL,
    PRIMARY KEY (tenant, session_key)
) WITHOUT ROWID;
"""

# An exporter retries within minutes; a day is far beyond any retry schedule.
EMITTED_SPAN_RETENTION_S = 86_400

# (tenant, trace_id, span_id, session_key, actor, encoded span)
SpanRow = tuple[str, str, str, str, str, bytes]


def _sql(tx: Transaction) -> sqlite3.Connection:
    """The SQLite connection of the writer's transaction (the pending spans are SQLite tables
    beside the ledger so far; the PostgreSQL store does not keep them yet)."""
    assert isinstance(tx, SqliteWriter)
    return tx.conn


class PendingSpans:
    """The pending-span tables of one data folder."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        conn = store.connection()
        try:
            conn.executescript(SCHEMA)
        finally:
            conn.close()

    def insert(self, tx: Transaction, rows: Sequence[SpanRow]) -> int:
        """Store spans; one already stored (an exporter's retry) is left as it is. Answers
        how many were new."""
        conn = _sql(tx)
        before = conn.total_changes
        conn.executemany("INSERT OR IGNORE INTO otlp_spans VALUES (?,?,?,?,?,?,NULL)", rows)
        return conn.total_changes - before

    def trace_session(self, tx: Transaction, tenant: str, trace_id: str, prefix: str) -> str | None:
        """The session key starting with ``prefix`` that stored spans of a trace are under."""
        conn = _sql(tx)
        row = conn.execute(
            "SELECT session_key FROM otlp_spans WHERE tenant = ? AND trace_id = ? "
            "AND emitted_at IS NULL AND substr(session_key, 1, ?) = ? LIMIT 1",
            (tenant, trace_id, len(prefix), prefix),
        ).fetchone()
        return str(row[0]) if row else None

    def has_trace(self, tx: Transaction, tenant: str, trace_id: str) -> str | None:
        """The session key of any stored span of a trace."""
        conn = _sql(tx)
        row = conn.execute(
            "SELECT session_key FROM otlp_spans WHERE tenant = ? AND trace_id = ? "
            "AND emitted_at IS NULL LIMIT 1",
            (tenant, trace_id),
        ).fetchone()
        return str(row[0]) if row else None

    def rekey(self, tx: Transaction, tenant: str, old_key: str, new_key: str) -> None:
        conn = _sql(tx)
        conn.execute(
            "UPDATE otlp_spans SET session_key = ? WHERE tenant = ? AND session_key = ? "
            "AND emitted_at IS NULL",
            (new_key, tenant, old_key),
        )

    def session(self, tx: Transaction, tenant: str, key: str) -> list[tuple[str, bytes]]:
        """(actor, encoded span) of a session's stored spans, oldest stored first."""
        conn = _sql(tx)
        rows = conn.execute(
            "SELECT actor, span FROM otlp_spans WHERE tenant = ? AND session_key = ? "
            "AND emitted_at IS NULL",
            (tenant, key),
        ).fetchall()
        return [(str(actor), bytes(span)) for actor, span in rows]

    def next_segment(self, tx: Transaction, tenant: str, key: str) -> int:
        conn = _sql(tx)
        row = conn.execute(
            "SELECT emitted FROM otlp_segments WHERE tenant = ? AND session_key = ?", (tenant, key)
        ).fetchone()
        return int(row[0]) if row else 0

    def finish(
        self, tx: Transaction, tenant: str, key: str, segment: int, now: str
    ) -> None:
        """Mark an emitted session's spans emitted and count its segment. An emitted span is
        kept only to recognise a retry: its encoded body (user id, message content) goes."""
        conn = _sql(tx)
        conn.execute(
            "UPDATE otlp_spans SET emitted_at = ?, span = X'' WHERE tenant = ? AND session_key = ? "
            "AND emitted_at IS NULL",
            (now, tenant, key),
        )
        conn.execute(
            "INSERT INTO otlp_segments VALUES (?, ?, ?) ON CONFLICT (tenant, session_key) "
            "DO UPDATE SET emitted = excluded.emitted",
            (tenant, key, segment + 1),
        )

    def forget_emitted(self, tx: Transaction, before: str) -> int:
        """Delete spans emitted before ``before`` (an RFC 3339 UTC time); answers how many."""
        conn = _sql(tx)
        return conn.execute("DELETE FROM otlp_spans WHERE emitted_at < ?", (before,)).rowcount

    def open_sessions(self) -> list[tuple[str, str]]:
        """(tenant, session key) of every session with stored spans (read at startup)."""
        conn = self.store.connection()
        try:
            rows = conn.execute(
                "SELECT DISTINCT tenant, session_key FROM otlp_spans WHERE emitted_at IS NULL"
            ).fetchall()
        finally:
            conn.close()
        return [(str(tenant), str(key)) for tenant, key in rows]
