"""The promotion gate: tests A–D passing and failing, one level at a time, always ledgered."""

from __future__ import annotations

from typing import Any

import pytest
from canon_support import DEMO_REFS, TENANT, action, canon_with, completion, item

from scr.canon import Canon, CanonConfig, MemoryLedger, PromotionThresholds
from scr.errors import NotFound

ITEM = "RUNBOOK_7"


def _use_item_request() -> dict[str, Any]:
    """A decision with a path that needs ITEM: it records what ITEM would change."""
    return {
        "goal": "fix the queue", "canon_refs": DEMO_REFS,
        "candidates": [
            {"actions": [action("drain_queue", prerequisites=[ITEM])],
             "features": {"ttv_ms": 1000, "cost": 1, "risk": 0.1, "success_prob": 0.9}},
            {"actions": [action("wait")],
             "features": {"ttv_ms": 9000, "cost": 0, "risk": 0.1, "success_prob": 0.9}},
        ],
    }


def _support(canon: Canon, sessions: int = 3, *, users: int = 2, challenge: bool = True,
             verdict: str = "support", start: int = 0) -> None:
    for n in range(start, start + sessions):
        canon.observe({"item_id": ITEM, "verdict": verdict, "challenge": challenge,
                       "session_id": f"s{n}", "user_id": f"u{n % users}", "context": "ci"})


def _ready(ledger: MemoryLedger | None = None) -> Canon:
    """A canon where ITEM, at EVIDENCE, has what it takes to pass all four tests."""
    canon = canon_with(*DEMO_REFS, ledger=ledger)
    canon.add_item(item(ITEM, source="repo"))
    _support(canon)
    assert canon.decide(_use_item_request()).selected_candidate == "wait"
    return canon


def test_all_four_tests_pass_and_the_item_moves_one_level() -> None:
    canon = _ready()
    result = canon.promote(ITEM)
    assert result.approved, result.message
    assert (result.from_level, result.to_level, result.level) == ("EVIDENCE", "PROPOSED", "PROPOSED")
    assert result.tests is not None and result.tests.all_passed()
    assert result.tests.resistance.figures["challenges"] == 3
    assert result.tests.reproducibility.figures["supporting_sessions"] == 3
    assert result.tests.feasibility_impact.figures["newly_admissible"] == 1
    assert canon.item(ITEM).level == "PROPOSED"


def test_level_by_level_to_canon_and_then_the_item_authorises_execution() -> None:
    canon = _ready()
    assert canon.promote(ITEM).level == "PROPOSED"
    # PROPOSED is not CANON: the path that needs it is still denied.
    assert canon.decide(_use_item_request()).selected_candidate == "wait"
    second = canon.promote(ITEM)
    assert second.approved and (second.from_level, second.level) == ("PROPOSED", "CANON")
    assert canon.decide(_use_item_request()).selected_candidate == "drain_queue"
    third = canon.promote(ITEM)
    assert not third.approved and third.level == "CANON"
    assert "already at CANON" in third.message


def test_a_skip_is_refused_and_ledgered() -> None:
    ledger = MemoryLedger()
    canon = _ready(ledger)
    result = canon.promote(ITEM, to_level="CANON")
    assert not result.approved
    assert result.level == "EVIDENCE"
    assert "only" in result.message and "PROPOSED" in result.message
    [entry] = ledger.read(TENANT, ["PROMOTION"])
    assert entry.id == result.entry_id
    assert entry.payload["approved"] is False and entry.payload["to_level"] == "CANON"
    assert entry.payload["tests"]["resistance"]["passed"] is True


def test_a_is_failed_without_enough_challenges() -> None:
    canon = canon_with(*DEMO_REFS)
    canon.add_item(item(ITEM, source="repo"))
    _support(canon, challenge=False)
    canon.decide(_use_item_request())
    result = canon.promote(ITEM)
    assert result.tests is not None
    assert not result.tests.resistance.passed
    assert result.tests.reproducibility.passed
    assert not result.approved and result.level == "EVIDENCE"
    assert "resistance" in result.message


def test_a_is_failed_when_contradictions_exceed_the_bound() -> None:
    canon = _ready()
    _support(canon, sessions=1, verdict="contradict", start=10)  # 1 of 4 = 25% > 10%
    result = canon.promote(ITEM)
    assert result.tests is not None and not result.tests.resistance.passed
    assert result.tests.resistance.figures["contradiction_ratio"] == pytest.approx(0.25)
    assert not result.approved


def test_b_is_failed_by_a_single_user_and_context() -> None:
    canon = canon_with(*DEMO_REFS)
    canon.add_item(item(ITEM, source="repo"))
    _support(canon, users=1)
    canon.decide(_use_item_request())
    result = canon.promote(ITEM)
    assert result.tests is not None
    assert result.tests.resistance.passed and not result.tests.reproducibility.passed
    assert result.tests.reproducibility.figures["distinct_users"] == 1
    assert not result.approved


def test_b_is_failed_by_too_few_independent_sessions() -> None:
    canon = canon_with(*DEMO_REFS)
    canon.add_item(item(ITEM, source="repo"))
    for n in range(3):  # three challenges, but all in the same session
        canon.observe({"item_id": ITEM, "verdict": "support", "challenge": True,
                       "session_id": "same", "user_id": f"u{n}"})
    canon.decide(_use_item_request())
    result = canon.promote(ITEM)
    assert result.tests is not None and not result.tests.reproducibility.passed
    assert result.tests.reproducibility.figures["supporting_sessions"] == 1


def test_session_completions_tagged_with_the_item_count_as_evidence() -> None:
    ledger = MemoryLedger()
    canon = canon_with(*DEMO_REFS, ledger=ledger)
    canon.add_item(item(ITEM, source="repo"))
    for n in range(3):
        ledger.accept(completion(f"ev{n}", user_id=f"user_{n}", tags={
            "canon_item": ITEM, "verdict": "support", "challenge": "true"}))
    canon.decide(_use_item_request())
    result = canon.promote(ITEM)
    assert result.approved, result.message


def test_c_is_failed_when_the_item_admits_a_path_breaking_a_hard_invariant() -> None:
    canon = _ready()
    # A HARD_FAIL invariant not yet at CANON still counts for invariant safety.
    canon.add_item(item("NEVER_DRAIN", "INVARIANT", source="chat", severity="HARD_FAIL",
                        rule={"forbid_actions": ["drain_queue"]}))
    result = canon.promote(ITEM)
    assert result.tests is not None
    assert not result.tests.invariant_safety.passed
    assert "NEVER_DRAIN" in result.tests.invariant_safety.message
    assert result.tests.feasibility_impact.passed
    assert not result.approved


def test_d_is_failed_when_the_item_would_change_nothing() -> None:
    canon = canon_with(*DEMO_REFS)
    canon.add_item(item(ITEM, source="repo"))
    _support(canon)
    result = canon.promote(ITEM)  # no recorded decision refers to it
    assert result.tests is not None
    assert result.tests.resistance.passed and result.tests.reproducibility.passed
    assert result.tests.invariant_safety.passed
    assert not result.tests.feasibility_impact.passed
    assert not result.approved


def test_d_counts_a_changed_score_from_a_soft_invariant() -> None:
    canon = canon_with(*DEMO_REFS)
    canon.add_item(item("AVOID_WAIT", "INVARIANT", source="repo", severity="SOFT_FAIL",
                        rule={"forbid_actions": ["wait"]}))
    for n in range(3):
        canon.observe({"item_id": "AVOID_WAIT", "verdict": "support", "challenge": True,
                       "session_id": f"s{n}", "user_id": f"u{n}"})
    canon.decide(_use_item_request())
    result = canon.promote("AVOID_WAIT")
    assert result.tests is not None
    assert result.tests.feasibility_impact.figures["scores_changed"] == 1
    assert result.approved


def test_thresholds_are_configurable() -> None:
    lenient = CanonConfig(promotion=PromotionThresholds(min_challenges=1, min_independent=1,
                                                        min_distinct_sources=1))
    canon = canon_with(*DEMO_REFS, config=lenient)
    canon.add_item(item(ITEM, source="repo"))
    _support(canon, sessions=1, users=1)
    canon.decide(_use_item_request())
    assert canon.promote(ITEM).approved


def test_every_promotion_decision_is_ledgered_with_its_tests() -> None:
    ledger = MemoryLedger()
    canon = _ready(ledger)
    results = [canon.promote(ITEM, to_level="CANON"), canon.promote(ITEM), canon.promote(ITEM),
               canon.promote(ITEM)]
    entries = ledger.read(TENANT, ["PROMOTION"])
    assert [e.id for e in entries] == [r.entry_id for r in results]
    assert [e.payload["approved"] for e in entries] == [False, True, True, False]
    assert all("feasibility_impact" in e.payload["tests"] for e in entries)


def test_changing_an_items_content_drops_it_back_to_evidence() -> None:
    canon = _ready()
    canon.promote(ITEM)
    assert canon.item(ITEM).level == "PROPOSED"
    again = canon.add_item(item(ITEM, source="repo"))  # the same content: nothing changes
    assert again.level == "PROPOSED"
    changed = canon.add_item(item(ITEM, source="repo", title="a different runbook"))
    assert changed.level == "EVIDENCE"


def test_promoting_an_unknown_item_is_not_found() -> None:
    with pytest.raises(NotFound):
        canon_with().promote("NO_SUCH_ITEM")
