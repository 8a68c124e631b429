"""Anomalies: the detector on crafted series, and end to end: a tenant's token spike in a
closed day ledgers one ANOMALY entry, delivered once and signed, never again after a
restart or a replayed write; ``GET /v1/anomalies`` is tenant-scoped; bad configs are refused."""

from __future__ import annotations

import asyncio
import base64
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from serve.test_supervisor import USAGE, Stream, child, kill_and_see_it_restart

from conftest import Client, StoreAt, config_text
from scr.config import parse_config
from scr.errors import ConfigError
from scr.log.entry import Kind, decode_entry
from scr.privacy.master import write_master_key
from scr.route.signing import verify
from scr.serve.writes import AddUsage, add_usage
from scr.store.protocol import Store
from scr.store.records import USAGE_CURSOR
from scr.usage.anomalies import METRICS, MIN_EVENTS, Counts, Series, contributors, judge
from scr.usage.judging import anomaly_key, key_of
from support import Receiver, ServerProcess, create_key, make_event, wait_for
from usage import recount as reference
from usage.test_usage import post, runtime_of

pytestmark = pytest.mark.every_store

SECRET = "whsec_" + base64.b64encode(b"a" * 32).decode()
WEEK = 168
HOOK = "http://127.0.0.1:9/hook"  # never called: the config is only parsed


# ----- the detector on crafted series --------------------------------------------------------


def hourly(events_at: Any, hours: int, tokens_per_event: int = 1000, errors: float = 0.02) -> list[Counts]:
    """A tenant's hours with a daily shape: ``events_at(hour)`` events, fixed tokens each."""
    made = []
    for hour in range(hours):
        events = events_at(hour)
        made.append(Counts(events, round(events * errors), events * tokens_per_event, events * 0.001))
    return made


def daily_shape(peak: int, seed: int) -> Any:
    noise = random.Random(seed)
    return lambda hour: round(peak * (0.3 + 0.7 * ((hour % 24) in range(8, 20))) * noise.uniform(0.9, 1.1))


def anomalous(series: Series, at: int, metric: str) -> dict[str, bool]:
    return {v.tenant: v.anomalous for v in judge(series, at, metric)}


def test_a_spike_fires_and_flat_noise_does_not() -> None:
    hours = 3 * WEEK
    counts = {"busy": hourly(daily_shape(200, 1), hours)}
    at = hours - 10  # 14:00 on the last day
    calm = anomalous(Series(WEEK, counts), at, "total_tokens")
    assert calm == {"busy": False}
    assert not any(anomalous(Series(WEEK, counts), hour, metric).get("busy")
                   for hour in range(2 * WEEK, hours) for metric in METRICS)
    busy = counts["busy"]
    spiked = {"busy": [*busy[:at], busy[at]._replace(total_tokens=busy[at].total_tokens * 5), *busy[at + 1:]]}
    (verdict,) = judge(Series(WEEK, spiked), at, "total_tokens")
    assert verdict.anomalous and verdict.value > verdict.high
    assert verdict.low < counts["busy"][at].total_tokens < verdict.high  # the usual value was inside


def test_an_error_spike_fires_but_not_at_low_traffic() -> None:
    hours = 3 * WEEK
    busy = hourly(daily_shape(200, 2), hours)
    at = hours - 10
    busy[at] = busy[at]._replace(errors=busy[at].events // 2)
    assert anomalous(Series(WEEK, {"busy": busy}), at, "error_rate") == {"busy": True}
    # a tenant of a few events an hour: ×10 tokens and every event failing, never judged
    quiet = hourly(lambda hour: 3, hours)
    quiet[at] = Counts(MIN_EVENTS - 1, MIN_EVENTS - 1, 10 * quiet[at].total_tokens * 7, 1.0)
    series = Series(WEEK, {"quiet": quiet})
    assert all(anomalous(series, at, metric) == {} for metric in ("total_tokens", "cost_usd", "error_rate"))


def test_a_new_tenant_is_covered_on_its_first_day_by_the_pooled_baseline() -> None:
    hours = 3 * WEEK
    counts = {f"old{n}": hourly(daily_shape(100 * (n + 1), n), hours, tokens_per_event=500 * (n + 1))
              for n in range(4)}
    born = hours - 20  # the new tenant's first hour, 20 hours ago
    newcomer = [Counts()] * born + hourly(daily_shape(300, 9), hours)[born:]
    counts["new"] = newcomer
    at = hours - 10
    assert anomalous(Series(WEEK, counts), at, "total_tokens")["new"] is False
    counts["new"] = [*newcomer[:at], newcomer[at]._replace(total_tokens=newcomer[at].total_tokens * 6),
                     *newcomer[at + 1:]]
    verdicts = anomalous(Series(WEEK, counts), at, "total_tokens")
    assert verdicts == {"old0": False, "old1": False, "old2": False, "old3": False, "new": True}


def test_the_breakdown_names_who_moved() -> None:
    usual = {"gpt-4o": 7 * 900.0, "gpt-4o-mini": 7 * 100.0}  # a week of days
    window = {"gpt-4o": 800.0, "gpt-4o-mini": 200.0, "o1": 4000.0}
    top = contributors(window, usual, 7)
    assert [row["key"] for row in top] == ["o1", "gpt-4o", "gpt-4o-mini"]
    assert top[0]["share"] == 0.8 and top[0]["usual_share"] == 0.0 and top[1]["usual_share"] == 0.9


# ----- end to end: the usage reader, the writer, a real receiver --------------------------------

DAYS = 21  # days of history: 2026-11-01 .. 2026-11-21
SPIKE_DAY = "2026-11-22"
JUDGE_AT = datetime(2026, 11, 23, 0, 10, tzinfo=UTC).timestamp()  # the spike day closed 10 minutes ago


def anomalies_config(url: str, extra: str = "") -> str:
    destinations = (f'      - {{name: alerts, endpoint: "{url}", secret: "{SECRET}", '
                    f'backoff_base_ms: 20, backoff_max_ms: 100, filter: {{tenant: [org_nobody]}}}}')
    return config_text(destinations) + ("  usage:\n    anomalies: {metrics: [total_tokens, error_rate], "
                                        "window: day, destinations: [alerts]" + extra + "}\n")


def day_events(day: str, count: int, user: str = "u_usual", model: str = "gpt-4o",
               tokens: int = 1000) -> list[dict[str, Any]]:
    return [
        make_event(f"evt_{day}_{user}_{n}", **{
            "timestamp": f"{day}T10:00:05Z", "session.session_id": f"sess_{day}_{user}_{n}",
            "session.start_time": f"{day}T09:58:00Z", "session.end_time": f"{day}T10:00:00Z",
            "user.user_id": user, "usage.model": model, "usage.input_tokens": tokens,
            "usage.output_tokens": 0, "usage.total_tokens": tokens,
        })
        for n in range(count)
    ]


def history_and_spike() -> list[dict[str, Any]]:
    events = []
    for day in range(1, DAYS + 1):
        events += day_events(f"2026-11-{day:02d}", 30 + day % 3)
    return events + day_events(SPIKE_DAY, 30) + day_events(SPIKE_DAY, 60, user="u_spiker", model="o1",
                                                            tokens=5000)


def ledgered(store: Store, tenant: str = "org_acme") -> list[dict[str, Any]]:
    return [decode_entry(stored.entry).payload
            for stored in store.tenant_entries_of_kinds(tenant, [Kind.ANOMALY.value], 0)]


def signed(request: Any) -> bool:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    return verify(key, request.headers["webhook-id"], request.headers["webhook-timestamp"],
                  request.body, request.headers["webhook-signature"])


def test_a_spike_is_ledgered_and_delivered_once_signed(serve: Any, receivers: Any) -> None:
    hook: Receiver = receivers()
    client: Client = serve(anomalies_config(hook.url))
    runtime = runtime_of(client)
    store = runtime.store
    post(client, history_and_spike())
    reference.count_to_head(runtime, clock=lambda: JUDGE_AT)
    (anomaly,) = ledgered(store)
    data = anomaly["data"]
    assert (data["tenant"], data["metric"], data["window_start"]) == ("org_acme", "total_tokens",
                                                                      "2026-11-22T00:00:00Z")
    assert data["value"] == str(30 * 1000 + 60 * 5000)
    assert float(data["low"]) < float(data["expected"]) < float(data["high"]) < float(data["value"])
    models = [row for row in data["breakdown"] if row["dimension"] == "model"]
    users = [row for row in data["breakdown"] if row["dimension"] == "user_id"]
    assert models[0]["key"] == "o1" and users[0]["key"] == "u_spiker"

    # a restarted reader (a new one, later) and a replayed write of the same anomaly: nothing new
    reference.count_to_head(runtime, clock=lambda: JUDGE_AT + 3600)
    cursor = store.cursor(USAGE_CURSOR) or 0
    again = AddUsage([], cursor, cursor, [{**anomaly, "timestamp": "2026-12-01T00:00:00Z"}])
    assert asyncio.run(runtime.committer.run(lambda tx: add_usage(runtime.committer, tx, again))) == 1
    assert [key_of(a) for a in ledgered(store)] == [key_of(anomaly)]

    wait_for(lambda: store.cursor("alerts") == store.last_seq(), what="the destination at the ledger's head")
    (request,) = hook.received
    assert signed(request)
    delivered = msgspec.json.decode(request.body)
    assert delivered == {"type": "usage.anomaly", "timestamp": anomaly["timestamp"], "data": data}
    assert list(delivered["data"]) == ["id", "metric", "window_start", "value", "expected", "low",
                                       "high", "breakdown", "tenant"]

    # GET /v1/anomalies: the tenant's own, another tenant's empty, roles and parameters checked
    reader = client.key(role="read")
    answer = client.get("/v1/anomalies", headers=reader,
                        params={"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"anomalies": [{name: data[name] for name in data if name != "tenant"}]}
    outside = client.get("/v1/anomalies", headers=reader, params={"from": "2026-11-23T00:00:00Z"})
    assert outside.json() == {"anomalies": []}
    other = client.get("/v1/anomalies", headers=client.key("org_beta", role="admin"))
    assert other.status_code == 200 and other.json() == {"anomalies": []}
    platform = client.get("/v1/anomalies", headers=client.key("org_ops", role="platform"),
                          params={"tenant": "org_acme"})
    assert [a["id"] for a in platform.json()["anomalies"]] == [data["id"]]
    assert client.get("/v1/anomalies", headers=client.key(role="ingest")).status_code == 403
    bad = client.get("/v1/anomalies", headers=reader, params={"to": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"]["details"][0]["path"] == "to"
    naive = client.get("/v1/anomalies", headers=reader, params={"from": "2026-11-01T00:00:00"})
    assert naive.status_code == 400 and naive.json()["error"]["details"][0]["path"] == "from"
    assert client.get("/healthz").status_code == 200


def test_with_encryption_on_the_ledger_names_subjects_and_the_api_user_ids(
    serve: Any, receivers: Any, tmp_path: Path
) -> None:
    key_file = tmp_path / "master.key"
    write_master_key(key_file)
    hook: Receiver = receivers()
    client: Client = serve(anomalies_config(hook.url) + f"  security:\n    master_key_file: {key_file}\n")
    runtime = runtime_of(client)
    post(client, history_and_spike())
    reference.count_to_head(runtime, clock=lambda: JUDGE_AT)
    (anomaly,) = ledgered(runtime.store)
    ledgered_users = [row["key"] for row in anomaly["data"]["breakdown"] if row["dimension"] == "user_id"]
    assert all(user.startswith("subject:") for user in ledgered_users)  # never a user id in the ledger
    answer = client.get("/v1/anomalies", headers=client.key(role="admin"))
    assert answer.status_code == 200, answer.text
    (listed,) = answer.json()["anomalies"]
    users = [row["key"] for row in listed["breakdown"] if row["dimension"] == "user_id"]
    assert users[0] == "u_spiker" and set(users) == {"u_spiker", "u_usual"}


def test_late_events_for_a_judged_window_are_not_judged_again(serve: Any, receivers: Any) -> None:
    hook: Receiver = receivers()
    client: Client = serve(anomalies_config(hook.url))
    runtime = runtime_of(client)
    events = history_and_spike()
    post(client, [e for e in events if not e["timestamp"].startswith(SPIKE_DAY)])
    post(client, day_events(SPIKE_DAY, 30))
    reference.count_to_head(runtime, clock=lambda: JUDGE_AT)
    assert ledgered(runtime.store) == []
    post(client, day_events(SPIKE_DAY, 60, user="u_spiker", model="o1", tokens=5000))  # late
    reference.count_to_head(runtime, clock=lambda: JUDGE_AT + 3600)
    assert ledgered(runtime.store) == []


@pytest.mark.parametrize(("extra", "path", "message"), [
    (", window: week", "anomalies.window", "window must be one of hour, day"),
    (", metrics: [latency]", "anomalies.metrics[0]", "must be one of cost_usd, total_tokens, error_rate"),
    (", metrics: [cost_usd, cost_usd]", "anomalies.metrics[1]", "metrics[1] (cost_usd) is listed twice"),
    (", metrics: []", "anomalies.metrics", "metrics must list at least one item"),
    (", color: red", "anomalies.color", "color"),
])
def test_bad_anomaly_configs_are_refused_naming_key_and_line(extra: str, path: str, message: str) -> None:
    text = anomalies_config(HOOK).replace("metrics: [total_tokens, error_rate], window: day, ", "")
    with pytest.raises(ConfigError) as refused:
        parse_config(text.replace("destinations: [alerts]}", "destinations: [alerts]" + extra + "}"))
    (detail,) = refused.value.details
    assert detail.path == f"session_completion_runtime.usage.{path}"
    assert "line 6:" in detail.message and message in detail.message  # the line of `anomalies:`


def test_an_anomaly_destination_must_be_configured() -> None:
    text = anomalies_config(HOOK).replace("destinations: [alerts]}", "destinations: [nope]}")
    with pytest.raises(ConfigError) as refused:
        parse_config(text)
    (detail,) = refused.value.details
    assert detail.path == "session_completion_runtime.usage.anomalies.destinations[0]"
    assert "anomaly destination `nope` is not in routing.destinations" in detail.message
    defaults = parse_config(anomalies_config(HOOK).replace(
        "metrics: [total_tokens, error_rate], window: day, ", ""))
    assert defaults.usage.anomalies is not None
    assert defaults.usage.anomalies.metrics == ["cost_usd", "total_tokens", "error_rate"]
    assert defaults.usage.anomalies.window == "hour"


# ----- scr serve: SIGKILL of the usage process mid-stream, the real clock ---------------------------


@pytest.mark.slow
def test_sigkill_of_the_usage_process_mid_stream_raises_each_anomaly_once(
    tmp_path: Path, store_at: StoreAt
) -> None:
    data, uri = store_at.data, store_at.uri
    data.mkdir(parents=True)
    hook = Receiver()
    config = tmp_path / "scr.yaml"
    config.write_text(anomalies_config(hook.url))
    key = create_key(data, store=uri)
    platform = create_key(data, tenant="org_ops", role="platform", store=uri)
    reader = create_key(data, tenant="org_spiky", role="read", store=uri)
    today = datetime.now(UTC).date()
    spike_day = today - timedelta(days=2)  # closed long ago by the real clock (the day after too)
    server = ServerProcess(data, config=config, store=uri).start()
    try:
        # the spiky tenant's history and spike first, in one batch: judged once counted
        spiky = []
        for back in range(DAYS + 2, 2, -1):
            spiky += day_events(str(today - timedelta(days=back)), 30 + back % 3)
        spiky += day_events(str(spike_day), 30) + day_events(str(spike_day), 60, user="u_spiker",
                                                             model="o1", tokens=5000)
        for event in spiky:
            event["user"]["organization_id"] = "org_spiky"
        answer = httpx.post(f"{server.url}/v1/events", json=spiky, timeout=30,
                            headers={"authorization": f"Bearer {platform}"})
        assert answer.status_code == 202, answer.text
        spike_key = anomaly_key("org_spiky", "total_tokens", f"{spike_day}T00:00:00Z")

        def listed() -> list[dict[str, Any]]:
            found = httpx.get(f"{server.url}/v1/anomalies", headers={"authorization": f"Bearer {reader}"})
            assert found.status_code == 200, found.text
            anomalies: list[dict[str, Any]] = found.json()["anomalies"]
            return anomalies

        wait_for(lambda: any(a["window_start"] == f"{spike_day}T00:00:00Z" for a in listed()),
                 timeout_s=60, what="the spike judged")
        counter = 'scr_usage_anomalies_raised_total{metric="total_tokens",tenant="org_spiky"}'
        wait_for(lambda: counter in httpx.get(f"{server.url}/metrics").text, timeout_s=30,
                 what="the anomalies raised counted in /metrics")
        load = Stream(server, key)
        try:
            wait_for(lambda: len(load.acknowledged) > 0, timeout_s=30, what="the stream under way")
            kill_and_see_it_restart(server, USAGE)
            acknowledged = load.stop()
        finally:
            load.stop()
        store = store_at.open()
        try:
            wait_for(lambda: store.cursor(USAGE_CURSOR) == store.last_seq(), timeout_s=60,
                     what="every event counted after the restart")
            wait_for(lambda: store.cursor("alerts") == store.last_seq(), timeout_s=30,
                     what="every anomaly delivered")
            anomalies = ledgered(store, "org_spiky")
        finally:
            store.close()
        assert acknowledged and child(server, USAGE)["last_exit"] == "killed by SIGKILL"
    finally:
        server.stop()
        hook.close()
    keys = [key_of(a) for a in anomalies]
    assert spike_key in keys and len(keys) == len(set(keys))
    delivered = [msgspec.json.decode(r.body) for r in hook.received]
    assert sorted(key_of(d) for d in delivered) == sorted(keys)  # each once
    assert len({r.headers["webhook-id"] for r in hook.received}) == len(keys)
    assert all(signed(request) for request in hook.received)
