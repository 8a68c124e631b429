"""Versioned schema migrations of the PostgreSQL store, applied in order, each once.

``schema_migrations`` records every applied version. ``migrate`` runs at every start of a
PostgreSQL store and by ``scr db migrate``; it holds an advisory lock while it runs, so
instances starting together apply each migration exactly once. A migration is never edited
after it has shipped: changes are new, higher versions (additive, so running instances of
the previous version keep working while a cluster is upgraded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from scr.store import segments
from scr.store.holds import SCHEMA as HOLDS_SCHEMA
from scr.store.usage import HOURS, POSTGRES_HOURS_SCHEMA, fill_rollup
from scr.store.usage import POSTGRES_DURATIONS_SCHEMA as DURATIONS_SCHEMA
from scr.store.usage import POSTGRES_SCHEMA as USAGE_SCHEMA

# pg_advisory_xact_lock key of schema changes: the ASCII of "scrmigr" (any constant works,
# it only has to differ from the store's other locks).
MIGRATION_LOCK = 0x7363726D696772


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    apply: Callable[[psycopg.Connection[tuple[Any, ...]]], None]


def _sql(statements: str) -> Callable[[psycopg.Connection[tuple[Any, ...]]], None]:
    def apply(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        conn.execute(statements.encode())  # several statements, no parameters

    return apply


INITIAL = """
-- seq: the ledger position, from ledger_seq (increasing in commit order for each writer).
-- partition: hash(tenant) % partitions (scr.store.postgres.partition_of), for the bus's
-- per-partition owners; reads by (partition, seq) follow one partition in order.
CREATE SEQUENCE ledger_seq AS bigint;
CREATE TABLE ledger (
    seq bigint PRIMARY KEY,
    partition integer NOT NULL,
    tenant text NOT NULL,
    tenant_seq bigint NOT NULL,
    kind text NOT NULL,
    ts text NOT NULL,
    event_id text,
    session_id text,
    payload_digest bytea,
    entry bytea NOT NULL,
    hash bytea NOT NULL,
    CONSTRAINT ledger_tenant_position UNIQUE (tenant, tenant_seq)
);
-- exact dedup: one entry per (tenant, event_id), for as long as the ledger keeps it
CREATE UNIQUE INDEX ledger_event ON ledger (tenant, event_id) WHERE event_id IS NOT NULL;
CREATE INDEX ledger_partition ON ledger (partition, seq);
CREATE INDEX ledger_session ON ledger (tenant, session_id) WHERE session_id IS NOT NULL;
CREATE INDEX ledger_kind ON ledger (tenant, kind, seq) WHERE kind <> 'SESSION_COMPLETION';
CREATE INDEX ledger_ts ON ledger (ts);
CREATE TABLE api_keys (
    key_hash bytea PRIMARY KEY,
    key_id text NOT NULL UNIQUE,
    tenant text NOT NULL,
    role text NOT NULL,
    label text NOT NULL DEFAULT '',
    created_at text NOT NULL,
    revoked_at text
);
CREATE TABLE cursors (destination text PRIMARY KEY, seq bigint NOT NULL);
CREATE TABLE destination_state (
    destination text PRIMARY KEY,
    state text NOT NULL,
    reason text NOT NULL DEFAULT '',
    changed_at text NOT NULL
);
CREATE TABLE deliveries (
    destination text NOT NULL,
    seq bigint NOT NULL,
    tenant text NOT NULL,
    event_id text NOT NULL,
    session_key bigint NOT NULL,
    webhook_id text NOT NULL,
    status text NOT NULL,
    attempts integer NOT NULL,
    next_attempt_ms bigint NOT NULL,
    last_status integer,
    last_error text NOT NULL DEFAULT '',
    updated_at text NOT NULL,
    PRIMARY KEY (destination, seq)
);
CREATE INDEX deliveries_due ON deliveries (destination, status, next_attempt_ms);
CREATE TABLE attempts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination text NOT NULL,
    webhook_id text NOT NULL,
    seqs bigint[] NOT NULL,
    attempt integer NOT NULL,
    status integer,
    error text NOT NULL DEFAULT '',
    latency_ms double precision NOT NULL,
    response_excerpt text NOT NULL DEFAULT '',
    ts text NOT NULL
);
CREATE INDEX attempts_destination ON attempts (destination, id);
"""


PRIVACY = """
CREATE TABLE privacy (name text PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE subject_keys (
    tenant text NOT NULL, subject text NOT NULL, generation integer NOT NULL,
    wrapped bytea, created_at timestamptz NOT NULL DEFAULT now(), erased_at text,
    PRIMARY KEY (tenant, subject, generation)
);
CREATE TABLE subject_entries (
    tenant text NOT NULL, subject text NOT NULL, seq bigint NOT NULL,
    PRIMARY KEY (tenant, subject, seq)
);
"""


def _vector_if_available(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    """pgvector for the embedding index, where the server has it (pgserver ships it); a
    server without it still runs every other part of scr."""
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    if row is not None:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")

# scr.ledger.tiles (the same tables as on SQLite) and scr.ledger.checkpoints.PgCheckpointLog.
# covered_seq: the last ledger seq the stored trees hold (a ledger from before this version is
# hashed in when an instance starts).
LEDGER_TREES = """
CREATE TABLE ledger_tiles (
    tenant text NOT NULL,
    level integer NOT NULL,
    idx bigint NOT NULL,
    hashes bytea NOT NULL,
    PRIMARY KEY (tenant, level, idx)
);
CREATE TABLE ledger_tree_state (
    id integer PRIMARY KEY CHECK (id = 1),
    covered_seq bigint NOT NULL
);
INSERT INTO ledger_tree_state VALUES (1, 0);
CREATE TABLE ledger_checkpoints (
    tenant text NOT NULL,
    tree_size bigint NOT NULL,
    root_hash bytea NOT NULL,
    note text NOT NULL,
    issued_at text NOT NULL,
    PRIMARY KEY (tenant, tree_size)
);
CREATE TABLE ledger_signers (
    verifier_key text PRIMARY KEY,
    first_used text NOT NULL
);
"""


# issue 19 (scr.store.spans): the pending spans of OpenTelemetry sessions, as on SQLite, and
# each open session's partition and newest span time for the idle timer of its owner
OTLP_SPANS = """
CREATE TABLE otlp_spans (
    tenant text NOT NULL,
    trace_id text NOT NULL,
    span_id text NOT NULL,
    session_key text NOT NULL,
    actor text NOT NULL,
    span bytea NOT NULL,
    emitted_at text,
    PRIMARY KEY (tenant, trace_id, span_id)
);
CREATE INDEX otlp_spans_session ON otlp_spans (tenant, session_key) WHERE emitted_at IS NULL;
CREATE INDEX otlp_spans_emitted ON otlp_spans (emitted_at) WHERE emitted_at IS NOT NULL;
CREATE TABLE otlp_segments (
    tenant text NOT NULL, session_key text NOT NULL, emitted integer NOT NULL,
    PRIMARY KEY (tenant, session_key)
);
CREATE TABLE otlp_sessions (
    tenant text NOT NULL, session_key text NOT NULL, partition integer NOT NULL,
    last_span_ms bigint NOT NULL,
    PRIMARY KEY (tenant, session_key)
);
CREATE INDEX otlp_sessions_idle ON otlp_sessions (last_span_ms);
"""


# issue 19, writers side by side (scr.store.postgres): each partition's owner commits under
# its partition's lock, so seqs may commit out of order. A writer holds a lock keyed by the
# first seq of each range it reserves until its transaction ends; a reader reads no entry past
# the newest seq below every range still in flight (``scr_safe_seq``). Reserving runs under
# the shared lock ``ALLOCATING``, and a reader takes it exclusively for an instant: otherwise a
# writer stalled between ``nextval`` and its lock would let a reader past its seqs.
# The trees' coverage is per tenant, written under the tenant's partition lock.
ALLOCATING = 0x73637273657173  # "scrseqs"
IN_FLIGHT_CLASS = 0x7366  # the high 16 bits of an in-flight lock's key: "sf"; seqs < 2^48
IN_FLIGHT_BASE = IN_FLIGHT_CLASS << 48
SIDE_BY_SIDE = f"""
CREATE FUNCTION scr_reserve_seqs(n integer) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
DECLARE
    seqs bigint[];
BEGIN
    PERFORM pg_advisory_lock_shared({ALLOCATING});
    BEGIN
        seqs := ARRAY(SELECT nextval('ledger_seq') FROM generate_series(1, n));
        PERFORM pg_advisory_xact_lock({IN_FLIGHT_BASE} + seqs[1]);
    EXCEPTION WHEN OTHERS OR QUERY_CANCELED THEN
        PERFORM pg_advisory_unlock_shared({ALLOCATING});
        RAISE;
    END;
    PERFORM pg_advisory_unlock_shared({ALLOCATING});
    RETURN QUERY SELECT unnest(seqs);
END $$;
CREATE FUNCTION scr_safe_seq() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    top bigint;
    low bigint;
BEGIN
    PERFORM pg_advisory_lock({ALLOCATING});
    BEGIN
        SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO top FROM ledger_seq;
        SELECT min(((l.classid::bigint & 65535) << 32) | l.objid::bigint) INTO low FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.classid::bigint >> 16 = {IN_FLIGHT_CLASS}
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());
    EXCEPTION WHEN OTHERS OR QUERY_CANCELED THEN
        PERFORM pg_advisory_unlock({ALLOCATING});
        RAISE;
    END;
    PERFORM pg_advisory_unlock({ALLOCATING});
    RETURN least(top, coalesce(low - 1, top));
END $$;
CREATE TABLE ledger_tree_sizes (
    tenant text PRIMARY KEY,
    size bigint NOT NULL
);
INSERT INTO ledger_tree_sizes
SELECT tenant, max(tenant_seq) + 1 FROM ledger
WHERE seq <= (SELECT covered_seq FROM ledger_tree_state WHERE id = 1) GROUP BY tenant;
"""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "ledger, dedup, keys, cursors, deliveries, attempts", _sql(INITIAL)),
    Migration(2, "pgvector extension when the server has it", _vector_if_available),
    Migration(3, "web origins of publishable keys", _sql(
        "CREATE TABLE key_origins (key_id text NOT NULL, origin text NOT NULL, "
        "PRIMARY KEY (key_id, origin))"
    )),
    # the scale-out issue: instances register here; partition ownership is advisory locks
    Migration(4, "cluster instances", _sql(
        "CREATE TABLE cluster_instances (id text PRIMARY KEY, url text NOT NULL, "
        "backend_pid integer NOT NULL, partitions integer[] NOT NULL DEFAULT '{}', "
        "started_at timestamptz NOT NULL, heartbeat_at timestamptz NOT NULL)"
    )),
    # the usage issue: per-minute aggregates of the usage reader (scr.store.usage)
    Migration(5, "usage aggregates by minute", _sql(USAGE_SCHEMA)),
    # the privacy issue (scr.privacy): the master key's check value, subjects' data keys
    Migration(6, "privacy: subject keys and the sealed events of each subject", _sql(PRIVACY)),
    # the usage issue, analytics: session durations by user and quarter hour (median durations)
    Migration(7, "usage: histograms of session durations", _sql(DURATIONS_SCHEMA)),
    # the usage issue: the aggregates by hour, filled from the quarter hours already counted
    Migration(8, "usage aggregates by hour",
              _sql(f"{POSTGRES_HOURS_SCHEMA};\n{fill_rollup(HOURS, 'postgres')}")),
    # the retention issue (scr.retention.holds): legal holds on a tenant or one of its subjects
    Migration(9, "retention: legal holds", _sql(HOLDS_SCHEMA)),
    # the retention issue (scr.retention): the archive segments of each tenant
    Migration(10, "retention: archive segments", _sql(segments.POSTGRES_SCHEMA)),
    # the cluster-parity issue (scr.ledger): Merkle tiles, signed checkpoints and their keys
    Migration(11, "ledger: Merkle tiles and signed checkpoints", _sql(LEDGER_TREES)),
    # issue 19, OTLP parity (scr.store.spans): pending spans and the open sessions' idle times
    Migration(12, "OpenTelemetry pending spans", _sql(OTLP_SPANS)),
    # issue 19, the write path without a global lock: in-flight seqs and per-tenant tree sizes
    Migration(13, "ledger: writers side by side (safe seq, tree sizes per tenant)", _sql(SIDE_BY_SIDE)),
    # issue 19: the partition count every writer must agree on (scr.store.postgres.agreed_partitions)
    Migration(14, "store settings: the ledger's partition count", _sql(
        "CREATE TABLE store_settings (name text PRIMARY KEY, value text NOT NULL)"
    )),
)


def migrate(conn: psycopg.Connection[tuple[Any, ...]]) -> list[int]:
    """Apply every migration not yet applied, in order; the versions applied now."""
    applied_now: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
            "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            migration.apply(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied_now.append(migration.version)
    return applied_now


def schema_version(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    """The newest applied migration (0 for an empty database)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
    if exists is None or exists[0] is None:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0) if row else 0
