"""Destinations in reader processes: woken by the writer, restarted when killed, never a
brake on ingest."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import StoreAt
from scr.config import FilterConfig
from scr.route.selection import passes_filter, sampled_in
from scr.schema import decode_event
from serve.test_supervisor import (
    EDGES,
    USAGE,
    WRITER,
    Stream,
    assert_in_the_ledger,
    child,
    kill_and_see_it_restart,
)
from support import (
    Receiver,
    ServerProcess,
    create_key,
    make_event,
    post_acknowledged,
    scraped_metric,
    wait_for,
)

READER = "scr: reader destinations"
DELIVERY_TIMEOUT_S = 60.0


BATCHED = "batch_size: 500, batch_wait_ms: 20"


def write_config(tmp_path: Path, hook: Receiver, hook_options: str = BATCHED) -> Path:
    """A webhook to ``hook`` and a file destination, ``archive.jsonl`` in the data folder."""
    config = tmp_path / "scr.yaml"
    config.write_text(
        "session_completion_runtime:\n  routing:\n    destinations:\n"
        f'      - {{name: hook, endpoint: "{hook.url}", {hook_options}}}\n'
        "      - {name: archive, type: file, path: archive.jsonl, transform: audit_v1}\n"
    )
    return config


def archived(data: Path) -> set[str]:
    archive = data / "archive.jsonl"
    if not archive.exists():
        return set()
    whole = archive.read_text().split("\n")[:-1]  # only whole lines: the sink may be mid-append
    return {json.loads(line)["event_id"] for line in whole}


@pytest.fixture
def hook() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def test_each_reader_process_has_its_title_and_destinations(tmp_path: Path, hook: Receiver) -> None:
    config = write_config(tmp_path, hook, "process: webhooks")
    data = tmp_path / "data"
    server = ServerProcess(data, config).start()
    try:
        titles = [p["title"] for p in httpx.get(f"{server.url}/healthz").json()["processes"]]
        assert titles == [WRITER, *EDGES, "scr: reader webhooks", "scr: reader destinations", USAGE]
        reader = create_key(data, role="read")
        listed = httpx.get(f"{server.url}/v1/destinations",
                           headers={"authorization": f"Bearer {reader}"}).json()["destinations"]
        assert [d["name"] for d in listed] == ["hook", "archive"]
        key = create_key(data)
        with httpx.Client() as client:
            assert post_acknowledged(client, server.url, key, [make_event("evt_1")], [])
        wait_for(lambda: "evt_1" in hook.event_ids() and "evt_1" in archived(data),
                 what="the event at both destinations")
    finally:
        server.stop()


def test_a_reader_filters_and_samples_the_events_it_keeps_undecoded(tmp_path: Path, hook: Receiver) -> None:
    """The reader keeps the events' ledgered lines (a built-in transform, personal fields
    shown): the core filters and samples them, choosing what the Python reference chooses."""
    rule = 'filter: {outcome_status: [error, timeout], model: ["gpt-4o*"]}, sampling_rate: 0.5'
    config = write_config(tmp_path, hook, rule)
    data = tmp_path / "data"
    events = [make_event(f"evt_{n}", **{"outcome.status": ("error", "timeout", "success")[n % 3],
                                        "usage.model": ("gpt-4o-mini", "gpt-4", "GPT-4o")[n // 3 % 3]})
              for n in range(90)]
    decoded = [decode_event(json.dumps(event).encode()) for event in events]
    filter_ = FilterConfig(outcome_status=["error", "timeout"], model=["gpt-4o*"])
    passing = [event.event_id for event in decoded if passes_filter(filter_, event)]
    wanted = {event_id for event_id in passing if sampled_in(0.5, "hook", event_id)}
    assert 0 < len(wanted) < len(passing) < len(events)
    server = ServerProcess(data, config).start()
    try:
        key = create_key(data)
        with httpx.Client() as client:
            assert post_acknowledged(client, server.url, key, events, [])
        wait_for(lambda: len(archived(data)) == len(events), what="every event in the archive")
        wait_for(lambda: scraped_metric(server.url, 'scr_destination_sampled_out_total{destination="hook"}')
                 == len(passing) - len(wanted), what="the sampling counted")
        assert scraped_metric(server.url, 'scr_destination_filtered_out_total{destination="hook"}') \
            == len(events) - len(passing)
        wait_for(lambda: hook.event_ids() == wanted, what="the chosen events delivered")
    finally:
        server.stop()


@pytest.mark.slow
def test_sigkill_of_a_reader_mid_stream_loses_no_delivery(
    tmp_path: Path, store_at: StoreAt, hook: Receiver
) -> None:
    data, uri = store_at.data, store_at.uri
    config = write_config(tmp_path, hook)
    key = create_key(data, store=uri)
    server = ServerProcess(data, config, uri).start()
    load = Stream(server, key)
    try:
        wait_for(lambda: len(hook.event_ids()) >= 1000, timeout_s=30, what="deliveries under way")
        kill_and_see_it_restart(server, READER)
        time.sleep(1.0)  # the stream goes on past the restart
        wanted = set(load.stop())
        wait_for(lambda: wanted <= hook.event_ids() and wanted <= archived(data),
                 timeout_s=DELIVERY_TIMEOUT_S, what="every acknowledged event at both destinations")
        assert child(server, READER)["restarts"] == 1
    finally:
        load.stop()
        server.stop()


@pytest.mark.slow
def test_a_frozen_reader_does_not_slow_ingest(tmp_path: Path, store_at: StoreAt, hook: Receiver) -> None:
    """SIGSTOP the reader: batches are still acknowledged, and once it runs again it
    delivers what it missed; meanwhile /v1/destinations answers 503, never hangs."""
    data, uri = store_at.data, store_at.uri
    config = write_config(tmp_path, hook)
    key = create_key(data, store=uri)
    admin = create_key(data, role="admin", store=uri)
    server = ServerProcess(data, config, uri).start()
    reader_pid = child(server, READER)["pid"]
    try:
        os.kill(reader_pid, signal.SIGSTOP)
        acknowledged: list[str] = []
        with httpx.Client(timeout=10) as client:
            for n in range(10):
                batch = [make_event(f"evt_{n}_{i}") for i in range(500)]
                assert post_acknowledged(client, server.url, key, batch, acknowledged)
            answer = client.get(f"{server.url}/v1/destinations", headers={"authorization": f"Bearer {admin}"})
            assert answer.status_code == 503
            assert "scr: reader destinations" in answer.json()["error"]["message"]
            assert client.get(f"{server.url}/metrics").status_code == 200
        assert len(acknowledged) == 5000
        assert not hook.event_ids() & set(acknowledged)
        os.kill(reader_pid, signal.SIGCONT)
        wait_for(lambda: set(acknowledged) <= hook.event_ids() and set(acknowledged) <= archived(data),
                 timeout_s=DELIVERY_TIMEOUT_S, what="the backlog delivered")
    finally:
        os.kill(reader_pid, signal.SIGCONT)
        server.stop()


def test_replay_and_enable_reach_the_reader(tmp_path: Path, hook: Receiver) -> None:
    data = tmp_path / "data"
    config = write_config(tmp_path, hook)
    key = create_key(data)
    admin = create_key(data, role="admin")
    server = ServerProcess(data, config).start()
    headers = {"authorization": f"Bearer {admin}"}
    try:
        with httpx.Client(base_url=server.url, headers=headers) as client:
            assert post_acknowledged(client, server.url, key, [make_event("evt_r")], [])
            wait_for(lambda: "evt_r" in hook.event_ids(), what="the first delivery")
            first = len(hook.received)
            replay = {"destination": "hook", "event_ids": ["evt_r"]}
            answer = client.post("/v1/deliveries/replay", json=replay)
            assert answer.json() == {"destination": "hook", "requeued": 1}
            wait_for(lambda: len(hook.received) > first, what="the replayed delivery")
            assert [e["event_id"] for e in hook.received[-1].json()] == ["evt_r"]
            answer = client.post("/v1/deliveries/replay", json={**replay, "destination": "nope"})
            assert answer.status_code == 404
            answer = client.post("/v1/destinations/hook/enable")
            assert answer.status_code == 200 and answer.json()["name"] == "hook"
    finally:
        server.stop()


@pytest.mark.slow
def test_sigkill_of_the_writer_mid_stream_loses_nothing(
    tmp_path: Path, store_at: StoreAt, hook: Receiver
) -> None:
    """The writer dies under load: started again within 1 s; every acknowledged event is in
    the ledger and at both destinations, and none is sent twice: the reader keeps the records
    of what it delivered while the writer was away, and writes them once it is back."""
    data, uri = store_at.data, store_at.uri
    config = write_config(tmp_path, hook)
    key = create_key(data, store=uri)
    server = ServerProcess(data, config, uri).start()
    load = Stream(server, key)
    try:
        wait_for(lambda: len(load.acknowledged) >= 1000, timeout_s=30, what="a stream under way")
        kill_and_see_it_restart(server, WRITER)
        wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code == 200, timeout_s=30,
                 what="ready again")
        acknowledged_then = len(load.acknowledged)
        wait_for(lambda: len(load.acknowledged) > acknowledged_then, timeout_s=30,
                 what="acknowledged again")
        acknowledged = load.stop()
        assert_in_the_ledger(server, acknowledged, uri)
        wanted = set(acknowledged)
        wait_for(lambda: wanted <= hook.event_ids() and wanted <= archived(data),
                 timeout_s=DELIVERY_TIMEOUT_S, what="every acknowledged event at both destinations")
        sent = Counter(item["event_id"] for request in list(hook.received)
                       for item in request.json())  # batched: each request a list
        repeated = sum(n - 1 for n in sent.values())
        assert repeated == 0
        assert scraped_metric(server.url, 'scr_destination_resent_total{destination="hook"}') == 0
    finally:
        load.stop()
        server.stop()


def test_with_the_writer_gone_edges_answer_503_at_once_and_recover(store_at: StoreAt) -> None:
    data, uri = store_at.data, store_at.uri
    key = create_key(data, store=uri)
    server = ServerProcess(data, store=uri).start()
    assert server.proc is not None
    supervisor = server.proc.pid
    try:
        os.kill(supervisor, signal.SIGSTOP)  # nobody starts the writer again for now
        os.kill(child(server, WRITER)["pid"], signal.SIGKILL)
        with httpx.Client(timeout=10) as client:
            for path in ("/v1/events", "/readyz", "/v1/destinations"):
                began = time.monotonic()
                if path == "/v1/events":
                    answer = client.post(f"{server.url}{path}", json=make_event("evt_w"),
                                         headers={"authorization": f"Bearer {key}"})
                else:
                    answer = client.get(f"{server.url}{path}")
                assert answer.status_code == 503, path
                assert answer.json()["error"]["code"] == "unavailable"
                assert time.monotonic() - began < 2, f"{path} hung"
        os.kill(supervisor, signal.SIGCONT)
        wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code == 200, timeout_s=30,
                 what="ready again")
        with httpx.Client() as client:
            assert post_acknowledged(client, server.url, key, [make_event("evt_w")], [])
    finally:
        os.kill(supervisor, signal.SIGCONT)
        server.stop()
