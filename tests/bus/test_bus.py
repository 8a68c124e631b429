"""One ``scr serve --bus``: events acknowledged by JetStream reach the ledger exactly once.

Real nats-server (JetStream, file storage) and real ``scr serve`` processes; the embedded
store, so one instance owns every partition (the cluster tests run several over PostgreSQL).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from scr.config import parse_config
from scr.errors import ConfigError
from scr.log.entry import GENESIS_HASH, chain_hash
from scr.store.postgres import partition_of
from scr.store.sqlite import SqliteStore
from servers import NatsServer
from support import Receiver, ServerProcess, create_key, make_event, scraped_metric, wait_for

STREAM_BATCH_EVENTS = 100
NATS_DOWN_S = 2.0
STREAM_REFUSED_WITHIN_S = 20.0  # a publish's timeout, and the slack of a busy machine


def bus_config(path: Path, nats: NatsServer, hook: Receiver, window_s: int = 300) -> Path:
    path.write_text(
        "session_completion_runtime:\n"
        f"  bus: {nats.url}\n"
        f"  validation: {{deduplication_window_sec: {window_s}}}\n"
        "  cluster: {partitions: 4, ack_wait_ms: 1000}\n"
        "  routing:\n    destinations:\n"
        f'      - {{name: hook, endpoint: "{hook.url}", batch_size: 100, batch_wait_ms: 20}}\n'
    )
    return path


def assert_chain(data: Path, tenant: str) -> list[str]:
    """The tenant's hash chain verifies from genesis; the event ids it holds, in order."""
    store = SqliteStore(data)
    try:
        entries = store.tenant_entries(tenant, 0, 10**9)
    finally:
        store.close()
    previous = GENESIS_HASH
    assert [e.tenant_seq for e in entries] == list(range(len(entries)))
    for entry in entries:
        previous = chain_hash(previous, entry.entry)
        assert previous == entry.hash, f"chain broken at tenant_seq {entry.tenant_seq}"
    return [e.event_id for e in entries if e.kind == "SESSION_COMPLETION" and e.event_id]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@dataclass
class BusRun:
    """A ``scr serve --bus`` process, its data folder, an ingest key and its receiver."""

    server: ServerProcess
    data: Path
    key: str
    hook: Receiver


@pytest.fixture
def bus_run(tmp_path: Path, nats_server: NatsServer) -> Iterator[Callable[..., BusRun]]:
    runs: list[BusRun] = []

    def start(window_s: int = 300) -> BusRun:
        hook = Receiver()
        data = tmp_path / "data"
        key = create_key(data)
        config = bus_config(tmp_path / "scr.yaml", nats_server, hook, window_s)
        runs.append(BusRun(ServerProcess(data, config), data, key, hook))
        runs[-1].server.start()
        return runs[-1]

    yield start
    for run in runs:
        run.server.stop()
        run.hook.close()


def test_partition_hash_is_stable() -> None:
    # The contract every instance and version shares: these values may never change.
    # First 8 bytes of SHA-256(tenant), big-endian, modulo the partitions (computed once): the
    # bus's subjects and the PostgreSQL ledger's partition column share this function.
    assert [partition_of(t, 16) for t in ("org_acme", "org_globex", "t1")] == [15, 0, 10]
    assert [partition_of(t, 1000) for t in ("org_acme", "org_globex", "t1")] == [695, 296, 986]
    assert {partition_of(f"org_{i}", 16) for i in range(200)} == set(range(16))
    assert all(partition_of(f"org_{i}", 1) == 0 for i in range(20))


def test_bus_config_errors_name_the_key_and_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "session_completion_runtime:\n  bus: http://127.0.0.1:4222\n  cluster:\n    partitions: 0\n"
        )
    paths = [d.path for d in caught.value.details]
    assert paths == ["session_completion_runtime.bus", "session_completion_runtime.cluster.partitions"]
    assert "line 2" in caught.value.details[0].message and "line 4" in caught.value.details[1].message
    config = parse_config("session_completion_runtime:\n  bus: nats://a:4222,nats://b:4222\n")
    assert config.bus == "nats://a:4222,nats://b:4222" and config.cluster.partitions == 16


def test_events_through_the_bus_are_appended_once_and_delivered(
    bus_run: Callable[..., BusRun],
) -> None:
    run = bus_run()
    server, data, key, hook = run.server, run.data, run.key, run.hook
    batch = [make_event(f"evt_{i}") for i in range(60)]
    first = httpx.post(f"{server.url}/v1/events", json=batch, headers=bearer(key), timeout=10)
    assert first.status_code == 202 and first.json()["accepted"] == 60
    again = httpx.post(f"{server.url}/v1/events", json=batch, headers=bearer(key), timeout=10)
    assert again.status_code == 202 and again.json()["duplicate"] == 60
    changed = make_event("evt_3", **{"usage.model": "gpt-4o-mini"})
    conflict = httpx.post(f"{server.url}/v1/events", json=changed, headers=bearer(key), timeout=10)
    assert conflict.status_code == 409, conflict.text

    reader = bearer(create_key(data, role="read"))
    wait_for(lambda: httpx.get(f"{server.url}/v1/events/evt_59", headers=reader).status_code == 200,
             timeout_s=15, what="the owner to append the events")
    stored = httpx.get(f"{server.url}/v1/events/evt_3", headers=reader).json()["event"]
    assert stored["usage"]["model"] == "gpt-4o"  # the first body, never merged
    wait_for(lambda: len({e["event_id"] for e in hook.events()}) == 60, timeout_s=15,
             what="every event delivered")
    assert sorted(assert_chain(data, "org_acme")) == sorted(e["event_id"] for e in batch)
    admin = bearer(create_key(data, role="admin"))
    cluster = httpx.get(f"{server.url}/v1/cluster", headers=admin).json()
    assert cluster["partitions"] == 4
    assert [i["partitions"] for i in cluster["instances"]] == [[0, 1, 2, 3]]
    assert cluster["instances"][0]["url"] == server.url
    assert set(cluster["lag"].values()) == {0}
    forbidden = httpx.get(f"{server.url}/v1/cluster", headers=reader)
    assert forbidden.status_code == 403


def test_a_conflict_after_the_duplicate_window_is_recorded_not_merged(
    bus_run: Callable[..., BusRun],
) -> None:
    run = bus_run(window_s=1)
    server, data, key, hook = run.server, run.data, run.key, run.hook
    reader = bearer(create_key(data, role="read"))
    url = f"{server.url}/v1/events"
    assert httpx.post(url, json=make_event("evt_c"), headers=bearer(key)).status_code == 202
    wait_for(lambda: httpx.get(f"{server.url}/v1/events/evt_c", headers=reader).status_code == 200,
             timeout_s=15, what="the first body appended")
    time.sleep(1.5)  # past JetStream's duplicate window: only the ledger knows the id now
    other = make_event("evt_c", **{"outcome.status": "error"})
    late = httpx.post(url, json=other, headers=bearer(key))
    assert late.status_code == 202  # JetStream stored it; the owner finds the conflict

    def recorded() -> list[dict[str, object]]:
        answer = httpx.get(f"{server.url}/v1/conflicts", headers=reader).json()
        return list(answer["conflicts"])

    conflicts = wait_for(recorded, timeout_s=15, what="the conflict recorded")
    assert conflicts[0]["event_id"] == "evt_c"
    stored = httpx.get(f"{server.url}/v1/events/evt_c", headers=reader).json()
    assert stored["event"]["outcome"]["status"] == "success"
    assert conflicts[0]["ledger_seq"] == stored["ledger"]["seq"]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "scr_bus_conflicts_total 1.0" in metrics
    other_tenant = bearer(create_key(data, tenant="org_other", role="read"))
    assert httpx.get(f"{server.url}/v1/conflicts", headers=other_tenant).json() == {"conflicts": []}
    assert len([e for e in hook.events() if e["event_id"] == "evt_c"]) == 1


def stream(url: str, key: str, acknowledged: list[str], statuses: list[int], stop: threading.Event) -> None:
    """Post batches until stopped; remember what was acknowledged and every status seen."""
    number = 0
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            batch = [make_event(f"evt_{number}_{i}") for i in range(STREAM_BATCH_EVENTS)]
            number += 1
            try:
                response = client.post(f"{url}/v1/events", json=batch, headers=bearer(key))
            except httpx.HTTPError:
                continue
            statuses.append(response.status_code)
            if response.status_code == 202:
                acknowledged.extend(e["event_id"] for e in batch)
            else:
                time.sleep(0.05)


@pytest.mark.slow
def test_nats_restart_loses_no_acknowledged_event(
    bus_run: Callable[..., BusRun], nats_server: NatsServer
) -> None:
    run = bus_run()
    server, data, key, hook = run.server, run.data, run.key, run.hook
    acknowledged: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()
    sender = threading.Thread(target=stream, args=(server.url, key, acknowledged, statuses, stop))
    try:
        sender.start()
        wait_for(lambda: len(acknowledged) >= 1000, timeout_s=30, what="a stream under way")
        nats_server.stop()
        down_at = time.monotonic()
        wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code == 503, timeout_s=10,
                 what="not ready while NATS is down")
        unavailable = httpx.post(f"{server.url}/v1/events", json=make_event("evt_down"),
                                 headers=bearer(key), timeout=10)
        assert unavailable.status_code == 503
        # the stream is answered 503 too, not left waiting: the outage lasts until it has been
        # (its request in flight when NATS stopped may wait out a publish's timeout first, and
        # a fixed outage sometimes ended before that)
        wait_for(lambda: 503 in statuses, timeout_s=STREAM_REFUSED_WITHIN_S, what="a 503 to the stream")
        time.sleep(max(0.0, NATS_DOWN_S - (time.monotonic() - down_at)))
        nats_server.start()
        wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code == 200, timeout_s=20,
                 what="ready again after NATS is back")
        count = len(acknowledged)
        wait_for(lambda: len(acknowledged) >= count + 500, timeout_s=30, what="the stream resumed")
        stop.set()
        sender.join(timeout=20)

        wanted = set(acknowledged)
        wait_for(lambda: wanted <= hook.event_ids(), timeout_s=60,
                 what="every acknowledged event delivered")
        reader = bearer(create_key(data, role="read"))
        for event_id in acknowledged[:: max(1, len(acknowledged) // 100)] + acknowledged[-20:]:
            assert httpx.get(f"{server.url}/v1/events/{event_id}", headers=reader).status_code == 200
        assert httpx.get(f"{server.url}/v1/events/evt_down", headers=reader).status_code == 404
        # A batch answered 503 may be partly stored (and appended): only never twice.
        appended = assert_chain(data, "org_acme")
        assert len(appended) == len(set(appended)) and wanted <= set(appended)
        # the requests went to JetStream as atomic batches (scr.bus.batches), restart and all
        assert scraped_metric(server.url, "scr_bus_batches_total") >= len(acknowledged) // STREAM_BATCH_EVENTS
    finally:
        stop.set()
