"""The six hard-fail invariants: seeded as CANON items, and each one attacked.

Every test tries to break one invariant, through the API where it should refuse, or by
writing a forged entry straight into the ledger, which the fold must ignore and the audit
must report.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest
from canon_support import DEMO_REFS, TENANT, action, canon_with, completion, demo_request, item

from scr.canon import SEED_IDS, Canon, MemoryLedger
from scr.canon.items import item_hash
from scr.canon.model import ItemSpec
from scr.errors import BadRequest, Conflict, Forbidden


def _violations(canon: Canon, invariant: str) -> list[str]:
    report = canon.audit()
    [check] = [c for c in report.checks if c.invariant_id == invariant]
    assert check.passed == (not check.violations)
    return [v.message for v in check.violations]


def _forge(ledger: MemoryLedger, kind: str, payload: dict[str, Any]) -> int:
    return ledger.append(TENANT, kind, payload, actor="mallory", source="forged", ref="x")


def _structure_update(spec: dict[str, Any], **changes: Any) -> dict[str, Any]:
    record = {**spec, **changes}
    valid = msgspec.convert(record, ItemSpec)
    record["provenance"] = {**record["provenance"], "hash": item_hash(valid)}
    return {"item": record}


def test_the_six_invariants_are_seeded_at_canon_once() -> None:
    ledger = MemoryLedger()
    canon = Canon(ledger, TENANT)
    seeded = canon.items(kind="INVARIANT")
    assert {i.id for i in seeded} == SEED_IDS == {
        "INV_TS_MANDATORY", "INV_CANON_ONLY_EXECUTION", "INV_PROMOTION_GATE",
        "INV_NON_INTERFERENCE", "INV_TRUST_DENIAL_TRACE", "INV_SESSION_COMPLETION_LEDGER",
    }
    assert all(i.level == "CANON" and i.severity == "HARD_FAIL" for i in seeded)
    assert all(i.provenance.source == "import" for i in seeded)
    Canon(ledger, TENANT).items()  # a second canon on the same ledger seeds nothing more
    assert len(ledger.read(TENANT, ["STRUCTURE_UPDATE"])) == 6
    assert canon.audit().passed


def test_the_seeds_cannot_be_changed() -> None:
    ledger = MemoryLedger()
    canon = Canon(ledger, TENANT)
    with pytest.raises(Forbidden):
        canon.add_item(item("INV_NON_INTERFERENCE", "INVARIANT", severity="SOFT_FAIL"))
    forged = _structure_update(item("INV_NON_INTERFERENCE", "INVARIANT", severity="SOFT_FAIL",
                                    level="CANON"))
    _forge(ledger, "STRUCTURE_UPDATE", forged)
    assert canon.item("INV_NON_INTERFERENCE").severity == "HARD_FAIL"
    assert any("built-in" in m for m in _violations(canon, "INV_PROMOTION_GATE"))


# ----- INV_TS_MANDATORY ----------------------------------------------------------------------


@pytest.mark.parametrize("ts", [None, "", "2025-06-01T12:00:00", "yesterday", 1717243200])
def test_ts_mandatory_an_item_without_a_valid_timestamp_is_refused(ts: Any) -> None:
    canon = canon_with()
    spec = item("NO_TS")
    if ts is None:
        del spec["ts"]
    else:
        spec["ts"] = ts
    with pytest.raises(BadRequest) as refused:
        canon.add_item(spec)
    assert refused.value.details[0].path in ("$", "$.ts")
    assert all(i.id != "NO_TS" for i in canon.items())


def test_ts_mandatory_a_ledgered_item_without_ts_is_ignored_and_reported() -> None:
    ledger = MemoryLedger()
    canon = canon_with(ledger=ledger)
    record = item("NO_TS")
    del record["ts"]
    _forge(ledger, "STRUCTURE_UPDATE", {"item": record})
    assert all(i.id != "NO_TS" for i in canon.items())
    assert _violations(canon, "INV_TS_MANDATORY")


# ----- INV_CANON_ONLY_EXECUTION ------------------------------------------------------------


def test_canon_only_execution_a_proposed_prerequisite_does_not_authorise() -> None:
    canon = canon_with(*DEMO_REFS)
    canon.add_item(item("DRAFT", source="chat"))
    request = demo_request()
    for cand in request["candidates"]:
        cand["actions"][0]["prerequisites_canon_ids"] = ["DRAFT"]
    decision = canon.decide(request)
    assert decision.status == "none_admissible"
    assert all(t.reason_codes[0] == "MISSING_CANON_PREREQS" for t in decision.traces)
    assert canon.audit().passed


def test_canon_only_execution_a_forged_decision_that_claims_canon_is_reported() -> None:
    ledger = MemoryLedger()
    canon = canon_with(*DEMO_REFS, ledger=ledger)
    canon.add_item(item("DRAFT", source="chat"))
    request = demo_request()
    request["candidates"][1]["actions"][0]["prerequisites_canon_ids"] = ["DRAFT"]
    decision = canon.decide(request)
    assert decision.selected_candidate == "deploy"
    [entry] = ledger.read(TENANT, ["DECIDE"])
    forged = copy.deepcopy(entry.payload)
    forged["inputs"]["canon"]["levels"]["DRAFT"] = "CANON"  # pretend DRAFT was canon
    _forge(ledger, "DECIDE", forged)
    messages = _violations(canon, "INV_CANON_ONLY_EXECUTION")
    assert any("canon the ledger does not have" in m for m in messages)


# ----- INV_PROMOTION_GATE --------------------------------------------------------------------


def test_promotion_gate_an_item_cannot_enter_above_evidence_except_by_import() -> None:
    canon = canon_with()
    with pytest.raises(BadRequest) as refused:
        canon.add_item(item("SHORTCUT", source="chat", level="CANON"))
    assert refused.value.details[0].path == "$.level"


def test_promotion_gate_a_forged_level_is_clamped_to_evidence_and_reported() -> None:
    ledger = MemoryLedger()
    canon = canon_with(*DEMO_REFS, ledger=ledger)
    _forge(ledger, "STRUCTURE_UPDATE", _structure_update(item("SHORTCUT", source="chat",
                                                              level="CANON")))
    assert canon.item("SHORTCUT").level == "EVIDENCE"
    request = demo_request()
    request["canon_refs"] = ["SHORTCUT"]
    assert canon.decide(request).status == "none_admissible"
    assert any("without the promotion gate" in m
               for m in _violations(canon, "INV_PROMOTION_GATE"))


def test_promotion_gate_a_forged_approval_with_failed_tests_is_ignored() -> None:
    ledger = MemoryLedger()
    canon = canon_with(ledger=ledger)
    added = canon.add_item(item("WEAK", source="chat"))
    failing = canon.promote("WEAK")
    assert not failing.approved
    [entry] = ledger.read(TENANT, ["PROMOTION"])
    forged = {**entry.payload, "approved": True}
    _forge(ledger, "PROMOTION", forged)
    assert canon.item("WEAK").level == "EVIDENCE"
    assert added.level == "EVIDENCE"
    assert any("test failed" in m for m in _violations(canon, "INV_PROMOTION_GATE"))


def test_promotion_gate_forged_passing_tests_are_caught_by_recomputing_them() -> None:
    ledger = MemoryLedger()
    canon = canon_with(ledger=ledger)
    canon.add_item(item("WEAK", source="chat"))
    canon.promote("WEAK")
    [entry] = ledger.read(TENANT, ["PROMOTION"])
    forged = copy.deepcopy(entry.payload)
    forged["approved"] = True
    for test in forged["tests"].values():
        test["passed"] = True  # lie about the evidence
    _forge(ledger, "PROMOTION", forged)
    assert canon.item("WEAK").level == "PROPOSED"  # the fold trusts a well-formed record...
    messages = _violations(canon, "INV_PROMOTION_GATE")  # ... and the audit recomputes it
    assert any("recomputed from the ledger" in m for m in messages)


def test_promotion_gate_a_forged_skip_is_ignored() -> None:
    ledger = MemoryLedger()
    canon = canon_with(ledger=ledger)
    canon.add_item(item("WEAK", source="chat"))
    canon.promote("WEAK")
    [entry] = ledger.read(TENANT, ["PROMOTION"])
    forged = copy.deepcopy(entry.payload)
    forged.update(approved=True, to_level="CANON")
    for test in forged["tests"].values():
        test["passed"] = True
    _forge(ledger, "PROMOTION", forged)
    assert canon.item("WEAK").level == "EVIDENCE"
    assert any("not one level" in m for m in _violations(canon, "INV_PROMOTION_GATE"))


# ----- INV_NON_INTERFERENCE ------------------------------------------------------------------


def _interfering_request() -> dict[str, Any]:
    return {
        "goal": "g", "canon_refs": DEMO_REFS,
        "candidates": [
            {"actions": [action("hog", resources=["db"], state=["cfg"])],
             "features": {"ttv_ms": 10, "cost": 0, "risk": 0, "success_prob": 1}},
        ],
        "other_agents": [{"agent_id": "b", "planned_actions": [
            action("work", resources=["db"], state=["cfg"])]}],
    }


def test_non_interference_an_interfering_only_path_is_never_selected() -> None:
    canon = canon_with(*DEMO_REFS)
    decision = canon.decide(_interfering_request())
    assert decision.status == "none_admissible"
    assert decision.traces[0].context["NON_INTERFERENCE_VIOLATION"]["delta_ttv_ms"] == {"b": 150}


def test_non_interference_a_forged_selection_of_an_interfering_path_is_reported() -> None:
    ledger = MemoryLedger()
    canon = canon_with(*DEMO_REFS, ledger=ledger)
    canon.decide(_interfering_request())
    [entry] = ledger.read(TENANT, ["DENY"])
    forged = copy.deepcopy(entry.payload)
    forged["outcome"].update(status="selected", selected_candidate="hog", traces=[])
    forged["outcome"]["results"][0]["admissible"] = True
    _forge(ledger, "DECIDE", forged)
    messages = _violations(canon, "INV_NON_INTERFERENCE")
    assert messages == ["selected hog slows other agents (b by 150 ms)"]


# ----- INV_TRUST_DENIAL_TRACE ------------------------------------------------------------------


def test_denial_trace_every_denial_has_a_trace_and_a_ledger_entry() -> None:
    ledger = MemoryLedger()
    canon = canon_with(*DEMO_REFS, ledger=ledger)
    request = demo_request()
    request["bounds"] = {"max_cost": 5}
    decision = canon.decide(request)
    assert decision.status == "none_admissible"
    assert {t.candidate_id for t in decision.traces} == {"deploy", "rollback", "scale"}
    assert all(t.reason_codes and t.message and t.ts for t in decision.traces)
    for trace in decision.traces:
        assert canon.why_not(trace.trace_id) == trace
    assert [e.kind for e in ledger.read(TENANT, ["DECIDE", "DENY"])] == ["DENY"]
    assert canon.audit().passed


def test_denial_trace_a_forged_decision_hiding_a_trace_is_reported() -> None:
    ledger = MemoryLedger()
    canon = canon_with(*DEMO_REFS, ledger=ledger)
    canon.decide(demo_request())
    [entry] = ledger.read(TENANT, ["DECIDE"])
    forged = copy.deepcopy(entry.payload)
    forged["outcome"]["traces"] = []  # deny scale silently
    _forge(ledger, "DECIDE", forged)
    messages = _violations(canon, "INV_TRUST_DENIAL_TRACE")
    assert any("denied without a trace" in m for m in messages)
    assert any("replaying the decision" in m for m in messages)


def test_denial_trace_a_decision_under_the_wrong_kind_is_reported() -> None:
    ledger = MemoryLedger()
    canon = canon_with(*DEMO_REFS, ledger=ledger)
    canon.decide(demo_request())
    [entry] = ledger.read(TENANT, ["DECIDE"])
    _forge(ledger, "DENY", copy.deepcopy(entry.payload))
    assert any("ledgered as DENY" in m for m in _violations(canon, "INV_TRUST_DENIAL_TRACE"))


# ----- INV_SESSION_COMPLETION_LEDGER ---------------------------------------------------------


def test_session_completion_ledger_accepted_events_are_entries_exactly_once() -> None:
    ledger = MemoryLedger()
    canon = canon_with(ledger=ledger)
    first = ledger.accept(completion("evt_1"))
    assert ledger.accept(completion("evt_1")) == first  # a duplicate is not a second entry
    with pytest.raises(Conflict):
        ledger.accept(completion("evt_1", cost="9.99"))
    ledger.accept(completion("evt_2"))
    assert len(ledger.read(TENANT, ["SESSION_COMPLETION"])) == 2
    assert _violations(canon, "INV_SESSION_COMPLETION_LEDGER") == []


def test_session_completion_ledger_forged_entries_are_reported() -> None:
    ledger = MemoryLedger()
    canon = canon_with(ledger=ledger)
    ledger.accept(completion("evt_1"))
    _forge(ledger, "SESSION_COMPLETION", completion("evt_1"))  # a second copy
    _forge(ledger, "SESSION_COMPLETION", completion("evt_x", tenant="org_other"))
    broken = completion("evt_bad")
    broken["usage"]["total_tokens"] = 99
    _forge(ledger, "SESSION_COMPLETION", broken)
    messages = _violations(canon, "INV_SESSION_COMPLETION_LEDGER")
    assert len(messages) == 3
    assert any("also entry" in m for m in messages)
    assert any("belongs to org_other" in m for m in messages)
    assert any("not a valid v1.2 event" in m for m in messages)


def test_session_completion_ledger_an_accepted_event_missing_from_the_ledger_is_reported() -> None:
    ledger = MemoryLedger()
    canon = canon_with(ledger=ledger)
    ledger.accept(completion("evt_1"))
    ledger.accepted[(TENANT, "evt_lost")] = 999  # acknowledged, but never appended
    messages = _violations(canon, "INV_SESSION_COMPLETION_LEDGER")
    assert messages == ["accepted event evt_lost is not ledger entry 999"]


def test_audit_of_a_clean_history_passes_every_check() -> None:
    ledger = MemoryLedger()
    canon = canon_with(*DEMO_REFS, ledger=ledger)
    ledger.accept(completion("evt_1", action_id="rollback"))
    canon.decide(demo_request())
    canon.add_item(item("X", source="chat"))
    canon.promote("X")
    report = canon.audit()
    assert report.passed, [c for c in report.checks if not c.passed]
    assert [c.invariant_id for c in report.checks] == [
        "INV_TS_MANDATORY", "INV_CANON_ONLY_EXECUTION", "INV_PROMOTION_GATE",
        "INV_NON_INTERFERENCE", "INV_TRUST_DENIAL_TRACE", "INV_SESSION_COMPLETION_LEDGER",
    ]
    assert all(c.checked > 0 for c in report.checks)
