"""The canon on the running server: decisions over HTTP, ledgered, from real evidence."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from packed import ledger_table

from support import make_event, run_scr

TENANT = "org_acme"


def canon_ref(item_id: str) -> dict[str, Any]:
    return {"id": item_id, "kind": "DEFINITION", "title": f"runbook {item_id}", "level": "CANON",
            "ts": "2025-06-01T00:00:00Z",
            "provenance": {"source": "import", "ref": "runbooks.md", "author": "ops"}}


def one_action(action: str, risk_level: str, **features: float) -> dict[str, Any]:
    path: dict[str, Any] = {"actions": [{"id": action, "risk_level": risk_level}]}
    if features:
        path["features"] = features
    return path


def import_refs(client: Any) -> None:
    admin = client.key(role="admin")
    for ref in ("CANON_001", "CANON_042"):
        response = client.post("/v1/canon/items", json=canon_ref(ref), headers=admin)
        assert response.status_code in (200, 201), response.text


def test_source_document_demo_over_http_is_ledgered(serve: Any) -> None:
    client = serve()
    import_refs(client)
    request = {
        "goal": "restore checkout", "canon_refs": ["CANON_001", "CANON_042"],
        "bounds": {"max_risk": 0.5, "max_cost": 150},
        "candidates": [
            one_action("deploy", "MEDIUM", ttv_ms=300_000, cost=50, risk=0.3, success_prob=0.9),
            one_action("rollback", "LOW", ttv_ms=120_000, cost=10, risk=0.1, success_prob=0.9),
            one_action("scale", "HIGH", ttv_ms=600_000, cost=200, risk=0.7, success_prob=0.9),
        ],
    }
    response = client.post("/v1/decide", json=request, headers=client.key())
    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["next_action"]["id"] == "rollback"
    [trace] = [t for t in decision["traces"] if "RISK_BOUND_EXCEEDED" in t["reason_codes"]]
    assert "COST_BOUND_EXCEEDED" in trace["reason_codes"]
    reader = client.key(role="read")
    why = client.get(f"/v1/canon/why-not/{trace['trace_id']}", headers=reader)
    assert why.status_code == 200 and why.json()["reason_codes"] == trace["reason_codes"]
    with sqlite3.connect(client.data / "scr.db") as db, ledger_table(db):
        kind, tenant = db.execute("SELECT kind, tenant FROM ledger WHERE seq = ?",
                                  (decision["entry_id"],)).fetchone()
    assert (kind, tenant) == ("DECIDE", TENANT)


def test_features_are_estimated_from_ingested_session_completions(serve: Any) -> None:
    client = serve()
    import_refs(client)
    events = [
        make_event(f"evt_{i}", **{"metadata.custom_tags": {"action": "rollback"},
                                  "outcome.status": "success" if i < 4 else "error"})
        for i in range(5)
    ]
    assert client.post("/v1/events", content=json.dumps(events),
                       headers=client.key()).status_code == 202
    request = {"goal": "recover", "canon_refs": ["CANON_001"],
               "candidates": [one_action("rollback", "LOW")]}
    decision = client.post("/v1/decide", json=request, headers=client.key()).json()
    features = decision["candidates"][0]["features"]
    assert features["success_prob"]["source"] == "evidence"
    assert features["success_prob"]["evidence_count"] == 5
    assert len(features["success_prob"]["entry_ids"]) == 5
    assert features["ttv_ms"]["value"] == 120_000  # every event lasted 120 s


def test_canon_routes_need_the_right_role_and_a_valid_body(serve: Any) -> None:
    client = serve()
    assert client.post("/v1/decide", json={}).status_code == 401
    reader = client.key(role="read")
    assert client.post("/v1/canon/items", json=canon_ref("X"), headers=reader).status_code == 403
    bad = client.post("/v1/decide", json={"goal": 3}, headers=client.key())
    assert bad.status_code == 400 and bad.json()["error"]["details"]
    assert client.get("/v1/canon/why-not/wn-999-0", headers=reader).status_code == 404


def test_a_decision_over_a_path_without_an_id_is_read_back(serve: Any) -> None:
    """A multi-action candidate's id defaults to its action ids joined by '+': the ledger
    records it so, and promotion and why-not, which read decisions back, must accept it."""
    client = serve()
    admin = client.key(role="admin")
    item = {**canon_ref("def.rollout"), "level": "EVIDENCE",
            "provenance": {"source": "test", "ref": "runbooks.md", "author": "ops"}}
    assert client.post("/v1/canon/items", json=item, headers=admin).status_code == 201
    path = {"actions": [{"id": "build", "risk_level": "LOW"}, {"id": "deploy", "risk_level": "HIGH"}]}
    decided = client.post("/v1/decide", json={"goal": "ship", "candidates": [path]}, headers=admin)
    assert decided.status_code == 200, decided.text
    [trace] = decided.json()["traces"]
    assert trace["candidate_id"] == "build+deploy"
    promoted = client.post("/v1/canon/promote", json={"item_id": "def.rollout"}, headers=admin)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["item_id"] == "def.rollout"
    why = client.get(f"/v1/canon/why-not/{trace['trace_id']}", headers=admin)
    assert why.status_code == 200 and why.json() == trace


def test_canon_audit_passes_over_a_served_data_folder(serve: Any) -> None:
    client = serve()
    import_refs(client)
    assert client.post("/v1/events", content=json.dumps([make_event("evt_a")]),
                       headers=client.key()).status_code == 202
    client.__exit__(None, None, None)
    result = run_scr("canon", "audit", "--data", str(client.data))
    assert "passed" in result.stdout
