"""Pending spans: OpenTelemetry spans kept durably until their session is emitted, in both stores.

Write methods take the writer's transaction and run inside the committer's group
(``scr.log.commit``), like every write of the store: spans are stored, re-keyed,
emitted as an event and marked emitted atomically with the ledger append. An emitted span
is remembered for ``EMITTED_SPAN_RETENTION_S`` so an exporter that retries a batch it already
delivered does not start a second session with it. ``otlp_segments`` counts the events
already emitted per session, so a later part of a session gets the next segment number (and
event id) even after its earlier spans are gone. ``otlp_sessions`` holds one row per open
session: its tenant's partition and when its newest span was stored, so the idle timer of
whichever instance owns the partition finds it, wherever its spans arrived.

The SQL is written once with ``?`` placeholders (``_Writes`` turns them into ``%s`` on
PostgreSQL). What differs: the SQLite tables are created here when the store opens (beside
the ledger in the data folder), the PostgreSQL ones by migration 12 (``scr.store.migrations``);
and on PostgreSQL a session's span rows are locked (``FOR UPDATE``) when it is emitted, so two
writers that both see it open emit it once (writers of different partitions commit side by
side, and an OTLP write may emit a session of any partition).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection, Sequence
from typing import Any

from scr.store.postgres import PostgresWriter, partition_of
from scr.store.protocol import Store, Transaction
from scr.store.sql import sql_of
from scr.store.sqlite import SqliteStore

SQLITE_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS otlp_sessions (
    tenant TEXT NOT NULL, session_key TEXT NOT NULL, partition INTEGER NOT NULL,
    last_span_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, session_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS otlp_sessions_idle ON otlp_sessions (last_span_ms);
"""

# An exporter retries within minutes; a day is far beyond any retry schedule.
EMITTED_SPAN_RETENTION_S = 86_400

# (tenant, trace_id, span_id, session_key, actor, encoded span)
SpanRow = tuple[str, str, str, str, str, bytes]


class _Writes:
    """The writer's transaction in its store's dialect (``scr.store.sql``): SQL written with ``?``."""

    def __init__(self, tx: Transaction) -> None:
        self._sql = sql_of(tx)
        self.lock_rows = " FOR UPDATE" if isinstance(tx, PostgresWriter) else ""

    def run(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Execute one statement; the cursor (``fetchone``, ``fetchall``, ``rowcount``)."""
        return self._sql.execute(sql, params)

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Execute one statement per row; how many rows it changed in all."""
        return int(self._sql.executemany(sql, rows).rowcount) if rows else 0


class PendingSpans:
    """The pending-span tables of a store (``partitions``: the cluster's, for the idle timer)."""

    def __init__(self, store: Store, partitions: int) -> None:
        self.partitions = partitions
        if isinstance(store, SqliteStore):
            conn = store.connection()
            try:
                conn.executescript(SQLITE_SCHEMA)
                self._track_open_sessions(conn)
            finally:
                conn.close()
        # PostgreSQL: the tables are migration 12, applied when the store opened

    def _track_open_sessions(self, conn: sqlite3.Connection) -> None:
        """Give the sessions a data folder from before ``otlp_sessions`` left open a row
        (as if their last span came now: they are emitted after the idle time)."""
        untracked = conn.execute(
            "SELECT DISTINCT tenant, session_key FROM otlp_spans s WHERE emitted_at IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM otlp_sessions o WHERE o.tenant = s.tenant "
            "AND o.session_key = s.session_key)"
        ).fetchall()
        if untracked:
            now = now_ms()
            with conn:
                conn.executemany("INSERT OR IGNORE INTO otlp_sessions VALUES (?, ?, ?, ?)", [
                    (tenant, key, partition_of(tenant, self.partitions), now)
                    for tenant, key in untracked
                ])

    def insert(self, tx: Transaction, rows: Sequence[SpanRow]) -> int:
        """Store spans; one already stored (an exporter's retry) is left as it is. Answers
        how many were new."""
        return _Writes(tx).many(
            "INSERT INTO otlp_spans VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT DO NOTHING", rows
        )

    def touch(self, tx: Transaction, tenant: str, keys: Collection[str], now_ms: int) -> None:
        """Record that the open sessions ``keys`` of a tenant got a span at ``now_ms``."""
        partition = partition_of(tenant, self.partitions)
        _Writes(tx).many(
            "INSERT INTO otlp_sessions VALUES (?, ?, ?, ?) ON CONFLICT (tenant, session_key) "
            "DO UPDATE SET last_span_ms = excluded.last_span_ms",
            [(tenant, key, partition, now_ms) for key in sorted(keys)],
        )

    def trace_session(self, tx: Transaction, tenant: str, trace_id: str, prefix: str) -> str | None:
        """The session key starting with ``prefix`` that stored spans of a trace are under."""
        row = _Writes(tx).run(
            "SELECT session_key FROM otlp_spans WHERE tenant = ? AND trace_id = ? "
            f"AND emitted_at IS NULL AND substr(session_key, 1, {len(prefix):d}) = ? LIMIT 1",
            (tenant, trace_id, prefix),
        ).fetchone()
        return str(row[0]) if row else None

    def has_trace(self, tx: Transaction, tenant: str, trace_id: str) -> str | None:
        """The session key of any stored span of a trace."""
        row = _Writes(tx).run(
            "SELECT session_key FROM otlp_spans WHERE tenant = ? AND trace_id = ? "
            "AND emitted_at IS NULL LIMIT 1",
            (tenant, trace_id),
        ).fetchone()
        return str(row[0]) if row else None

    def rekey(self, tx: Transaction, tenant: str, old_key: str, new_key: str) -> None:
        """Move a session's open spans under another key (the caller touches the new key)."""
        writes = _Writes(tx)
        writes.run(
            "UPDATE otlp_spans SET session_key = ? WHERE tenant = ? AND session_key = ? "
            "AND emitted_at IS NULL",
            (new_key, tenant, old_key),
        )
        writes.run("DELETE FROM otlp_sessions WHERE tenant = ? AND session_key = ?", (tenant, old_key))

    def session(self, tx: Transaction, tenant: str, key: str) -> list[tuple[str, bytes]]:
        """(actor, encoded span) of a session's stored spans, locked until the transaction
        ends on PostgreSQL (a second emitter waits, then finds them emitted)."""
        writes = _Writes(tx)
        rows = writes.run(
            "SELECT actor, span FROM otlp_spans WHERE tenant = ? AND session_key = ? "
            f"AND emitted_at IS NULL ORDER BY trace_id, span_id{writes.lock_rows}",
            (tenant, key),
        ).fetchall()
        return [(str(actor), bytes(span)) for actor, span in rows]

    def next_segment(self, tx: Transaction, tenant: str, key: str) -> int:
        row = _Writes(tx).run(
            "SELECT emitted FROM otlp_segments WHERE tenant = ? AND session_key = ?", (tenant, key)
        ).fetchone()
        return int(row[0]) if row else 0

    def finish(self, tx: Transaction, tenant: str, key: str, segment: int, now: str) -> None:
        """Mark an emitted session's spans emitted, count its segment and close it. An
        emitted span is kept only to recognise a retry: its encoded body (user id, message
        content) goes."""
        writes = _Writes(tx)
        writes.run(
            "UPDATE otlp_spans SET emitted_at = ?, span = ? WHERE tenant = ? AND session_key = ? "
            "AND emitted_at IS NULL",
            (now, b"", tenant, key),
        )
        writes.run(
            "INSERT INTO otlp_segments VALUES (?, ?, ?) ON CONFLICT (tenant, session_key) "
            "DO UPDATE SET emitted = excluded.emitted",
            (tenant, key, segment + 1),
        )
        self.close(tx, tenant, key)

    def close(self, tx: Transaction, tenant: str, key: str) -> None:
        """Forget an open session's idle time (it has no span left to emit)."""
        _Writes(tx).run("DELETE FROM otlp_sessions WHERE tenant = ? AND session_key = ?", (tenant, key))

    def idle(
        self, tx: Transaction, partitions: Collection[int] | None, before_ms: int, limit: int
    ) -> list[tuple[str, str]]:
        """(tenant, session key) of up to ``limit`` open sessions of ``partitions`` (None:
        every one) whose newest span was stored before ``before_ms``, longest idle first."""
        if partitions is not None and not partitions:
            return []
        where, params = "last_span_ms < ?", [before_ms]
        if partitions is not None:
            owned = sorted(partitions)
            where += f" AND partition IN ({', '.join('?' * len(owned))})"
            params += owned
        rows = _Writes(tx).run(
            f"SELECT tenant, session_key FROM otlp_sessions WHERE {where} "
            "ORDER BY last_span_ms LIMIT ?",  # the index's order: the scan stops at the limit
            (*params, limit),
        ).fetchall()
        return [(str(tenant), str(key)) for tenant, key in rows]

    def forget_emitted(self, tx: Transaction, before: str) -> int:
        """Delete spans emitted before ``before`` (an RFC 3339 UTC time); answers how many."""
        return int(_Writes(tx).run("DELETE FROM otlp_spans WHERE emitted_at < ?", (before,)).rowcount)


def now_ms() -> int:
    """Now in milliseconds since the epoch: the clock of ``otlp_sessions.last_span_ms``."""
    return time.time_ns() // 1_000_000
