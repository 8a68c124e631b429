"""The pure math: OPTR score, Beta posterior, dependency model, bounds, rule checks."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scr.canon import Action, AgentPlan, Bounds, Weights, beta_posterior, optr_score
from scr.canon.config import InterferenceCosts
from scr.canon.decide import tighten
from scr.canon.gates import cost_gate, risk_gate, rule_breaches, success_gate
from scr.canon.interference import dependency_delta, interference, state_conflicts
from scr.canon.model import Estimate, PathFeatures, Rule

DEFAULT = Weights()


def test_default_weights_are_the_source_documents() -> None:
    assert (DEFAULT.lambda_c, DEFAULT.lambda_r, DEFAULT.lambda_p) == (0.1, 0.2, 0.05)


def test_score_components_add_up_to_the_objective() -> None:
    score = optr_score(120_000, 10, 0.1, 0.9, DEFAULT)
    assert score.ttv_ms == 120_000
    assert score.cost_term == pytest.approx(1.0)
    assert score.risk_term == pytest.approx(0.02)
    assert score.success_term == pytest.approx(-0.05 * math.log(0.9))
    assert score.total == pytest.approx(120_000 + 1.0 + 0.02 - 0.05 * math.log(0.9))


def test_zero_success_probability_is_floored_not_infinite() -> None:
    score = optr_score(1, 0, 0, 0.0, DEFAULT)
    assert score.success_term == pytest.approx(-0.05 * math.log(1e-9))
    assert math.isfinite(score.total)


def test_soft_fail_penalty_counts_each_broken_invariant() -> None:
    score = optr_score(10, 0, 0, 1.0, DEFAULT, soft_fail_ids=["B", "A"], soft_fail_penalty=500)
    assert score.soft_fail_term == 1000
    assert score.soft_fail_ids == ["A", "B"]
    assert score.total == pytest.approx(1010)


@given(
    st.floats(0, 1e9), st.floats(0, 1e9), st.floats(0, 1), st.floats(0, 1),
    st.floats(0, 1e9), st.floats(0, 1e9),
)
def test_score_is_monotone_in_ttv_and_cost(
    ttv: float, cost: float, risk: float, p: float, more_ttv: float, more_cost: float
) -> None:
    base = optr_score(ttv, cost, risk, p, DEFAULT).total
    assert optr_score(ttv + more_ttv, cost, risk, p, DEFAULT).total >= base
    assert optr_score(ttv, cost + more_cost, risk, p, DEFAULT).total >= base


def test_beta_posterior_with_uniform_prior() -> None:
    posterior = beta_posterior(8, 2)
    assert (posterior.alpha, posterior.beta) == (9, 3)
    assert posterior.mean == pytest.approx(0.75)
    assert beta_posterior(0, 0).mean == 0.5


def test_beta_posterior_refuses_negative_counts_and_improper_priors() -> None:
    with pytest.raises(ValueError):
        beta_posterior(-1, 0)
    with pytest.raises(ValueError):
        beta_posterior(1, 1, prior_alpha=0)


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_beta_posterior_mean_lies_between_prior_and_data(successes: int, failures: int) -> None:
    mean = beta_posterior(successes, failures).mean
    assert 0 < mean < 1
    if successes + failures:
        observed = successes / (successes + failures)
        assert min(observed, 0.5) <= mean + 1e-12 and mean <= max(observed, 0.5) + 1e-12


def _action(
    action_id: str, resources: list[str] | None = None, state: list[str] | None = None
) -> Action:
    return Action(id=action_id, risk_level="LOW", resources_used=resources or [],
                  shared_state_modified=state or [])


def test_dependency_model_charges_50_ms_per_resource_and_100_ms_per_state() -> None:
    mine = [_action("a", ["db", "cache"], ["config"])]
    theirs = [_action("b", ["db"], ["config", "flags"])]
    delta, resources, state = dependency_delta(mine, theirs, InterferenceCosts())
    assert (delta, resources, state) == (150, ["db"], ["config"])
    assert dependency_delta(mine, [_action("c", ["queue"])], InterferenceCosts())[0] == 0


def test_caller_given_ttv_figures_replace_the_dependency_model() -> None:
    agent = AgentPlan(agent_id="b", planned_actions=[_action("x", ["db"])],
                      baseline_ttv_ms=1000, predicted_ttv_ms={"p": 900})
    [effect] = interference("p", [_action("a", ["db"])], [agent], InterferenceCosts())
    assert (effect.basis, effect.delta_ttv_ms) == ("predicted", -100)
    [other] = interference("q", [_action("a", ["db"])], [agent], InterferenceCosts())
    assert (other.basis, other.delta_ttv_ms) == ("dependency_model", 50)


def test_state_conflicts_list_every_pair_writing_the_same_state() -> None:
    agent = AgentPlan(agent_id="b", planned_actions=[_action("x", state=["s1", "s2"])])
    conflicts = state_conflicts([_action("a", state=["s2", "s1"])], [agent])
    assert [(c.action_id, c.other_action_id, c.state) for c in conflicts] == [
        ("a", "x", "s1"), ("a", "x", "s2")
    ]


def test_tighten_takes_the_stricter_bound_each_way() -> None:
    configured = Bounds(max_risk=0.5, max_cost=None, min_success_prob=0.2)
    effective = tighten(configured, Bounds(max_risk=0.9, max_cost=100, min_success_prob=0.1))
    assert effective == Bounds(max_risk=0.5, max_cost=100, min_success_prob=0.2)
    assert tighten(configured, None) == configured


def test_bound_gates_deny_only_beyond_the_bound() -> None:
    assert risk_gate(0.5, 0.5) is None
    assert risk_gate(0.51, 0.5) is not None
    assert cost_gate(150, 150) is None
    assert cost_gate(150.01, 150) is not None
    assert cost_gate(None, 1) is None
    assert success_gate(0.2, 0.2) is None
    assert success_gate(0.19, 0.2) is not None
    assert risk_gate(1.0, None) is None


def _features(ttv: float = 10, cost: float = 1, risk: float = 0.1, p: float = 0.9) -> PathFeatures:
    return PathFeatures(
        ttv_ms=Estimate(value=ttv, source="given"), cost=Estimate(value=cost, source="given"),
        risk=Estimate(value=risk, source="given"), success_prob=Estimate(value=p, source="given"),
    )


def test_rule_breaches_name_each_way_a_path_breaks_a_rule() -> None:
    rule = Rule(forbid_actions=["drop"], forbid_resources=["prod_db"],
                forbid_shared_state=["schema"], max_risk=0.2, max_cost=5, max_ttv_ms=100,
                min_success_prob=0.95)
    path = [_action("drop", ["prod_db"], ["schema"])]
    breaches = rule_breaches(rule, path, _features(ttv=200, cost=10, risk=0.5, p=0.5))
    assert len(breaches) == 7
    assert rule_breaches(rule, [_action("ok")], _features(ttv=50, cost=1, risk=0.1, p=0.99)) == []
