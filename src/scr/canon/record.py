"""A decision's ledger record: what a DECIDE or DENY entry holds, and reading it back.

The payload is ``{"inputs": DecisionInputs, "outcome": RecordedOutcome}``. The entry id is
not known until the entry is appended, so trace ids are derived from it:
``wn-<entry id>-<index of the trace in the decision>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from msgspec import Struct

from scr.canon.decide import TIE_BREAK, DecisionInputs, Evaluation
from scr.canon.ledger import LedgerEntryLike
from scr.canon.model import (
    Candidate,
    CandidateResult,
    Decision,
    DecisionStatus,
    Interference,
    Score,
    WhyNot,
)

TRACE_ID = re.compile(r"wn-([0-9]{1,19})-([0-9]{1,6})")
MAX_ENTRY_ID = 2**63 - 1  # the stores' integers (SQLite, PostgreSQL bigint): no entry id is larger


class RecordedResult(Struct, gc=False, omit_defaults=True, kw_only=True):
    """One candidate's result as recorded (its actions and features are in the inputs)."""

    candidate_id: str
    admissible: bool
    score: Score | None = None
    interference: list[Interference] = []


class RecordedOutcome(Struct, gc=False, kw_only=True):
    """What the decision answered, as recorded (trace ids are derived, not stored)."""

    status: DecisionStatus
    selected_candidate: str | None
    message: str
    results: list[RecordedResult]
    traces: list[WhyNot]


def referenced_ids(canon_refs: Sequence[str], candidates: Sequence[Candidate]) -> list[str]:
    """Every canon id a decision refers to: its cited refs and its actions' prerequisites."""
    ids = list(canon_refs)
    for candidate in candidates:
        for action in candidate.actions:
            ids.extend(action.prerequisites_canon_ids)
    return list(dict.fromkeys(ids))


def outcome_of(evaluation: Evaluation) -> RecordedOutcome:
    """The outcome to record for an evaluation."""
    selected = (
        evaluation.results[evaluation.selected].candidate_id
        if evaluation.selected is not None else None
    )
    return RecordedOutcome(
        status=evaluation.status, selected_candidate=selected, message=evaluation.message,
        results=[
            RecordedResult(candidate_id=r.candidate_id, admissible=r.admissible, score=r.score,
                           interference=r.interference)
            for r in evaluation.results
        ],
        traces=evaluation.traces,
    )


def decision_payload(inputs: DecisionInputs, outcome: RecordedOutcome) -> dict[str, Any]:
    """The payload of the decision's ledger entry.

    It holds the Structs themselves: the ledger encodes payloads with ``canonical_bytes``,
    which writes a Struct exactly as its plain-JSON form, without building that form first
    (a decision's would be a thousand short-lived dicts and lists).
    """
    return {"inputs": inputs, "outcome": outcome}


def trace_id(entry_id: int, index: int) -> str:
    """The id of a decision's ``index``-th trace."""
    return f"wn-{entry_id}-{index}"


def parse_trace_id(text: str) -> tuple[int, int] | None:
    """(entry id, trace index) of a trace id, or ``None`` if it is not one."""
    match = TRACE_ID.fullmatch(text)
    if match is None or int(match.group(1)) > MAX_ENTRY_ID:
        return None
    return int(match.group(1)), int(match.group(2))


def build_decision(
    tenant: str, entry_id: int, inputs: DecisionInputs, outcome: RecordedOutcome
) -> Decision:
    """The answer to the caller, with trace ids derived from the entry id."""
    traces = [
        msgspec.structs.replace(trace, trace_id=trace_id(entry_id, index))
        for index, trace in enumerate(outcome.traces)
    ]
    by_candidate = {trace.candidate_id: trace.trace_id for trace in traces}
    results = [
        CandidateResult(
            candidate_id=result.candidate_id, actions=[a.id for a in candidate.actions],
            admissible=result.admissible, features=features, score=result.score,
            interference=result.interference,
            trace_id=None if result.admissible else by_candidate.get(result.candidate_id),
        )
        for result, candidate, features in zip(
            outcome.results, inputs.candidates, inputs.features, strict=True
        )
    ]
    chosen = next(
        (c for c in inputs.candidates if c.id == outcome.selected_candidate), None
    )
    chosen_result = next(
        (r for r in results if r.candidate_id == outcome.selected_candidate), None
    )
    return Decision(
        entry_id=entry_id,
        ts=inputs.ts,
        tenant=tenant,
        agent_id=inputs.agent_id,
        goal=inputs.goal,
        status=outcome.status,
        selected_candidate=outcome.selected_candidate,
        selected_path=[a.id for a in chosen.actions] if chosen is not None else [],
        next_action=chosen.actions[0] if chosen is not None else None,
        score=chosen_result.score if chosen_result is not None else None,
        candidates=results,
        traces=traces,
        canon_refs=inputs.canon_refs,
        tie_break=TIE_BREAK,
        message=outcome.message,
    )


def read_record(entry: LedgerEntryLike) -> tuple[DecisionInputs, RecordedOutcome]:
    """The inputs and outcome a DECIDE or DENY entry recorded."""
    payload = entry.payload if isinstance(entry.payload, Mapping) else {}
    inputs = msgspec.convert(payload.get("inputs"), DecisionInputs)
    outcome = msgspec.convert(payload.get("outcome"), RecordedOutcome)
    return inputs, outcome
