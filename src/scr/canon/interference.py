"""Non-interference: ∀ j ≠ i, admissible(π_i) ⇒ ΔE[TTV_j | π_i] ≤ 0. Pure functions.

Δ for another agent comes from caller-given figures when it gives both its baseline TTV and
its predicted TTV under this candidate; otherwise from the dependency model (shared
resources and shared state, each overlap costing its configured milliseconds). On top, the
pairwise equilibrium check looks at every (path action, planned action) pair of the acting
agent and each other agent: two actions that modify the same shared state cannot both run
without one of them waiting on the other's outcome, whatever the TTV figures say.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scr.canon.config import InterferenceCosts
from scr.canon.model import Action, AgentPlan, Interference


@dataclass(frozen=True, slots=True)
class StateConflict:
    """Two actions of different agents that both modify ``state``."""

    agent_id: str
    action_id: str
    other_action_id: str
    state: str


def _resources(actions: Sequence[Action]) -> set[str]:
    return {resource for action in actions for resource in action.resources_used}


def _state(actions: Sequence[Action]) -> set[str]:
    return {state for action in actions for state in action.shared_state_modified}


def dependency_delta(
    path: Sequence[Action], planned: Sequence[Action], costs: InterferenceCosts
) -> tuple[float, list[str], list[str]]:
    """Δ TTV (ms) the path costs an agent with these planned actions, and what they share."""
    shared_resources = sorted(_resources(path) & _resources(planned))
    shared_state = sorted(_state(path) & _state(planned))
    delta = (
        costs.shared_resource_ms * len(shared_resources)
        + costs.shared_state_ms * len(shared_state)
    )
    return delta, shared_resources, shared_state


def interference(
    candidate_id: str,
    path: Sequence[Action],
    other_agents: Sequence[AgentPlan],
    costs: InterferenceCosts,
) -> list[Interference]:
    """ΔE[TTV_j | path] for every other agent j, in the order the agents were given."""
    found: list[Interference] = []
    for agent in other_agents:
        delta, shared_resources, shared_state = dependency_delta(
            path, agent.planned_actions, costs
        )
        predicted = agent.predicted_ttv_ms.get(candidate_id)
        if predicted is not None and agent.baseline_ttv_ms is not None:
            found.append(Interference(
                agent_id=agent.agent_id, delta_ttv_ms=predicted - agent.baseline_ttv_ms,
                basis="predicted", shared_resources=shared_resources, shared_state=shared_state,
            ))
        else:
            found.append(Interference(
                agent_id=agent.agent_id, delta_ttv_ms=delta, basis="dependency_model",
                shared_resources=shared_resources, shared_state=shared_state,
            ))
    return found


def state_conflicts(
    path: Sequence[Action], other_agents: Sequence[AgentPlan]
) -> list[StateConflict]:
    """The pairwise equilibrium check: action pairs of two agents modifying the same state."""
    conflicts: list[StateConflict] = []
    for agent in other_agents:
        for action in path:
            mine = set(action.shared_state_modified)
            for planned in agent.planned_actions:
                for state in sorted(mine.intersection(planned.shared_state_modified)):
                    conflicts.append(StateConflict(agent.agent_id, action.id, planned.id, state))
    return conflicts
