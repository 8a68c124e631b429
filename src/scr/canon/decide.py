"""The decision itself: gate every candidate, score it, select among the admissible. Pure.

``evaluate`` depends on nothing but its ``DecisionInputs``: the request, the features each
candidate was judged on, the canon as the decision saw it, and the settings. A decision's
ledger entry records those inputs, so replaying it is calling ``evaluate`` again.

Selection is over admissible paths only. Ties are broken deterministically: lowest total
score, then fewer actions, then candidate id in code-point order. Candidate ids are unique
within a request, so the answer never depends on the order candidates were listed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from msgspec import Struct

from scr.canon.config import InterferenceCosts
from scr.canon.gates import (
    ActiveRule,
    Finding,
    authority_gate,
    cost_gate,
    evidence_gate,
    interference_gate,
    prerequisites_gate,
    risk_gate,
    rules_gate,
    success_gate,
)
from scr.canon.interference import Footprint, footprint, interference, state_conflicts
from scr.canon.model import (
    AgentPlan,
    Bounds,
    Candidate,
    CandidateResult,
    DecisionStatus,
    Interference,
    Level,
    PathFeatures,
    Score,
    Weights,
    WhyNot,
)
from scr.canon.score import optr_score

TIE_BREAK = "lowest total score, then fewest actions, then candidate id (code-point order)"


class CanonSnapshot(Struct, gc=False, kw_only=True):
    """The canon as a decision saw it: the level of every id it referred to (absent: not a
    known item) and every active rule."""

    levels: dict[str, Level]
    rules: list[ActiveRule]


class DecisionInputs(Struct, gc=False, kw_only=True):
    """Everything a decision depends on; recorded in its ledger entry for replay and audit."""

    ts: str
    goal: str
    agent_id: str
    candidates: list[Candidate]  # ids filled in
    features: list[PathFeatures]  # aligned with candidates
    canon_refs: list[str]
    bounds: Bounds  # the effective bounds (configured, tightened by the request)
    weights: Weights
    other_agents: list[AgentPlan]
    interference: InterferenceCosts
    p_floor: float
    soft_fail_penalty: float
    canon: CanonSnapshot


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome of ``evaluate``: every candidate's result, the denial traces, the choice."""

    status: DecisionStatus
    selected: int | None  # index into the candidates
    results: list[CandidateResult]
    traces: list[WhyNot]  # trace_id left empty: ids are given once the entry id is known
    message: str


def tighten(configured: Bounds, requested: Bounds | None) -> Bounds:
    """The effective bounds: the tighter of the configured and the requested, per bound."""
    if requested is None:
        return configured

    def low(a: float | None, b: float | None) -> float | None:
        return b if a is None else a if b is None else min(a, b)

    def high(a: float | None, b: float | None) -> float | None:
        return b if a is None else a if b is None else max(a, b)

    return Bounds(
        max_risk=low(configured.max_risk, requested.max_risk),
        max_cost=low(configured.max_cost, requested.max_cost),
        min_success_prob=high(configured.min_success_prob, requested.min_success_prob),
    )


def _findings(
    inputs: DecisionInputs, candidate: Candidate, features: PathFeatures,
    authority: Finding | None, planned: Sequence[Footprint],
) -> tuple[list[Finding], list[str], list[Interference]]:
    path = candidate.actions
    levels = inputs.canon.levels
    effects = interference(
        candidate.id or "", path, inputs.other_agents, inputs.interference, planned
    )
    conflicts = state_conflicts(path, inputs.other_agents)
    invariant, soft = rules_gate(path, features, inputs.canon.rules)
    cost = features.cost.value if features.cost is not None else None
    found = [
        prerequisites_gate(path, levels),
        authority,
        evidence_gate(features),
        risk_gate(features.risk.value, inputs.bounds.max_risk),
        cost_gate(cost, inputs.bounds.max_cost),
        success_gate(features.success_prob.value, inputs.bounds.min_success_prob),
        interference_gate(effects, conflicts, inputs.interference.tolerance_ms),
        invariant,
    ]
    return [f for f in found if f is not None], soft, effects


def _score(inputs: DecisionInputs, features: PathFeatures, soft: list[str]) -> Score | None:
    if features.ttv_ms is None or features.cost is None:
        return None
    return optr_score(
        features.ttv_ms.value, features.cost.value, features.risk.value,
        features.success_prob.value, inputs.weights, p_floor=inputs.p_floor,
        soft_fail_ids=soft, soft_fail_penalty=inputs.soft_fail_penalty,
    )


def _trace(ts: str, candidate: Candidate, findings: Sequence[Finding]) -> WhyNot:
    return WhyNot(
        ts=ts,
        candidate_id=candidate.id or "",
        action_id=candidate.actions[0].id,
        reason_codes=[f.code for f in findings],
        message="; ".join(f.message for f in findings),
        missing_canon_ids=sorted({cid for f in findings for cid in f.missing}),
        violated_invariant_ids=sorted({iid for f in findings for iid in f.violated}),
        required_canon_refs=list(dict.fromkeys(ref for f in findings for ref in f.required)),
        context={f.code: dict(f.context) for f in findings},
    )


def evaluate(inputs: DecisionInputs) -> Evaluation:
    """Gate and score every candidate; select the best admissible one, if any."""
    authority = authority_gate(inputs.canon_refs, inputs.canon.levels)
    planned = [footprint(agent.planned_actions) for agent in inputs.other_agents]
    results: list[CandidateResult] = []
    traces: list[WhyNot] = []
    best: tuple[float, int, str] | None = None
    selected: int | None = None
    for index, (candidate, features) in enumerate(
        zip(inputs.candidates, inputs.features, strict=True)
    ):
        findings, soft, effects = _findings(inputs, candidate, features, authority, planned)
        score = _score(inputs, features, soft)
        admissible = not findings and score is not None
        results.append(CandidateResult(
            candidate_id=candidate.id or "", actions=[a.id for a in candidate.actions],
            admissible=admissible, features=features, score=score, interference=effects,
        ))
        if not admissible:
            traces.append(_trace(inputs.ts, candidate, findings))
            continue
        assert score is not None
        rank = (score.total, len(candidate.actions), candidate.id or "")
        if best is None or rank < best:
            best, selected = rank, index
    if selected is None:
        return Evaluation(
            "none_admissible", None, results, traces,
            f"none of the {len(results)} candidates is admissible; every trace says why",
        )
    chosen = results[selected]
    return Evaluation(
        "selected", selected, results, traces,
        f"selected {chosen.candidate_id}; next action {chosen.actions[0]} "
        f"({len(results) - len(traces)} of {len(results)} candidates admissible)",
    )
