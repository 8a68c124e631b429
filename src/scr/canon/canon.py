"""``Canon``: one tenant's decision layer over a ledger, usable without a server.

The ledger is the store. A ``Canon`` folds the tenant's entries as it needs them (canon
items on every call; evidence when a feature must be estimated; decisions when a promotion
replays them), and appends one entry per decision (DECIDE, or DENY when none is
admissible), per promotion decision (PROMOTION, approved or not), per item change
(STRUCTURE_UPDATE) and per observation (OBSERVATION). The first call that uses a tenant's
canon seeds its six hard-fail invariants. Methods are thread-safe.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec

from scr.canon.audit import audit_ledger
from scr.canon.config import CanonConfig
from scr.canon.decide import DecisionInputs, evaluate, tighten
from scr.canon.evidence import (
    EVIDENCE_KINDS,
    ActionEstimates,
    EvidenceBook,
    path_features,
    similar_first,
)
from scr.canon.items import (
    ITEM_KINDS,
    PROMOTION,
    STRUCTURE_UPDATE,
    CanonState,
    PromotionRecord,
    item_hash,
    next_level,
    structure_update_payload,
)
from scr.canon.ledger import CanonLedger, LedgerEntryLike, utc_now
from scr.canon.model import (
    AuditReport,
    Candidate,
    CanonItem,
    DecideRequest,
    Decision,
    Features,
    ItemKind,
    ItemSpec,
    Level,
    Observation,
    PromotionResult,
    WhyNot,
)
from scr.canon.promotion import RecordedDecision, promotion_tests
from scr.canon.record import (
    RecordedOutcome,
    build_decision,
    decision_payload,
    outcome_of,
    parse_trace_id,
    read_record,
    referenced_ids,
)
from scr.canon.seeds import SEED_IDS, seed_items
from scr.canon.validation import validated
from scr.errors import BadRequest, ConfigError, Detail, Forbidden, NotFound
from scr.money import amount_problem, money_problem

DECISION_KINDS = ("DECIDE", "DENY")
OBSERVATION = "OBSERVATION"


def _fully_given(features: Features | None) -> bool:
    return (
        features is not None and features.ttv_ms is not None and features.cost is not None
        and features.success_prob is not None
    )


def named_candidates(request: DecideRequest) -> list[Candidate]:
    """The candidates with their ids filled in; a repeated id is a ``BadRequest``."""
    named: list[Candidate] = []
    seen: dict[str, int] = {}
    problems: list[Detail] = []
    for index, candidate in enumerate(request.candidates):
        candidate_id = candidate.id or "+".join(a.id for a in candidate.actions)
        if candidate_id in seen:
            problems.append(Detail(
                f"$.candidates[{index}].id",
                f"candidate id '{candidate_id}' repeats candidate {seen[candidate_id]}",
            ))
        seen[candidate_id] = index
        named.append(msgspec.structs.replace(candidate, id=candidate_id))
    for index, agent in enumerate(request.other_agents):
        if agent.agent_id == request.agent_id:
            problems.append(Detail(f"$.other_agents[{index}].agent_id",
                                   "the acting agent cannot be one of the other agents"))
        for name in agent.predicted_ttv_ms:
            if name not in seen:
                problems.append(Detail(f"$.other_agents[{index}].predicted_ttv_ms",
                                       f"'{name}' is not a candidate id"))
    agent_ids = [agent.agent_id for agent in request.other_agents]
    if len(set(agent_ids)) != len(agent_ids):
        problems.append(Detail("$.other_agents", "agent ids repeat"))
    if problems:
        raise BadRequest(f"invalid decide request: {problems[0].message}", problems)
    return named


def _item_problems(spec: ItemSpec) -> list[Detail]:
    problems = []
    if spec.kind == "INVARIANT" and spec.severity is None:
        problems.append(Detail("$.severity", "an INVARIANT needs HARD_FAIL or SOFT_FAIL"))
    if spec.kind != "INVARIANT" and spec.severity is not None:
        problems.append(Detail("$.severity", f"a {spec.kind} has no severity"))
    if spec.kind == "DEFINITION" and not spec.rule.is_empty():
        problems.append(Detail("$.rule", "a DEFINITION has no rule"))
    if spec.level != "EVIDENCE" and spec.provenance.source != "import":
        problems.append(Detail(
            "$.level", "only an import may enter above EVIDENCE; promote the item instead"
        ))
    if spec.provenance.hash and spec.provenance.hash != item_hash(spec):
        problems.append(Detail("$.provenance.hash",
                               f"does not match the item's content hash {item_hash(spec)}"))
    return problems


def _observation_problems(observation: Observation) -> list[Detail]:
    problems = []
    if observation.action is None and observation.item_id is None:
        problems.append(Detail("$", "name an action or an item_id"))
    if observation.item_id is not None and observation.verdict is None:
        problems.append(Detail("$.verdict", "an observation of an item needs a verdict"))
    if observation.action is not None and (
        observation.outcome is None and observation.duration_ms is None
        and observation.cost is None
    ):
        problems.append(Detail("$", "an observation of an action needs an outcome, "
                                    "a duration_ms or a cost"))
    return problems


def _cost_problems(valid: Observation, given: Observation | Mapping[str, Any]) -> list[Detail]:
    """The money rule (``scr.money``) on an observation's cost: as written when it was given
    as JSON values (a decimal string's spelling is part of the rule), else by its value."""
    written = given.get("cost") if isinstance(given, Mapping) else None
    if isinstance(written, str | Decimal):
        problem = money_problem(written)
    else:
        problem = None if valid.cost is None else amount_problem(valid.cost)
    return [] if problem is None else [Detail("$.cost", problem)]


# recall(tenant, text, k): the session completions of the k past sessions most similar to
# ``text`` (``scr.enrich``)
Recall = Callable[[str, str, int], list[LedgerEntryLike]]
SIMILAR_SESSIONS = 10


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A decision made but not yet ledgered."""

    kind: str
    payload: dict[str, Any]
    inputs: DecisionInputs
    outcome: RecordedOutcome
    actor: str
    ref: str


class Canon:
    """The Bickford Canon for one tenant, over a ``CanonLedger``."""

    def __init__(
        self, ledger: CanonLedger, tenant: str, config: CanonConfig | None = None
    ) -> None:
        self.ledger = ledger
        self.tenant = tenant
        try:  # a config built in Python skips its constraints: check it once, here
            self.config = validated(CanonConfig, config or CanonConfig(), "canon config")
        except BadRequest as error:
            raise ConfigError(error.message, error.details) from None
        self._lock = threading.RLock()
        self._state = CanonState()
        self._evidence = EvidenceBook(self.config.evidence_window, self.config.prior)
        self._decisions: deque[LedgerEntryLike] = deque(
            maxlen=self.config.promotion.replay_window
        )
        self._decoded: dict[int, RecordedDecision] = {}
        self._items_cursor = self._evidence_cursor = self._decisions_cursor = 0
        self._seeded = False
        self.recall: Recall | None = None  # similar past sessions, with enrichment on

    # ----- reading the ledger -------------------------------------------------------------

    def _refresh_items(self) -> None:
        for entry in self.ledger.read(self.tenant, ITEM_KINDS, after=self._items_cursor):
            self._state.apply(entry)
            self._items_cursor = entry.id
        if self._seeded:
            return
        self._seeded = True
        missing = [spec for spec in seed_items() if spec.id not in self._state.items]
        for spec in missing:
            self._append_item(_new_item(spec), actor="scr")
        if missing:
            self._refresh_items()

    def _refresh_evidence(self) -> None:
        for entry in self.ledger.read(self.tenant, EVIDENCE_KINDS, after=self._evidence_cursor):
            self._evidence.add(entry)
            self._evidence_cursor = entry.id

    def _recorded_decisions(self) -> list[RecordedDecision]:
        for entry in self.ledger.read(self.tenant, DECISION_KINDS, after=self._decisions_cursor):
            self._decisions.append(entry)
            self._decisions_cursor = entry.id
        recorded = []
        for entry in self._decisions:
            known = self._decoded.get(entry.id)
            if known is None:
                inputs, _ = read_record(entry)
                known = RecordedDecision(entry.id, inputs)
            recorded.append(known)
        self._decoded = {decision.entry_id: decision for decision in recorded}
        return recorded

    def _append_item(self, item: CanonItem, actor: str) -> int:
        return self.ledger.append(
            self.tenant, STRUCTURE_UPDATE, structure_update_payload(item), actor=actor,
            source=item.provenance.source, ref=item.id,
        )

    # ----- canon items -----------------------------------------------------------------------

    def items(self, level: Level | None = None, kind: ItemKind | None = None) -> list[CanonItem]:
        """The tenant's canon items by id, optionally only those at ``level`` or of ``kind``."""
        with self._lock:
            self._refresh_items()
            return [
                msgspec.structs.replace(item)
                for item_id, item in sorted(self._state.items.items())
                if (level is None or item.level == level) and (kind is None or item.kind == kind)
            ]

    def item(self, item_id: str) -> CanonItem:
        """One canon item; ``NotFound`` if the tenant has none with that id."""
        with self._lock:
            self._refresh_items()
            item = self._state.items.get(item_id)
            if item is None:
                raise NotFound(f"no canon item '{item_id}'")
            return msgspec.structs.replace(item)

    def add_item(self, spec: ItemSpec | Mapping[str, Any], *, actor: str = "api") -> CanonItem:
        """Add or change a canon item (ledgered as STRUCTURE_UPDATE) and return it.

        It enters at EVIDENCE (an ``import`` may name a level); changing an item's content
        drops it back to EVIDENCE. Adding the same content again changes nothing.
        """
        valid = validated(ItemSpec, spec, "canon item")
        if valid.id in SEED_IDS:
            raise Forbidden(f"{valid.id} is a built-in invariant and cannot be changed")
        problems = _item_problems(valid)
        if problems:
            raise BadRequest(f"invalid canon item: {problems[0].message}", problems)
        item = _new_item(valid)
        with self._lock:
            self._refresh_items()
            known = self._state.items.get(item.id)
            if known is not None and item_hash(known) == item.provenance.hash and (
                valid.provenance.source != "import" or known.level == valid.level
            ):
                return msgspec.structs.replace(known)
            self._append_item(item, actor)
            self._refresh_items()
            return msgspec.structs.replace(self._state.items[item.id])

    # ----- evidence ---------------------------------------------------------------------------

    def observe(self, observation: Observation | Mapping[str, Any], *, actor: str = "api") -> int:
        """Record evidence about an action or a canon item (an OBSERVATION entry); its id."""
        valid = validated(Observation, observation, "observation")
        problems = _cost_problems(valid, observation) + _observation_problems(valid)
        if problems:
            raise BadRequest(f"invalid observation: {problems[0].message}", problems)
        return self.ledger.append(
            self.tenant, OBSERVATION, msgspec.to_builtins(valid), actor=actor, source="canon",
            ref=valid.action or valid.item_id or "",
        )

    # ----- decisions --------------------------------------------------------------------------

    def decide(
        self, request: DecideRequest | Mapping[str, Any], *, actor: str | None = None
    ) -> Decision:
        """Choose the next action: gate, score and select; ledger the decision; answer it."""
        return self.decide_valid(validated(DecideRequest, request, "decide request"), actor=actor)

    def decide_valid(self, request: DecideRequest, *, actor: str | None = None) -> Decision:
        """``decide`` for a request already validated (decoded by msgspec from JSON)."""
        similar = self._similar_sessions(request)
        with self._lock:
            prepared = self._prepare_decision(request, actor, similar)
            entry_id = self.ledger.append(
                self.tenant, prepared.kind, prepared.payload, actor=prepared.actor,
                source="canon", ref=prepared.ref,
            )
        return build_decision(self.tenant, entry_id, prepared.inputs, prepared.outcome)

    async def decide_async(
        self, request: DecideRequest, *, actor: str | None = None
    ) -> Decision:
        """``decide_valid`` on an event loop: the durable append is awaited, not blocked on.

        A ledger with ``append_async`` (the durable store) takes the entry through the group
        committer without tying up a thread; the decision is still durable before it is
        answered. Other ledgers are called in a worker thread.
        """
        append = getattr(self.ledger, "append_async", None)
        if append is None:
            return await asyncio.to_thread(self.decide_valid, request, actor=actor)
        similar = await asyncio.to_thread(self._similar_sessions, request)
        with self._lock:
            prepared = self._prepare_decision(request, actor, similar)
        entry_id: int = await append(
            self.tenant, prepared.kind, prepared.payload, actor=prepared.actor,
            source="canon", ref=prepared.ref,
        )
        return build_decision(self.tenant, entry_id, prepared.inputs, prepared.outcome)

    def _similar_sessions(self, request: DecideRequest) -> list[LedgerEntryLike]:
        """The session completions of the past sessions most like ``context.text`` (none
        without enrichment, text, or a feature to estimate)."""
        text = request.context.text if request.context is not None else None
        if self.recall is None or not text:
            return []
        if all(_fully_given(candidate.features) for candidate in named_candidates(request)):
            return []
        return self.recall(self.tenant, text, SIMILAR_SESSIONS)

    def _prepare_decision(self, request: DecideRequest, actor: str | None,
                          similar: list[LedgerEntryLike]) -> _Prepared:
        """Gate, score and select (under the lock); what to ledger and answer."""
        candidates = named_candidates(request)
        config = self.config
        self._refresh_items()
        if not all(_fully_given(candidate.features) for candidate in candidates):
            self._refresh_evidence()
        estimate: Callable[[str], ActionEstimates] = self._evidence.estimates
        if similar:
            estimate = similar_first(similar, estimate, config.prior)
        features = [
            path_features(c.actions, c.features, estimate, config.risk_levels)
            for c in candidates
        ]
        inputs = DecisionInputs(
            ts=utc_now(), goal=request.goal, agent_id=request.agent_id,
            candidates=candidates, features=features, canon_refs=request.canon_refs,
            bounds=tighten(config.bounds, request.bounds),
            weights=request.weights or config.weights,
            other_agents=request.other_agents, interference=config.interference,
            p_floor=config.p_floor, soft_fail_penalty=config.soft_fail_penalty,
            canon=self._state.snapshot(referenced_ids(request.canon_refs, candidates)),
        )
        outcome = outcome_of(evaluate(inputs))
        return _Prepared(
            kind="DECIDE" if outcome.status == "selected" else "DENY",
            payload=decision_payload(inputs, outcome),
            inputs=inputs,
            outcome=outcome,
            actor=actor or f"agent:{request.agent_id}",
            ref=request.agent_id,
        )

    def _decision_entry(self, entry_id: int) -> LedgerEntryLike:
        for entry in self.ledger.read(self.tenant, DECISION_KINDS, after=entry_id - 1):
            if entry.id == entry_id:
                return entry
            break
        raise NotFound(f"no decision {entry_id}")

    def decision(self, entry_id: int) -> Decision:
        """A decision as its ledger entry recorded it."""
        entry = self._decision_entry(entry_id)
        inputs, outcome = read_record(entry)
        return build_decision(self.tenant, entry.id, inputs, outcome)

    def replay(self, entry_id: int) -> Decision:
        """A decision recomputed from the inputs its ledger entry recorded."""
        entry = self._decision_entry(entry_id)
        inputs, _ = read_record(entry)
        return build_decision(self.tenant, entry.id, inputs, outcome_of(evaluate(inputs)))

    def why_not(self, trace_id: str) -> WhyNot:
        """A denial trace by id (``wn-<entry id>-<n>``); ``NotFound`` if there is none."""
        parsed = parse_trace_id(trace_id)
        if parsed is None:
            raise NotFound(f"no trace '{trace_id}'")
        entry_id, index = parsed
        try:
            decision = self.decision(entry_id)
        except NotFound:
            raise NotFound(f"no trace '{trace_id}'") from None
        if index >= len(decision.traces):
            raise NotFound(f"no trace '{trace_id}'")
        return decision.traces[index]

    # ----- promotion --------------------------------------------------------------------------

    def promote(
        self, item_id: str, *, to_level: Level | None = None, reason: str = "",
        actor: str = "api",
    ) -> PromotionResult:
        """Run the promotion gate for ``item_id`` and ledger the decision, approved or not.

        The item moves one level up only if all four tests pass; naming a ``to_level`` other
        than the next level is refused (and ledgered as refused).
        """
        with self._lock:
            self._refresh_items()
            item = self._state.items.get(item_id)
            if item is None:
                raise NotFound(f"no canon item '{item_id}'")
            self._refresh_evidence()
            recorded = self._recorded_decisions()
            as_of = max(self._items_cursor, self._evidence_cursor, self._decisions_cursor)
            target = next_level(item.level)
            thresholds = self.config.promotion
            tests = promotion_tests(
                item.id, self._evidence.item_evidence(item.id), recorded, self._state, thresholds
            )
            if target is None:
                approved, message = False, f"{item.id} is already at CANON"
            elif to_level is not None and to_level != target:
                approved = False
                message = (f"{item.id} is at {item.level}: it can move to {target} only, "
                           f"not {to_level}")
            elif not tests.all_passed():
                approved = False
                failed = [t for t in (tests.resistance, tests.reproducibility,
                                      tests.invariant_safety, tests.feasibility_impact)
                          if not t.passed]
                message = "refused: " + "; ".join(f"{t.name}: {t.message}" for t in failed)
            else:
                approved, message = True, f"{item.id} promoted from {item.level} to {target}"
            record = PromotionRecord(
                item_id=item.id, from_level=item.level, to_level=to_level or target,
                approved=approved, tests=tests, item_hash=item_hash(item), as_of=as_of,
                thresholds=thresholds, reason=reason, message=message,
            )
            from_level, ts = item.level, utc_now()
            entry_id = self.ledger.append(
                self.tenant, PROMOTION, msgspec.to_builtins(record), actor=actor,
                source="canon", ref=item.id,
            )
            self._refresh_items()
            level = self._state.items[item.id].level
        return PromotionResult(
            entry_id=entry_id, ts=ts, item_id=item.id, from_level=from_level,
            to_level=record.to_level, approved=approved, level=level, tests=tests,
            message=message,
        )

    # ----- audit --------------------------------------------------------------------------------

    def audit(self) -> AuditReport:
        """The six hard-fail invariants checked over the tenant's whole ledger."""
        return audit_ledger(self.ledger, self.tenant, self.config)


def _new_item(spec: ItemSpec) -> CanonItem:
    provenance = msgspec.structs.replace(spec.provenance, hash=item_hash(spec))
    return CanonItem(
        id=spec.id, kind=spec.kind, title=spec.title, ts=spec.ts, provenance=provenance,
        statement=spec.statement, severity=spec.severity, rule=spec.rule, level=spec.level,
    )
