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


@dataclass(frozen=True, slots=True)
class Footprint:
    """What some actions touch: the resources they use and the shared state they modify."""

    resources: frozenset[str]
    state: frozenset[str]


def footprint(actions: Sequence[Action]) -> Footprint:
    """The footprint of a path or of an agent's planned actions."""
    return Footprint(
        frozenset(resource for action in actions for resource in action.resources_used),
        frozenset(state for action in actions for state in action.shared_state_modified),
    )


def _delta(
    mine: Footprint, theirs: Footprint, costs: InterferenceCosts
) -> tuple[float, list[str], list[str]]:
    shared_resources = sorted(mine.resources & theirs.resources) if mine.resources else []
    shared_state = sorted(mine.state & theirs.state) if mine.state else []
    delta = (
        costs.shared_resource_ms * len(shared_resources)
        + costs.shared_state_ms * len(shared_state)
    )
    return delta, shared_resources, shared_state


def dependency_delta(
    path: Sequence[Action], planned: Sequence[Action], costs: InterferenceCosts
) -> tuple[float, list[str], list[str]]:
    """Δ TTV (ms) the path costs an agent with these planned actions, and what they share."""
    return _delta(footprint(path), footprint(planned), costs)


def interference(
    candidate_id: str,
    path: Sequence[Action],
    other_agents: Sequence[AgentPlan],
    costs: InterferenceCosts,
    planned: Sequence[Footprint] | None = None,
) -> list[Interference]:
    """ΔE[TTV_j | path] for every other agent j, in the order the agents were given.

    ``planned`` may give the agents' footprints, computed once for many candidates.
    """
    found: list[Interference] = []
    mine = footprint(path)
    theirs = planned if planned is not None else [footprint(a.planned_actions) for a in other_agents]
    for agent, their_footprint in zip(other_agents, theirs, strict=True):
        delta, shared_resources, shared_state = _delta(mine, their_footprint, costs)
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
    if not any(action.shared_state_modified for action in path):
        return conflicts
    for agent in other_agents:
        for action in path:
            mine = set(action.shared_state_modified)
            for planned in agent.planned_actions:
                for state in sorted(mine.intersection(planned.shared_state_modified)):
                    conflicts.append(StateConflict(agent.agent_id, action.id, planned.id, state))
    return conflicts
