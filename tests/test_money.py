"""Money has one bound (scr.money): every form a client may send, and the canon at its edge.

An amount is 0 <= amount < 10^9 USD with at most 18 fractional digits, a JSON number or a
decimal string. The canon reads amounts back from the ledger, where one committed before
the bound existed may be anything: it must neither answer 500 nor score with infinity.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from scr.event_check import DIGEST_BYTES
from scr.log.commit import Committer, Submission
from scr.log.entry import Kind, decode_entry
from scr.schema import Event, canonical_bytes
from scr.store import open_store
from support import make_event, run_scr

COST_PATH = "$.usage.estimated_cost_usd"
PLACEHOLDER = '"@cost@"'
LARGEST = "999999999.999999999999999999"  # the largest amount in bounds
MAX_USD = 10**9  # the documented bound (scr.money.MAX_USD; not imported, so that this file
# also runs against a version without scr.money and shows what it let through)
JSON = {"content-type": "application/json"}


def event_text(cost_literal: str, event_id: str = "evt_money", **changes: Any) -> bytes:
    """A valid event whose cost is ``cost_literal`` exactly as written in the JSON."""
    event = make_event(event_id, **{"usage.estimated_cost_usd": "@cost@", **changes})
    return json.dumps(event).replace(PLACEHOLDER, cost_literal).encode()


def post(client: Any, body: bytes, headers: dict[str, str]) -> Any:
    return client.post("/v1/events", content=body, headers={**JSON, **headers})


REJECTED = [
    # out of bounds, as numbers and as strings
    '"1e999999999"', "1e999999999", '"1e100000"', "1e100000", '"1e10000000"', "1e10000000",
    "1000000000", '"1000000000"', "1E+9", '"999999999.9999999999999999999"', "1e-19",
    '"1e-19"', "0.0000000000000000001", "-1", '"-1"', "-0.5", '"NaN"', '"Infinity"',
    # spellings Python's Decimal reads but a JSON number is never written as
    '"1_000"', '" 1.5"', '"1.5 "', '"+1.5"', '".5"', '"1."', '"01.5"', '"1.5\\n"',
    '"\\u0661"', '"0x10"', '"1e"',
    # an exponent outside -18..8 for a nonzero amount in a string
    '"0.5e9"', '"1000e-21"',
    # not an amount at all
    '"abc"', '""', "true", "null", "[1]", '{"usd": 1}',
]


@pytest.mark.parametrize("literal", REJECTED)
def test_an_amount_out_of_bounds_or_misspelled_is_400_naming_the_path(
    serve: Any, literal: str
) -> None:
    client = serve()
    ingest, reader = client.key(), client.key(role="read")
    response = post(client, event_text(literal), ingest)
    assert response.status_code == 400, (literal, response.text)
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["details"][0]["path"] == COST_PATH, error
    assert error["details"][0]["message"]
    assert client.get("/v1/events/evt_money", headers=reader).status_code == 404  # nothing stored
    assert client.get("/healthz").status_code == 200


ACCEPTED = [
    # (as written, as stored: str(Decimal) of the exact value, digit for digit)
    (f'"{LARGEST}"', LARGEST),
    (LARGEST, LARGEST),
    ('"0.0075"', "0.0075"),
    ("0.0075", "0.0075"),
    ('"1E-18"', "1E-18"),
    ("1e-18", "1E-18"),
    ('"7.5E-3"', "0.0075"),
    ('"5E+8"', "5E+8"),
    ("5e8", "5E+8"),
    ('"1.50"', "1.50"),
    ('"0"', "0"),
    ("0", "0"),
    ('"0E-20"', "0E-20"),
    ("0.00000000000000000000", "0E-20"),
    ("0.00e-999999999999999999", "0E-1000000000000000001"),  # a zero keeps its exponent
    ("1000e-21", "1.000E-18"),  # a number is judged by its value: 10^-18
    ('"1.0000000000000000000000"', "1.0000000000000000000000"),  # trailing zeros are no digits
]


@pytest.mark.parametrize(("literal", "kept"), ACCEPTED)
def test_an_amount_in_bounds_is_accepted_in_every_form_and_kept_exactly(
    serve: Any, literal: str, kept: str
) -> None:
    client = serve()
    ingest, reader = client.key(), client.key(role="read")
    response = post(client, event_text(literal), ingest)
    assert response.status_code == 202, (literal, response.text)
    event = client.get("/v1/events/evt_money", headers=reader).json()["event"]
    assert event["usage"]["estimated_cost_usd"] == kept


def decimal_holds(text: str) -> bool:
    try:
        Decimal(text)
    except InvalidOperation:
        return False
    return True


@given(st.text(alphabet="0123456789.eE+-", min_size=1, max_size=32))
def test_the_json_schema_pattern_is_the_rule_the_api_applies(text: str) -> None:
    # MONEY_PATTERN is generated for JSON Schema; the API checks the grammar, the exponent
    # and the value in Python (linear time). They must accept the same strings, but for the
    # one rule no pattern states (the schema's description lists it): an exponent a decimal
    # cannot hold, which only a zero may otherwise carry.
    from scr.money import MONEY_PATTERN, text_problem

    assume(decimal_holds(text) or not re.fullmatch(r"-?0(\.0+)?[eE][+-]?[0-9]+", text))
    assert (re.search(MONEY_PATTERN, text) is not None) == (text_problem(text) is None), text


@pytest.mark.parametrize("text", [
    LARGEST, "1E-18", "7.5E-3", "5E+8", "0E-999999999999999999", "-0", "1.50",
    "1e19", "0.5e9", "1000e-21", "1e-19", "1.5e-18", "1000000000", "00", "-0.5",
])
def test_the_json_schema_pattern_agrees_at_the_edges(text: str) -> None:
    from scr.money import MONEY_PATTERN, text_problem

    assert (re.search(MONEY_PATTERN, text) is not None) == (text_problem(text) is None), text


def test_a_zero_whose_exponent_no_decimal_holds_is_refused_beyond_the_pattern() -> None:
    from scr.money import MONEY_PATTERN, text_problem

    assert re.search(MONEY_PATTERN, "0e1000000000000000000")
    assert text_problem("0e1000000000000000000") is not None


# ----- the canon ---------------------------------------------------------------------------------


def canon_ref(client: Any) -> None:
    item = {"id": "CANON_001", "kind": "DEFINITION", "title": "runbook", "level": "CANON",
            "ts": "2025-06-01T00:00:00Z",
            "provenance": {"source": "import", "ref": "runbooks.md", "author": "ops"}}
    response = client.post("/v1/canon/items", json=item, headers=client.key(role="admin"))
    assert response.status_code in (200, 201), response.text


def decide(client: Any, *paths: list[str]) -> dict[str, Any]:
    """Decide among one-candidate-per-path; a path's id is its first action and its length."""
    request = {"goal": "recover", "canon_refs": ["CANON_001"], "candidates": [
        {"id": path[0] if len(path) == 1 else f"{path[0]}{len(path)}",
         "actions": [{"id": action, "risk_level": "LOW"} for action in path]}
        for path in paths
    ]}
    response = client.post("/v1/decide", json=request, headers=client.key())
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    return decision


def numbers(value: Any) -> list[float]:
    """Every number in a JSON value."""
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in numbers(item)]
    return [float(value)] if isinstance(value, int | float) and not isinstance(value, bool) else []


def tagged(event_id: str, action: str, cost_literal: str) -> bytes:
    return event_text(cost_literal, event_id, **{"metadata.custom_tags": {"action": action}})


def test_the_canon_decides_on_the_largest_accepted_costs(serve: Any) -> None:
    client = serve()
    canon_ref(client)
    ingest = client.key()
    bodies = [tagged(f"evt_big_{i}", "X", f'"{LARGEST}"') for i in range(3)]
    bodies += [tagged(f"evt_num_{i}", "X", LARGEST) for i in range(3)]  # as JSON numbers
    for body in bodies:
        assert post(client, body, ingest).status_code == 202
    observed = client.post("/v1/canon/observations", headers=ingest, content=json.dumps(
        {"action": "X", "outcome": "success", "cost": "@cost@"}).replace(PLACEHOLDER, LARGEST))
    assert observed.status_code == 201, observed.text
    longest = ["X"] * 64  # the most actions a path may have, each at the largest cost
    decision = decide(client, ["X"], longest)
    assert all(math.isfinite(n) for n in numbers(decision))
    one, many = (c["features"]["cost"] for c in decision["candidates"])
    assert one["evidence_count"] == 7 and one["value"] == pytest.approx(MAX_USD)
    assert many["value"] == pytest.approx(64 * MAX_USD)
    assert all(c["score"] is not None for c in decision["candidates"] if c["admissible"])
    client.__exit__(None, None, None)
    audit = json.loads(run_scr("canon", "audit", "--data", str(client.data), "--json").stdout)
    assert all(report["passed"] for report in audit["reports"]), audit


def commit_unchecked(data: Path, events: list[dict[str, Any]], observations: list[dict[str, Any]]) -> None:
    """Commit events and observations as a version without the money bound did: through the
    same committer as ingest and the canon, with no check on their amounts."""
    store = open_store(data)
    committer = Committer(store, buffer_size=1)
    committer.start()
    try:
        submissions = []
        for raw in events:
            event = msgspec.convert(raw, Event)  # the declarations only: no bound on money
            payload = canonical_bytes(event)
            digest = hashlib.blake2b(payload, digest_size=DIGEST_BYTES).digest()
            submissions.append(Submission(event, payload, digest, "legacy", "test"))
        committer.run_sync(lambda tx: committer.append_events_in(tx, submissions), len(submissions))
        for observation in observations:
            committer.run_sync(lambda tx, o=observation: committer.append_entry(
                tx, "org_acme", "OBSERVATION", o, "legacy", "canon", o["action"]))
    finally:
        committer.close()
        store.close()


# Amounts the unbounded version accepted: as floats the first is infinite (the canon chose by
# it), the others overflow the default decimal context (every decision for X answered 500).
UNBOUNDED = [["1E+100000"], ["1E+10000000", "1E+999999999"]]


@pytest.mark.parametrize("costs", UNBOUNDED, ids=["infinite", "overflowing"])
def test_amounts_committed_before_the_bound_are_skipped_by_the_canon_never_infinite(
    serve: Any, data_dir: Path, costs: list[str]
) -> None:
    legacy = [
        make_event(f"evt_old_{i}", **{"metadata.custom_tags": {"action": "X"},
                                     "usage.estimated_cost_usd": cost})
        for i, cost in enumerate(costs)
    ]
    good = make_event("evt_good", **{"metadata.custom_tags": {"action": "X"},
                                     "usage.estimated_cost_usd": "0.5"})
    other = make_event("evt_other", **{"metadata.custom_tags": {"action": "Y"},
                                       "usage.estimated_cost_usd": "2"})
    observations = [{"action": "X", "outcome": "success", "cost": cost} for cost in costs]
    commit_unchecked(data_dir, [*legacy, good, other], observations)
    client = serve()
    canon_ref(client)

    decision = decide(client, ["X"], ["Y"])
    assert all(math.isfinite(n) for n in numbers(decision))
    by_id = {c["candidate_id"]: c for c in decision["candidates"]}
    x_cost = by_id["X"]["features"]["cost"]
    assert x_cost["value"] == 0.5 and x_cost["evidence_count"] == 1  # the one amount in bounds
    assert decision["selected_candidate"] == "X"  # cheaper than Y, not infinitely dear
    assert client.get("/healthz").status_code == 200

    client.__exit__(None, None, None)
    result = run_scr("canon", "audit", "--data", str(client.data), "--json", check=False)
    [report] = json.loads(result.stdout)["reports"]
    checks = {check["invariant_id"]: check for check in report["checks"]}
    # The decision replays as it was made; the out-of-bound events are named, each once.
    assert checks["INV_TRUST_DENIAL_TRACE"]["passed"], checks["INV_TRUST_DENIAL_TRACE"]
    flagged = checks["INV_SESSION_COMPLETION_LEDGER"]["violations"]
    assert len(flagged) == len(costs)
    assert all("estimated_cost_usd" in v["message"] and "below 1000000000" in v["message"]
               for v in flagged)
    assert result.returncode == 1


@pytest.mark.parametrize("literal", ['"1e100000"', "1e100000", '"1_000"', "1e-19", '"-1"', "1000000000"])
def test_an_observation_cost_takes_the_same_bound(serve: Any, literal: str) -> None:
    client = serve()
    body = json.dumps({"action": "X", "outcome": "success", "cost": "@cost@"})
    response = client.post("/v1/canon/observations", content=body.replace(PLACEHOLDER, literal),
                           headers=client.key())
    assert response.status_code == 400, (literal, response.text)
    assert response.json()["error"]["details"][0]["path"] == "$.cost"
    decision = decide_without_evidence(client)
    assert decision["candidates"][0]["features"].get("cost") is None  # nothing was recorded


def decide_without_evidence(client: Any) -> dict[str, Any]:
    canon_ref(client)
    return decide(client, ["X"])


def test_an_observation_cost_in_bounds_is_recorded_digit_for_digit(serve: Any) -> None:
    client = serve()
    body = json.dumps({"action": "X", "outcome": "success", "cost": "@cost@"})
    for literal in (LARGEST, f'"{LARGEST}"'):
        response = client.post("/v1/canon/observations", headers=client.key(),
                               content=body.replace(PLACEHOLDER, literal))
        assert response.status_code == 201, response.text
    store = open_store(client.data)
    try:
        entries = store.tenant_entries_of_kinds("org_acme", [Kind.OBSERVATION.value], 0)
    finally:
        store.close()
    assert [decode_entry(e.entry).payload["cost"] for e in entries] == [LARGEST, LARGEST]
