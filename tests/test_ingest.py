"""POST /v1/events: status codes, per-event results, dedup, and that bad input stores nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scr.log.entry import Kind, decode_entry
from scr.security import auth
from scr.security.keys import KEY_PREFIX
from scr.store import open_store
from support import DELETE, make_event, run_scr, wait_for

# Ingest, dedup, conflicts and reads are the store's: every test on each backend.
pytestmark = pytest.mark.every_store
CACHE_TTL_S = 0.2

JSON = {"content-type": "application/json"}


def post(client: Any, body: Any, headers: dict[str, str], raw: bytes | None = None) -> Any:
    content = raw if raw is not None else json.dumps(body).encode()
    return client.post("/v1/events", content=content, headers={**JSON, **headers})


def stored(client: Any, reader: dict[str, str], event_id: str) -> bool:
    return bool(client.get(f"/v1/events/{event_id}", headers=reader).status_code == 200)


def healthy(client: Any) -> bool:
    return bool(client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200)


def test_single_event_is_accepted_and_readable(serve: Any) -> None:
    client = serve()
    ingest, reader = client.key(), client.key(role="read")
    response = post(client, make_event("evt_a"), ingest)
    assert response.status_code == 202
    assert response.json() == {
        "accepted": 1, "duplicate": 0, "rejected": 0,
        "results": [{"index": 0, "event_id": "evt_a", "status": "accepted"}],
    }
    got = client.get("/v1/events/evt_a", headers=reader).json()
    assert got["event"]["usage"]["estimated_cost_usd"] == "0.0075"  # exact, as a decimal string
    assert got["ledger"]["tenant_seq"] >= 0 and len(got["ledger"]["hash"]) == 64


def test_cost_is_kept_digit_for_digit(serve: Any) -> None:
    client = serve()
    ingest, reader = client.key(), client.key(role="read")
    raw = json.dumps(make_event("evt_cost")).replace("0.0075", "0.123456789012345678")
    assert post(client, None, ingest, raw=raw.encode()).status_code == 202
    event = client.get("/v1/events/evt_cost", headers=reader).json()["event"]
    assert event["usage"]["estimated_cost_usd"] == "0.123456789012345678"


def test_same_id_same_body_is_duplicate_and_different_body_conflicts(serve: Any) -> None:
    client = serve()
    ingest, reader = client.key(), client.key(role="read")
    assert post(client, make_event("evt_d"), ingest).status_code == 202
    again = post(client, make_event("evt_d"), ingest)
    assert again.status_code == 202
    assert again.json()["duplicate"] == 1 and again.json()["results"][0]["status"] == "duplicate"
    changed = post(client, make_event("evt_d", **{"usage.model": "gpt-4o-mini"}), ingest)
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "conflict"
    kept = client.get("/v1/events/evt_d", headers=reader).json()["event"]
    assert kept["usage"]["model"] == "gpt-4o"  # never silently merged


def test_dedup_survives_restart(serve: Any) -> None:
    first = serve()
    ingest = first.key()
    assert post(first, make_event("evt_r"), ingest).status_code == 202
    first.__exit__(None, None, None)
    second = serve()
    response = post(second, make_event("evt_r"), ingest)
    assert response.json()["results"][0]["status"] == "duplicate"


def test_batch_with_bad_events_commits_the_good_ones(serve: Any) -> None:
    client = serve()
    ingest, reader = client.key(), client.key(role="read")
    batch = [
        make_event("evt_b1"),
        make_event("evt_b2", **{"usage.total_tokens": 7}),
        make_event("evt_b3", **{"user.organization_id": "org_other"}),
        make_event("evt_b4"),
        make_event("evt_b4"),  # the same event twice in one batch
    ]
    response = post(client, batch, ingest)
    assert response.status_code == 207
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (2, 1, 2)
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["accepted", "rejected", "rejected", "accepted", "duplicate"]
    assert body["results"][1]["errors"][0]["path"] == "$.usage.total_tokens"
    assert body["results"][2]["errors"][0]["code"] == "forbidden_tenant"
    assert stored(client, reader, "evt_b1") and stored(client, reader, "evt_b4")
    assert not stored(client, reader, "evt_b2")


def test_batch_in_one_request_with_conflicting_ids(serve: Any) -> None:
    client = serve()
    ingest = client.key()
    batch = [make_event("evt_c"), make_event("evt_c", **{"usage.model": "other-model"})]
    body = post(client, batch, ingest).json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected"]
    assert body["results"][1]["errors"][0]["code"] == "conflict"


BAD_EVENTS = [
    ("wrong type", {"usage.input_tokens": "12"}, "$.usage.input_tokens", "invalid_type"),
    ("missing field", {"usage.model": DELETE}, "$.usage.model", "missing_field"),
    ("bad enum", {"session.session_type": "phone"}, "$.session.session_type", "invalid_enum"),
    ("negative tokens", {"usage.output_tokens": -1}, "$.usage.output_tokens", "invalid_value"),
    ("inconsistent tokens", {"usage.total_tokens": 1}, "$.usage.total_tokens", "inconsistent_tokens"),
    ("unknown field", {"usage.tokens": 3}, "$.usage.tokens", "unknown_field"),
    ("end before start", {"session.end_time": "2026-11-25T09:00:00Z"}, "$.session.end_time",
     "invalid_time_order"),
    ("duration mismatch", {"session.duration_ms": 5000}, "$.session.duration_ms",
     "inconsistent_duration"),
    ("timestamp without offset", {"timestamp": "2026-11-25T10:00:05"}, "$.timestamp", "invalid_type"),
    ("bad event id", {"event_id": "has space"}, "$.event_id", "invalid_value"),
    ("negative cost", {"usage.estimated_cost_usd": "-1"}, "$.usage.estimated_cost_usd",
     "invalid_value"),
    ("bad ip", {"metadata.source_ip": "999.1.1.1"}, "$.metadata.source_ip", "invalid_value"),
    ("too many tags", {"metadata.custom_tags": {f"k{i}": "v" for i in range(65)}},
     "$.metadata.custom_tags", "invalid_value"),
    ("wrong event type", {"event_type": "session.started"}, "$.event_type", "invalid_enum"),
    # U+0000 in a name: PostgreSQL's text columns refuse it (it was a 500 there, a 202 on SQLite)
    *((f"NUL in {path}", {path: "a\u0000b"}, f"$.{path}", "invalid_value")
      for path in ("session.session_id", "user.user_id", "usage.model", "usage.provider")),
]


@pytest.mark.parametrize(("name", "changes", "path", "code"), BAD_EVENTS, ids=[b[0] for b in BAD_EVENTS])
def test_invalid_single_event_is_400_naming_path(
    serve: Any, name: str, changes: dict[str, Any], path: str, code: str
) -> None:
    client = serve()
    ingest, reader = client.key(), client.key(role="read")
    event = make_event("evt_bad", **changes)
    event_id = event["event_id"]
    response = post(client, event, ingest)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["details"][0]["path"] == path
    assert error["details"][0]["message"]
    if event_id == "evt_bad":
        assert not stored(client, reader, event_id)
    assert healthy(client)


def test_malformed_json_is_400(serve: Any) -> None:
    client = serve()
    ingest = client.key()
    for raw in (b"{not json", b"[{}, ", b"42", b""):
        response = post(client, None, ingest, raw=raw)
        assert response.status_code == 400, raw
        assert set(response.json()["error"]) == {"code", "message", "details"}
    assert healthy(client)


def test_body_over_16_mib_is_413_before_parsing(serve: Any) -> None:
    client = serve()
    ingest = client.key()
    huge = b"[" + b" " * (16 * 1024 * 1024) + b"]"
    response = post(client, None, ingest, raw=huge)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert healthy(client)


def test_batch_of_10001_events_is_413_and_stores_nothing(serve: Any) -> None:
    client = serve()
    ingest, reader = client.key(), client.key(role="read")
    small = {"event_id": "x"}  # size is checked before any event is validated
    response = post(client, [small] * 10_001, ingest)
    assert response.status_code == 413
    batch = [make_event(f"evt_{i}") for i in range(10_000)]
    batch.append(make_event("evt_extra"))
    assert post(client, batch, ingest).status_code == 413
    assert not stored(client, reader, "evt_0") and not stored(client, reader, "evt_extra")


def test_event_over_256_kib_is_413_alone_and_rejected_in_batch(serve: Any) -> None:
    client = serve()
    ingest = client.key()
    big = make_event("evt_big", **{"outcome.final_message": "x" * (256 * 1024)})
    response = post(client, big, ingest)
    assert response.status_code == 413
    body = post(client, [big, make_event("evt_small")], ingest).json()
    assert [r["status"] for r in body["results"]] == ["rejected", "accepted"]
    assert body["results"][0]["errors"][0]["code"] == "event_too_large"


def test_other_tenants_event_is_403_unless_platform(serve: Any) -> None:
    client = serve()
    other = make_event("evt_t", **{"user.organization_id": "org_other"})
    response = post(client, other, client.key())
    assert response.status_code == 403
    assert response.json()["error"]["details"][0]["path"] == "$.user.organization_id"
    assert post(client, other, client.key(tenant="gateway", role="platform")).status_code == 202
    reader = client.key(tenant="org_other", role="read")
    assert stored(client, reader, "evt_t")


def test_missing_or_wrong_key_is_401(serve: Any) -> None:
    client = serve()
    for headers in ({}, {"authorization": "Bearer scr_nope_nope"}, {"authorization": "Basic abc"},
                    {"authorization": "Bearer " + "scr_" + "x" * 500}):
        response = post(client, make_event(), headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    assert healthy(client)


def test_a_revoked_key_is_refused_by_a_running_server_and_the_revocation_is_ledgered(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "KEY_CACHE_TTL_S", CACHE_TTL_S)  # the server re-checks keys this often
    client = serve()
    headers = client.key()
    key_id = headers["authorization"].removeprefix(f"Bearer {KEY_PREFIX}").split("_", 1)[0]
    assert post(client, make_event("evt_before"), headers).status_code == 202  # checked, cached
    where = ["--store", client.store_uri] if client.store_uri else ["--data", str(client.data)]
    revoked = run_scr("keys", "revoke", key_id, *where)
    assert f"revoked key {key_id} of tenant org_acme" in revoked.stdout
    attempts = iter(range(100_000))
    wait_for(lambda: post(client, make_event(f"evt_after_{next(attempts)}"), headers).status_code == 401,
             timeout_s=CACHE_TTL_S * 20, what="the revoked key refused")
    assert post(client, make_event("evt_refused"), headers).status_code == 401  # and it stays so
    assert client.get("/v1/events/evt_refused", headers=client.key(role="read")).status_code == 404
    again = run_scr("keys", "revoke", key_id, *where, check=False)
    assert again.returncode == 2 and "no active key" in again.stderr
    unknown = run_scr("keys", "revoke", "0" * len(key_id), *where, check=False)
    assert unknown.returncode == 2 and "no active key" in unknown.stderr
    store = open_store(client.data, client.store_uri)
    try:
        entries = store.tenant_entries_of_kinds("org_acme", [Kind.KEY_REVOKED.value], 0)
    finally:
        store.close()
    assert [decode_entry(e.entry).payload for e in entries] == [{"key_id": key_id}]
    assert healthy(client)


def test_roles_limit_what_a_key_does(serve: Any) -> None:
    client = serve()
    reader = client.key(role="read")
    assert post(client, make_event(), reader).status_code == 403
    assert client.get("/v1/events/evt_0001", headers=client.key()).status_code == 403


def test_reads_are_tenant_scoped(serve: Any) -> None:
    client = serve()
    assert post(client, make_event("evt_s"), client.key()).status_code == 202
    theirs = client.key(tenant="org_other", role="read")
    assert client.get("/v1/events/evt_s", headers=theirs).status_code == 404
    assert client.get("/v1/sessions/sess_0001", headers=theirs).status_code == 404
    mine = client.key(role="read")
    session = client.get("/v1/sessions/sess_0001", headers=mine).json()
    assert [e["event"]["event_id"] for e in session["events"]] == ["evt_s"]


def test_cloudevents_single_and_batch(serve: Any) -> None:
    client = serve()
    ingest, reader = client.key(), client.key(role="read")

    def envelope(event: dict[str, Any]) -> dict[str, Any]:
        return {"specversion": "1.0", "id": "ce-" + event["event_id"], "source": "/chat",
                "type": "session.completed", "datacontenttype": "application/json",
                "data": event}

    single = client.post(
        "/v1/events", content=json.dumps(envelope(make_event("evt_ce1"))),
        headers={**ingest, "content-type": "application/cloudevents+json"},
    )
    assert single.status_code == 202
    wrong_type = envelope(make_event("evt_ce3"))
    wrong_type["type"] = "other.thing"
    batch = client.post(
        "/v1/events", content=json.dumps([envelope(make_event("evt_ce2")), wrong_type]),
        headers={**ingest, "content-type": "application/cloudevents-batch+json"},
    )
    assert batch.status_code == 207
    assert [r["status"] for r in batch.json()["results"]] == ["accepted", "rejected"]
    assert stored(client, reader, "evt_ce1") and stored(client, reader, "evt_ce2")


def test_unsupported_content_type_is_415(serve: Any) -> None:
    client = serve()
    response = client.post(
        "/v1/events", content=b"a,b", headers={**client.key(), "content-type": "text/csv"}
    )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert healthy(client)


def test_auth_can_be_turned_off_for_local_trials(serve: Any) -> None:
    client = serve("session_completion_runtime:\n  validation: {require_authentication: false}\n")
    assert post(client, make_event("evt_open"), {}).status_code == 202
    assert client.get("/v1/events/evt_open?tenant=org_acme").status_code == 200


def test_metrics_count_outcomes(serve: Any) -> None:
    client = serve()
    ingest = client.key()
    batch = [make_event("evt_m1"), make_event("evt_m1"), make_event("m2", **{"usage.model": DELETE})]
    post(client, batch, ingest)
    text = client.get("/metrics").text
    assert "scr_events_accepted_total 1.0" in text
    assert "scr_events_duplicate_total 1.0" in text
    assert 'scr_events_rejected_total{reason="missing_field"} 1.0' in text


def test_openapi_and_schema_are_served_without_a_key(serve: Any) -> None:
    client = serve()
    spec = client.get("/openapi.json").json()
    assert "/v1/events" in spec["paths"] and "Event" in spec["components"]["schemas"]
    assert client.get("/v1/schema").json()["$schema"].endswith("2020-12/schema")
