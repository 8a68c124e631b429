"""The canon's HTTP routes on a real Starlette app, with a small authorize of the test's own."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest
from canon_support import DEMO_REFS, action, canon_with, demo_request, item
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.testclient import TestClient

from scr.canon import Canon, MemoryLedger
from scr.canon.routes import MAX_BODY_BYTES, canon_routes
from scr.errors import Forbidden, ScrError, Unauthorized

# Which key roles may use which route roles (the integrator's mapping, in miniature).
GRANTS = {
    "ingest": {"ingest", "decide"},
    "read": {"read"},
    "admin": {"ingest", "decide", "read", "admin"},
}


async def authorize(request: Request, role: str) -> str:
    """``Authorization: Bearer <tenant>:<key role>``."""
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer ") or ":" not in header:
        raise Unauthorized("invalid API key")
    tenant, key_role = header.removeprefix("Bearer ").split(":", 1)
    if role not in GRANTS.get(key_role, set()):
        raise Forbidden(f"role {key_role} may not {role}")
    return tenant


def _error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ScrError)
    return JSONResponse(error.body(), status_code=error.status)


@pytest.fixture
def ledger() -> MemoryLedger:
    return MemoryLedger()


@pytest.fixture
def client(ledger: MemoryLedger) -> Iterator[TestClient]:
    canons: dict[str, Canon] = {"org_a": canon_with(*DEMO_REFS, ledger=ledger, tenant="org_a")}

    def canon_for(tenant: str) -> Canon:
        return canons.setdefault(tenant, Canon(ledger, tenant))

    app = Starlette(routes=canon_routes(canon_for, authorize),
                    exception_handlers={ScrError: _error})
    with TestClient(app) as test_client:
        yield test_client


def _as(tenant: str, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant}:{role}"}


def test_post_decide_answers_the_demo(client: TestClient, ledger: MemoryLedger) -> None:
    answer = client.post("/v1/decide", json=demo_request(), headers=_as("org_a", "ingest"))
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "selected"
    assert body["selected_candidate"] == "rollback"
    assert body["next_action"]["id"] == "rollback"
    assert body["traces"][0]["reason_codes"] == ["RISK_BOUND_EXCEEDED", "COST_BOUND_EXCEEDED"]
    assert body["score"]["cost_term"] == pytest.approx(1.0)
    assert [e.id for e in ledger.read("org_a", ["DECIDE"])] == [body["entry_id"]]


def test_post_decide_with_nothing_admissible_says_so(client: TestClient) -> None:
    request = demo_request()
    request["bounds"] = {"max_cost": 1}
    body = client.post("/v1/decide", json=request, headers=_as("org_a", "admin")).json()
    assert body["status"] == "none_admissible"
    assert body["selected_candidate"] is None and body["next_action"] is None
    assert len(body["traces"]) == 3


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b"{not json", "$"),
        (b'{"goal": "g"}', "$"),
        (b'{"goal": "g", "candidates": [{"actions": []}]}', "$.candidates[0].actions"),
        (b'{"goal": "g", "candidates": [{"actions": [{"id": "a", "risk_level": "LOW"}]}],'
         b' "bounds": {"max_risk": 2}}', "$.bounds.max_risk"),
    ],
)
def test_post_decide_refuses_invalid_bodies_with_details(
    client: TestClient, body: bytes, path: str
) -> None:
    answer = client.post("/v1/decide", content=body, headers=_as("org_a", "ingest"))
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "bad_request"
    assert error["details"][0]["path"] == path


def test_post_decide_refuses_a_duplicate_candidate_id(client: TestClient) -> None:
    request = demo_request()
    request["candidates"].append(request["candidates"][0])
    answer = client.post("/v1/decide", json=request, headers=_as("org_a", "ingest"))
    assert answer.status_code == 400
    assert answer.json()["error"]["details"][0]["path"] == "$.candidates[3].id"


def test_bodies_over_one_mib_are_refused_before_parsing(client: TestClient) -> None:
    oversized = b"{" + b" " * MAX_BODY_BYTES + b"}"
    answer = client.post("/v1/decide", content=oversized, headers=_as("org_a", "ingest"))
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"


def test_callers_need_a_key_and_the_right_role(client: TestClient) -> None:
    assert client.post("/v1/decide", json=demo_request()).status_code == 401
    assert client.post("/v1/decide", json=demo_request(),
                       headers=_as("org_a", "read")).status_code == 403
    assert client.post("/v1/canon/items", json=item("X"),
                       headers=_as("org_a", "ingest")).status_code == 403
    assert client.get("/v1/canon/items", headers=_as("org_a", "ingest")).status_code == 403


def test_canon_items_add_and_list(client: TestClient) -> None:
    added = client.post("/v1/canon/items", json=item("RUNBOOK_1", source="repo"),
                        headers=_as("org_a", "admin"))
    assert added.status_code == 201
    assert added.json()["level"] == "EVIDENCE"
    assert added.json()["provenance"]["hash"].startswith("sha256:")
    listed = client.get("/v1/canon/items", headers=_as("org_a", "read")).json()["items"]
    ids = [i["id"] for i in listed]
    assert "RUNBOOK_1" in ids and "INV_TS_MANDATORY" in ids and "CANON_001" in ids
    evidence = client.get("/v1/canon/items?level=EVIDENCE", headers=_as("org_a", "read"))
    assert [i["id"] for i in evidence.json()["items"]] == ["RUNBOOK_1"]
    assert client.get("/v1/canon/items?level=GOSPEL",
                      headers=_as("org_a", "read")).status_code == 400


def test_canon_items_refuse_a_missing_timestamp_and_a_shortcut_to_canon(
    client: TestClient
) -> None:
    no_ts = item("X")
    del no_ts["ts"]
    answer = client.post("/v1/canon/items", json=no_ts, headers=_as("org_a", "admin"))
    assert answer.status_code == 400
    shortcut = client.post("/v1/canon/items", json=item("Y", source="chat", level="CANON"),
                           headers=_as("org_a", "admin"))
    assert shortcut.status_code == 400
    assert shortcut.json()["error"]["details"][0]["path"] == "$.level"
    seed = client.post("/v1/canon/items", json=item("INV_TS_MANDATORY", "INVARIANT",
                                                    severity="SOFT_FAIL"),
                       headers=_as("org_a", "admin"))
    assert seed.status_code == 403


def test_promote_answers_refusals_and_approvals(client: TestClient) -> None:
    admin = _as("org_a", "admin")
    client.post("/v1/canon/items", json=item("RUNBOOK_1", source="repo"), headers=admin)
    refused = client.post("/v1/canon/promote", json={"item_id": "RUNBOOK_1"}, headers=admin)
    assert refused.status_code == 200
    assert refused.json()["approved"] is False
    assert refused.json()["tests"]["resistance"]["passed"] is False
    for n in range(3):
        observed = client.post("/v1/canon/observations", headers=_as("org_a", "ingest"), json={
            "item_id": "RUNBOOK_1", "verdict": "support", "challenge": True,
            "session_id": f"s{n}", "user_id": f"u{n}"})
        assert observed.status_code == 201
    request = {"goal": "g", "canon_refs": DEMO_REFS, "candidates": [
        {"actions": [action("step", prerequisites=["RUNBOOK_1"])],
         "features": {"ttv_ms": 1, "cost": 1, "risk": 0.1, "success_prob": 0.9}}]}
    client.post("/v1/decide", json=request, headers=admin)
    approved = client.post("/v1/canon/promote", json={"item_id": "RUNBOOK_1"}, headers=admin)
    assert approved.json()["approved"] is True
    assert approved.json()["level"] == "PROPOSED"
    missing = client.post("/v1/canon/promote", json={"item_id": "NOPE"}, headers=admin)
    assert missing.status_code == 404
    bad = client.post("/v1/canon/promote", json={"item_id": "RUNBOOK_1", "to_level": "TOP"},
                      headers=admin)
    assert bad.status_code == 400


def test_why_not_returns_a_trace_and_hides_other_tenants(client: TestClient) -> None:
    decision = client.post("/v1/decide", json=demo_request(),
                           headers=_as("org_a", "ingest")).json()
    trace_id = decision["traces"][0]["trace_id"]
    answer = client.get(f"/v1/canon/why-not/{trace_id}", headers=_as("org_a", "read"))
    assert answer.status_code == 200
    assert answer.json() == decision["traces"][0]
    assert client.get(f"/v1/canon/why-not/{trace_id}",
                      headers=_as("org_b", "read")).status_code == 404
    for unknown in ("wn-99999-0", f"wn-{decision['entry_id']}-7", "nonsense"):
        assert client.get(f"/v1/canon/why-not/{unknown}",
                          headers=_as("org_a", "read")).status_code == 404


def test_observations_are_validated(client: TestClient) -> None:
    answer = client.post("/v1/canon/observations", json={"verdict": "support"},
                         headers=_as("org_a", "ingest"))
    assert answer.status_code == 400
    answer = client.post("/v1/canon/observations", json={"action": "a", "cost": "-1"},
                         headers=_as("org_a", "ingest"))
    assert answer.status_code == 400
    assert answer.json()["error"]["details"][0]["path"] == "$.cost"


def test_the_answer_is_msgspec_json_of_the_decision(client: TestClient) -> None:
    raw = client.post("/v1/decide", json=demo_request(), headers=_as("org_a", "ingest"))
    assert raw.headers["content-type"] == "application/json"
    decoded = msgspec.json.decode(raw.content)
    assert set(decoded) >= {"entry_id", "status", "selected_candidate", "selected_path",
                            "next_action", "score", "candidates", "traces", "tie_break"}
