"""The canon's vocabulary, declared once: canon items, actions, requests and answers.

These msgspec Structs are the validation (types, enums, bounds, unknown fields) for the
Python API, the HTTP routes and the ledger payloads alike. Names follow the source
document: canon items are DEFINITION, INVARIANT or CONSTRAINT at level EVIDENCE → PROPOSED
→ CANON; a candidate path is an ordered list of actions whose next action is the first.

Every canon Struct is ``gc=False``: they form trees, never cycles, and a decision allocates
thousands of them; untracked, they no longer drive the collector's full passes.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct, field

from scr.schema import ID_PATTERN, Timestamp

MAX_CANDIDATES = 1000
MAX_ACTIONS_PER_PATH = 64
MAX_LIST_ITEMS = 256
MAX_OTHER_AGENTS = 256
MAX_TTV_MS = 1e12  # about 31 years: anything larger is a unit mistake
MAX_COST = 1e12
MAX_WEIGHT = 1e9
MAX_TEXT_CHARS = 4096

Identifier = Annotated[
    str, Meta(pattern=ID_PATTERN, description="1-128 characters of [A-Za-z0-9_.:-]")
]
Name = Annotated[str, Meta(min_length=1, max_length=256)]
Text = Annotated[str, Meta(max_length=MAX_TEXT_CHARS)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Milliseconds = Annotated[float, Meta(ge=0.0, le=MAX_TTV_MS)]
Cost = Annotated[float, Meta(ge=0.0, le=MAX_COST)]
Weight = Annotated[float, Meta(ge=0.0, le=MAX_WEIGHT)]
IdList = Annotated[list[Identifier], Meta(max_length=MAX_LIST_ITEMS)]
MAX_IDENTIFIER_CHARS = 128
# A candidate's id is the caller's, or its action ids joined by '+'; the ledger records the
# filled-in id, so the type admits both (else a recorded decision could not be read back).
MAX_CANDIDATE_ID_CHARS = MAX_ACTIONS_PER_PATH * (MAX_IDENTIFIER_CHARS + 1)
CandidateId = Annotated[
    str,
    Meta(
        pattern=f"^[A-Za-z0-9_.:+-]{{1,{MAX_CANDIDATE_ID_CHARS}}}$",
        description="characters of [A-Za-z0-9_.:+-]; by default the action ids joined by '+'",
    ),
]
NameList = Annotated[list[Name], Meta(max_length=MAX_LIST_ITEMS)]

Level = Literal["EVIDENCE", "PROPOSED", "CANON"]
LEVELS: tuple[Level, ...] = ("EVIDENCE", "PROPOSED", "CANON")
ItemKind = Literal["DEFINITION", "INVARIANT", "CONSTRAINT"]
Severity = Literal["HARD_FAIL", "SOFT_FAIL"]
SourceKind = Literal["chat", "repo", "test", "prod", "import"]
RiskLevel = Literal["LOW", "MEDIUM", "HIGH"]
ReasonCode = Literal[
    "MISSING_CANON_PREREQS",
    "AUTHORITY_BOUNDARY_FAIL",
    "RISK_BOUND_EXCEEDED",
    "COST_BOUND_EXCEEDED",
    "SUCCESS_PROB_TOO_LOW",
    "NON_INTERFERENCE_VIOLATION",
    "INVARIANT_VIOLATION",
    "INSUFFICIENT_EVIDENCE",
]


# ----- canon items ---------------------------------------------------------------------------


class ItemProvenance(Struct, gc=False, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where a canon item came from. ``hash`` is the item's content hash (see ``item_hash``)."""

    source: SourceKind
    ref: Text
    author: Name
    hash: str = ""


class Rule(Struct, gc=False, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """What an INVARIANT or CONSTRAINT forbids, checked mechanically against each path.

    A path breaks the rule when it contains a forbidden action, uses a forbidden resource,
    modifies forbidden shared state, or its features cross one of the limits.
    """

    forbid_actions: IdList = []
    forbid_resources: NameList = []
    forbid_shared_state: NameList = []
    max_risk: Probability | None = None
    max_cost: Cost | None = None
    max_ttv_ms: Milliseconds | None = None
    min_success_prob: Probability | None = None

    def is_empty(self) -> bool:
        return self == EMPTY_RULE


EMPTY_RULE = Rule()


class ItemSpec(Struct, gc=False, forbid_unknown_fields=True, kw_only=True):
    """A canon item as a caller gives it. ``ts`` is mandatory (RFC 3339 with an offset).

    ``level`` above EVIDENCE is accepted only from provenance source ``import``: everything
    else enters as EVIDENCE and rises through the promotion gate.
    """

    id: Identifier
    kind: ItemKind
    title: Name
    ts: Timestamp
    provenance: ItemProvenance
    statement: Text = ""
    severity: Severity | None = None
    rule: Rule = EMPTY_RULE
    level: Level = "EVIDENCE"


class CanonItem(Struct, gc=False, kw_only=True):
    """A canon item as the ledger made it: its current level and the entry of its last change."""

    id: str
    kind: ItemKind
    title: str
    ts: Timestamp
    provenance: ItemProvenance
    statement: str = ""
    severity: Severity | None = None
    rule: Rule = EMPTY_RULE
    level: Level = "EVIDENCE"
    entry_id: int = 0


# ----- actions, paths, requests ---------------------------------------------------------------


class Action(Struct, gc=False, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """One thing an agent can do."""

    id: Identifier
    risk_level: RiskLevel
    name: Text = ""
    description: Text = ""
    prerequisites_canon_ids: IdList = []
    resources_used: NameList = []
    shared_state_modified: NameList = []


class Features(Struct, gc=False, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Caller-given features of a whole path; a missing one is estimated from evidence."""

    ttv_ms: Milliseconds | None = None
    cost: Cost | None = None
    risk: Probability | None = None
    success_prob: Probability | None = None


class Candidate(Struct, gc=False, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """A candidate path: ordered actions. ``id`` defaults to the action ids joined by '+'."""

    actions: Annotated[list[Action], Meta(min_length=1, max_length=MAX_ACTIONS_PER_PATH)]
    id: CandidateId | None = None
    features: Features | None = None


class Bounds(Struct, gc=False, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Hard bounds on a path. A request may tighten the configured bounds, never loosen them."""

    max_risk: Probability | None = None
    max_cost: Cost | None = None
    min_success_prob: Probability | None = None


class Weights(Struct, gc=False, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The OPTR weights λC (cost), λR (risk) and λP (success reward)."""

    lambda_c: Weight = 0.1
    lambda_r: Weight = 0.2
    lambda_p: Weight = 0.05


class AgentPlan(Struct, gc=False, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Another agent: what it plans to do, and optionally its TTV figures.

    ``predicted_ttv_ms`` maps a candidate id to this agent's expected TTV if the acting agent
    takes that candidate; with ``baseline_ttv_ms`` it replaces the dependency model for it.
    """

    agent_id: Identifier
    planned_actions: Annotated[list[Action], Meta(max_length=MAX_ACTIONS_PER_PATH)] = []
    baseline_ttv_ms: Milliseconds | None = None
    predicted_ttv_ms: Annotated[
        dict[Identifier, Milliseconds], Meta(max_length=MAX_CANDIDATES)
    ] = {}


class DecideContext(Struct, gc=False, frozen=True, forbid_unknown_fields=True, omit_defaults=True,
                    kw_only=True):
    """What the decision is about: with enrichment on, ``text`` finds similar past sessions
    whose evidence the estimates weigh (``scr.canon.evidence.similar_first``)."""

    text: Annotated[str, Meta(min_length=1, max_length=MAX_TEXT_CHARS)] | None = None


class DecideRequest(Struct, gc=False, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Choose the next action toward ``goal`` among ``candidates``, citing ``canon_refs``."""

    goal: Text
    candidates: Annotated[list[Candidate], Meta(min_length=1, max_length=MAX_CANDIDATES)]
    canon_refs: IdList = []
    bounds: Bounds | None = None
    weights: Weights | None = None
    agent_id: Identifier = "agent"
    other_agents: Annotated[list[AgentPlan], Meta(max_length=MAX_OTHER_AGENTS)] = []
    context: DecideContext | None = None


# ----- answers ---------------------------------------------------------------------------------


EstimateSource = Literal["given", "evidence", "similar_sessions", "risk_level", "prior"]


class Estimate(Struct, gc=False, omit_defaults=True, kw_only=True):
    """One feature value and what it rests on (evidence count and the ledger entries used)."""

    value: float
    source: EstimateSource
    evidence_count: int = 0
    entry_ids: list[int] = []
    alpha: float | None = None  # Beta posterior parameters, for a one-action success estimate
    beta: float | None = None


class PathFeatures(Struct, gc=False, omit_defaults=True, kw_only=True):
    """The features a path was scored and gated on; ``None`` where nothing supports a value."""

    risk: Estimate
    success_prob: Estimate
    ttv_ms: Estimate | None = None
    cost: Estimate | None = None


class Score(Struct, gc=False, kw_only=True):
    """OPTR: total = ttv_ms + λC·cost + λR·risk − λP·ln(max(p, floor)) + soft-fail penalty."""

    total: float
    ttv_ms: float
    cost_term: float
    risk_term: float
    success_term: float
    soft_fail_term: float = 0.0
    soft_fail_ids: list[str] = []


InterferenceBasis = Literal["dependency_model", "predicted"]


class Interference(Struct, gc=False, omit_defaults=True, kw_only=True):
    """The expected change of another agent's TTV if this path is taken (> 0 slows it)."""

    agent_id: str
    delta_ttv_ms: float
    basis: InterferenceBasis
    shared_resources: list[str] = []
    shared_state: list[str] = []


class CandidateResult(Struct, gc=False, omit_defaults=True, kw_only=True):
    """One candidate as decided: its features, score, admissibility and trace."""

    candidate_id: str
    actions: list[str]
    admissible: bool
    features: PathFeatures
    score: Score | None = None
    interference: list[Interference] = []
    trace_id: str | None = None


class WhyNot(Struct, gc=False, omit_defaults=True, kw_only=True):
    """Why a candidate was denied: every failing gate's code, the ids involved and the numbers."""

    ts: str
    candidate_id: str
    action_id: str
    reason_codes: list[ReasonCode]
    message: str
    missing_canon_ids: list[str] = []
    violated_invariant_ids: list[str] = []
    required_canon_refs: list[str] = []
    context: dict[str, Any] = {}
    trace_id: str = ""


DecisionStatus = Literal["selected", "none_admissible"]


class Decision(Struct, gc=False, kw_only=True):
    """The answer to a ``DecideRequest``; ``entry_id`` is its ledger entry (DECIDE or DENY)."""

    entry_id: int
    ts: str
    tenant: str
    agent_id: str
    goal: str
    status: DecisionStatus
    selected_candidate: str | None
    selected_path: list[str]
    next_action: Action | None
    score: Score | None
    candidates: list[CandidateResult]
    traces: list[WhyNot]
    canon_refs: list[str]
    tie_break: str
    message: str


# ----- promotion -------------------------------------------------------------------------------


class PromoteRequest(Struct, gc=False, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Promote ``item_id`` one level (``to_level`` may name it; a skip is refused)."""

    item_id: Identifier
    to_level: Level | None = None
    reason: Text = ""


class GateTest(Struct, gc=False, kw_only=True):
    """One promotion test: passed or not, why, and the figures it compared."""

    name: str
    passed: bool
    message: str
    figures: dict[str, Any] = field(default_factory=dict)


class PromotionTests(Struct, gc=False, kw_only=True):
    """The four promotion tests: (A) resistance, (B) reproducibility, (C) invariant safety,
    (D) feasibility impact."""

    resistance: GateTest
    reproducibility: GateTest
    invariant_safety: GateTest
    feasibility_impact: GateTest

    def all_passed(self) -> bool:
        return all(
            test.passed
            for test in (
                self.resistance, self.reproducibility, self.invariant_safety,
                self.feasibility_impact,
            )
        )


class PromotionResult(Struct, gc=False, kw_only=True):
    """A promotion decision, approved or not, with its tests; ``entry_id`` is its ledger entry."""

    entry_id: int
    ts: str
    item_id: str
    from_level: Level
    to_level: Level | None
    approved: bool
    level: Level
    tests: PromotionTests | None
    message: str


# ----- evidence ---------------------------------------------------------------------------------


class Observation(Struct, gc=False, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """The payload of an OBSERVATION ledger entry: evidence about an action or a canon item.

    About an action (``action``): ``outcome`` and, if known, ``duration_ms`` and ``cost``.
    About a canon item (``item_id``): ``verdict`` support or contradict; ``challenge`` marks
    an observation made by trying to contradict the item. ``session_id``, ``user_id`` and
    ``context`` make observations independent for the reproducibility test.
    """

    action: Identifier | None = None
    item_id: Identifier | None = None
    outcome: Literal["success", "failure"] | None = None
    duration_ms: Milliseconds | None = None
    cost: Decimal | None = None  # USD, in the bounds of scr.money (checked by Canon.observe)
    verdict: Literal["support", "contradict"] | None = None
    challenge: bool = False
    session_id: Name | None = None
    user_id: Name | None = None
    context: Name | None = None
    note: Text = ""


# ----- audit -------------------------------------------------------------------------------------


class Violation(Struct, gc=False, omit_defaults=True, kw_only=True):
    """One breach an audit found, at a ledger entry where there is one."""

    message: str
    entry_id: int | None = None


class InvariantCheck(Struct, gc=False, kw_only=True):
    """One invariant checked over the ledger: how many things were checked, what broke."""

    invariant_id: str
    passed: bool
    checked: int
    violations: list[Violation]


class AuditReport(Struct, gc=False, kw_only=True):
    """The six hard-fail invariants checked over one tenant's ledger."""

    tenant: str
    passed: bool
    entries: int
    checks: list[InvariantCheck]
