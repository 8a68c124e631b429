"""Decisions: the source document's demo, every gate, evidence-based features, bad requests."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from canon_support import (
    DEMO_REFS,
    TENANT,
    action,
    candidate,
    canon_with,
    completion,
    demo_request,
    item,
)

from scr.canon import Bounds, Canon, CanonConfig, MemoryLedger
from scr.errors import BadRequest


def test_source_document_demo_selects_rollback_and_denies_scale_for_risk_and_cost() -> None:
    canon = canon_with(*DEMO_REFS)
    decision = canon.decide(demo_request())
    assert decision.status == "selected"
    assert decision.selected_candidate == "rollback"
    assert decision.selected_path == ["rollback"]
    assert decision.next_action is not None and decision.next_action.id == "rollback"
    assert decision.score is not None
    assert decision.score.total == pytest.approx(120_000 + 0.1 * 10 + 0.2 * 0.1 - 0.05 * math.log(0.9))
    admissible = {c.candidate_id: c.admissible for c in decision.candidates}
    assert admissible == {"deploy": True, "rollback": True, "scale": False}
    [trace] = decision.traces
    assert trace.candidate_id == "scale" and trace.action_id == "scale"
    assert trace.reason_codes == ["RISK_BOUND_EXCEEDED", "COST_BOUND_EXCEEDED"]
    assert trace.context["RISK_BOUND_EXCEEDED"] == {"risk": 0.7, "max_risk": 0.5}
    assert trace.context["COST_BOUND_EXCEEDED"] == {"cost": 200.0, "max_cost": 150.0}
    assert trace.trace_id == f"wn-{decision.entry_id}-0"
    # Every score is returned with its components, denied candidates' too.
    scale = next(c for c in decision.candidates if c.candidate_id == "scale")
    assert scale.score is not None and scale.score.cost_term == pytest.approx(20.0)
    assert scale.trace_id == trace.trace_id


def test_decision_is_a_ledger_entry_that_records_its_inputs() -> None:
    ledger = MemoryLedger()
    canon = canon_with(*DEMO_REFS, ledger=ledger)
    decision = canon.decide(demo_request())
    [entry] = ledger.read(TENANT, ["DECIDE"])
    assert entry.id == decision.entry_id
    assert entry.payload["outcome"]["selected_candidate"] == "rollback"
    assert entry.payload["inputs"]["canon"]["levels"] == {"CANON_001": "CANON", "CANON_042": "CANON"}
    assert canon.decision(decision.entry_id) == decision


def test_non_interference_denies_an_action_that_costs_another_agent_150_ms() -> None:
    canon = canon_with(*DEMO_REFS)
    request = {
        "goal": "reindex", "canon_refs": DEMO_REFS, "agent_id": "agent_a",
        "candidates": [
            candidate("reindex_now", 1000, 1, 0.1, 0.9, resources=["search_db"], state=["index"]),
            candidate("reindex_later", 5000, 1, 0.1, 0.9, resources=["replica"]),
        ],
        "other_agents": [{
            "agent_id": "agent_b",
            "planned_actions": [action("ingest", resources=["search_db"], state=["index"])],
        }],
    }
    decision = canon.decide(request)
    assert decision.selected_candidate == "reindex_later"
    [trace] = decision.traces
    assert trace.candidate_id == "reindex_now"
    assert trace.reason_codes == ["NON_INTERFERENCE_VIOLATION"]
    assert trace.context["NON_INTERFERENCE_VIOLATION"]["delta_ttv_ms"] == {"agent_b": 150.0}
    assert "150 ms" in trace.message
    assert trace.violated_invariant_ids == ["INV_NON_INTERFERENCE"]
    effects = {c.candidate_id: c.interference for c in decision.candidates}
    assert effects["reindex_later"][0].delta_ttv_ms == 0


def test_caller_given_ttvs_decide_interference_but_shared_state_still_conflicts() -> None:
    canon = canon_with(*DEMO_REFS)
    request = {
        "goal": "g", "canon_refs": DEMO_REFS,
        "candidates": [
            candidate("fast", 100, 1, 0.1, 0.9, resources=["db"]),
            candidate("writer", 50, 1, 0.1, 0.9, state=["flags"]),
            candidate("slow", 900, 1, 0.1, 0.9),
        ],
        "other_agents": [{
            "agent_id": "b", "planned_actions": [action("flip", resources=["db"], state=["flags"])],
            "baseline_ttv_ms": 2000,
            "predicted_ttv_ms": {"fast": 2000, "writer": 1990, "slow": 2300},
        }],
    }
    decision = canon.decide(request)
    # "fast" shares a resource but the caller's figures say b is not slowed: admissible.
    assert decision.selected_candidate == "fast"
    denied = {t.candidate_id: t for t in decision.traces}
    assert denied["slow"].context["NON_INTERFERENCE_VIOLATION"]["delta_ttv_ms"] == {"b": 300.0}
    assert denied["writer"].context["NON_INTERFERENCE_VIOLATION"]["state_conflicts"] == [
        ["b", "writer", "flip", "flags"]
    ]


def test_no_canon_refs_is_an_authority_boundary_failure_and_nothing_is_selected() -> None:
    ledger = MemoryLedger()
    canon = canon_with(*DEMO_REFS, ledger=ledger)
    request = demo_request()
    request["canon_refs"] = []
    decision = canon.decide(request)
    assert decision.status == "none_admissible"
    assert decision.selected_candidate is None and decision.next_action is None
    assert decision.selected_path == []
    assert len(decision.traces) == 3
    assert all("AUTHORITY_BOUNDARY_FAIL" in t.reason_codes for t in decision.traces)
    assert [e.id for e in ledger.read(TENANT, ["DENY"])] == [decision.entry_id]


def test_refs_that_are_unknown_or_below_canon_fail_the_authority_boundary() -> None:
    canon = canon_with("CANON_001")
    canon.add_item(item("DRAFT_7", source="chat"))
    request = demo_request()
    request["canon_refs"] = ["CANON_001", "DRAFT_7", "NOPE"]
    decision = canon.decide(request)
    assert decision.status == "none_admissible"
    trace = decision.traces[0]
    assert trace.missing_canon_ids == ["DRAFT_7", "NOPE"]
    assert trace.context["AUTHORITY_BOUNDARY_FAIL"]["ref_levels"] == {
        "DRAFT_7": "EVIDENCE", "NOPE": "UNKNOWN"
    }


def test_missing_prerequisites_deny_the_path_that_needs_them() -> None:
    canon = canon_with(*DEMO_REFS)
    request = demo_request()
    request["candidates"][1]["actions"][0]["prerequisites_canon_ids"] = ["RUNBOOK_9"]
    decision = canon.decide(request)
    assert decision.selected_candidate == "deploy"
    trace = next(t for t in decision.traces if t.candidate_id == "rollback")
    assert trace.reason_codes == ["MISSING_CANON_PREREQS"]
    assert trace.missing_canon_ids == ["RUNBOOK_9"]
    assert trace.required_canon_refs == ["RUNBOOK_9"]
    assert trace.violated_invariant_ids == ["INV_CANON_ONLY_EXECUTION"]


def test_success_probability_floor_denies_unlikely_paths() -> None:
    canon = canon_with(*DEMO_REFS)
    request = demo_request()
    request["bounds"] = {"min_success_prob": 0.95}
    request["candidates"][0]["features"]["success_prob"] = 0.99
    decision = canon.decide(request)
    assert decision.selected_candidate == "deploy"
    assert {t.candidate_id for t in decision.traces} == {"rollback", "scale"}
    assert all(t.reason_codes == ["SUCCESS_PROB_TOO_LOW"] for t in decision.traces)


def test_configured_bounds_cannot_be_loosened_by_a_request() -> None:
    config = CanonConfig(bounds=Bounds(max_cost=20))
    canon = canon_with(*DEMO_REFS, config=config)
    request = demo_request()
    request["bounds"] = {"max_cost": 1000}
    decision = canon.decide(request)
    assert decision.selected_candidate == "rollback"
    deploy = next(t for t in decision.traces if t.candidate_id == "deploy")
    assert deploy.context["COST_BOUND_EXCEEDED"]["max_cost"] == 20


def test_a_canon_hard_invariant_with_a_rule_denies_paths_that_break_it() -> None:
    canon = canon_with(*DEMO_REFS)
    canon.add_item(item("NO_PROD_WRITES", "INVARIANT", severity="HARD_FAIL", level="CANON",
                        rule={"forbid_resources": ["prod_db"]}))
    request = demo_request()
    request["candidates"][1]["actions"][0]["resources_used"] = ["prod_db"]
    decision = canon.decide(request)
    assert decision.selected_candidate == "deploy"
    trace = next(t for t in decision.traces if t.candidate_id == "rollback")
    assert trace.reason_codes == ["INVARIANT_VIOLATION"]
    assert trace.violated_invariant_ids == ["NO_PROD_WRITES"]


def test_a_soft_invariant_penalises_instead_of_denying() -> None:
    canon = canon_with(*DEMO_REFS, config=CanonConfig(soft_fail_penalty=500_000))
    canon.add_item(item("PREFER_NO_ROLLBACK", "INVARIANT", severity="SOFT_FAIL", level="CANON",
                        rule={"forbid_actions": ["rollback"]}))
    decision = canon.decide(demo_request())
    rollback = next(c for c in decision.candidates if c.candidate_id == "rollback")
    assert rollback.admissible
    assert rollback.score is not None and rollback.score.soft_fail_ids == ["PREFER_NO_ROLLBACK"]
    assert decision.selected_candidate == "deploy"


def test_a_rule_below_canon_level_does_not_bind() -> None:
    canon = canon_with(*DEMO_REFS)
    canon.add_item(item("NO_ROLLBACK", "CONSTRAINT", source="chat",
                        rule={"forbid_actions": ["rollback"]}))
    assert canon.decide(demo_request()).selected_candidate == "rollback"


def test_features_are_estimated_from_session_completions_and_observations() -> None:
    ledger = MemoryLedger()
    canon = canon_with(*DEMO_REFS, ledger=ledger)
    ids = [
        ledger.accept(completion("e1", action_id="restart", duration_ms=10_000, cost="0.10")),
        ledger.accept(completion("e2", action_id="restart", duration_ms=20_000, cost="0.20",
                                 status="error")),
        ledger.accept(completion("e3", action_id="other", duration_ms=1_000)),
    ]
    observed = canon.observe({"action": "restart", "outcome": "success", "duration_ms": 30_000,
                              "cost": "0.30"})
    decision = canon.decide({"goal": "g", "canon_refs": DEMO_REFS,
                             "candidates": [{"actions": [action("restart", "MEDIUM")]}]})
    [result] = decision.candidates
    features = result.features
    assert features.ttv_ms is not None and features.ttv_ms.value == pytest.approx(20_000)
    assert features.ttv_ms.entry_ids == [ids[0], ids[1], observed]
    assert features.cost is not None and features.cost.value == pytest.approx(0.2)
    assert features.cost.evidence_count == 3
    # Beta(1, 1) prior, 2 successes and 1 failure: Beta(3, 2), mean 0.6.
    assert (features.success_prob.alpha, features.success_prob.beta) == (3, 2)
    assert features.success_prob.value == pytest.approx(0.6)
    assert features.success_prob.source == "evidence"
    assert features.risk.value == 0.3 and features.risk.source == "risk_level"
    assert decision.selected_candidate == "restart"


def test_multi_action_paths_add_ttv_and_cost_and_multiply_success() -> None:
    ledger = MemoryLedger()
    canon = canon_with(*DEMO_REFS, ledger=ledger)
    ledger.accept(completion("a1", action_id="drain", duration_ms=1_000, cost="1"))
    ledger.accept(completion("b1", action_id="patch", duration_ms=2_000, cost="2", status="error"))
    decision = canon.decide({"goal": "g", "canon_refs": DEMO_REFS, "candidates": [
        {"actions": [action("drain", "LOW"), action("patch", "HIGH")]}]})
    features = decision.candidates[0].features
    assert decision.candidates[0].candidate_id == "drain+patch"
    assert features.ttv_ms is not None and features.ttv_ms.value == 3_000
    assert features.cost is not None and features.cost.value == 3
    assert features.success_prob.value == pytest.approx((2 / 3) * (1 / 3))
    assert features.risk.value == 0.7


def test_an_action_without_evidence_or_given_features_is_denied_for_insufficient_evidence() -> None:
    canon = canon_with(*DEMO_REFS)
    decision = canon.decide({"goal": "g", "canon_refs": DEMO_REFS,
                             "candidates": [{"actions": [action("unknown_step")]}]})
    assert decision.status == "none_admissible"
    [trace] = decision.traces
    assert trace.reason_codes == ["INSUFFICIENT_EVIDENCE"]
    assert decision.candidates[0].score is None
    assert decision.candidates[0].features.success_prob.source == "prior"


def test_evidence_window_limits_what_an_estimate_uses() -> None:
    ledger = MemoryLedger()
    canon = canon_with(*DEMO_REFS, ledger=ledger, config=CanonConfig(evidence_window=2))
    for n, seconds in enumerate((100, 2, 4)):
        ledger.accept(completion(f"w{n}", action_id="step", duration_ms=seconds * 1000))
    decision = canon.decide({"goal": "g", "canon_refs": DEMO_REFS,
                             "candidates": [{"actions": [action("step")]}]})
    ttv = decision.candidates[0].features.ttv_ms
    assert ttv is not None and ttv.value == 3_000 and ttv.evidence_count == 2


def test_ties_break_by_fewest_actions_then_candidate_id() -> None:
    canon = canon_with(*DEMO_REFS)
    same = {"ttv_ms": 100, "cost": 1, "risk": 0.1, "success_prob": 0.9}
    decision = canon.decide({"goal": "g", "canon_refs": DEMO_REFS, "candidates": [
        {"id": "zeta", "actions": [action("a")], "features": same},
        {"id": "two_steps", "actions": [action("a"), action("b")], "features": same},
        {"id": "alpha", "actions": [action("c")], "features": same},
    ]})
    assert decision.selected_candidate == "alpha"
    assert "candidate id" in decision.tie_break


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda r: r["candidates"].append(r["candidates"][0]), "$.candidates[3].id"),
        (lambda r: r["candidates"][0]["features"].update(risk=1.5), "$.candidates[0].features.risk"),
        (lambda r: r["candidates"][0]["features"].update(ttv_ms=-1), "$.candidates[0].features.ttv_ms"),
        (lambda r: r.update(candidates=[]), "$.candidates"),
        (lambda r: r.update(surprise=True), "$"),
        (lambda r: r["candidates"][0]["actions"][0].update(risk_level="EXTREME"),
         "$.candidates[0].actions[0].risk_level"),
        (lambda r: r.update(other_agents=[{"agent_id": "agent"}]), "$.other_agents[0].agent_id"),
        (lambda r: r.update(other_agents=[{"agent_id": "b", "predicted_ttv_ms": {"nope": 1}}]),
         "$.other_agents[0].predicted_ttv_ms"),
        (lambda r: r["bounds"].update(max_risk=float("nan")), "$.bounds.max_risk"),
    ],
)
def test_invalid_requests_are_refused_with_the_path_and_nothing_is_ledgered(
    change: Any, path: str
) -> None:
    ledger = MemoryLedger()
    canon = canon_with(*DEMO_REFS, ledger=ledger)
    request = demo_request()
    change(request)
    with pytest.raises(BadRequest) as refused:
        canon.decide(request)
    assert refused.value.details[0].path == path
    assert ledger.read(TENANT, ["DECIDE", "DENY"]) == []


def test_canons_are_tenant_scoped() -> None:
    ledger = MemoryLedger()
    canon_with(*DEMO_REFS, ledger=ledger, tenant="org_a")
    other = Canon(ledger, "org_b")
    decision = other.decide(demo_request())
    assert decision.status == "none_admissible"
    assert decision.traces[0].missing_canon_ids == ["CANON_001", "CANON_042"]


def test_decide_async_on_a_plain_ledger_matches_decide() -> None:
    from canon_support import DEMO_REFS, canon_with, demo_request

    from scr.canon.model import DecideRequest
    from scr.canon.validation import validated

    request = validated(DecideRequest, demo_request(), "decide request")
    canon = canon_with(*DEMO_REFS)
    sync = canon.decide_valid(request)
    from_loop = asyncio.run(canon.decide_async(request))  # no append_async: a worker thread
    assert from_loop.selected_candidate == sync.selected_candidate == "rollback"
    assert from_loop.entry_id > sync.entry_id  # both ledgered
