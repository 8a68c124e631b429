"""The verifiable ledger on a cluster: Merkle proofs and signed checkpoints from any instance of
several ``scr serve`` over one PostgreSQL and one JetStream, and a signer SIGKILLed mid-signature.

Real servers: PostgreSQL from pgserver, nats-server with JetStream, ``scr serve`` processes,
all on 127.0.0.1. Every instance holds the same signing key (``ledger.key_file``).
"""

from __future__ import annotations

import base64
import itertools
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from serve.test_supervisor import WRITER, child

from bus.test_cluster import PARTITIONS, cluster_view, lock_holders, shared_by
from scr.ledger.checkpoints import CHECKPOINT_LOCK
from scr.ledger.service import CHECKPOINT_SIGNER_NAME
from scr.log.checkpoint import Checkpoint, verify_note
from scr.log.merkle import leaf_hash, verify_consistency, verify_inclusion
from scr.store.postgres import partition_of
from servers import NatsServer
from support import ServerProcess, create_key, make_event, post_acknowledged, run_scr, wait_for

EVERY_ENTRIES = 20  # a checkpoint every 20 entries: the owners sign all the time
BATCH_EVENTS = 20
TIMEOUT_S = 10


def ledger_config(path: Path, nats: NatsServer, key_file: Path) -> Path:
    path.write_text(
        "session_completion_runtime:\n"
        f"  bus: {nats.url}\n"
        f"  cluster: {{partitions: {PARTITIONS}, ack_wait_ms: 1000, ownership_poll_ms: 200}}\n"
        "  routing:\n    destinations: []\n"
        f"  ledger: {{checkpoint_every_entries: {EVERY_ENTRIES}, checkpoint_every_s: 1,\n"
        f"            key_file: {key_file}}}\n"
    )
    return path


@dataclass
class LedgerCluster:
    servers: list[ServerProcess]
    store: str
    ingest: str
    auditors: dict[str, str]  # tenant -> auditor key
    acknowledged: list[str] = field(default_factory=list)
    batches: int = 0

    def get(self, server: ServerProcess, path: str, tenant: str, **params: Any) -> httpx.Response:
        return httpx.get(f"{server.url}{path}", params=params, timeout=TIMEOUT_S,
                         headers={"authorization": f"Bearer {self.auditors[tenant]}"})

    def checkpoint(self, server: ServerProcess, tenant: str) -> Checkpoint:
        key = self.get(server, "/v1/ledger/public-key", tenant).text.strip()
        answer = self.get(server, "/v1/ledger/checkpoint", tenant)
        assert answer.status_code == 200, answer.text
        return verify_note(answer.text, key, origin=f"scr/{tenant}")

    def post(self, tenants: list[str], batches: int) -> None:
        with httpx.Client(timeout=TIMEOUT_S) as client:
            for _ in range(batches):
                self.batches += 1
                server = self.servers[self.batches % len(self.servers)]
                batch = [make_event(f"evt_{self.batches}_{i}",
                                    **{"user.organization_id": tenants[i % len(tenants)]})
                         for i in range(BATCH_EVENTS)]
                assert post_acknowledged(client, server.url, self.ingest, batch, self.acknowledged)

    def entries_of(self, tenant: str) -> int:
        with psycopg.connect(self.store) as conn:
            row = conn.execute("SELECT count(*) FROM ledger WHERE tenant = %s", (tenant,)).fetchone()
        return int(row[0]) if row else 0

    def appended(self) -> int:
        with psycopg.connect(self.store) as conn:
            row = conn.execute("SELECT count(*) FROM ledger WHERE kind = 'SESSION_COMPLETION'").fetchone()
        return int(row[0]) if row else 0

    def wait_appended(self) -> None:
        wait_for(lambda: self.appended() >= len(self.acknowledged), timeout_s=60,
                 what="every acknowledged event appended")

    def audit(self, server: ServerProcess, tenant: str, state: Path) -> None:
        """``scr ledger audit`` against ``server``: the newest checkpoint extends the saved one."""
        run_scr("ledger", "audit", "--url", server.url, "--key", self.auditors[tenant],
                "--tenant", tenant, "--state", str(state), "--samples", "8")


@contextmanager
def ledger_cluster(
    tmp_path: Path, postgres_uri: str, nats: NatsServer, tenants: list[str]
) -> Iterator[LedgerCluster]:
    """Two instances sharing one signing key; a platform key, and an auditor key per tenant."""
    config = ledger_config(tmp_path / "scr.yaml", nats, tmp_path / "ledger-key.pem")
    ingest = create_key(tmp_path / "keys", role="platform", store=postgres_uri)
    auditors = {tenant: create_key(tmp_path / "keys", tenant=tenant, role="auditor", store=postgres_uri)
                for tenant in tenants}
    servers = [ServerProcess(tmp_path / f"data{i}", config, store=postgres_uri) for i in range(2)]
    try:
        for server in servers:
            server.start()
        yield LedgerCluster(servers, postgres_uri, ingest, auditors)
    finally:
        for server in servers:
            server.stop()


def b64(values: list[str]) -> list[bytes]:
    return [base64.b64decode(v) for v in values]


def stored_checkpoints(store: str, tenant: str) -> list[tuple[int, str]]:
    with psycopg.connect(store) as conn:
        rows = conn.execute("SELECT tree_size, note FROM ledger_checkpoints WHERE tenant = %s "
                            "ORDER BY tree_size", (tenant,)).fetchall()
    return [(int(size), note) for size, note in rows]


def assert_checkpoints_consistent(running: LedgerCluster, server: ServerProcess, tenant: str) -> int:
    """Every stored checkpoint of ``tenant`` verifies, and each is proven to extend the one
    before it; how many there are."""
    key = running.get(server, "/v1/ledger/public-key", tenant).text.strip()
    notes = [note for _, note in stored_checkpoints(running.store, tenant)]
    signed = [verify_note(note, key, origin=f"scr/{tenant}") for note in notes]
    for old, new in itertools.pairwise(signed):
        proof = running.get(server, "/v1/ledger/proof/consistency", tenant,
                            first=old.tree_size, second=new.tree_size).json()
        verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, b64(proof["hashes"]))
    return len(signed)


def test_proofs_and_checkpoints_answer_alike_from_every_instance(
    tmp_path: Path, postgres_uri: str, nats_server: NatsServer
) -> None:
    tenants = ["org_a", "org_b", "org_c"]
    with ledger_cluster(tmp_path, postgres_uri, nats_server, tenants) as running:
        first, second = running.servers
        running.post(tenants, 30)
        running.wait_appended()
        for tenant in tenants:
            keys = {running.get(s, "/v1/ledger/public-key", tenant).text for s in running.servers}
            assert len(keys) == 1  # one key for the cluster
            issued = httpx.post(f"{first.url}/v1/ledger/checkpoint", timeout=TIMEOUT_S,
                                headers={"authorization": f"Bearer {running.auditors[tenant]}"})
            assert issued.status_code == 200, issued.text
            checkpoint = running.checkpoint(second, tenant)  # the newest, whoever signed it
            posted = 30 * sum(1 for i in range(BATCH_EVENTS) if i % len(tenants) == tenants.index(tenant))
            assert checkpoint.tree_size == running.entries_of(tenant) == 1 + posted  # and the key's entry
            event_id = next(e for e in running.acknowledged  # event i of a batch went to tenant i % 3
                            if int(e.rsplit("_", 1)[1]) % len(tenants) == tenants.index(tenant))
            proof = running.get(first, "/v1/ledger/proof/inclusion", tenant,
                                event_id=event_id, tree_size=checkpoint.tree_size).json()
            (entry,) = running.get(second, "/v1/ledger/entries", tenant,
                                   start=proof["leaf_index"], end=proof["leaf_index"] + 1).json()["entries"]
            assert entry["event_id"] == event_id
            verify_inclusion(leaf_hash(base64.b64decode(entry["leaf"])), proof["leaf_index"],
                             checkpoint.tree_size, b64(proof["hashes"]), checkpoint.root_hash)
            assert assert_checkpoints_consistent(running, second, tenant) >= 2  # the rhythm signed too
            state = tmp_path / f"audit-{tenant}.json"
            running.audit(first, tenant, state)
            running.post([tenant], 2)
            running.wait_appended()
            running.audit(second, tenant, state)  # the other instance's newest extends it
        # a tenant's key reads its own tree on every instance, whatever tenant it names
        for server in running.servers:
            other = httpx.get(f"{server.url}/v1/ledger/checkpoint", params={"tenant": "org_b"},
                              headers={"authorization": f"Bearer {running.auditors['org_a']}"})
            assert other.text.startswith("scr/org_a\n"), other.text
    verified = run_scr("ledger", "verify", "--store", postgres_uri, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def checkpoint_signer(store: str) -> int | None:
    """The process holding the checkpoint signing lock now (its PID, from the name its
    connection gives PostgreSQL), if any."""
    with psycopg.connect(store, autocommit=True) as conn:
        row = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted "
            "AND l.classid = %s AND l.objid = %s",
            (CHECKPOINT_LOCK >> 32, CHECKPOINT_LOCK & 0xFFFFFFFF),
        ).fetchone()
    if row is None or not row[0].startswith(CHECKPOINT_SIGNER_NAME):
        return None
    return int(row[0].rsplit(" ", 1)[1])


def tenants_owned_by(running: LedgerCluster, server: ServerProcess, admin: str, count: int) -> list[str]:
    view = cluster_view(server.url, admin)
    partitions = next(i["partitions"] for i in view["instances"] if i["url"] == server.url)
    owned = [t for t in (f"org_{n}" for n in range(200)) if partition_of(t, PARTITIONS) in partitions]
    return owned[:count]


def stream(running: LedgerCluster, tenants: list[str], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            running.post(tenants, 1)
        except (AssertionError, httpx.HTTPError):  # an instance busy taking partitions over
            time.sleep(0.05)


@pytest.mark.slow
def test_a_signer_sigkilled_mid_signature_leaves_consistent_checkpoints_and_one_signer_resumes(
    tmp_path: Path, postgres_uri: str, nats_server: NatsServer
) -> None:
    """Events go to tenants of one instance's partitions only, so that instance's writer is
    their one signer; it is SIGKILLed while it holds the signing lock. The supervisor starts it
    again, each partition is owned once, signing resumes, and every checkpoint extends the one
    before it (``scr ledger audit`` across the kill passes on both instances)."""
    with ledger_cluster(tmp_path, postgres_uri, nats_server, []) as running:
        victim, other = running.servers
        admin = create_key(tmp_path / "keys", role="admin", store=postgres_uri)
        wait_for(lambda: shared_by(victim.url, admin, 2), timeout_s=20, what="the partitions shared")
        tenants = tenants_owned_by(running, victim, admin, 2)
        for tenant in tenants:
            running.auditors[tenant] = create_key(tmp_path / "keys", tenant=tenant, role="auditor",
                                                  store=postgres_uri)
        running.post(tenants, 10)
        running.wait_appended()
        states = {t: tmp_path / f"audit-{t}.json" for t in tenants}
        for tenant in tenants:
            running.audit(other, tenant, states[tenant])  # trusted on first use, before the kill
        stop = threading.Event()
        sender = threading.Thread(target=stream, args=(running, tenants, stop))
        sender.start()
        try:
            writer = child(victim, WRITER)["pid"]
            wait_for(lambda: checkpoint_signer(postgres_uri) == writer, timeout_s=30,
                     what="the victim's writer holding the signing lock")
            os.kill(writer, signal.SIGKILL)
            wait_for(lambda: child(victim, WRITER)["pid"] not in (0, writer), timeout_s=20,
                     what="the writer started again")
            wait_for(lambda: checkpoint_signer(postgres_uri) != writer, timeout_s=10,
                     what="the dead signer's lock released")
            wait_for(lambda: shared_by(other.url, admin, 2), timeout_s=30, what="the partitions shared again")
            time.sleep(1.0)  # signing goes on while events keep coming
        finally:
            stop.set()
            sender.join(timeout=30)
        running.wait_appended()
        assert lock_holders(postgres_uri) == Counter(range(PARTITIONS))  # one owner each
        for tenant in tenants:
            wait_for(lambda t=tenant: stored_checkpoints(postgres_uri, t)[-1][0] == running.entries_of(t),
                     timeout_s=30, what=f"{tenant} signed up to its last entry after the kill")
            assert assert_checkpoints_consistent(running, other, tenant) >= 3
            for server in running.servers:
                running.audit(server, tenant, states[tenant])
    verified = run_scr("ledger", "verify", "--store", postgres_uri, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
