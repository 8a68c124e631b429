"""Route and deliver: real HTTP receivers on 127.0.0.1, signatures, retries, dead letters."""

from __future__ import annotations

import base64
import json
import math
import re
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import config_text
from scr.route.signing import verify
from support import make_event, wait_for

# Cursors, delivery rows and attempts are the store's: every test on each backend.
pytestmark = pytest.mark.every_store


SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
FAST = "backoff_base_ms: 20, backoff_max_ms: 100"


def destination(name: str, url: str, extra: str = "", backoff: str = FAST) -> str:
    more = f", {extra}" if extra else ""
    return (f'      - {{name: {name}, endpoint: "{url}", transform: raw_v1, {backoff}, '
            f'secret: "{SECRET}"{more}}}')


def send(client: Any, *events: dict[str, Any]) -> None:
    body = list(events) if len(events) > 1 else events[0]
    response = client.post("/v1/events", content=json.dumps(body), headers=client.key())
    assert response.status_code == 202, response.text


def test_event_reaches_destination_signed(serve: Any, receivers: Any) -> None:
    hook = receivers()
    client = serve(config_text(destination("hook", hook.url)))
    send(client, make_event("evt_1"))
    wait_for(lambda: hook.received, what="a delivery")
    request = hook.received[0]
    assert request.json()["event_id"] == "evt_1"
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    assert verify(key, request.headers["webhook-id"], request.headers["webhook-timestamp"],
                  request.body, request.headers["webhook-signature"])
    assert not verify(b"x" * 32, request.headers["webhook-id"],
                      request.headers["webhook-timestamp"], request.body,
                      request.headers["webhook-signature"])


def test_fails_twice_then_succeeds_with_the_same_webhook_id(serve: Any, receivers: Any) -> None:
    hook = receivers(script=[500, 503])
    client = serve(config_text(destination("hook", hook.url, "retry_attempts: 3")))
    send(client, make_event("evt_retry"))
    wait_for(lambda: len(hook.received) == 3, what="three attempts")
    ids = {r.headers["webhook-id"] for r in hook.received}
    assert len(ids) == 1
    reader = client.key(role="read")
    rows = wait_for(lambda: client.get("/v1/deliveries?status=delivered", headers=reader)
                    .json()["deliveries"], what="delivered row")
    assert rows[0]["event_id"] == "evt_retry" and rows[0]["attempts"] == 3
    time.sleep(0.3)
    assert len(hook.received) == 3  # delivered once, not again


def test_always_down_dead_letters_without_delaying_others(serve: Any, receivers: Any) -> None:
    down, up = receivers(default=503), receivers()
    client = serve(config_text(
        destination("down", down.url, "retry_attempts: 2") + "\n" + destination("up", up.url)
    ))
    send(client, *[make_event(f"evt_{i}") for i in range(5)])
    wait_for(lambda: len(up.events()) == 5, timeout_s=5, what="the healthy destination")
    reader = client.key(role="read")
    dead = wait_for(
        lambda: len(client.get("/v1/deliveries?status=dead&destination=down", headers=reader)
                    .json()["deliveries"]) == 5 and
        client.get("/v1/deliveries?status=dead&destination=down", headers=reader).json(),
        what="five dead letters",
    )["deliveries"]
    assert {d["event_id"] for d in dead} == {f"evt_{i}" for i in range(5)}
    assert all(d["attempts"] == 3 and d["last_status"] == 503 for d in dead)
    assert len(down.received) == 15  # 1 + retry_attempts per event
    metrics = client.get("/metrics").text
    assert 'scr_destination_dead_total{destination="down"} 5.0' in metrics


def test_replay_sends_the_same_webhook_id(serve: Any, receivers: Any) -> None:
    hook = receivers(script=[400])
    client = serve(config_text(destination("hook", hook.url)))
    send(client, make_event("evt_replay"))
    admin = client.key(role="admin")
    wait_for(lambda: client.get("/v1/deliveries?status=dead", headers=admin).json()["deliveries"],
             what="dead letter after a 400")
    first_id = hook.received[0].headers["webhook-id"]
    answer = client.post("/v1/deliveries/replay", headers=admin,
                         json={"destination": "hook", "event_ids": ["evt_replay", "evt_unknown"]})
    assert answer.status_code == 200 and answer.json()["requeued"] == 1
    wait_for(lambda: len(hook.received) == 2, what="the replayed delivery")
    assert hook.received[1].headers["webhook-id"] == first_id
    assert hook.received[1].json()["event_id"] == "evt_replay"


def test_replay_by_time_range_and_status(serve: Any, receivers: Any) -> None:
    hook = receivers(script=[422, 422])
    client = serve(config_text(destination("hook", hook.url)))
    send(client, make_event("evt_x1"), make_event("evt_x2"), make_event("evt_x3"))
    admin = client.key(role="admin")
    wait_for(lambda: len(client.get("/v1/deliveries?status=dead", headers=admin)
                         .json()["deliveries"]) == 2, what="two dead letters")
    answer = client.post("/v1/deliveries/replay", headers=admin, json={
        "destination": "hook", "from": "2000-01-01T00:00:00Z", "status": "dead"})
    assert answer.json()["requeued"] == 2
    wait_for(lambda: len(hook.received) == 5, what="two replays")


def test_redirect_is_not_followed_and_dead_letters(serve: Any, receivers: Any) -> None:
    target = receivers()
    hook = receivers(script=[(302, {"location": target.url})])
    client = serve(config_text(destination("hook", hook.url)))
    send(client, make_event("evt_redirect"))
    reader = client.key(role="read")
    dead = wait_for(lambda: client.get("/v1/deliveries?status=dead", headers=reader)
                    .json()["deliveries"], what="dead letter")
    assert dead[0]["last_status"] == 302
    assert not target.received


def test_410_disables_until_enabled(serve: Any, receivers: Any) -> None:
    hook = receivers(script=[410])
    client = serve(config_text(destination("hook", hook.url)))
    send(client, make_event("evt_gone"))
    reader, admin = client.key(role="read"), client.key(role="admin")
    wait_for(lambda: client.get("/v1/destinations", headers=reader)
             .json()["destinations"][0]["state"] == "disabled", what="disabled")
    send(client, make_event("evt_after"))
    time.sleep(0.3)
    assert len(hook.received) == 1  # nothing is sent while disabled
    age = re.search(r'scr_destination_oldest_pending_age_seconds\{destination="hook"\} (\S+)',
                    client.get("/metrics").text)
    assert age and float(age.group(1)) >= 0.3  # evt_after has waited since it was committed
    assert client.post("/v1/destinations/hook/enable", headers=reader).status_code == 403
    assert client.post("/v1/destinations/hook/enable", headers=admin).status_code == 200
    wait_for(lambda: {e["event_id"] for e in hook.events()} >= {"evt_gone", "evt_after"},
             what="both events after enabling")


def test_retry_after_is_honoured(serve: Any, receivers: Any) -> None:
    hook = receivers(script=[(429, {"retry-after": "1"})])
    slow_limit = "backoff_base_ms: 1, backoff_max_ms: 5000"
    client = serve(config_text(destination("hook", hook.url, backoff=slow_limit)))
    send(client, make_event("evt_ra"))
    wait_for(lambda: len(hook.received) == 2, what="the retry")
    # the retry waited for Retry-After (1 s), not the 1 ms backoff
    first, second = hook.received  # arrival order
    assert int(second.headers["webhook-timestamp"]) - int(first.headers["webhook-timestamp"]) >= 1


# backoff_max_ms far below the receiver's Retry-After: it must not shorten the wait
SHORT_BACKOFF = "backoff_base_ms: 20, backoff_max_ms: 200"
RETRY_AFTER_S = 2
RETRY_AFTER_CAP_S = 1


def _http_date_in(seconds: int) -> tuple[str, float]:
    """A Retry-After HTTP-date ``seconds`` whole seconds from now, and that instant (epoch s)."""
    when = math.ceil(time.time()) + seconds
    return format_datetime(datetime.fromtimestamp(when, UTC), usegmt=True), float(when)


@pytest.mark.parametrize("form", ["delay-seconds", "http-date"])
def test_retry_after_is_waited_in_full_whatever_backoff_max_ms(
    serve: Any, receivers: Any, form: str
) -> None:
    if form == "delay-seconds":
        header, not_before = str(RETRY_AFTER_S), None
    else:
        header, not_before = _http_date_in(RETRY_AFTER_S)
    hook = receivers(script=[(503, {"retry-after": header})])
    client = serve(config_text(destination("hook", hook.url, backoff=SHORT_BACKOFF)))
    send(client, make_event("evt_ra_full"))
    wait_for(lambda: len(hook.received) == 2, what="the retry")
    first, second = hook.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    if not_before is None:
        assert second.at - first.at >= RETRY_AFTER_S, "retried before the receiver's Retry-After"
    else:
        assert second.at >= not_before, "retried before the receiver's Retry-After date"


def test_retry_after_is_capped_by_retry_after_max_s(serve: Any, receivers: Any) -> None:
    hook = receivers(script=[(503, {"retry-after": str(RETRY_AFTER_S)})])
    capped = f"{SHORT_BACKOFF}, retry_after_max_s: {RETRY_AFTER_CAP_S}"
    client = serve(config_text(destination("hook", hook.url, backoff=capped)))
    send(client, make_event("evt_ra_capped"))
    wait_for(lambda: len(hook.received) == 2, what="the retry")
    first, second = hook.received
    assert RETRY_AFTER_CAP_S <= second.at - first.at < RETRY_AFTER_S


def test_batches_filters_and_sampling(serve: Any, receivers: Any) -> None:
    batched, errors_only, none = receivers(), receivers(), receivers()
    client = serve(config_text(
        destination("batched", batched.url, "batch_size: 10, batch_wait_ms: 50") + "\n"
        + destination("errors", errors_only.url, "filter: {outcome_status: [error]}") + "\n"
        + destination("sampled", none.url, "sampling_rate: 0.0")
    ))
    events = [make_event(f"evt_{i}") for i in range(25)]
    events[3]["outcome"]["status"] = "error"
    send(client, *events)
    wait_for(lambda: len(batched.events()) == 25, what="all events in batches")
    assert all(isinstance(r.json(), list) and len(r.json()) <= 10 for r in batched.received)
    assert len({r.headers["webhook-id"] for r in batched.received}) == len(batched.received)
    wait_for(lambda: errors_only.events(), what="the error event")
    assert [e["event_id"] for e in errors_only.events()] == ["evt_3"]
    metrics = client.get("/metrics").text
    assert 'scr_destination_filtered_out_total{destination="errors"} 24.0' in metrics
    wait_for(lambda: 'scr_destination_sampled_out_total{destination="sampled"} 25.0'
             in client.get("/metrics").text, what="sampling counted")
    assert not none.received


def test_session_ordering_holds_later_events_behind_a_failure(serve: Any, receivers: Any) -> None:
    hook = receivers(script=[500])
    client = serve(config_text(destination("hook", hook.url, "ordering: session")))
    first = make_event("evt_first")
    send(client, first)
    wait_for(lambda: hook.received, what="first attempt")
    second = make_event("evt_second", **{"timestamp": "2026-11-25T10:00:06Z"})
    send(client, second)
    wait_for(lambda: len(hook.events()) >= 3, what="retry and the held event")
    order = [e["event_id"] for e in hook.events()]
    assert order == ["evt_first", "evt_first", "evt_second"]


def test_file_destination_writes_json_lines(serve: Any, data_dir: Path) -> None:
    client = serve(config_text(
        "      - {name: billing, type: file, path: out/billing.jsonl, transform: billing_v1}"
    ))
    send(client, make_event("evt_f1"), make_event("evt_f2"))
    path = data_dir / "out" / "billing.jsonl"
    lines = wait_for(lambda: path.exists() and len(path.read_text().splitlines()) == 2
                     and path.read_text().splitlines(), what="two lines")
    records = [json.loads(line) for line in lines]
    assert [r["event_id"] for r in records] == ["evt_f1", "evt_f2"]
    assert "final_message" not in lines[0] and "203.0.113.77" not in lines[0]


def test_cursor_resumes_after_restart(serve: Any, receivers: Any) -> None:
    hook = receivers()
    config = config_text(destination("hook", hook.url))
    first = serve(config)
    send(first, make_event("evt_c1"))
    wait_for(lambda: hook.received, what="first delivery")
    first.__exit__(None, None, None)
    second = serve(config)
    send(second, make_event("evt_c2"))
    wait_for(lambda: len(hook.received) == 2, what="second delivery")
    time.sleep(0.2)
    assert [e["event_id"] for e in hook.events()] == ["evt_c1", "evt_c2"]


def test_a_graceful_stop_lets_a_delivery_in_flight_end_and_records_it(serve: Any, receivers: Any) -> None:
    hook = receivers(delay_s=0.5)  # still answering when the server is told to stop
    config = config_text(destination("hook", hook.url))
    first = serve(config)
    send(first, make_event("evt_s1"))
    wait_for(lambda: hook.received, what="the delivery under way")
    first.__exit__(None, None, None)
    hook.delay_s = 0.0
    second = serve(config)
    send(second, make_event("evt_s2"))
    wait_for(lambda: len(hook.received) >= 2, what="the next delivery")
    time.sleep(0.2)
    assert [e["event_id"] for e in hook.events()] == ["evt_s1", "evt_s2"]  # evt_s1 not sent again


def test_destinations_report_state_and_lag(serve: Any, receivers: Any) -> None:
    hook = receivers()
    client = serve(config_text(destination("hook", hook.url)))
    send(client, make_event("evt_l"))
    wait_for(lambda: hook.received, what="delivery")
    listing = wait_for(lambda: (d := client.get("/v1/destinations", headers=client.key(role="read"))
                                .json()["destinations"])[0]["lag"] == 0 and d, what="lag 0")
    assert listing[0]["name"] == "hook" and listing[0]["state"] == "active"
