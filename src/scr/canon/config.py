"""The canon's settings: OPTR weights, default bounds, risk mapping, priors and thresholds.

Every figure the decision layer uses lives here with its unit, so a decision's ledger entry
can record exactly what it was computed with. ``msgspec.convert(yaml_section, CanonConfig)``
validates a config section and names any unknown key.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from scr.canon.model import Bounds, Probability, RiskLevel, Weights

DEFAULT_P_FLOOR = 1e-9
DEFAULT_SHARED_RESOURCE_MS = 50.0  # the reference implementation's per-resource overlap cost
DEFAULT_SHARED_STATE_MS = 100.0  # ... and its per-shared-state overlap cost
DEFAULT_SOFT_FAIL_PENALTY = 60_000.0  # one minute of TTV per broken SOFT_FAIL invariant
DEFAULT_EVIDENCE_WINDOW = 200
DEFAULT_REPLAY_WINDOW = 500

PositiveCount = Annotated[int, Meta(ge=1, le=1_000_000)]
NonNegative = Annotated[float, Meta(ge=0.0, le=1e12)]


class RiskLevels(Struct, gc=False, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The number each action risk level stands for (the source document's mapping)."""

    LOW: Probability = 0.1
    MEDIUM: Probability = 0.3
    HIGH: Probability = 0.7

    def of(self, level: RiskLevel) -> float:
        value: float = getattr(self, level)
        return value


class BetaPrior(Struct, gc=False, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The prior of an action's success probability: Beta(alpha, beta); (1, 1) is uniform."""

    alpha: Annotated[float, Meta(gt=0.0, le=1e6)] = 1.0
    beta: Annotated[float, Meta(gt=0.0, le=1e6)] = 1.0


class InterferenceCosts(Struct, gc=False, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The dependency model: the TTV another agent loses per overlap, and the tolerance.

    ΔE[TTV_j | π_i] = shared_resource_ms × |resources shared| + shared_state_ms × |state
    both modify|; a path is admissible only if every Δ ≤ tolerance_ms (0: not slower at all).
    """

    shared_resource_ms: NonNegative = DEFAULT_SHARED_RESOURCE_MS
    shared_state_ms: NonNegative = DEFAULT_SHARED_STATE_MS
    tolerance_ms: NonNegative = 0.0


class PromotionThresholds(Struct, gc=False, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The promotion gate's thresholds.

    (A) resistance: at least ``min_challenges`` observations that tried to contradict the
    item, and contradicting observations at most ``max_contradiction_ratio`` of all.
    (B) reproducibility: supporting observations from at least ``min_independent`` distinct
    sessions, by at least ``min_distinct_sources`` distinct users or contexts, with supports
    at least ``min_consistency`` of the verdicts.
    (C) and (D) replay the last ``replay_window`` ledgered decisions.
    """

    min_challenges: PositiveCount = 3
    max_contradiction_ratio: Probability = 0.1
    min_independent: PositiveCount = 3
    min_distinct_sources: PositiveCount = 2
    min_consistency: Probability = 0.9
    replay_window: PositiveCount = DEFAULT_REPLAY_WINDOW


class CanonConfig(Struct, gc=False, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """All canon settings, with the source document's defaults."""

    weights: Weights = Weights()
    bounds: Bounds = Bounds()
    risk_levels: RiskLevels = RiskLevels()
    p_floor: Annotated[float, Meta(gt=0.0, le=1.0)] = DEFAULT_P_FLOOR
    prior: BetaPrior = BetaPrior()
    interference: InterferenceCosts = InterferenceCosts()
    promotion: PromotionThresholds = PromotionThresholds()
    soft_fail_penalty: NonNegative = DEFAULT_SOFT_FAIL_PENALTY
    # How many of an action's most recent evidence entries its estimates use (and list).
    evidence_window: PositiveCount = DEFAULT_EVIDENCE_WINDOW
