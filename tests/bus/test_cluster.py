"""Several ``scr serve`` over one PostgreSQL and one JetStream: a cluster, killed mid-stream.

Real servers: PostgreSQL from pgserver, nats-server with JetStream, ``scr serve`` processes,
and an HTTP receiver, all on 127.0.0.1.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from scr.store.postgres import partition_of
from servers import NatsServer
from support import (
    Receiver,
    ServerProcess,
    create_key,
    make_event,
    post_acknowledged,
    run_scr,
    wait_for,
)

PARTITIONS = 8
TENANTS = 6
BATCH_EVENTS = 50
OWNERSHIP_POLL_MS = 200
# A dead instance's partitions must move within one poll; the slack covers a busy machine.
FAILOVER_LIMIT_S = 5.0


def cluster_config(path: Path, nats: NatsServer, hook: Receiver) -> Path:
    path.write_text(
        "session_completion_runtime:\n"
        f"  bus: {nats.url}\n"
        f"  cluster: {{partitions: {PARTITIONS}, ack_wait_ms: 1000,\n"
        f"             ownership_poll_ms: {OWNERSHIP_POLL_MS}}}\n"
        "  routing:\n    destinations:\n"
        f'      - {{name: hook, endpoint: "{hook.url}"}}\n'
    )
    return path


def cluster_view(url: str, admin: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(
        f"{url}/v1/cluster", headers={"authorization": f"Bearer {admin}"}, timeout=5
    ).json()
    return answer


def owners(view: dict[str, Any]) -> list[int]:
    return sorted(p for instance in view["instances"] for p in instance["partitions"])


def stream(urls: list[str], key: str, acknowledged: list[str], dead: set[str], stop: threading.Event) -> None:
    """Post batches round-robin over the live instances; remember what was acknowledged."""
    number = 0
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            live = [u for u in urls if u not in dead]
            url = live[number % len(live)]
            batch = [
                make_event(f"evt_{number}_{i}", **{"user.organization_id": f"org_{i % TENANTS}"})
                for i in range(BATCH_EVENTS)
            ]
            number += 1
            post_acknowledged(client, url, key, batch, acknowledged)  # a killed instance: go on


@pytest.mark.slow
def test_a_cluster_survives_sigkill_of_an_instance(
    tmp_path: Path, postgres_uri: str, nats_server: NatsServer
) -> None:
    hook = Receiver()
    config = cluster_config(tmp_path / "scr.yaml", nats_server, hook)
    key = create_key(tmp_path / "keys", role="platform", store=postgres_uri)
    admin = create_key(tmp_path / "keys", role="admin", store=postgres_uri)
    servers = [ServerProcess(tmp_path / f"data{i}", config, store=postgres_uri) for i in range(2)]
    acknowledged: list[str] = []
    dead: set[str] = set()
    stop = threading.Event()
    sender = threading.Thread(
        target=stream, args=([s.url for s in servers], key, acknowledged, dead, stop)
    )
    try:
        for server in servers:
            server.start()
        # every partition has exactly one owner, and both instances have a share
        wait_for(lambda: (v := cluster_view(servers[0].url, admin)) and owners(v) == list(range(PARTITIONS))
                 and all(i["partitions"] for i in v["instances"]) and len(v["instances"]) == 2,
                 timeout_s=20, what="the partitions shared by both instances")
        # kill the instance that delivers to the destination (it runs on its home partition's owner)
        home = partition_of("hook", PARTITIONS)
        view = cluster_view(servers[0].url, admin)
        victim_url = next(i["url"] for i in view["instances"] if home in i["partitions"])
        victim, survivor = sorted(servers, key=lambda s: s.url != victim_url)
        victim_partitions = next(i["partitions"] for i in view["instances"] if i["url"] == victim.url)
        sender.start()
        wait_for(lambda: len(acknowledged) >= 1500, timeout_s=60, what="a stream under way")
        victim.kill()
        killed_at = time.monotonic()
        dead.add(victim.url)

        def survivor_owns_all() -> bool:
            view = cluster_view(survivor.url, admin)
            return len(view["instances"]) == 1 and owners(view) == list(range(PARTITIONS))

        wait_for(survivor_owns_all, timeout_s=15, what="the victim's partitions moved")
        failover_s = time.monotonic() - killed_at
        assert failover_s < FAILOVER_LIMIT_S, f"failover took {failover_s:.1f} s ({victim_partitions})"
        count = len(acknowledged)
        wait_for(lambda: len(acknowledged) >= count + 500, timeout_s=30, what="the stream went on")
        stop.set()
        sender.join(timeout=20)

        wanted = set(acknowledged)
        wait_for(lambda: wanted <= {e["event_id"] for e in hook.events()}, timeout_s=60,
                 what="every acknowledged event delivered")
        with psycopg.connect(postgres_uri) as conn:
            rows = conn.execute(
                "SELECT tenant, event_id FROM ledger WHERE kind = 'SESSION_COMPLETION'"
            ).fetchall()
        appended = [event_id for _, event_id in rows]
        assert len(appended) == len(set(appended)), "an event was appended twice"
        assert wanted <= set(appended), f"{len(wanted - set(appended))} acknowledged events lost"
        verified = run_scr("ledger", "verify", "--store", postgres_uri)
        assert verified.returncode == 0, verified.stdout + verified.stderr

        # at least once: a repeated delivery carries the same webhook-id (one per event id),
        # and the survivor counted what it may have resent when it took the destination over
        seen = Counter((r.headers["webhook-id"], r.json()["event_id"]) for r in hook.received)
        hooks = Counter(webhook_id for webhook_id, _ in seen)
        assert all(n == 1 for n in hooks.values()), "one webhook-id carried two event ids"
        repeated = sum(n - 1 for n in seen.values())
        metrics = httpx.get(f"{survivor.url}/metrics").text
        counted = sum(
            float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
            if line.startswith('scr_cluster_failover_redeliveries_total{destination="hook"}')
        )
        assert repeated <= counted, (repeated, counted)
        print(f"failover {failover_s:.2f} s, {repeated} deliveries repeated, {counted:.0f} counted")
    finally:
        stop.set()
        for server in servers:
            server.stop()
        hook.close()

