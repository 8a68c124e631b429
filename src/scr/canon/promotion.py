"""The promotion gate's four tests, computed from the ledger. Pure functions.

(A) resistance: the item was exposed to failure — enough observations tried to contradict
    it — and contradicting verdicts stay within a bound.
(B) reproducibility: supporting verdicts from enough independent sessions, by at least two
    distinct users or contexts, and consistent (supports dominate the verdicts).
(C) invariant safety: with the item at CANON, no path of a recorded decision becomes
    admissible that breaks a HARD_FAIL invariant or CONSTRAINT of the canon at any level.
(D) feasibility impact: with the item at CANON, some recorded decision's admissible set or
    some score changes; otherwise promoting it changes nothing.

(C) and (D) re-run the gates over the recorded decisions (their candidates and the features
they were judged on) with the item at CANON and without it, whatever level is requested:
the gate asks what the item would do as canon.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from scr.canon.config import PromotionThresholds
from scr.canon.decide import DecisionInputs, Evaluation, evaluate
from scr.canon.evidence import ItemEvidence
from scr.canon.gates import rule_breaches
from scr.canon.items import CanonState
from scr.canon.model import GateTest, Level, PromotionTests
from scr.canon.record import referenced_ids


@dataclass(frozen=True, slots=True)
class RecordedDecision:
    """A ledgered decision's inputs, and the entry that recorded them."""

    entry_id: int
    inputs: DecisionInputs


def resistance_test(evidence: Sequence[ItemEvidence], limits: PromotionThresholds) -> GateTest:
    """(A): at least ``min_challenges`` challenges; contradictions ≤ the ratio bound."""
    challenges = sum(1 for e in evidence if e.challenge)
    contradictions = sum(1 for e in evidence if e.verdict == "contradict")
    ratio = contradictions / len(evidence) if evidence else 0.0
    exposed = challenges >= limits.min_challenges
    withstood = ratio <= limits.max_contradiction_ratio
    if not exposed:
        message = f"only {challenges} of the required {limits.min_challenges} challenges"
    elif not withstood:
        message = (f"{contradictions} of {len(evidence)} verdicts contradict it "
                   f"({ratio:.0%} > {limits.max_contradiction_ratio:.0%})")
    else:
        message = f"withstood {challenges} challenges; {contradictions} contradictions"
    return GateTest(
        name="resistance", passed=exposed and withstood, message=message,
        figures={
            "challenges": challenges, "min_challenges": limits.min_challenges,
            "observations": len(evidence), "contradictions": contradictions,
            "contradiction_ratio": ratio,
            "max_contradiction_ratio": limits.max_contradiction_ratio,
        },
    )


def reproducibility_test(
    evidence: Sequence[ItemEvidence], limits: PromotionThresholds
) -> GateTest:
    """(B): independent support from distinct sessions, users or contexts, consistently.

    Only verdicts that name a session count; a session's last verdict is its verdict.
    """
    by_session: dict[str, ItemEvidence] = {}
    for seen in evidence:
        if seen.session_id is not None:
            by_session[seen.session_id] = seen
    supports = [e for e in by_session.values() if e.verdict == "support"]
    users = len({e.user_id for e in supports if e.user_id is not None})
    contexts = len({e.context for e in supports if e.context is not None})
    consistency = len(supports) / len(by_session) if by_session else 0.0
    enough = len(supports) >= limits.min_independent
    varied = max(users, contexts) >= limits.min_distinct_sources
    consistent = consistency >= limits.min_consistency
    if not enough:
        message = (f"supported in {len(supports)} distinct sessions; "
                   f"{limits.min_independent} required")
    elif not varied:
        message = (f"support comes from {users} user(s) and {contexts} context(s); "
                   f"{limits.min_distinct_sources} distinct required")
    elif not consistent:
        message = f"only {consistency:.0%} of sessions support it"
    else:
        message = (f"reproduced in {len(supports)} sessions by {users} users "
                   f"in {contexts} contexts")
    return GateTest(
        name="reproducibility", passed=enough and varied and consistent, message=message,
        figures={
            "supporting_sessions": len(supports), "min_independent": limits.min_independent,
            "distinct_users": users, "distinct_contexts": contexts,
            "min_distinct_sources": limits.min_distinct_sources,
            "sessions": len(by_session), "consistency": consistency,
            "min_consistency": limits.min_consistency,
        },
    )


def _rerun(
    recorded: RecordedDecision, state: CanonState, item_id: str, with_item: bool
) -> Evaluation:
    overrides: dict[str, Level | None] = {item_id: "CANON" if with_item else None}
    canon = state.snapshot(referenced_ids(recorded.inputs.canon_refs, recorded.inputs.candidates), overrides)
    return evaluate(msgspec.structs.replace(recorded.inputs, canon=canon))


def impact_tests(
    recorded: Sequence[RecordedDecision], state: CanonState, item_id: str
) -> tuple[GateTest, GateTest]:
    """(C) invariant safety and (D) feasibility impact, over the recorded decisions."""
    hard_rules = [rule for rule in state.hard_rules_any_level() if rule.id != item_id]
    unsafe: list[str] = []
    changed = newly_admissible = newly_denied = scores_changed = 0
    for decision in recorded:
        before = _rerun(decision, state, item_id, with_item=False)
        after = _rerun(decision, state, item_id, with_item=True)
        differs = False
        for index, (old, new) in enumerate(zip(before.results, after.results, strict=True)):
            if old.admissible != new.admissible:
                differs = True
                if new.admissible:
                    newly_admissible += 1
                    candidate = decision.inputs.candidates[index]
                    features = decision.inputs.features[index]
                    for rule in hard_rules:
                        if rule_breaches(rule.rule, candidate.actions, features):
                            unsafe.append(
                                f"decision {decision.entry_id}: {new.candidate_id} breaks {rule.id}"
                            )
                else:
                    newly_denied += 1
            old_total = old.score.total if old.score is not None else None
            new_total = new.score.total if new.score is not None else None
            if old_total != new_total:
                differs = True
                scores_changed += 1
        changed += differs
    safety = GateTest(
        name="invariant_safety", passed=not unsafe,
        message="; ".join(unsafe) if unsafe else
        f"no path it admits breaks a HARD_FAIL invariant ({len(recorded)} decisions re-run)",
        figures={"decisions_replayed": len(recorded), "newly_admissible": newly_admissible,
                 "unsafe": unsafe},
    )
    impact = GateTest(
        name="feasibility_impact", passed=changed > 0,
        message=(f"changes {changed} of {len(recorded)} recorded decisions" if changed else
                 f"changes no admissible set or score in {len(recorded)} recorded decisions"),
        figures={"decisions_replayed": len(recorded), "decisions_changed": changed,
                 "newly_admissible": newly_admissible, "newly_denied": newly_denied,
                 "scores_changed": scores_changed},
    )
    return safety, impact


def promotion_tests(
    item_id: str,
    evidence: Sequence[ItemEvidence],
    recorded: Sequence[RecordedDecision],
    state: CanonState,
    limits: PromotionThresholds,
) -> PromotionTests:
    """All four tests for promoting ``item_id`` given the evidence and recorded decisions."""
    safety, impact = impact_tests(recorded, state, item_id)
    return PromotionTests(
        resistance=resistance_test(evidence, limits),
        reproducibility=reproducibility_test(evidence, limits),
        invariant_safety=safety,
        feasibility_impact=impact,
    )
