"""Property-based tests (hypothesis) of selection, bounds, order, replay and promotion."""

from __future__ import annotations

import random
from typing import Any

from canon_support import TENANT, action, canon_with, item
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scr.canon import Canon, Decision, MemoryLedger
from scr.canon.items import next_level

LEVEL_ORDER = {"EVIDENCE": 0, "PROPOSED": 1, "CANON": 2}
CANON_IDS = ["C_CANON", "C_PROPOSED", "C_UNKNOWN"]
PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _canon() -> Canon:
    canon = canon_with("C_CANON")
    canon.add_item(item("C_PROPOSED", source="chat"))
    return canon


CANON = _canon()

names = st.sampled_from(["db", "cache", "queue", "disk"])
states = st.sampled_from(["cfg", "index", "flags"])


@st.composite
def actions(draw: st.DrawFn, action_id: str) -> dict[str, Any]:
    return action(
        action_id,
        draw(st.sampled_from(["LOW", "MEDIUM", "HIGH"])),
        prerequisites=draw(st.lists(st.sampled_from(CANON_IDS), max_size=2, unique=True)),
        resources=draw(st.lists(names, max_size=2, unique=True)),
        state=draw(st.lists(states, max_size=1, unique=True)),
    )


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 8))
    candidates = []
    for n in range(count):
        path = [draw(actions(f"a{n}_{step}")) for step in range(draw(st.integers(1, 2)))]
        features = {
            # Few distinct values, so that ties happen and the tie-break is exercised.
            "ttv_ms": draw(st.sampled_from([100.0, 1000.0, 5000.0, 120_000.0])),
            "cost": draw(st.sampled_from([0.0, 10.0, 50.0, 200.0])),
            "risk": draw(st.sampled_from([0.1, 0.3, 0.7])),
            "success_prob": draw(st.sampled_from([0.0, 0.5, 0.9, 1.0])),
        }
        candidates.append({"id": f"c{n}", "actions": path, "features": features})
    others = []
    for n in range(draw(st.integers(0, 2))):
        planned = [draw(actions(f"o{n}_{step}")) for step in range(draw(st.integers(0, 2)))]
        others.append({"agent_id": f"agent_{n}", "planned_actions": planned})
    bounds = {
        key: value
        for key, value in {
            "max_risk": draw(st.none() | st.sampled_from([0.2, 0.5, 0.8])),
            "max_cost": draw(st.none() | st.sampled_from([5.0, 60.0, 500.0])),
            "min_success_prob": draw(st.none() | st.sampled_from([0.1, 0.6])),
        }.items()
        if value is not None
    }
    refs = draw(st.lists(st.sampled_from(CANON_IDS[:1] * 3 + CANON_IDS), max_size=2, unique=True))
    return {"goal": "g", "candidates": candidates, "canon_refs": refs, "bounds": bounds,
            "other_agents": others, "agent_id": "acting"}


def _rank(decision: Decision, candidate_id: str) -> tuple[float, int, str]:
    result = next(c for c in decision.candidates if c.candidate_id == candidate_id)
    assert result.score is not None
    return (result.score.total, len(result.actions), candidate_id)


@PROPERTY_SETTINGS
@given(requests())
def test_selected_path_is_admissible_and_no_admissible_path_scores_lower(
    request: dict[str, Any]
) -> None:
    decision = CANON.decide(request)
    admissible = [c for c in decision.candidates if c.admissible]
    if not admissible:
        assert decision.status == "none_admissible" and decision.selected_candidate is None
        assert decision.next_action is None
        return
    chosen = decision.selected_candidate
    assert chosen is not None and decision.status == "selected"
    assert next(c for c in decision.candidates if c.candidate_id == chosen).admissible
    best = _rank(decision, chosen)
    for other in admissible:
        assert other.score is not None and decision.score is not None
        assert other.score.total >= decision.score.total
        assert _rank(decision, other.candidate_id) >= best
    assert decision.next_action is not None
    assert decision.next_action.id == decision.selected_path[0]


@PROPERTY_SETTINGS
@given(requests())
def test_a_denied_path_is_never_selected_and_always_has_a_trace(request: dict[str, Any]) -> None:
    decision = CANON.decide(request)
    denied = {c.candidate_id for c in decision.candidates if not c.admissible}
    traced = {t.candidate_id for t in decision.traces}
    assert denied == traced
    assert decision.selected_candidate not in denied
    assert all(t.reason_codes and t.trace_id for t in decision.traces)


@PROPERTY_SETTINGS
@given(requests(), st.data())
def test_tightening_a_bound_never_admits_a_denied_path(
    request: dict[str, Any], data: st.DataObject
) -> None:
    loose = CANON.decide(request)
    tighter = dict(request["bounds"])
    which = data.draw(st.sampled_from(["max_risk", "max_cost", "min_success_prob"]))
    current = tighter.get(which)
    if which == "min_success_prob":
        tighter[which] = data.draw(st.floats(current or 0.0, 1.0))
    else:
        tighter[which] = data.draw(st.floats(0.0, current if current is not None else 1.0))
    tight = CANON.decide({**request, "bounds": tighter})
    was = {c.candidate_id for c in loose.candidates if c.admissible}
    now = {c.candidate_id for c in tight.candidates if c.admissible}
    assert now <= was


@PROPERTY_SETTINGS
@given(requests(), st.randoms(use_true_random=False))
def test_the_answer_does_not_depend_on_candidate_order(
    request: dict[str, Any], shuffle: random.Random
) -> None:
    first = CANON.decide(request)
    reordered = dict(request, candidates=list(request["candidates"]))
    shuffle.shuffle(reordered["candidates"])
    second = CANON.decide(reordered)
    assert second.selected_candidate == first.selected_candidate
    assert second.status == first.status
    def by_id(decision: Decision) -> dict[str, Any]:
        return {c.candidate_id: (c.admissible, c.score) for c in decision.candidates}
    assert by_id(second) == by_id(first)


@PROPERTY_SETTINGS
@given(requests())
def test_replaying_a_decision_from_its_ledger_entry_gives_the_same_selection(
    request: dict[str, Any]
) -> None:
    decision = CANON.decide(request)
    replayed = CANON.replay(decision.entry_id)
    assert replayed.selected_candidate == decision.selected_candidate
    assert replayed == decision
    # A fresh canon on the same ledger, with nothing in memory, replays it the same way.
    fresh = Canon(CANON.ledger, TENANT)
    assert fresh.replay(decision.entry_id).selected_candidate == decision.selected_candidate


operations = st.lists(
    st.one_of(
        st.tuples(st.just("observe"), st.sampled_from(["support", "contradict"]), st.booleans(),
                  st.integers(0, 5), st.integers(0, 2)),
        st.tuples(st.just("decide")),
        st.tuples(st.just("promote"), st.sampled_from([None, "EVIDENCE", "PROPOSED", "CANON"])),
        st.tuples(st.just("forge"), st.booleans(), st.sampled_from(["PROPOSED", "CANON"])),
    ),
    min_size=1, max_size=25,
)


APPROVED_TWICE = [
    ("observe", "support", True, 0, 0), ("observe", "support", True, 1, 1),
    ("observe", "support", True, 2, 0), ("decide",), ("promote", "CANON"), ("promote", None),
    ("forge", True, "PROPOSED"), ("promote", "CANON"), ("promote", None),
]


@settings(max_examples=100, deadline=None)
@given(operations)
@example(APPROVED_TWICE)
def test_promotion_never_skips_a_level_or_passes_with_a_failed_test(ops: list[Any]) -> None:
    ledger = MemoryLedger()
    canon = canon_with("C_CANON", ledger=ledger)
    canon.add_item(item("X", source="repo"))
    request = {"goal": "g", "canon_refs": ["C_CANON"], "candidates": [
        {"actions": [action("needs_x", prerequisites=["X"])],
         "features": {"ttv_ms": 1, "cost": 0, "risk": 0, "success_prob": 1}}]}
    approvals: list[str] = []
    for op in ops:
        before = canon.item("X").level
        if op[0] == "observe":
            _, verdict, challenge, session, user = op
            canon.observe({"item_id": "X", "verdict": verdict, "challenge": challenge,
                           "session_id": f"s{session}", "user_id": f"u{user}"})
        elif op[0] == "decide":
            canon.decide(request)
        elif op[0] == "promote":
            result = canon.promote("X", to_level=op[1])
            assert result.from_level == before
            if result.approved:
                assert result.tests is not None and result.tests.all_passed()
                assert result.level == next_level(before)
                assert op[1] in (None, result.level)
            else:
                assert result.level == before
        else:  # a forged PROMOTION straight into the ledger
            _, approved, to_level = op
            ledger.append(TENANT, "PROMOTION", {
                "item_id": "X", "from_level": before, "to_level": to_level,
                "approved": approved, "tests": None, "item_hash": "forged", "as_of": 0,
            }, actor="mallory", source="forged", ref="X")
        after = canon.item("X").level
        assert LEVEL_ORDER[after] - LEVEL_ORDER[before] in (0, 1)
        if after != before:
            assert op[0] == "promote"
            approvals.append(after)
    if ops == APPROVED_TWICE:  # the explicit example does reach the approved branch
        assert approvals == ["PROPOSED", "CANON"]
