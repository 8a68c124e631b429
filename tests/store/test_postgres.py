"""``scr`` on PostgreSQL as a user runs it: migrations, keys, serve, verify, and outages."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time

import httpx
import psycopg
import pytest
from test_commit import submission

from conftest import StoreAt
from scr.config import StorePoolConfig
from scr.errors import Unavailable
from scr.ledger.chains import verify_chains
from scr.log.commit import Committer
from scr.store.migrations import MIGRATIONS
from scr.store.postgres import PostgresStore, partition_of
from servers import PostgresServer
from support import ServerProcess, create_key, make_event, run_scr, wait_for

OUTAGE_TIMEOUT_S = 20
POOL_WAIT_MS = 300


def test_db_migrate_applies_each_version_once(postgres_server: PostgresServer) -> None:
    uri = postgres_server.empty_database()
    first = run_scr("db", "migrate", "--store", uri)
    shipped = [m.version for m in MIGRATIONS]
    assert shipped == list(range(1, len(shipped) + 1))
    applied = ", ".join(map(str, shipped))
    assert f"schema version {shipped[-1]}; applied now: {applied}" in first.stdout
    again = run_scr("db", "migrate", "--store", uri)
    assert "applied now: none (already current)" in again.stdout
    with psycopg.connect(uri) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
        vector = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
    assert versions == shipped
    assert vector is not None  # pgserver ships pgvector, so the migration enabled it


def test_db_migrate_refuses_what_is_not_a_postgresql_uri(tmp_path: object) -> None:
    result = run_scr("db", "migrate", "--store", "mysql://root@localhost/db", check=False)
    assert result.returncode == 2 and "postgresql://" in result.stderr


def test_rows_carry_their_tenants_partition(postgres_uri: str) -> None:
    store = PostgresStore(postgres_uri, partitions=16)
    committer = Committer(store, buffer_size=100)
    committer.start()
    try:
        asyncio.run(committer.append_events(
            [submission(f"evt_{t}", **{"user.organization_id": t}) for t in ("org_a", "org_b", "org_c")]
        ))
    finally:
        committer.close()
    with psycopg.connect(postgres_uri) as conn:
        rows = conn.execute("SELECT tenant, partition FROM ledger").fetchall()
    assert dict(rows) == {t: partition_of(t, 16) for t in ("org_a", "org_b", "org_c")}
    # the documented hash, pinned: a change would move tenants between partition owners
    assert partition_of("org_acme", 16) == 15
    assert partition_of("org_acme", 7) == int(hashlib.sha256(b"org_acme").hexdigest()[:16], 16) % 7
    for tenant, part in rows:
        assert [e.tenant for e in store.partition_entries_after(part, 0, 10)].count(tenant) == 1
    store.close()


def test_ledger_verify_store_finds_a_changed_entry(postgres_uri: str) -> None:
    store = PostgresStore(postgres_uri)
    committer = Committer(store, buffer_size=100)
    committer.start()
    try:
        asyncio.run(committer.append_events([submission(f"evt_{i}") for i in range(5)]))
    finally:
        committer.close()
    clean = run_scr("ledger", "verify", "--store", postgres_uri, check=False)
    assert clean.returncode == 0, clean.stderr
    assert "verified" in clean.stdout and "5 entries" in clean.stdout
    with psycopg.connect(postgres_uri) as conn:
        changed = conn.execute(
            "UPDATE ledger SET entry = convert_to(replace(convert_from(entry, 'UTF8'), 'gpt-4o', "
            "'gpt-4x'), 'UTF8') WHERE tenant_seq = 2"
        ).rowcount
    assert changed == 1
    tampered = run_scr("ledger", "verify", "--store", postgres_uri, check=False)
    assert tampered.returncode == 1
    assert "tenant org_acme, entry 2 (event evt_2" in tampered.stderr
    assert [f.index for f in verify_chains(store).findings] == [2]  # only the changed entry
    store.close()


def test_readyz_is_503_while_postgres_is_cut_off_and_no_acked_event_is_lost(
    postgres_server: PostgresServer, postgres_uri: str, store_at_postgres: StoreAt,
) -> None:
    data = store_at_postgres.data
    key = create_key(data, role="admin", store=postgres_uri)
    server = ServerProcess(data, store=postgres_uri).start()
    headers = {"authorization": f"Bearer {key}"}
    acknowledged: list[str] = []

    def post(prefix: str) -> int:
        batch = [make_event(f"{prefix}_{i}") for i in range(20)]
        response = client.post("/v1/events", json=batch)
        if response.status_code == 202:
            acknowledged.extend(e["event_id"] for e in batch)
        return response.status_code

    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            assert post("before") == 202
            postgres_server.refuse_connections(postgres_uri, True)
            assert postgres_server.cut_connections(postgres_uri) >= 1
            assert post("during") == 503  # never acknowledged: the commit could not happen
            wait_for(lambda: client.get("/readyz").status_code == 503, OUTAGE_TIMEOUT_S, "not ready")
            assert client.get("/healthz").status_code == 200  # alive, only not ready
            postgres_server.refuse_connections(postgres_uri, False)
            wait_for(lambda: client.get("/readyz").status_code == 200, OUTAGE_TIMEOUT_S, "ready again")
            assert post("after") == 202
            for event_id in acknowledged:
                assert client.get(f"/v1/events/{event_id}").status_code == 200, event_id
            assert client.get("/v1/events/during_0").status_code == 404
    finally:
        server.stop()
        postgres_server.refuse_connections(postgres_uri, False)
    store = PostgresStore(postgres_uri)
    report = verify_chains(store)
    store.close()
    assert report.findings == [] and report.entries == len(acknowledged) + 1  # + the key's entry


def test_store_pool_settings_bound_the_readers_and_their_wait(postgres_uri: str) -> None:
    """One reader, 300 ms of wait: a second read while the first is stuck answers 503 after
    about 300 ms (not the default 5 s), and the pool serves again once the reader is free."""
    store = PostgresStore(postgres_uri, pool=StorePoolConfig(max_connections=1, wait_ms=POOL_WAIT_MS))
    blocker = psycopg.connect(postgres_uri)
    try:
        blocker.execute("LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE")  # held until rollback
        stuck = threading.Thread(target=store.last_seq)  # takes the only reader, waits on the lock
        stuck.start()

        def reader_waits_on_the_lock() -> bool:
            with psycopg.connect(postgres_uri) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()
            return row is not None and row[0] == 1

        wait_for(reader_waits_on_the_lock, OUTAGE_TIMEOUT_S, "the first read stuck on the lock")
        started = time.monotonic()
        with pytest.raises(Unavailable, match="cannot be read now"):
            store.last_seq()
        waited_s = time.monotonic() - started
        assert POOL_WAIT_MS / 1000 * 0.9 <= waited_s < 3.0, waited_s
        blocker.rollback()
        stuck.join(OUTAGE_TIMEOUT_S)
        assert not stuck.is_alive()
        assert store.last_seq() == 0  # the reader is back in the pool
    finally:
        blocker.close()
        store.close()
