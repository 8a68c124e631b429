"""The gates a candidate path must pass to be admissible. Pure functions.

Each gate returns ``None`` when the path passes it, or a ``Finding``: its reason code, a
sentence, the canon ids involved and the numbers that decided it. A denied path's WhyNot
trace is the union of its findings. Gates only ever compare with ``>``/``<`` against bounds,
so tightening a bound can deny more paths but never admit one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from msgspec import Struct

from scr.canon.interference import StateConflict
from scr.canon.model import (
    Action,
    Interference,
    ItemKind,
    Level,
    PathFeatures,
    ReasonCode,
    Rule,
    Severity,
)
from scr.canon.seeds import INV_CANON_ONLY_EXECUTION, INV_NON_INTERFERENCE

UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class Finding:
    """Why one gate denies a path."""

    code: ReasonCode
    message: str
    missing: tuple[str, ...] = ()
    violated: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    context: Mapping[str, Any] = field(default_factory=dict)


class ActiveRule(Struct, gc=False, frozen=True, kw_only=True):
    """A CANON-level INVARIANT or CONSTRAINT with a rule, as a decision saw it."""

    id: str
    kind: ItemKind
    severity: Severity | None
    rule: Rule

    @property
    def is_hard(self) -> bool:
        """CONSTRAINTs and HARD_FAIL invariants deny; SOFT_FAIL invariants cost a penalty."""
        return self.kind == "CONSTRAINT" or self.severity != "SOFT_FAIL"


def _unique(ids: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))


def _below_canon(ids: Sequence[str], levels: Mapping[str, Level]) -> dict[str, str]:
    """The ids not at CANON level, in order, with their level (or UNKNOWN)."""
    return {cid: levels.get(cid, UNKNOWN) for cid in ids if levels.get(cid) != "CANON"}


def _listed(found: Mapping[str, str]) -> str:
    return ", ".join(f"{cid} ({level})" for cid, level in found.items())


def prerequisites_gate(path: Sequence[Action], levels: Mapping[str, Level]) -> Finding | None:
    """Every prerequisite canon id of every action must be at CANON level."""
    required = _unique([cid for action in path for cid in action.prerequisites_canon_ids])
    found = _below_canon(required, levels)
    if not found:
        return None
    return Finding(
        "MISSING_CANON_PREREQS", f"prerequisites not at CANON level: {_listed(found)}",
        missing=tuple(found), violated=(INV_CANON_ONLY_EXECUTION,), required=required,
        context={"prerequisite_levels": found},
    )


def authority_gate(canon_refs: Sequence[str], levels: Mapping[str, Level]) -> Finding | None:
    """The decision must cite canon refs, and every one must be a known CANON item."""
    if not canon_refs:
        return Finding(
            "AUTHORITY_BOUNDARY_FAIL", "the decision cites no canon refs",
            violated=(INV_CANON_ONLY_EXECUTION,), context={"canon_refs": []},
        )
    refs = _unique(canon_refs)
    found = _below_canon(refs, levels)
    if not found:
        return None
    return Finding(
        "AUTHORITY_BOUNDARY_FAIL", f"cited canon refs not at CANON level: {_listed(found)}",
        missing=tuple(found), violated=(INV_CANON_ONLY_EXECUTION,), required=refs,
        context={"ref_levels": found},
    )


def evidence_gate(features: PathFeatures) -> Finding | None:
    """A path can be scored only when its TTV and cost are given or estimated."""
    lacking = [name for name in ("ttv_ms", "cost") if getattr(features, name) is None]
    if not lacking:
        return None
    return Finding(
        "INSUFFICIENT_EVIDENCE",
        f"no given value and no evidence for: {', '.join(lacking)}",
        context={"missing_features": lacking},
    )


def risk_gate(risk: float, max_risk: float | None) -> Finding | None:
    """The path's risk must not exceed the risk bound."""
    if max_risk is None or risk <= max_risk:
        return None
    return Finding(
        "RISK_BOUND_EXCEEDED", f"risk {risk:g} exceeds the bound {max_risk:g}",
        context={"risk": risk, "max_risk": max_risk},
    )


def cost_gate(cost: float | None, max_cost: float | None) -> Finding | None:
    """The path's cost must not exceed the cost bound."""
    if max_cost is None or cost is None or cost <= max_cost:
        return None
    return Finding(
        "COST_BOUND_EXCEEDED", f"cost {cost:g} exceeds the bound {max_cost:g}",
        context={"cost": cost, "max_cost": max_cost},
    )


def success_gate(success_prob: float, min_success_prob: float | None) -> Finding | None:
    """The path's success probability must reach the floor."""
    if min_success_prob is None or success_prob >= min_success_prob:
        return None
    return Finding(
        "SUCCESS_PROB_TOO_LOW",
        f"success probability {success_prob:g} is below the floor {min_success_prob:g}",
        context={"success_prob": success_prob, "min_success_prob": min_success_prob},
    )


def interference_gate(
    effects: Sequence[Interference], conflicts: Sequence[StateConflict], tolerance_ms: float
) -> Finding | None:
    """No other agent may be slowed (Δ TTV > tolerance), and no state written by both."""
    slowed = [effect for effect in effects if effect.delta_ttv_ms > tolerance_ms]
    if not slowed and not conflicts:
        return None
    parts = []
    for effect in slowed:
        shared = []
        if effect.shared_resources:
            shared.append(f"shared resources: {', '.join(effect.shared_resources)}")
        if effect.shared_state:
            shared.append(f"shared state: {', '.join(effect.shared_state)}")
        why = f" ({'; '.join(shared)})" if shared and effect.basis == "dependency_model" else ""
        parts.append(
            f"would slow agent {effect.agent_id} by {effect.delta_ttv_ms:g} ms"
            f" [{effect.basis}]{why}"
        )
    for conflict in conflicts:
        parts.append(
            f"{conflict.action_id} and agent {conflict.agent_id}'s {conflict.other_action_id} "
            f"both modify {conflict.state}"
        )
    return Finding(
        "NON_INTERFERENCE_VIOLATION", "; ".join(parts), violated=(INV_NON_INTERFERENCE,),
        context={
            "delta_ttv_ms": {effect.agent_id: effect.delta_ttv_ms for effect in effects},
            "tolerance_ms": tolerance_ms,
            "state_conflicts": [
                [c.agent_id, c.action_id, c.other_action_id, c.state] for c in conflicts
            ],
        },
    )


def rule_breaches(rule: Rule, path: Sequence[Action], features: PathFeatures) -> list[str]:
    """How a path breaks a rule, one sentence per breach (empty: it keeps the rule)."""
    breaches: list[str] = []
    for action in path:
        if action.id in rule.forbid_actions:
            breaches.append(f"action {action.id} is forbidden")
        for resource in action.resources_used:
            if resource in rule.forbid_resources:
                breaches.append(f"action {action.id} uses forbidden resource {resource}")
        for state in action.shared_state_modified:
            if state in rule.forbid_shared_state:
                breaches.append(f"action {action.id} modifies forbidden state {state}")
    risk = features.risk.value
    if rule.max_risk is not None and risk > rule.max_risk:
        breaches.append(f"risk {risk:g} > {rule.max_risk:g}")
    if rule.max_cost is not None and features.cost is not None and features.cost.value > rule.max_cost:
        breaches.append(f"cost {features.cost.value:g} > {rule.max_cost:g}")
    ttv = features.ttv_ms
    if rule.max_ttv_ms is not None and ttv is not None and ttv.value > rule.max_ttv_ms:
        breaches.append(f"TTV {ttv.value:g} ms > {rule.max_ttv_ms:g} ms")
    success = features.success_prob.value
    if rule.min_success_prob is not None and success < rule.min_success_prob:
        breaches.append(f"success probability {success:g} < {rule.min_success_prob:g}")
    return breaches


def rules_gate(
    path: Sequence[Action], features: PathFeatures, rules: Sequence[ActiveRule]
) -> tuple[Finding | None, list[str]]:
    """Check the path against the active rules: a hard breach denies, a soft one is returned
    (as the ids of the SOFT_FAIL invariants broken) for the score's penalty."""
    hard: dict[str, list[str]] = {}
    soft: list[str] = []
    for active in rules:
        breaches = rule_breaches(active.rule, path, features)
        if not breaches:
            continue
        if active.is_hard:
            hard[active.id] = breaches
        else:
            soft.append(active.id)
    if not hard:
        return None, soft
    message = "; ".join(f"{item}: {', '.join(found)}" for item, found in hard.items())
    return (
        Finding(
            "INVARIANT_VIOLATION", f"breaks {message}", violated=tuple(hard),
            context={"breaches": hard},
        ),
        soft,
    )
