"""Browser beacons over HTTP: the script, publishable keys, origins, CORS, rate and size limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import config_text
from scr.capture.browser import BEACON_PATH, MAX_BEACON_BYTES, SCRIPT_PATH, beacon_event_id
from scr.errors import BadRequest, TooManyRequests
from scr.log.commit import Committer
from scr.security.auth import create_key
from scr.security.keys import Role, normalize_origin
from scr.security.ratelimit import RateLimiter
from scr.store.sqlite import SqliteStore
from support import run_scr

APP = "https://app.example"
OTHER = "https://evil.example"


def publishable_key(data: Path, tenant: str = "org_acme", origins: tuple[str, ...] = (APP,)) -> str:
    store = SqliteStore(data)
    committer = Committer(store, buffer_size=1)
    committer.start()
    try:
        return create_key(committer, tenant, Role.PUBLISHABLE, "web", origins).key
    finally:
        committer.close()
        store.close()


def session(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "session_id": "web-sess-1", "start_time": "2026-12-02T10:00:00.000Z",
        "end_time": "2026-12-02T10:01:30.500Z", "model": "gpt-4o", "input_tokens": 1200,
        "output_tokens": 300, "messages": 4, "status": "success", "user_id": "u_7",
    }
    record.update(changes)
    return record


def beacon(client: Any, key: str | None, body: Any, origin: str | None = APP,
           content_type: str = "text/plain;charset=UTF-8") -> Any:
    headers = {"content-type": content_type}
    if origin is not None:
        headers["origin"] = origin
    params = {"key": key} if key is not None else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(BEACON_PATH, params=params, content=content, headers=headers)


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["message"]
    if code is not None:
        assert error["code"] == code
    return dict(error)


def stored(client: Any, event_id: str, tenant: str = "org_acme") -> Any:
    return client.get(f"/v1/events/{event_id}", headers=client.key(tenant, "read"))


def test_the_script_is_public_cacheable_javascript(serve: Any) -> None:
    client = serve()
    response = client.get(SCRIPT_PATH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "public" in response.headers["cache-control"]
    assert "max-age=" in response.headers["cache-control"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert b"navigator.sendBeacon" in response.content and b"pagehide" in response.content


def test_a_beacon_from_an_allowed_origin_is_committed_for_the_keys_tenant(serve: Any) -> None:
    client = serve()
    key = publishable_key(client.data)
    response = beacon(client, key, session())
    assert response.status_code == 202, response.text
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["vary"] == "Origin"
    event_id = beacon_event_id("org_acme", "web-sess-1", 0)
    assert response.json()["results"][0] == {"index": 0, "event_id": event_id, "status": "accepted"}
    event = stored(client, event_id).json()["event"]
    assert event["user"] == {"user_id": "u_7", "organization_id": "org_acme", "tier": "free"}
    assert event["session"]["duration_ms"] == 90500
    assert event["timestamp"] == event["session"]["end_time"] == "2026-12-02T10:01:30.500000Z"
    # priced by the server's table: 1200 in at 2.50 and 300 out at 10.00 per 1M tokens
    assert event["usage"]["estimated_cost_usd"] == "0.0060000000"
    assert event["usage"]["total_tokens"] == 1500
    assert event["metadata"]["custom_tags"] == {"capture": "browser", "messages": "4"}
    assert event["outcome"] == {"status": "success"}


def test_the_same_beacon_twice_is_a_duplicate_and_a_later_segment_a_new_event(serve: Any) -> None:
    client = serve()
    key = publishable_key(client.data)
    assert beacon(client, key, session()).json()["accepted"] == 1
    again = beacon(client, key, session())
    assert again.status_code == 202 and again.json()["duplicate"] == 1
    later = beacon(client, key, session(segment=1, input_tokens=10, output_tokens=5))
    assert later.status_code == 202 and later.json()["accepted"] == 1
    event = stored(client, beacon_event_id("org_acme", "web-sess-1", 1)).json()["event"]
    assert event["metadata"]["custom_tags"]["segment"] == "1"
    sessions = client.get("/v1/sessions/web-sess-1", headers=client.key("org_acme", "read"))
    assert len(sessions.json()["events"]) == 2


def test_an_unknown_model_is_tagged_not_silently_free(serve: Any) -> None:
    client = serve()
    key = publishable_key(client.data)
    response = beacon(client, key, session(model="house-model-9"))
    event = stored(client, response.json()["results"][0]["event_id"]).json()["event"]
    assert event["usage"]["estimated_cost_usd"] == "0"
    assert event["metadata"]["custom_tags"]["price"] == "unknown"


def test_wrong_or_missing_origin_is_refused_without_cors_headers(serve: Any) -> None:
    client = serve()
    key = publishable_key(client.data)
    for origin in (OTHER, "https://app.example.evil.example", "http://app.example", None):
        response = beacon(client, key, session(), origin=origin)
        assert_error(response, 403, "forbidden")
        assert "access-control-allow-origin" not in response.headers
    assert stored(client, beacon_event_id("org_acme", "web-sess-1", 0)).status_code == 404


def test_a_key_with_several_origins_accepts_each(serve: Any) -> None:
    client = serve()
    key = publishable_key(client.data, origins=(APP, "http://localhost:3000"))
    assert beacon(client, key, session(), origin="http://localhost:3000").status_code == 202
    assert beacon(client, key, session(session_id="s2"), origin=APP).status_code == 202


def test_another_tenants_event_is_refused(serve: Any) -> None:
    client = serve()
    key = publishable_key(client.data, tenant="org_acme")
    response = beacon(client, key, session(organization_id="org_other"))
    error = assert_error(response, 403, "forbidden_tenant")
    assert error["details"][0]["path"] == "$.user.organization_id"
    assert response.headers["access-control-allow-origin"] == APP
    assert stored(client, beacon_event_id("org_acme", "web-sess-1", 0), "org_other").status_code == 404
    # naming its own tenant is fine
    assert beacon(client, key, session(organization_id="org_acme")).status_code == 202


def test_a_publishable_key_can_do_nothing_but_beacons(serve: Any) -> None:
    client = serve()
    key = publishable_key(client.data)
    bearer = {"authorization": f"Bearer {key}"}
    assert_error(client.post("/v1/events", json={}, headers=bearer), 403, "forbidden")
    assert_error(client.get("/v1/events/x", headers=bearer), 403, "forbidden")
    assert_error(client.get("/v1/destinations", headers=bearer), 403, "forbidden")


def test_missing_unknown_or_non_publishable_keys_are_refused(serve: Any) -> None:
    client = serve()
    ingest_key = client.key("org_acme", "ingest")["authorization"].split()[1]
    assert_error(beacon(client, None, session()), 401, "unauthorized")
    assert_error(beacon(client, "scr_00000000_nope", session()), 401, "unauthorized")
    assert_error(beacon(client, "x" * 500, session()), 401, "unauthorized")
    assert_error(beacon(client, ingest_key, session()), 403, "forbidden")


def test_preflight_answers_allowed_origins_and_refuses_others(serve: Any) -> None:
    client = serve()
    key = publishable_key(client.data)
    ask = {"origin": APP, "access-control-request-method": "POST",
           "access-control-request-headers": "content-type"}
    allowed = client.options(BEACON_PATH, params={"key": key}, headers=ask)
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == APP
    assert allowed.headers["access-control-allow-methods"] == "POST"
    assert "content-type" in allowed.headers["access-control-allow-headers"]
    assert int(allowed.headers["access-control-max-age"]) > 0
    refused = client.options(BEACON_PATH, params={"key": key}, headers={**ask, "origin": OTHER})
    assert_error(refused, 403)
    assert "access-control-allow-origin" not in refused.headers
    wrong_method = client.options(
        BEACON_PATH, params={"key": key}, headers={**ask, "access-control-request-method": "PUT"}
    )
    assert_error(wrong_method, 403)
    assert_error(client.options(BEACON_PATH, headers=ask), 401)
    # and the JSON content type (the preflighted kind) is then accepted
    response = beacon(client, key, session(), content_type="application/json")
    assert response.status_code == 202


def test_over_the_rate_answers_429_with_retry_after_per_key(serve: Any) -> None:
    config = config_text().replace(
        "session_completion_runtime:\n",
        "session_completion_runtime:\n  capture:\n    browser:\n"
        "      rate_limit_per_minute: 6\n      rate_limit_burst: 2\n",
    )
    client = serve(config)
    key = publishable_key(client.data)
    other_key = publishable_key(client.data)
    assert beacon(client, key, session(session_id="a")).status_code == 202
    assert beacon(client, key, session(session_id="b")).status_code == 202
    limited = beacon(client, key, session(session_id="c"))
    assert_error(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["retry-after"]) <= 10  # one token per 10 s
    assert limited.headers["access-control-allow-origin"] == APP
    assert stored(client, beacon_event_id("org_acme", "c", 0)).status_code == 404
    assert beacon(client, other_key, session(session_id="d")).status_code == 202
    assert "scr_beacons_rate_limited_total 1.0" in client.get("/metrics").text


def test_an_oversize_body_is_refused_before_it_is_parsed(serve: Any) -> None:
    client = serve()
    key = publishable_key(client.data)
    body = json.dumps(session(tags={"pad": "x" * MAX_BEACON_BYTES})).encode()
    response = beacon(client, key, body)
    assert_error(response, 413, "payload_too_large")
    assert stored(client, beacon_event_id("org_acme", "web-sess-1", 0)).status_code == 404
    assert beacon(client, key, session()).status_code == 202  # the service stays up


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "bad_request"),
        (b"[1, 2]", 400, "bad_request"),
        (json.dumps(session(input_tokens=-1)).encode(), 400, "bad_request"),
        (json.dumps(session(surprise=1)).encode(), 400, "bad_request"),
        (json.dumps(session(start_time="yesterday")).encode(), 400, "bad_request"),
        (json.dumps(session(end_time="2026-12-02T09:00:00Z")).encode(), 400, "invalid_time_order"),
        (json.dumps(session(status="great")).encode(), 400, "bad_request"),
    ],
)
def test_bad_beacons_get_the_standard_error(serve: Any, body: bytes, status: int, code: str) -> None:
    client = serve()
    key = publishable_key(client.data)
    assert_error(beacon(client, key, body), status, code)


def test_an_unsupported_content_type_is_415(serve: Any) -> None:
    client = serve()
    key = publishable_key(client.data)
    assert_error(beacon(client, key, session(), content_type="application/xml"), 415)


def test_rate_limiter_refills_and_bounds_its_memory() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, max_keys=3, clock=lambda: now[0])
    limiter.take("k")
    limiter.take("k")
    with pytest.raises(TooManyRequests) as refused:
        limiter.take("k")
    assert refused.value.headers() == {"retry-after": "1"}
    now[0] = 1.0  # one token per second
    limiter.take("k")
    with pytest.raises(TooManyRequests):
        limiter.take("k")
    for number in range(10):
        limiter.take(f"key-{number}")
    assert len(limiter) == 3


def test_origins_are_normalized_and_checked() -> None:
    assert normalize_origin("HTTPS://App.Example/") == "https://app.example"
    assert normalize_origin("https://app.example:443") == "https://app.example"
    assert normalize_origin("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    for bad in ("app.example", "https://app.example/path", "*", "https://*.example", "ftp://x.example"):
        with pytest.raises(BadRequest):
            normalize_origin(bad)


def test_keys_create_demands_origins_for_publishable_keys_only(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    made = run_scr("keys", "create", "--data", data, "--tenant", "org_acme", "--role", "publishable",
                   "--origin", "https://app.example", "--origin", "http://localhost:3000")
    lines = made.stdout.strip().splitlines()
    assert "accepted from http://localhost:3000, https://app.example" in lines
    assert lines[-1].startswith("scr_")
    missing = run_scr("keys", "create", "--data", data, "--tenant", "org_acme",
                      "--role", "publishable", check=False)
    assert missing.returncode == 2 and "--origin" in missing.stderr
    extra = run_scr("keys", "create", "--data", data, "--tenant", "org_acme", "--role", "ingest",
                    "--origin", "https://app.example", check=False)
    assert extra.returncode == 2 and "only a publishable key" in extra.stderr
