"""The ledger's singleton readers in a cluster: usage (with budgets), the enricher and the
archiver run on every instance, each working on the one that holds its PostgreSQL lease; a
standby takes over when the holder's process or the whole holder is SIGKILLed mid-stream,
and the usage numbers stay exact (what the ledger holds, counted once).

Real servers: PostgreSQL from pgserver, nats-server with JetStream, two ``scr serve``, an
HTTP receiver for the budget alerts, the local embedding model, all on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from serve.test_supervisor import child

from bus.test_cluster import PARTITIONS, Cluster, cluster_view, shared_by
from scr.bus.leases import READER_LEASES
from scr.store.records import ENRICH_CURSOR
from servers import NatsServer
from support import (
    DELETE,
    Receiver,
    ServerProcess,
    create_key,
    make_event,
    post_acknowledged,
    run_scr,
    scraped_metric,
    wait_for,
)

TENANTS = 3
BATCH_EVENTS = 40
ROLES = ["archive", "enrich", "usage"]
TITLES = {"usage": "scr: usage", "enrich": "scr: enrich", "archive": "scr: archive"}
# A standby tries every second: the slack covers a busy 2-core machine.
TAKEOVER_LIMIT_S = 5.0
COUNTED_WITHIN_S = 60.0
EMBEDDED_WITHIN_S = 60.0  # a standby enricher that took the lease loads its model first
PROBE_TIMEOUT_S = 5.0
LIMIT_USD = Decimal("1.00")
ALERT_AT = [Decimal("0.5"), Decimal("1.0")]
MONTH = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "window": "month"}
TOKENS = {"input_tokens": 1200, "output_tokens": 300, "total_tokens": 1500}
ESTIMATE_USD = Decimal("0.0075")  # make_event's estimated_cost_usd
TEXTS = ["My card was charged twice for the same subscription this month",
         "I see a duplicate payment on my credit card for one plan",
         "How do I export my chat history to a PDF file?",
         "Can I download all my conversations as a document?"]


def readers_config(path: Path, nats: NatsServer, hook: Receiver, archive_dir: Path) -> Path:
    path.write_text(
        "session_completion_runtime:\n"
        f"  bus: {nats.url}\n"
        f"  cluster: {{partitions: {PARTITIONS}, ack_wait_ms: 1000, ownership_poll_ms: 200}}\n"
        "  routing:\n    destinations:\n"
        f'      - {{name: alerts, endpoint: "{hook.url}", filter: {{tenant: [org_nobody]}}}}\n'
        "  usage:\n    budgets:\n"
        f'      - {{tenant: org_0, period: day, limit_usd: "{LIMIT_USD}", '
        f"alert_at: [{', '.join(map(str, ALERT_AT))}], destinations: [alerts]}}\n"
        "  enrichment:\n    embedder: {kind: local}\n"
        "  retention: {hot_days: 0, check_every_s: 1, segment_entries: 256,\n"
        f'              archive_dir: "{archive_dir}"}}\n'
    )
    return path


def stream(urls: list[str], key: str, acknowledged: list[str], dead: set[str], stop: threading.Event) -> None:
    """Batches round-robin over the live instances, one session per event, no text to embed."""
    number = 0
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            live = [u for u in urls if u not in dead]
            batch = [make_event(f"evt_{number}_{i}", **{
                "user.organization_id": f"org_{i % TENANTS}", "session.session_id": f"sess_{number}_{i}",
                "outcome.final_message": DELETE}) for i in range(BATCH_EVENTS)]
            post_acknowledged(client, live[number % len(live)], key, batch, acknowledged)
            number += 1
            time.sleep(0.02)  # about 1,500 events/s: room for the readers on 2 cores


def text_events(first: int, count: int) -> list[dict[str, Any]]:
    return [make_event(f"evt_text_{n}", **{"session.session_id": f"sess_text_{n}",
                                           "outcome.final_message": TEXTS[n % len(TEXTS)]})
            for n in range(first, first + count)]


def holders(url: str, admin: str) -> dict[str, list[str]]:
    """Per reader role, the URLs of the instances holding its lease (as ``url`` sees them)."""
    found: dict[str, list[str]] = {role: [] for role in ROLES}
    for instance in cluster_view(url, admin)["instances"]:
        for role in instance["readers"]:
            found[role].append(instance["url"])
    return found


def lease_gauge(url: str, role: str) -> float:
    return scraped_metric(url, f'scr_reader_lease_held{{role="{role}"}}', PROBE_TIMEOUT_S)


def lease_sessions(postgres_uri: str) -> Counter[int]:
    """Per lease key, how many PostgreSQL sessions hold it."""
    with psycopg.connect(postgres_uri) as conn:
        rows = conn.execute("SELECT objid::int FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
                            "AND objsubid = 2 AND granted", (READER_LEASES,)).fetchall()
    return Counter(key for (key,) in rows)


def one_holder_each(url: str, admin: str, postgres_uri: str) -> str | None:
    """The instance holding every lease, if one holds them all and none is held twice."""
    try:
        view = holders(url, admin)
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    owners = {tuple(urls) for urls in view.values()}
    if len(owners) != 1 or len(next(iter(owners))) != 1:
        return None
    assert set(lease_sessions(postgres_uri).values()) == {1}
    return next(iter(owners))[0]


def usage_totals(url: str, key: str, tenant: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/v1/usage", params={**MONTH, "tenant": tenant},
                       headers={"authorization": f"Bearer {key}"}, timeout=PROBE_TIMEOUT_S)
    assert answer.status_code == 200, answer.text
    totals: dict[str, Any] = answer.json()["totals"]
    return totals


def ledger_events(postgres_uri: str) -> dict[str, int]:
    with psycopg.connect(postgres_uri) as conn:
        rows = conn.execute("SELECT tenant, count(*) FROM ledger WHERE kind = 'SESSION_COMPLETION' "
                            "GROUP BY tenant").fetchall()
    return {tenant: int(count) for tenant, count in rows}


def counted_exactly(url: str, key: str, in_ledger: dict[str, int]) -> bool:
    return all(usage_totals(url, key, tenant)["events"] == n for tenant, n in in_ledger.items())


def settled(postgres_uri: str, url: str, key: str, acknowledged: set[str]) -> dict[str, int]:
    """Once every acknowledged event is in the ledger and usage counts what the ledger holds:
    the ledger's events per tenant."""
    deadline = time.monotonic() + COUNTED_WITHIN_S
    while time.monotonic() < deadline:
        with psycopg.connect(postgres_uri) as conn:
            appended = {row[0] for row in conn.execute(
                "SELECT event_id FROM ledger WHERE kind = 'SESSION_COMPLETION'").fetchall()}
        in_ledger = ledger_events(postgres_uri)
        if acknowledged <= appended and counted_exactly(url, key, in_ledger):
            return in_ledger
        time.sleep(0.2)
    missing = len(acknowledged - appended)
    counted = {tenant: usage_totals(url, key, tenant)["events"] for tenant in in_ledger}
    raise AssertionError(f"not settled: {missing} acknowledged events not appended; "
                         f"ledger {in_ledger}, usage {counted}")


@pytest.mark.slow
def test_usage_enrichment_and_retention_run_once_per_cluster_and_fail_over(
    tmp_path: Path, postgres_uri: str, nats_server: NatsServer
) -> None:
    hook = Receiver()
    archive_dir = tmp_path / "archive"  # shared by both instances, as the config demands
    config = readers_config(tmp_path / "scr.yaml", nats_server, hook, archive_dir)
    key = create_key(tmp_path / "keys", role="platform", store=postgres_uri)
    admin = create_key(tmp_path / "keys", role="admin", store=postgres_uri)
    servers = [ServerProcess(tmp_path / f"data{i}", config, store=postgres_uri) for i in range(2)]
    running = Cluster(servers, hook, key, admin)
    running.sender = threading.Thread(target=stream, args=(
        [s.url for s in servers], key, running.acknowledged, running.dead, running.stop))
    try:
        for server in servers:
            server.start()
        running.wait_shared()
        # one instance holds every lease (the first to try), the other is a ready standby
        holder_url = wait_for(lambda: one_holder_each(servers[1].url, admin, postgres_uri),
                              timeout_s=TAKEOVER_LIMIT_S, what="one holder of each reader lease")
        holder = next(s for s in servers if s.url == holder_url)
        standby = next(s for s in servers if s.url != holder_url)
        for role in ROLES:
            assert lease_gauge(holder.url, role) == 1 and lease_gauge(standby.url, role) == 0
            assert child(standby, TITLES[role])["state"] == "running"
        assert all(httpx.get(f"{s.url}/readyz").status_code == 200 for s in servers), "a standby is not ready"
        wait_for(lambda: _cursor(postgres_uri, ENRICH_CURSOR) is not None, what="the enricher started")
        for n, server in enumerate(servers):  # text to embed, through both instances
            _post(server.url, key, text_events(n * 2, 2))

        running.sender.start()
        running.acknowledge_more(1500)
        # 1. the usage process of the holder alone: restarted at once; the lease goes to one of the two
        os.kill(child(holder, TITLES["usage"])["pid"], signal.SIGKILL)
        wait_for(lambda: sum(lease_gauge(s.url, "usage") for s in servers) == 1
                 and lease_sessions(postgres_uri)[1] == 1, timeout_s=TAKEOVER_LIMIT_S,
                 what="one usage lease holder after its process was killed")
        running.acknowledge_more(1000)
        # 2. the whole instance holding the usage lease
        victim_url = holders(standby.url, admin)["usage"][0]
        victim = next(s for s in servers if s.url == victim_url)
        survivor = next(s for s in servers if s.url != victim_url)
        victim.kill()
        killed_at = time.monotonic()
        running.dead.add(victim.url)
        wait_for(lambda: all(lease_gauge(survivor.url, role) == 1 for role in ROLES),
                 timeout_s=TAKEOVER_LIMIT_S, what="the survivor's standbys took every lease")
        takeover_s = time.monotonic() - killed_at
        wait_for(lambda: shared_by(survivor.url, admin, 1), timeout_s=15, what="the partitions moved")
        assert holders(survivor.url, admin) == {role: [survivor.url] for role in ROLES}
        running.acknowledge_more(1000)
        _post(survivor.url, key, text_events(4, 2))
        acknowledged = running.end_stream()

        # usage: what the ledger holds (every acknowledged event, and any other the bus kept:
        # owners append from JetStream after the 202), counted once, by tenant, whichever
        # instance counted it
        texts = {f"evt_text_{n}" for n in range(6)}
        in_ledger = settled(postgres_uri, survivor.url, key, acknowledged | texts)
        time.sleep(1.5)  # a stale worker counting twice would show by now
        assert ledger_events(postgres_uri) == in_ledger
        for tenant, events in in_ledger.items():
            totals = usage_totals(survivor.url, key, tenant)
            assert totals["events"] == totals["sessions"] == events, (tenant, totals, events)
            assert {name: totals[name] for name in TOKENS} == {n: v * events for n, v in TOKENS.items()}
            assert Decimal(totals["estimated_cost_usd"]) == ESTIMATE_USD * events
        # budgets: each crossed threshold ledgered once, and delivered
        spent = Decimal(usage_totals(survivor.url, key, "org_0")["cost_usd"])
        crossed = {share for share in ALERT_AT if spent >= share * LIMIT_USD}
        assert crossed, spent
        alerts = _budget_alerts(postgres_uri)
        assert sorted(alerts) == sorted(crossed), (alerts, spent)
        wait_for(lambda: {Decimal(str(r.json()["data"]["threshold"])) for r in hook.received} == crossed,
                 timeout_s=30, what="the budget alerts delivered")
        # enrichment: each text event embedded once, searchable from the survivor (the survivor's
        # enricher took the lease with the others, then loads its model before it embeds: the
        # last two texts are waited for, not expected at once)
        def vectors() -> dict[str, int]:
            with psycopg.connect(postgres_uri) as conn:
                return dict(conn.execute(
                    "SELECT event_id, count(*) FROM session_vectors GROUP BY event_id").fetchall())

        wait_for(lambda: len(vectors()) == 6, timeout_s=EMBEDDED_WITHIN_S, what="every text embedded")
        assert vectors() == {f"evt_text_{n}": 1 for n in range(6)}, vectors()
        similar = httpx.get(f"{survivor.url}/v1/sessions/sess_text_0/similar", params={"k": 3},
                            headers={"authorization": f"Bearer {_reader(tmp_path, postgres_uri)}"})
        assert similar.status_code == 200 and similar.json()["results"], similar.text
        # retention: every segment in the shared directory, verified; an archived event read back
        wait_for(lambda: _segments(postgres_uri) >= 2, timeout_s=30, what="segments archived")
        with psycopg.connect(postgres_uri) as conn:
            folders = {row[0] for row in conn.execute("SELECT DISTINCT folder FROM archive_segments")}
        assert folders == {str(archive_dir.resolve())}
        verified = run_scr("archive", "verify", "--data", str(tmp_path / "verify"), "--store", postgres_uri,
                           "--archive-dir", str(archive_dir), check=False)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        print(f"\nleases taken over {takeover_s:.2f} s after the SIGKILL; {sum(in_ledger.values())} "
              f"events counted once; {_segments(postgres_uri)} segments; alerts {sorted(crossed)}")
    finally:
        running.stop.set()
        if running.sender.is_alive():
            running.sender.join(timeout=20)
        for server in servers:
            server.stop()
        hook.close()


def _post(url: str, key: str, events: list[dict[str, Any]]) -> None:
    answer = httpx.post(f"{url}/v1/events", json=events, headers={"authorization": f"Bearer {key}"},
                        timeout=30)
    assert answer.status_code == 202, answer.text


def _reader(tmp_path: Path, postgres_uri: str) -> str:
    return create_key(tmp_path / "keys", role="read", store=postgres_uri)


def _cursor(postgres_uri: str, name: str) -> int | None:
    with psycopg.connect(postgres_uri) as conn:
        row = conn.execute("SELECT seq FROM cursors WHERE destination = %s", (name,)).fetchone()
    return None if row is None else int(row[0])


def _segments(postgres_uri: str) -> int:
    with psycopg.connect(postgres_uri) as conn:
        row = conn.execute("SELECT count(*) FROM archive_segments").fetchone()
    return int(row[0]) if row else 0


def _budget_alerts(postgres_uri: str) -> list[Decimal]:
    """The thresholds of the BUDGET_ALERT entries in the ledger, one per entry."""
    with psycopg.connect(postgres_uri) as conn:
        rows = conn.execute("SELECT entry FROM ledger WHERE kind = 'BUDGET_ALERT'").fetchall()
    return [Decimal(str(json.loads(bytes(entry))["payload"]["data"]["threshold"])) for (entry,) in rows]
