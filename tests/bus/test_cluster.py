"""Several ``scr serve`` over one PostgreSQL and one JetStream: a cluster, killed mid-stream
(a whole instance, or one process of it), and cut off from PostgreSQL mid-stream.

Real servers: PostgreSQL from pgserver, nats-server with JetStream, ``scr serve`` processes,
and an HTTP receiver, all on 127.0.0.1.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from serve.test_supervisor import WRITER, child, kill_and_see_it_restart, title_of

from scr.bus.ownership import OWNERSHIP_LOCKS
from scr.security.auth import KEY_CACHE_TTL_S
from scr.store.postgres import partition_of
from servers import NatsServer, PostgresServer
from support import (
    Receiver,
    ServerProcess,
    create_key,
    make_event,
    post_acknowledged,
    run_scr,
    scraped_metric,
    wait_for,
)

PARTITIONS = 8
TENANTS = 6
BATCH_EVENTS = 50
OWNERSHIP_POLL_MS = 200
# A dead instance's partitions must move within one poll; the slack covers a busy machine.
FAILOVER_LIMIT_S = 5.0
# How long PostgreSQL stays cut off, and how long the instances get to notice and to recover.
# Past the key cache time: the stream's key, checked before the cut, must stay good without the store.
PG_CUT_S = KEY_CACHE_TTL_S + 2.0
CUT_PAUSE_S = 0.1  # the stream's pause during a cut: up to 500 events/s
NOT_READY_LIMIT_S = 10.0
READY_AGAIN_LIMIT_S = 30.0
PROBE_TIMEOUT_S = 5.0
READER = "scr: reader destinations"  # where the destination runs (its default process)


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
        f"{url}/v1/cluster", headers={"authorization": f"Bearer {admin}"}, timeout=PROBE_TIMEOUT_S
    ).json()
    return answer


def owners(view: dict[str, Any]) -> list[int]:
    return sorted(p for instance in view["instances"] for p in instance["partitions"])


def shared_by(url: str, admin: str, count: int) -> bool:
    """Whether ``url`` sees ``count`` live instances, each partition owned once, each with a share."""
    try:
        view = cluster_view(url, admin)
    except (httpx.HTTPError, ValueError):  # the instance cannot answer now (its store is cut)
        return False
    return (len(view["instances"]) == count and owners(view) == list(range(PARTITIONS))
            and all(i["partitions"] for i in view["instances"]))


def status_of(url: str, path: str) -> int:
    try:
        return httpx.get(f"{url}{path}", timeout=PROBE_TIMEOUT_S).status_code
    except httpx.HTTPError:
        return 0


def stream(urls: list[str], key: str, acknowledged: list[str], dead: set[str], stop: threading.Event,
           pause_s: Callable[[], float]) -> None:
    """Post batches round-robin over the live instances, ``pause_s()`` apart; remember what was
    acknowledged."""
    number = 0
    with httpx.Client(timeout=10) as client:
        while not stop.wait(pause_s()):
            live = [u for u in urls if u not in dead]
            url = live[number % len(live)]
            batch = [
                make_event(f"evt_{number}_{i}", **{"user.organization_id": f"org_{i % TENANTS}"})
                for i in range(BATCH_EVENTS)
            ]
            number += 1
            post_acknowledged(client, url, key, batch, acknowledged)  # a killed instance: go on


@dataclass
class Cluster:
    """``count`` instances over one store and one bus, a destination, keys, and a stream."""

    servers: list[ServerProcess]
    hook: Receiver
    key: str
    admin: str
    acknowledged: list[str] = field(default_factory=list)
    dead: set[str] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)
    pause_s: float = 0.0  # between two batches of the stream

    def __post_init__(self) -> None:
        self.sender = threading.Thread(
            target=stream,
            args=([s.url for s in self.servers], self.key, self.acknowledged, self.dead, self.stop,
                  lambda: self.pause_s),
        )

    def wait_shared(self, timeout_s: float = 20) -> None:
        """Until every instance sees all of them, every partition owned once, each with a share."""
        for server in self.servers:
            if server.url not in self.dead:
                wait_for(lambda s=server: shared_by(s.url, self.admin, len(self.servers) - len(self.dead)),
                         timeout_s=timeout_s, what=f"the partitions shared, as {server.url} sees them")

    def acknowledge_more(self, events: int, timeout_s: float = 60) -> None:
        count = len(self.acknowledged)
        wait_for(lambda: len(self.acknowledged) >= count + events, timeout_s=timeout_s,
                 what=f"{events} more events acknowledged")

    def end_stream(self) -> set[str]:
        """Stop the stream; the ids acknowledged."""
        self.stop.set()
        self.sender.join(timeout=20)
        assert not self.sender.is_alive(), "the stream did not stop"
        return set(self.acknowledged)


@contextmanager
def cluster(tmp_path: Path, postgres_uri: str, nats: NatsServer, count: int) -> Iterator[Cluster]:
    """A started cluster of ``count`` instances; every server stopped at the end."""
    hook = Receiver()
    try:
        config = cluster_config(tmp_path / "scr.yaml", nats, hook)
        key = create_key(tmp_path / "keys", role="platform", store=postgres_uri)
        admin = create_key(tmp_path / "keys", role="admin", store=postgres_uri)
        servers = [ServerProcess(tmp_path / f"data{i}", config, store=postgres_uri) for i in range(count)]
        running = Cluster(servers, hook, key, admin)
        try:
            for server in servers:
                server.start()
            running.wait_shared()
            yield running
        finally:
            running.stop.set()
            if running.sender.is_alive():
                running.sender.join(timeout=20)
            for server in servers:
                server.stop()
    finally:
        hook.close()


def assert_appended_once_and_verified(postgres_uri: str, wanted: set[str]) -> None:
    """Every acknowledged event is in the ledger exactly once, and the tenant chains verify."""
    with psycopg.connect(postgres_uri) as conn:
        rows = conn.execute(
            "SELECT tenant, event_id FROM ledger WHERE kind = 'SESSION_COMPLETION'"
        ).fetchall()
    appended = [event_id for _, event_id in rows]
    assert len(appended) == len(set(appended)), "an event was appended twice"
    assert wanted <= set(appended), f"{len(wanted - set(appended))} acknowledged events lost"
    verified = run_scr("ledger", "verify", "--store", postgres_uri, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def delivered(hook: Receiver, wanted: set[str]) -> int:
    """Wait until the destination got every acknowledged event; how many deliveries repeated
    one (at least once: a repeat carries the same webhook-id, one webhook-id per event id)."""
    wait_for(lambda: wanted <= hook.event_ids(), timeout_s=60,
             what="every acknowledged event delivered")
    seen = Counter((r.headers["webhook-id"], r.json()["event_id"]) for r in hook.received)
    hooks = Counter(webhook_id for webhook_id, _ in seen)
    assert all(n == 1 for n in hooks.values()), "one webhook-id carried two event ids"
    return sum(n - 1 for n in seen.values())


def counted_redeliveries(url: str) -> float:
    """What an instance counted as possibly sent again: by a new owner of the destination, and
    by an owner resuming from the durable cursor (its delivery records lost with its writer)."""
    return sum(scraped_metric(url, f'{metric}{{destination="hook"}}', PROBE_TIMEOUT_S) for metric in (
        "scr_cluster_failover_redeliveries_total", "scr_destination_resent_total"))


def finish_and_check(
    running: Cluster, postgres_uri: str, counters: list[str]
) -> tuple[set[str], int, float]:
    """Stream 500 more events, stop; every acknowledged one is appended once (chains verify)
    and delivered, and the repeated deliveries stay within what ``counters`` counted.
    (acknowledged, repeated, counted)."""
    running.acknowledge_more(500, timeout_s=30)
    wanted = running.end_stream()
    repeated = delivered(running.hook, wanted)
    assert_appended_once_and_verified(postgres_uri, wanted)
    counted = sum(counted_redeliveries(url) for url in counters)
    assert repeated <= counted, (repeated, counted)
    return wanted, repeated, counted


def lock_holders(postgres_uri: str) -> Counter[int]:
    """Per partition, how many PostgreSQL sessions hold its ownership lock."""
    with psycopg.connect(postgres_uri) as conn:
        rows = conn.execute(
            "SELECT objid::int FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
            "AND objsubid = 2 AND granted", (OWNERSHIP_LOCKS,),
        ).fetchall()
    return Counter(partition for (partition,) in rows)


@pytest.mark.slow
def test_a_cluster_survives_sigkill_of_an_instance(
    tmp_path: Path, postgres_uri: str, nats_server: NatsServer
) -> None:
    with cluster(tmp_path, postgres_uri, nats_server, 2) as running:
        # kill the instance that delivers to the destination (it runs on its home partition's owner)
        home = partition_of("hook", PARTITIONS)
        view = cluster_view(running.servers[0].url, running.admin)
        victim_url = next(i["url"] for i in view["instances"] if home in i["partitions"])
        victim, survivor = sorted(running.servers, key=lambda s: s.url != victim_url)
        victim_partitions = next(i["partitions"] for i in view["instances"] if i["url"] == victim.url)
        running.sender.start()
        running.acknowledge_more(1500)
        victim.kill()
        killed_at = time.monotonic()
        running.dead.add(victim.url)
        wait_for(lambda: shared_by(survivor.url, running.admin, 1), timeout_s=15,
                 what="the victim's partitions moved")
        failover_s = time.monotonic() - killed_at
        print(f"\nfailover {failover_s:.2f} s (partitions {victim_partitions} moved)")
        assert failover_s < FAILOVER_LIMIT_S, f"failover took {failover_s:.1f} s ({victim_partitions})"
        # the survivor counted what it may have resent when it took the destination over
        _, repeated, counted = finish_and_check(running, postgres_uri, [survivor.url])
        print(f"{repeated} deliveries repeated, {counted:.0f} counted")


@pytest.mark.slow
def test_a_cluster_cut_off_from_postgresql_is_not_ready_then_recovers(
    tmp_path: Path, postgres_server: PostgresServer, postgres_uri: str, nats_server: NatsServer
) -> None:
    with cluster(tmp_path, postgres_uri, nats_server, 3) as running:
        urls = [s.url for s in running.servers]
        running.sender.start()
        running.acknowledge_more(1500)
        # while cut off the cluster acknowledges from JetStream alone, faster than it appends
        # after the cut: 25,000 events in 7 s at full speed, and the test waited for them all
        running.pause_s = CUT_PAUSE_S
        try:
            postgres_server.refuse_connections(postgres_uri, True)
            cut_at = time.monotonic()
            assert postgres_server.cut_connections(postgres_uri) >= 3  # ownership sessions too
            before_cut = len(running.acknowledged)
            not_ready_s = {}
            for url in urls:
                wait_for(lambda u=url: status_of(u, "/readyz") == 503, timeout_s=NOT_READY_LIMIT_S,
                         what=f"{url} not ready")
                not_ready_s[url] = time.monotonic() - cut_at
                assert status_of(url, "/healthz") == 200  # alive, only not ready
            time.sleep(max(0.0, KEY_CACHE_TTL_S + 0.5 - (time.monotonic() - cut_at)))
            past_key_cache = len(running.acknowledged)
            time.sleep(max(0.0, PG_CUT_S - (time.monotonic() - cut_at)))
            assert all(status_of(url, "/readyz") == 503 for url in urls), "ready while cut off"
            # with a bus, 202 means stored in JetStream: acknowledging goes on (README, "Scaling out")
            during_cut = len(running.acknowledged) - before_cut
            assert during_cut > 0, "no event acknowledged while PostgreSQL was cut off"
            assert len(running.acknowledged) > past_key_cache, "a key refused after its cache time"
        finally:
            postgres_server.refuse_connections(postgres_uri, False)
        restored_at = time.monotonic()
        ready_again_s = {}
        for url in urls:
            wait_for(lambda u=url: status_of(u, "/readyz") == 200, timeout_s=READY_AGAIN_LIMIT_S,
                     what=f"{url} ready again")
            ready_again_s[url] = time.monotonic() - restored_at
        running.wait_shared(timeout_s=READY_AGAIN_LIMIT_S)
        shared_s = time.monotonic() - restored_at
        wanted, repeated, counted = finish_and_check(running, postgres_uri, urls)
        # one live owner per partition: one lock each, and the instances' views agree
        assert lock_holders(postgres_uri) == Counter(range(PARTITIONS))
        views = [cluster_view(url, running.admin) for url in urls]
        assert all(owners(view) == list(range(PARTITIONS)) for view in views), views
        print(f"\nPostgreSQL cut {PG_CUT_S:.0f} s: not ready after "
              f"{', '.join(f'{s:.2f}' for s in not_ready_s.values())} s; ready again "
              f"{', '.join(f'{s:.2f}' for s in ready_again_s.values())} s after the restore, "
              f"partitions shared after {shared_s:.2f} s; {during_cut} events acknowledged during "
              f"the cut, {len(wanted)} in all; {repeated} deliveries repeated, {counted:.0f} counted")



@pytest.mark.slow
@pytest.mark.parametrize("process", [READER, WRITER])
def test_a_process_of_the_destinations_owner_killed_mid_stream_loses_nothing(
    tmp_path: Path, postgres_uri: str, nats_server: NatsServer, process: str
) -> None:
    """The destination runs in a reader process of its home partition's owner, as on a single
    instance. SIGKILL that reader, or that instance's writer (whose ownership session dies
    with it): the supervisor starts it again, and every acknowledged event is appended once
    and delivered, with every repeat counted."""
    with cluster(tmp_path, postgres_uri, nats_server, 2) as running:
        home = partition_of("hook", PARTITIONS)
        view = cluster_view(running.servers[0].url, running.admin)
        owner_url = next(i["url"] for i in view["instances"] if home in i["partitions"])
        owner = next(s for s in running.servers if s.url == owner_url)
        assert title_of(child(owner, READER)["pid"]) == READER  # the destination's process
        running.sender.start()
        running.acknowledge_more(1500)
        kill_and_see_it_restart(owner, process)
        wait_for(lambda: child(owner, process)["state"] == "running", timeout_s=20,
                 what=f"{process} running again")
        running.wait_shared()
        finish_and_check(running, postgres_uri, [s.url for s in running.servers])
        assert child(owner, process)["restarts"] == 1
