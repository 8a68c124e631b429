"""``/openapi.json`` describes the API the server really serves: a valid OpenAPI 3.1 document,
every route in it and nothing else, and every answer a real server gives conforms to it
(schemathesis over every operation, and each operation's success answer on seeded data)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import OpenAPIV31SpecValidator
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from scr.config import default_config
from scr.dashboard.live import LIVE_PATH
from scr.openapi import document
from scr.server import create_app
from servers import NatsServer
from support import ServerProcess, create_key, make_event, wait_for

CHECKS = [
    not_a_server_error,  # first: a test that expects a documented 5xx leaves it out
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Bounded so the whole run stays near a minute on a slow 2-core machine.
EXAMPLES_PER_OPERATION = 25
TENANT = "org_acme"
ORIGIN = "https://app.example"
BUS_DUPLICATE_WINDOW_S = 1  # the bus test's deduplication_window_sec
KEYED_ROLES = ("ingest", "read", "admin", "auditor")  # each keeps to its own tenant
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
CONFIG = """\
session_completion_runtime:
  capture:
    browser: {rate_limit_per_minute: 100000, rate_limit_burst: 100000}
  routing:
    destinations:
      - {name: archive, type: file, path: archive.jsonl, transform: audit_v1}
  enrichment: {embedder: {kind: local}}
"""


class Api:
    """A real ``scr serve`` with keys of every role and a little of everything stored."""

    def __init__(self, tmp: Path) -> None:
        data = tmp / "data"
        data.mkdir(parents=True)
        config = tmp / "scr.yaml"
        config.write_text(CONFIG)
        self.keys = {role: create_key(data, TENANT, role) for role in KEYED_ROLES}
        self.keys["publishable"] = create_key(data, TENANT, "publishable", origins=(ORIGIN,))
        self.keys["platform"] = create_key(data, TENANT, "platform")  # the enrichment's backfill and rebuild
        self.server = ServerProcess(data, config).start()
        self.url = self.server.url
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def headers(self, role: str = "admin") -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[role]}"}

    def seed(self) -> dict[str, Any]:
        """One event, one decision with a denial, one canon item: what reads can find."""
        posted = self.http.post("/v1/events", json=make_event("evt_seed"), headers=self.headers())
        assert posted.status_code == 202, posted.text
        decided = self.http.post("/v1/decide", headers=self.headers(), json={
            "goal": "ship", "canon_refs": [],
            "candidates": [{"actions": [{"id": "deploy", "risk_level": "HIGH"}]},
                           {"actions": [{"id": "wait", "risk_level": "LOW"}]}],
        })
        assert decided.status_code == 200, decided.text
        traces = decided.json()["traces"]
        item = self.http.post("/v1/canon/items", headers=self.headers(), json={
            "id": "def.seed", "kind": "DEFINITION", "title": "a seed", "ts": "2026-11-25T10:00:00Z",
            "provenance": {"source": "test", "ref": "tests/test_openapi.py", "author": "test"},
        })
        assert item.status_code == 201, item.text
        return {"trace_id": traces[0]["trace_id"] if traces else "wn-1-0", "item_id": "def.seed"}

    def close(self) -> None:
        self.http.close()
        self.server.stop()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    served = Api(tmp_path_factory.mktemp("openapi"))
    yield served
    served.close()


@pytest.fixture(scope="module")
def seeded(api: Api) -> dict[str, Any]:
    return api.seed()


@pytest.fixture(scope="module")
def spec(api: Api) -> dict[str, Any]:
    answer = api.http.get("/openapi.json")
    assert answer.status_code == 200
    document: dict[str, Any] = answer.json()
    return document


@pytest.fixture(scope="module")
def api_schema(api: Api, spec: dict[str, Any]) -> Any:
    OpenAPIV31SpecValidator(spec).validate()  # schemathesis needs a document it can resolve
    return schemathesis.openapi.from_url(f"{api.url}/openapi.json")


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


# ----- the document --------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1.")
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}"
              for e in OpenAPIV31SpecValidator(spec).iter_errors()]
    assert errors == []


def test_it_documents_every_route_the_app_serves_and_no_other(
    tmp_path: Path, spec: dict[str, Any]
) -> None:
    app = create_app(default_config(), tmp_path / "data")
    served = {
        (route.path, method.lower())
        for route in app.routes
        for method in route.methods  # type: ignore[attr-defined]
        if method != "HEAD"  # Starlette adds HEAD to every GET route by itself
    }
    documented = {(path, method) for path, method, _ in _operations(spec)}
    assert sorted(served - documented) == [], "served but not in /openapi.json"
    assert sorted(documented - served) == [], "in /openapi.json but not served"


def test_every_operation_declares_its_parameters_and_every_answer(spec: dict[str, Any]) -> None:
    problems = []
    for path, method, operation in _operations(spec):
        where = f"{method.upper()} {path}"
        declared = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
        for name in re.findall(r"\{(\w+)\}", path):
            if ("path", name) not in declared:
                problems.append(f"{where}: path parameter {name} is not declared")
        responses = operation["responses"]
        for status, response in responses.items():
            content = response.get("content", {})
            if status != "204" and not (content and all("schema" in m for m in content.values())):
                problems.append(f"{where}: answer {status} has no schema")
            if status[0] in "45" and content.get("application/json", {}).get("schema") != {
                "$ref": "#/components/schemas/Error"
            }:
                problems.append(f"{where}: error {status} is not the standard error body")
        expected = {"500"}
        if operation.get("security", spec.get("security")):  # a key can be missing, unknown or not allowed
            expected |= {"401", "403", "503"}
        if "requestBody" in operation:
            expected |= {"400", "413", "415"}
        missing = expected - set(responses)
        if missing:
            problems.append(f"{where}: {sorted(missing)} not documented")
    assert problems == []


def test_the_event_is_described_as_v1_schema_serves_it(api: Api, spec: dict[str, Any]) -> None:
    """The same declarations make both; a change to one (say, how money is accepted) shows in both."""
    served = api.http.get("/v1/schema").json()
    as_components = json.loads(
        json.dumps(served["$defs"]).replace('"#/$defs/', '"#/components/schemas/')
    )
    components = spec["components"]["schemas"]
    assert {name: components.get(name) for name in as_components} == as_components


def test_error_answers_are_the_documented_error_body(api: Api, spec: dict[str, Any]) -> None:
    error = spec["components"]["schemas"]["Error"]
    unknown = api.http.get("/v1/events/nope", headers=api.headers())
    assert unknown.status_code == 404
    assert set(unknown.json()) == set(error["required"]) == {"error"}


def test_the_answers_with_a_bus_conform(
    tmp_path: Path, api_schema: Any, nats_server: NatsServer
) -> None:
    """What only a `bus:` server answers: the cluster view and recorded conflicts; OTLP works there too."""
    data = tmp_path / "data"
    config = tmp_path / "scr.yaml"
    config.write_text(f"session_completion_runtime:\n  bus: {nats_server.url}\n"
                      "  validation: {deduplication_window_sec: 1}\n  cluster: {partitions: 4}\n")
    admin = {"authorization": f"Bearer {create_key(data, TENANT, 'admin')}"}
    server = ServerProcess(data, config).start()
    try:
        def call(label: str, status: int, **parts: Any) -> Any:
            case = api_schema.find_operation_by_label(label).Case(**parts)
            # a documented 503 is the answer here, which not_a_server_error would count as a failure
            checks = CHECKS if status < 500 else CHECKS[1:]
            answer = case.call_and_validate(base_url=server.url, headers=admin, checks=checks)
            assert answer.status_code == status, f"{label}: {answer.status_code} {answer.text}"
            return answer

        call("POST /v1/events", 202, body=make_event("evt_bus"), media_type="application/json")
        wait_for(lambda: httpx.get(f"{server.url}/v1/events/evt_bus", headers=admin).status_code == 200,
                 timeout_s=15, what="the event appended")
        time.sleep(BUS_DUPLICATE_WINDOW_S + 0.5)  # past it, only the ledger knows the id: a conflict
        call("POST /v1/events", 202, media_type="application/json",
             body=make_event("evt_bus", **{"outcome.status": "error"}))
        wait_for(lambda: call("GET /v1/conflicts", 200).json()["conflicts"], timeout_s=15,
                 what="the conflict recorded")
        call("GET /v1/cluster", 200)
        call("POST /v1/otlp/v1/traces", 200, body={"resourceSpans": []}, media_type="application/json")
    finally:
        server.stop()


@pytest.mark.parametrize(("path", "status"), [
    ("/v1/deliveries?limit=%C2%B2", 400),  # '²': str.isdigit() took it, int() did not
    ("/v1/conflicts?after=%C2%B2", 400),
    ("/v1/conflicts?after=99999999999999999999", 400),  # past the stores' 64-bit integers
    ("/v1/canon/why-not/wn-9999999999999999999-0", 404),
])
def test_odd_numbers_in_a_query_or_an_id_are_refused_not_a_500(
    api: Api, path: str, status: int
) -> None:
    """Found by the schemathesis run below: each answered 500 and dropped the connection."""
    answer = httpx.get(f"{api.url}{path}", headers=api.headers())
    assert answer.status_code == status, answer.text
    assert set(answer.json()["error"]) == {"code", "message", "details"}
    assert httpx.get(f"{api.url}/healthz").status_code == 200


# ----- every operation, against a real server ------------------------------------------------


def _credentials(operation: Any, api: Api) -> dict[str, Any]:
    """A key of the first role the operation lists, so generated requests reach its handler."""
    raw = operation.definition.raw
    if {"publishableKey": []} in raw.get("security", []):
        return {"query": {"key": api.keys["publishable"]}, "headers": {"origin": ORIGIN}}
    credentials: dict[str, Any] = {"headers": api.headers(raw["x-roles"][0])} if "x-roles" in raw else {}
    if operation.path == LIVE_PATH:  # one update, so the stream ends at once
        credentials["query"] = {"events": 1}
    return credentials


OPERATIONS = [f"{method.upper()} {path}" for path, method, _ in _operations(document())]


@pytest.mark.slow  # about two minutes of fuzzing: the file starts among the first
@pytest.mark.parametrize("label", OPERATIONS)
def test_every_operation_conforms_to_the_document(
    label: str, api_schema: Any, api: Api, seeded: dict[str, Any]
) -> None:
    """Valid and invalid requests alike: no 500, and every answer is one the document lists,
    with its media type, headers and body schema."""
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the served document"
    credentials = _credentials(operation, api)
    modes = [GenerationMode.POSITIVE]
    if operation.definition.raw.get("parameters") or "requestBody" in operation.definition.raw:
        modes.append(GenerationMode.NEGATIVE)  # with nothing to get wrong there is no negative case

    @given(case=st.one_of([operation.as_strategy(mode, **credentials) for mode in modes]))
    @settings(max_examples=EXAMPLES_PER_OPERATION * len(modes), deadline=None, database=None,
              derandomize=True, suppress_health_check=list(HealthCheck))
    def conforms(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    conforms()


def test_each_success_answer_conforms_on_seeded_data(
    api_schema: Any, api: Api, seeded: dict[str, Any]
) -> None:
    """Generated values rarely name what exists: each operation once with values that do."""

    def call(path: str, method: str, **parts: Any) -> Any:
        if "body" in parts:
            parts.setdefault("media_type", "application/json")
        operation = api_schema[path][method.upper()]
        credentials = _credentials(operation, api)
        case = operation.Case(**parts)
        case.query = {**(case.query or {}), **credentials.get("query", {})}
        case.headers = {**(case.headers or {}), **credentials.get("headers", {})}
        return case.call_and_validate(checks=CHECKS)

    def ok(path: str, method: str, status: int = 200, **parts: Any) -> Any:
        answer = call(path, method, **parts)
        assert answer.status_code == status, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer

    ok("/v1/events", "post", 207, body=[make_event("evt_batch"), {"event_id": "bad"}])
    ok("/v1/events/{event_id}", "get", path_parameters={"event_id": "evt_seed"})
    ok("/v1/sessions/{session_id}", "get", path_parameters={"session_id": "sess_0001"})
    ok("/v1/destinations", "get")
    ok("/v1/destinations/{name}/enable", "post", path_parameters={"name": "archive"})
    ok("/v1/deliveries", "get", query={"destination": "archive"})
    ok("/v1/deliveries/replay", "post", body={"destination": "archive", "event_ids": ["evt_seed"]})
    hold = ok("/v1/legal-holds", "post", 201, body={"tenant": TENANT, "reason": "a seed"}).json()
    ok("/v1/legal-holds", "get")
    ok("/v1/legal-holds/{hold_id}", "delete", path_parameters={"hold_id": hold["id"]})
    ok("/v1/audit", "get", query={"from": "2000-01-01T00:00:00Z"})
    ok("/v1/ledger/checkpoint", "get")
    size = int(ok("/v1/ledger/checkpoint", "post").text.splitlines()[1])  # C2SP: origin, size, root
    ok("/v1/ledger/public-key", "get")
    ok("/v1/ledger/checkpoints", "get", query={"since": 0})
    ok("/v1/ledger/entries", "get", query={"start": 0, "end": size})
    ok("/v1/ledger/proof/inclusion", "get", query={"event_id": "evt_seed", "tree_size": size})
    ok("/v1/ledger/proof/consistency", "get", query={"first": 1, "second": size})
    ok("/v1/canon/items", "get")
    ok("/v1/canon/promote", "post", body={"item_id": seeded["item_id"]})
    ok("/v1/canon/why-not/{trace_id}", "get", path_parameters={"trace_id": seeded["trace_id"]})
    ok("/v1/canon/observations", "post", 201, body={"action": "deploy", "outcome": "success"})
    ok("/v1/usage", "get", query={"from": "2026-11-25T00:00:00Z", "to": "2026-11-26T00:00:00Z",
                                  "window": "hour", "tz": "Europe/Paris", "group_by": "model,provider"})
    ok("/v1/usage/reconcile", "post", query={"format": "focus"}, media_type="text/plain",
       body="ChargePeriodStart,BilledCost,ConsumedQuantity,ConsumedUnit,SkuId,ProviderName,x_Model\n"
            "2026-11-25T00:00:00Z,0.006,1200,Input Tokens,gpt-4o,openai,gpt-4o\n")
    ok("/v1/cluster", "get")
    ok("/v1/conflicts", "get")
    ok("/v1/otlp/v1/traces", "post", body={"resourceSpans": []})
    ok("/v1/browser/events", "post", 202, body={
        "session_id": "sess_web", "start_time": "2026-11-25T09:58:00Z",
        "end_time": "2026-11-25T10:00:00Z", "model": "gpt-4o",
    })
    ok("/v1/browser/events", "options", 204)
    ok("/v1/budgets", "get")
    ok("/v1/enrichment", "get")
    ok("/v1/search", "post", body={"text": "a summary", "k": 3, "filter": {"model": "gpt-4o"}})
    wait_for(lambda: api.http.get("/v1/enrichment", headers=api.headers()).json()["indexed"] > 0,
             timeout_s=60, what="the seeded session embedded")
    ok("/v1/sessions/{session_id}/similar", "get", path_parameters={"session_id": "sess_0001"})
    ok(LIVE_PATH, "get", query={"events": 1})
    ok("/dashboard/{name}", "get", path_parameters={"name": "dashboard.js"})
    for path in ("/", "/v1/sdk/scr.js", "/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/schema"):
        ok(path, "get")


def test_a_key_of_a_role_an_operation_does_not_list_gets_403(api: Api, spec: dict[str, Any]) -> None:
    refused = []
    for path, method, operation in _operations(spec):
        for role in set(KEYED_ROLES) - set(operation.get("x-roles", KEYED_ROLES)):
            url = re.sub(r"\{\w+\}", "x", path)  # the role is checked before anything else
            answer = api.http.request(method, url, headers=api.headers(role))
            refused.append((method, path, role, answer.status_code))
    assert refused and {status for *_, status in refused} == {403}, [r for r in refused if r[3] != 403]
