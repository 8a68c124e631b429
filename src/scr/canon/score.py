"""The OPTR objective, a pure function.

π* = argmin over admissible π of E[TTV(π) + λC·C(π) + λR·R(π) − λP·ln p(π)]; the features
are point estimates (given, or posterior means), so the expectation is taken at them. A
broken SOFT_FAIL invariant adds a fixed penalty per invariant instead of denying the path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scr.canon.config import DEFAULT_P_FLOOR
from scr.canon.model import Score, Weights


def optr_score(
    ttv_ms: float,
    cost: float,
    risk: float,
    success_prob: float,
    weights: Weights,
    *,
    p_floor: float = DEFAULT_P_FLOOR,
    soft_fail_ids: Sequence[str] = (),
    soft_fail_penalty: float = 0.0,
) -> Score:
    """The OPTR score of one path and its components (lower is better)."""
    cost_term = weights.lambda_c * cost
    risk_term = weights.lambda_r * risk
    # −λP·ln p rewards likely success; p is floored so a zero estimate stays finite.
    success_term = -weights.lambda_p * math.log(max(success_prob, p_floor))
    soft_fail_term = soft_fail_penalty * len(soft_fail_ids)
    total = ttv_ms + cost_term + risk_term + success_term + soft_fail_term
    return Score(
        total=total,
        ttv_ms=ttv_ms,
        cost_term=cost_term,
        risk_term=risk_term,
        success_term=success_term,
        soft_fail_term=soft_fail_term,
        soft_fail_ids=sorted(soft_fail_ids),
    )
