"""Evidence from the ledger: what actions took and achieved, and what supports canon items.

Evidence about an action is every SESSION_COMPLETION entry whose event carries
``metadata.custom_tags.action == <action id>`` (duration = ``session.duration_ms``, cost =
``usage.estimated_cost_usd``, success = ``outcome.status == "success"``) and every
OBSERVATION entry whose payload names it in ``action`` (see ``model.Observation``).
Evidence about a canon item is every OBSERVATION naming it in ``item_id``, and every session
completion tagged ``custom_tags.canon_item`` with ``verdict`` (``support``|``contradict``)
and optionally ``challenge: "true"`` and ``context``.

Estimates use an action's most recent ``window`` entries; each names the entries it used.
Costs are summed as exact decimals and only the mean becomes a float for scoring. A cost is
an amount in the bounds of ``scr.money``; one outside them (a ledger written before the
bound may hold ``1E+100000``) is not evidence of a cost: it is skipped, with a warning naming
the entry, rather than clamped to a figure nobody reported, so no estimate is ever infinite.
"""

from __future__ import annotations

import decimal
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec

from scr.canon.beta import beta_posterior
from scr.canon.config import BetaPrior, RiskLevels
from scr.canon.ledger import LedgerEntryLike
from scr.canon.model import Action, Estimate, EstimateSource, Features, PathFeatures
from scr.money import MAX_INTEGER_DIGITS, USD_FRACTION_DIGITS, read_amount

log = logging.getLogger("scr.canon")

SESSION_COMPLETION = "SESSION_COMPLETION"
OBSERVATION = "OBSERVATION"
EVIDENCE_KINDS = (SESSION_COMPLETION, OBSERVATION)
MIN_SIMILAR_SAMPLES = 3  # similar sessions' samples of an action that replace the recent window
# Digits of an exact sum of up to 10**7 amounts (more than the largest evidence window).
_SUM_DIGITS = MAX_INTEGER_DIGITS + 7 + USD_FRACTION_DIGITS


@dataclass(frozen=True, slots=True)
class Sample:
    """One entry's evidence about an action; a field is ``None`` when the entry lacks it."""

    entry_id: int
    success: bool | None
    duration_ms: float | None
    cost: Decimal | None


@dataclass(frozen=True, slots=True)
class ItemEvidence:
    """One entry's verdict on a canon item, and what makes it independent of others."""

    entry_id: int
    verdict: str
    challenge: bool
    session_id: str | None
    user_id: str | None
    context: str | None


@dataclass(frozen=True, slots=True)
class ActionEstimates:
    """An action's estimated TTV, cost and success probability (``None``: no evidence)."""

    ttv_ms: Estimate | None
    cost: Estimate | None
    success_prob: Estimate


def _cost(entry_id: int, value: Any) -> Decimal | None:
    """The entry's cost, if it is an amount in bounds; a value that is not is logged."""
    if value is None:
        return None
    amount = read_amount(value)
    if amount is None:
        log.warning("ledger entry %d: cost %.40r is not an amount in bounds (scr.money); "
                    "not used as evidence", entry_id, value)
    return amount


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value >= 0 else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _part(event: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    part = event.get(name)
    return part if isinstance(part, Mapping) else {}


def completion_evidence(
    entry_id: int, event: Mapping[str, Any]
) -> tuple[str | None, Sample | None, str | None, ItemEvidence | None]:
    """(action id, sample, canon item id, item evidence) from a session completion payload."""
    metadata = event.get("metadata")
    tags = metadata.get("custom_tags") if isinstance(metadata, Mapping) else None
    if not isinstance(tags, Mapping):
        return None, None, None, None
    session, user = _part(event, "session"), _part(event, "user")
    usage, outcome = _part(event, "usage"), _part(event, "outcome")
    action = _text(tags.get("action"))
    sample = None
    if action is not None:
        status = outcome.get("status")
        sample = Sample(
            entry_id,
            status == "success" if isinstance(status, str) else None,
            _number(session.get("duration_ms")),
            _cost(entry_id, usage.get("estimated_cost_usd")),
        )
    item_id = _text(tags.get("canon_item"))
    verdict = tags.get("verdict")
    item = None
    if item_id is not None and verdict in ("support", "contradict"):
        item = ItemEvidence(
            entry_id, verdict, tags.get("challenge") == "true",
            _text(session.get("session_id")), _text(user.get("user_id")), _text(tags.get("context")),
        )
    return action, sample, item_id, item


def observation_evidence(
    entry_id: int, observation: Mapping[str, Any]
) -> tuple[str | None, Sample | None, str | None, ItemEvidence | None]:
    """(action id, sample, canon item id, item evidence) from an OBSERVATION payload."""
    action = _text(observation.get("action"))
    sample = None
    if action is not None:
        outcome = observation.get("outcome")
        sample = Sample(
            entry_id,
            outcome == "success" if outcome in ("success", "failure") else None,
            _number(observation.get("duration_ms")),
            _cost(entry_id, observation.get("cost")),
        )
    item_id = _text(observation.get("item_id"))
    verdict = observation.get("verdict")
    item = None
    if item_id is not None and verdict in ("support", "contradict"):
        item = ItemEvidence(
            entry_id, verdict, observation.get("challenge") is True,
            _text(observation.get("session_id")), _text(observation.get("user_id")),
            _text(observation.get("context")),
        )
    return action, sample, item_id, item


def action_estimates(samples: Sequence[Sample], prior: BetaPrior) -> ActionEstimates:
    """Mean duration and cost, and the Beta posterior mean of success, over ``samples``."""
    timed = [s for s in samples if s.duration_ms is not None]
    costed = [s for s in samples if s.cost is not None]
    judged = [s for s in samples if s.success is not None]
    ttv = None
    if timed:
        ttv = Estimate(
            value=sum(s.duration_ms for s in timed if s.duration_ms is not None) / len(timed),
            source="evidence", evidence_count=len(timed), entry_ids=[s.entry_id for s in timed],
        )
    cost = None
    if costed:
        with decimal.localcontext(prec=_SUM_DIGITS):
            total = sum((s.cost for s in costed if s.cost is not None), Decimal(0))
            mean = total / len(costed)
        cost = Estimate(
            value=float(mean), source="evidence", evidence_count=len(costed),
            entry_ids=[s.entry_id for s in costed],
        )
    successes = sum(1 for s in judged if s.success)
    posterior = beta_posterior(successes, len(judged) - successes, prior.alpha, prior.beta)
    success = Estimate(
        value=posterior.mean, source="evidence" if judged else "prior",
        evidence_count=len(judged), entry_ids=[s.entry_id for s in judged],
        alpha=posterior.alpha, beta=posterior.beta,
    )
    return ActionEstimates(ttv, cost, success)


class EvidenceBook:
    """Evidence folded from the ledger in order; keeps each action's last ``window`` samples."""

    def __init__(self, window: int, prior: BetaPrior) -> None:
        self.window = window
        self.prior = prior
        self._samples: dict[str, deque[Sample]] = {}
        self._estimates: dict[str, ActionEstimates] = {}
        self._items: dict[str, list[ItemEvidence]] = {}

    def add(self, entry: LedgerEntryLike) -> None:
        """Fold one SESSION_COMPLETION or OBSERVATION entry (others are ignored)."""
        payload = entry.payload
        if not isinstance(payload, Mapping):
            return
        if entry.kind == SESSION_COMPLETION:
            action, sample, item_id, item = completion_evidence(entry.id, payload)
        elif entry.kind == OBSERVATION:
            action, sample, item_id, item = observation_evidence(entry.id, payload)
        else:
            return
        if action is not None and sample is not None:
            self._samples.setdefault(action, deque(maxlen=self.window)).append(sample)
            self._estimates.pop(action, None)
        if item_id is not None and item is not None:
            self._items.setdefault(item_id, []).append(item)

    def estimates(self, action_id: str) -> ActionEstimates:
        """The action's current estimates (cached until new evidence about it arrives)."""
        known = self._estimates.get(action_id)
        if known is None:
            known = action_estimates(self._samples.get(action_id, ()), self.prior)
            self._estimates[action_id] = known
        return known

    def item_evidence(self, item_id: str) -> list[ItemEvidence]:
        """Every verdict recorded about a canon item, in ledger order."""
        return list(self._items.get(item_id, ()))


def similar_first(entries: Sequence[LedgerEntryLike], otherwise: Callable[[str], ActionEstimates],
                  prior: BetaPrior) -> Callable[[str], ActionEstimates]:
    """Estimates from the evidence of similar past sessions (``entries``: their session
    completions), for each action they hold at least ``MIN_SIMILAR_SAMPLES`` samples of;
    ``otherwise`` for the others. Such an estimate's source is ``similar_sessions`` and it
    lists the entries it used."""
    samples: dict[str, list[Sample]] = {}
    for entry in entries:
        if entry.kind == SESSION_COMPLETION and isinstance(entry.payload, Mapping):
            action, sample, _, _ = completion_evidence(entry.id, entry.payload)
            if action is not None and sample is not None:
                samples.setdefault(action, []).append(sample)

    def estimate(action_id: str) -> ActionEstimates:
        found = samples.get(action_id, [])
        if len(found) < MIN_SIMILAR_SAMPLES:
            return otherwise(action_id)
        estimates = action_estimates(found, prior)
        return ActionEstimates(_similar(estimates.ttv_ms), _similar(estimates.cost),
                               _similar(estimates.success_prob))

    return estimate


def _similar(estimate: Any) -> Any:
    if estimate is None or estimate.source != "evidence":
        return estimate
    return msgspec.structs.replace(estimate, source="similar_sessions")


def _source(parts: Sequence[Estimate]) -> EstimateSource:
    """The source of estimates combined: theirs when they share it, else ``evidence``."""
    sources = {part.source for part in parts if part.source != "prior"}
    return sources.pop() if len(sources) == 1 else ("prior" if not sources else "evidence")


def _sum_estimates(parts: Sequence[Estimate | None]) -> Estimate | None:
    if not parts or any(part is None for part in parts):
        return None
    known = [part for part in parts if part is not None]
    return Estimate(
        value=sum(part.value for part in known), source=_source(known),
        evidence_count=sum(part.evidence_count for part in known),
        entry_ids=sorted({i for part in known for i in part.entry_ids}),
    )


def path_features(
    actions: Sequence[Action],
    given: Features | None,
    estimate: Callable[[str], ActionEstimates],
    risk_levels: RiskLevels,
) -> PathFeatures:
    """A path's features: the caller's where given, else aggregated per action.

    ``estimate`` gives an action's estimates from evidence; it is asked only for features
    the caller did not give.
    TTV and cost add up along the path; risk is the riskiest action's level; success is the
    product of the actions' success probabilities.
    """
    given = given or Features()
    if given.ttv_ms is not None:
        ttv: Estimate | None = Estimate(value=given.ttv_ms, source="given")
    else:
        ttv = _sum_estimates([estimate(a.id).ttv_ms for a in actions])
    if given.cost is not None:
        cost: Estimate | None = Estimate(value=given.cost, source="given")
    else:
        cost = _sum_estimates([estimate(a.id).cost for a in actions])
    if given.risk is not None:
        risk = Estimate(value=given.risk, source="given")
    else:
        risk = Estimate(
            value=max(risk_levels.of(a.risk_level) for a in actions), source="risk_level"
        )
    if given.success_prob is not None:
        success = Estimate(value=given.success_prob, source="given")
    else:
        parts = [estimate(a.id).success_prob for a in actions]
        product = 1.0
        for part in parts:
            product *= part.value
        success = Estimate(
            value=product,
            source=_source(parts),
            evidence_count=sum(p.evidence_count for p in parts),
            entry_ids=sorted({i for p in parts for i in p.entry_ids}),
            alpha=parts[0].alpha if len(parts) == 1 else None,
            beta=parts[0].beta if len(parts) == 1 else None,
        )
    return PathFeatures(risk=risk, success_prob=success, ttv_ms=ttv, cost=cost)
