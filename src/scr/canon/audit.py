"""The audit: the six hard-fail invariants checked over a tenant's whole ledger.

It folds the ledger in order through the same functions the canon decides with, so what it
checks is what the canon did, not what an entry claims:

- INV_TS_MANDATORY: every entry, canon item and decision has a valid RFC 3339 timestamp.
- INV_CANON_ONLY_EXECUTION: every decision saw the canon the ledger had at that point, and
  its selected path's prerequisites and cited refs were CANON there.
- INV_PROMOTION_GATE: every level change is an approved one-step PROMOTION whose tests pass
  when recomputed from the ledger as of that promotion; nothing else changed a level.
- INV_NON_INTERFERENCE: no selected path slows another agent (recomputed).
- INV_TRUST_DENIAL_TRACE: every denied candidate has a trace, every decision is ledgered
  as DECIDE (or DENY when none is admissible), and replaying it gives the same answer.
- INV_SESSION_COMPLETION_LEDGER: every SESSION_COMPLETION is a valid v1.2 event of its
  tenant, once; with a store that indexes accepted events, every one is a ledger entry.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from scr.canon.config import CanonConfig
from scr.canon.decide import DecisionInputs, evaluate
from scr.canon.evidence import EvidenceBook
from scr.canon.interference import interference, state_conflicts
from scr.canon.items import PROMOTION, CanonState, PromotionRecord, next_level
from scr.canon.ledger import AcceptedEvents, CanonLedger, LedgerEntryLike
from scr.canon.model import AuditReport, InvariantCheck, Violation
from scr.canon.promotion import RecordedDecision, promotion_tests
from scr.canon.record import RecordedOutcome, referenced_ids
from scr.canon.seeds import (
    INV_CANON_ONLY_EXECUTION,
    INV_NON_INTERFERENCE,
    INV_PROMOTION_GATE,
    INV_SESSION_COMPLETION_LEDGER,
    INV_TRUST_DENIAL_TRACE,
    INV_TS_MANDATORY,
    SEED_IDS,
)
from scr.log.entry import Kind
from scr.schema import InvalidEvent, convert_event

ALL_KINDS = tuple(kind.value for kind in Kind)
DECISION_KINDS = (Kind.DECIDE.value, Kind.DENY.value)
ORDER = (
    INV_TS_MANDATORY, INV_CANON_ONLY_EXECUTION, INV_PROMOTION_GATE, INV_NON_INTERFERENCE,
    INV_TRUST_DENIAL_TRACE, INV_SESSION_COMPLETION_LEDGER,
)


def valid_ts(value: Any) -> bool:
    """An RFC 3339 timestamp with an offset (``Z`` or ``±hh:mm``)."""
    if not isinstance(value, str) or len(value) < 20 or "T" not in value:
        return False
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed.tzinfo is not None


class _Audit:
    def __init__(self, tenant: str, config: CanonConfig) -> None:
        self.tenant = tenant
        self.config = config
        self.state = CanonState()
        self.evidence = EvidenceBook(config.evidence_window, config.prior)
        self.decisions: deque[RecordedDecision] = deque(maxlen=config.promotion.replay_window)
        self.completions: dict[str, int] = {}
        self.checked = dict.fromkeys(ORDER, 0)
        self.violations: dict[str, list[Violation]] = {inv: [] for inv in ORDER}
        self.entries = 0

    def breach(self, invariant: str, message: str, entry_id: int | None = None) -> None:
        self.violations[invariant].append(Violation(message=message, entry_id=entry_id))

    def fold(self, entry: LedgerEntryLike) -> None:
        self.entries += 1
        self.checked[INV_TS_MANDATORY] += 1
        if not valid_ts(entry.ts):
            self.breach(INV_TS_MANDATORY, f"entry has no valid ts: {entry.ts!r}", entry.id)
        if entry.kind == PROMOTION:
            self._promotion(entry)
        if entry.kind in ("STRUCTURE_UPDATE", PROMOTION):
            self.checked[INV_PROMOTION_GATE] += 1
            for found in self.state.apply(entry):
                self.breach(found.invariant_id, found.message, found.entry_id)
        elif entry.kind == "SESSION_COMPLETION":
            self._completion(entry)
            self.evidence.add(entry)
        elif entry.kind == "OBSERVATION":
            self.evidence.add(entry)
        elif entry.kind in DECISION_KINDS:
            self._decision(entry)

    def _promotion(self, entry: LedgerEntryLike) -> None:
        """Recompute an approved promotion's tests from the ledger as of its ``as_of``."""
        try:
            record = msgspec.convert(entry.payload, PromotionRecord)
        except msgspec.ValidationError:
            return  # the fold reports it
        item = self.state.items.get(record.item_id)
        if not record.approved or item is None or record.tests is None:
            return
        if record.to_level != next_level(item.level):
            return  # the fold reports it
        evidence = [e for e in self.evidence.item_evidence(item.id) if e.entry_id <= record.as_of]
        recorded = [d for d in self.decisions if d.entry_id <= record.as_of]
        window = recorded[-record.thresholds.replay_window:]
        tests = promotion_tests(item.id, evidence, window, self.state, record.thresholds)
        if not tests.all_passed():
            failed = [
                t.name for t in (tests.resistance, tests.reproducibility, tests.invariant_safety,
                                 tests.feasibility_impact) if not t.passed
            ]
            self.breach(INV_PROMOTION_GATE,
                        f"approved promotion of {item.id}, but recomputed from the ledger "
                        f"these tests fail: {', '.join(failed)}", entry.id)

    def _completion(self, entry: LedgerEntryLike) -> None:
        self.checked[INV_SESSION_COMPLETION_LEDGER] += 1
        payload = entry.payload
        # Its times are judged against the clock when it was committed, not the audit's.
        committed = datetime.fromisoformat(entry.ts) if valid_ts(entry.ts) else None
        try:
            event = convert_event(dict(payload) if isinstance(payload, Mapping) else payload,
                                  now=committed)
        except (InvalidEvent, TypeError) as error:
            self.breach(INV_SESSION_COMPLETION_LEDGER,
                        f"not a valid v1.2 event: {error}", entry.id)
            event_id = payload.get("event_id") if isinstance(payload, Mapping) else None
            if isinstance(event_id, str):  # the entry is there: report its content once
                self.completions.setdefault(event_id, entry.id)
            return
        if event.tenant != self.tenant:
            self.breach(INV_SESSION_COMPLETION_LEDGER,
                        f"event {event.event_id} belongs to {event.tenant}", entry.id)
        if event.event_id in self.completions:
            self.breach(INV_SESSION_COMPLETION_LEDGER,
                        f"event {event.event_id} is also entry {self.completions[event.event_id]}",
                        entry.id)
            return
        self.completions[event.event_id] = entry.id

    def _decision(self, entry: LedgerEntryLike) -> None:
        for invariant in (INV_CANON_ONLY_EXECUTION, INV_NON_INTERFERENCE, INV_TRUST_DENIAL_TRACE):
            self.checked[invariant] += 1
        payload = entry.payload if isinstance(entry.payload, Mapping) else {}
        try:
            inputs = msgspec.convert(payload.get("inputs"), DecisionInputs)
            outcome = msgspec.convert(payload.get("outcome"), RecordedOutcome)
        except msgspec.ValidationError as error:
            self.breach(INV_TRUST_DENIAL_TRACE, f"unreadable decision: {error}", entry.id)
            return
        if not valid_ts(inputs.ts):
            self.breach(INV_TS_MANDATORY, "decision without a valid ts", entry.id)
        self._traces(entry, inputs, outcome)
        self._canon_seen(entry, inputs, outcome)
        self._interference(entry, inputs, outcome)
        self.decisions.append(RecordedDecision(entry.id, inputs))

    def _traces(self, entry: LedgerEntryLike, inputs: DecisionInputs,
                outcome: RecordedOutcome) -> None:
        expected_kind = "DECIDE" if outcome.status == "selected" else "DENY"
        if entry.kind != expected_kind:
            self.breach(INV_TRUST_DENIAL_TRACE,
                        f"a {outcome.status} decision ledgered as {entry.kind}", entry.id)
        traced = {trace.candidate_id for trace in outcome.traces if trace.reason_codes
                  and trace.message}
        for result in outcome.results:
            if not result.admissible and result.candidate_id not in traced:
                self.breach(INV_TRUST_DENIAL_TRACE,
                            f"candidate {result.candidate_id} denied without a trace", entry.id)
        replayed = evaluate(inputs)
        selected = (replayed.results[replayed.selected].candidate_id
                    if replayed.selected is not None else None)
        same = (
            replayed.status == outcome.status and selected == outcome.selected_candidate
            and [r.admissible for r in replayed.results] == [r.admissible for r in outcome.results]
            and [t.reason_codes for t in replayed.traces] == [t.reason_codes for t in outcome.traces]
        )
        if not same:
            self.breach(INV_TRUST_DENIAL_TRACE,
                        "replaying the decision gives a different answer than recorded", entry.id)

    def _canon_seen(self, entry: LedgerEntryLike, inputs: DecisionInputs,
                    outcome: RecordedOutcome) -> None:
        actual = self.state.snapshot(referenced_ids(inputs.canon_refs, inputs.candidates))
        if actual.levels != inputs.canon.levels or actual.rules != inputs.canon.rules:
            self.breach(INV_CANON_ONLY_EXECUTION,
                        "the decision saw a canon the ledger does not have at that point",
                        entry.id)
        if outcome.selected_candidate is None:
            return
        chosen = next((c for c in inputs.candidates if c.id == outcome.selected_candidate), None)
        if chosen is None:
            self.breach(INV_CANON_ONLY_EXECUTION, "the selected candidate is not a candidate",
                        entry.id)
            return
        needed = [cid for a in chosen.actions for cid in a.prerequisites_canon_ids]
        needed += inputs.canon_refs
        below = sorted({cid for cid in needed if self.state.level(cid) != "CANON"})
        if not inputs.canon_refs or below:
            self.breach(INV_CANON_ONLY_EXECUTION,
                        f"selected {chosen.id} without CANON authority (not CANON: "
                        f"{', '.join(below) or 'no refs cited'})", entry.id)

    def _interference(self, entry: LedgerEntryLike, inputs: DecisionInputs,
                      outcome: RecordedOutcome) -> None:
        chosen = next((c for c in inputs.candidates if c.id == outcome.selected_candidate), None)
        if chosen is None:
            return
        tolerance = inputs.interference.tolerance_ms
        effects = interference(chosen.id or "", chosen.actions, inputs.other_agents,
                               inputs.interference)
        slowed = [e for e in effects if e.delta_ttv_ms > tolerance]
        if slowed or state_conflicts(chosen.actions, inputs.other_agents):
            listed = ", ".join(f"{e.agent_id} by {e.delta_ttv_ms:g} ms" for e in slowed)
            self.breach(INV_NON_INTERFERENCE,
                        f"selected {chosen.id} slows other agents ({listed or 'shared state'})",
                        entry.id)

    def finish(self, ledger: CanonLedger) -> AuditReport:
        if isinstance(ledger, AcceptedEvents):
            for event_id, entry_id in ledger.accepted_events(self.tenant):
                self.checked[INV_SESSION_COMPLETION_LEDGER] += 1
                if self.completions.get(event_id) != entry_id:
                    self.breach(INV_SESSION_COMPLETION_LEDGER,
                                f"accepted event {event_id} is not ledger entry {entry_id}",
                                entry_id)
        if self.state.items:
            for seed in sorted(SEED_IDS):
                if self.state.level(seed) != "CANON":
                    self.breach(seed, f"built-in invariant {seed} is not seeded at CANON")
        checks = [
            InvariantCheck(invariant_id=inv, passed=not self.violations[inv],
                           checked=self.checked[inv], violations=self.violations[inv])
            for inv in ORDER
        ]
        return AuditReport(tenant=self.tenant, passed=all(c.passed for c in checks),
                           entries=self.entries, checks=checks)


def audit_ledger(ledger: CanonLedger, tenant: str, config: CanonConfig | None = None) -> AuditReport:
    """Check the six hard-fail invariants over every entry of ``tenant``'s ledger."""
    audit = _Audit(tenant, config or CanonConfig())
    for entry in ledger.read(tenant, ALL_KINDS):
        audit.fold(entry)
    return audit.finish(ledger)
