"""The bodies the HTTP API answers with, declared once as msgspec Structs.

The handlers build these bodies; ``/openapi.json`` derives every success and error schema
from the Structs below (and from the event and canon Structs the answers carry). Each is
``forbid_unknown_fields``, so its schema has ``additionalProperties: false``: a field a
handler adds without declaring it here fails the API conformance tests
(``tests/test_openapi.py``) instead of going undocumented.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType, field

from scr.canon.model import CanonItem
from scr.schema import (
    Event,
    EventId,
    EventTime,
    OutcomeStatus,
    Session,
    TagKey,
    TenantId,
    Tier,
    Usage,
)

Count = Annotated[int, Meta(ge=0)]
Seq = Annotated[int, Meta(ge=0, description="a ledger position")]
Time = Annotated[str, Meta(description="RFC 3339, UTC")]
Base64 = Annotated[str, Meta(description="base64 (RFC 4648, with padding)")]
HexDigest = Annotated[str, Meta(pattern="^[0-9a-f]*$", description="lower-case hex")]
DeliveryStatus = Literal["pending", "retrying", "delivered", "dead"]


class Answer(Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every answer body: unknown fields are refused (see the module's docstring)."""


# ----- errors --------------------------------------------------------------------------------


class ErrorDetail(Answer):
    """One located problem: a JSON path, query parameter or header, and what is wrong there."""

    path: str
    message: str


class ErrorBody(Answer):
    code: Annotated[str, Meta(description="machine-readable, e.g. bad_request, missing_field")]
    message: str
    details: list[ErrorDetail]


class Error(Answer):
    """Every error the API answers: ``{"error": {"code", "message", "details"}}``."""

    error: ErrorBody


# ----- capture -------------------------------------------------------------------------------


class EventProblem(Answer):
    """Why one event of a request was rejected."""

    code: str
    path: str
    message: str


class EventResult(Answer):
    """One event of a request, by its index in the request."""

    index: Count
    event_id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    errors: list[EventProblem] = []


class Ingested(Answer):
    """The answer to a capture: counts and one result per event, in request order."""

    accepted: Count
    duplicate: Count
    rejected: Count
    results: list[EventResult]


# ----- reads ---------------------------------------------------------------------------------


class LedgerPosition(Answer):
    seq: Seq
    tenant_seq: Annotated[int, Meta(ge=0, description="the entry's index in its tenant's tree")]
    ts: Time
    hash: Annotated[HexDigest, Meta(description="the chain hash of the entry, hex")]


class ErasedUser(Answer):
    user_id: None
    organization_id: TenantId
    tier: Tier


class ErasedOutcome(Answer):
    status: OutcomeStatus
    final_message: None = None
    error_code: str | None = None


class ErasedMetadata(Answer):
    client_version: str | None = None
    source_ip: None = None
    custom_tags: dict[TagKey, None] = field(default_factory=dict)


class ErasedContent(Answer):
    user_request: UnsetType | None = UNSET
    summary: UnsetType | None = UNSET
    tool_outputs: list[None] | UnsetType = UNSET


class ErasedEvent(Answer):
    """An event whose subject was erased (``DELETE /v1/subjects/{user_id}``): its personal
    fields are null, the rest as it was committed."""

    event_type: Literal["session.completed"]
    event_id: EventId
    timestamp: EventTime
    session: Session
    user: ErasedUser
    usage: Usage
    outcome: ErasedOutcome
    metadata: ErasedMetadata
    erased: Literal[True]
    content: ErasedContent | UnsetType = UNSET


class StoredEvent(Answer):
    """An event as committed, with where it sits in the ledger (an ``ErasedEvent`` once its
    subject was erased: the OpenAPI document says either)."""

    event: Event
    ledger: LedgerPosition


class SessionEvents(Answer):
    session_id: str
    events: list[StoredEvent]


class Erased(Answer):
    erasure_id: Annotated[str, Meta(description="the ERASURE entry's id (the same on every call)")]
    events: Annotated[Count, Meta(description="the subject's events whose personal fields are now erased")]


class ExportedEvent(Answer):
    event: Annotated[dict[str, Any], Meta(
        description="the event with its personal fields; an erased one has them null and "
        '`"erased": true`')]
    leaf_index: Annotated[int, Meta(ge=0, description="its index in the tenant's tree")]
    leaf: Annotated[str, Meta(description="base64 of the leaf's exact stored bytes")]
    salt: Annotated[str | None, Meta(
        description="base64 of the salt of the leaf's commitment to the personal fields (null "
        "once erased)")]
    inclusion_proof: Annotated[list[str], Meta(description="base64 hashes, leaf to root")]


class SubjectExport(Answer):
    user_id: str
    tenant: str
    public_key: Annotated[str, Meta(description="the C2SP verifier key the checkpoint is signed with")]
    checkpoint: Annotated[str, Meta(description="a signed checkpoint issued for the export")]
    events: list[ExportedEvent]


# ----- route ---------------------------------------------------------------------------------


class DestinationView(Answer):
    name: str
    type: Literal["http", "file", "log"]
    transform: Annotated[str, Meta(description="a built-in transform's name, or python")]
    state: Literal["active", "backing_off", "disabled"]
    lag: Annotated[int, Meta(ge=0, description="ledger entries not yet read")]
    cursor: Seq
    last_error: str
    retention_days: Annotated[int, Meta(ge=1)] | None


class Destinations(Answer):
    destinations: list[DestinationView]


class Enabled(Answer):
    name: str
    state: Literal["active"]
    requeued: Count


class DeliveryView(Answer):
    event_id: str
    destination: str
    status: DeliveryStatus
    attempts: Count
    last_status: Annotated[int, Meta(description="the receiver's last HTTP status")] | None
    last_error: str
    webhook_id: str
    seq: Seq
    updated_at: Time


class Deliveries(Answer):
    deliveries: list[DeliveryView]


class Requeued(Answer):
    destination: str
    requeued: Count


# ----- the admin audit trail ----------------------------------------------------------------


class AuditEntry(Answer):
    """One admin action, as its ledger entry records it."""

    index: Annotated[int, Meta(ge=0, description="the entry's leaf index in the tenant's tree")]
    ts: Time
    kind: Annotated[str, Meta(description="KEY_CREATED, KEY_REVOKED, DELIVERIES_REPLAYED, "
                              "DESTINATION_ENABLED, ERASURE, ...")]
    key_id: Annotated[str | None, Meta(description="the acting key's id; null: the operator's CLI")]
    details: Annotated[dict[str, Any], Meta(description="what was done (never a secret)")]


class AuditTrail(Answer):
    entries: list[AuditEntry]


# ----- retention: legal holds ----------------------------------------------------------------


class LegalHoldView(Answer, omit_defaults=True):
    """A legal hold: on the whole tenant (``user_id`` null), or on one of its users."""

    id: Annotated[str, Meta(description="the hold's id (the ledger entries' ref)")]
    tenant: TenantId
    user_id: Annotated[str | None, Meta(
        description="the held user; null for a hold on the whole tenant, and once released "
        "(the user id is forgotten then)")]
    reason: str
    created_at: Time
    released_at: Time | UnsetType = UNSET  # released holds only


class LegalHolds(Answer):
    holds: Annotated[list[LegalHoldView], Meta(description="oldest first")]


# ----- ledger proofs -------------------------------------------------------------------------


class CheckpointView(Answer):
    tree_size: Count
    root_hash: Base64
    issued_at: Time
    checkpoint: Annotated[str, Meta(description="the C2SP signed note, byte for byte")]


class Checkpoints(Answer):
    checkpoints: list[CheckpointView]


class LedgerLeaf(Answer):
    index: Count
    event_id: str | None
    leaf: Annotated[Base64, Meta(description="base64 of the exact stored entry bytes")]


class LedgerEntries(Answer):
    entries: list[LedgerLeaf]


class InclusionProof(Answer):
    leaf_index: Count
    event_id: str | None
    tree_size: Count
    hashes: list[Base64]


class ConsistencyProof(Answer):
    first: Count
    second: Count
    hashes: list[Base64]


# ----- canon ---------------------------------------------------------------------------------


class CanonItems(Answer):
    items: list[CanonItem]


class Observed(Answer):
    entry_id: Annotated[int, Meta(description="the OBSERVATION's ledger entry")]


# ----- cluster -------------------------------------------------------------------------------


class BusView(Answer):
    ready: bool
    stream: str


class InstanceView(Answer):
    id: str
    url: str
    partitions: list[Count]
    readers: Annotated[
        list[Literal["usage", "enrich", "archive"]],
        Meta(description="the singleton readers this instance runs: in a cluster, the leases it holds"),
    ]


class Cluster(Answer):
    partitions: Count
    bus: BusView | None
    instances: list[InstanceView]
    lag: Annotated[
        dict[str, Count | None],
        Meta(description="per partition: bus events not yet appended (null when JetStream cannot say)"),
    ]


class ConflictView(Answer):
    """An event whose id came back through the bus with another body after its ``202``."""

    seq: Seq
    ts: Time
    event_id: str
    ledger_seq: Annotated[int, Meta(ge=0, description="the seq of the event that holds the id")]
    digest: HexDigest
    received_at: Time


class Conflicts(Answer):
    conflicts: list[ConflictView]


# ----- usage ---------------------------------------------------------------------------------

UsdAmount = Annotated[str, Meta(pattern=r"^-?[0-9]+(\.[0-9]+)?$", description="exact decimal USD")]


class UsageCounters(Answer):
    """What a window and group (or the whole range) counted."""

    events: Count
    sessions: Annotated[int, Meta(ge=0, description="sessions whose first event is here")]
    input_tokens: Count
    output_tokens: Count
    total_tokens: Count
    cache_read_tokens: Count
    cache_write_tokens: Count
    reasoning_tokens: Count
    unpriced_events: Count
    errors: Annotated[int, Meta(ge=0, description="events whose outcome.status is not success")]
    cost_usd: UsdAmount
    estimated_cost_usd: UsdAmount


class AnomalyContributor(Answer):
    """A model or user of an anomaly's window: its part of the metric (errors for the error
    rate), its share of the window and its usual share (of the week before), as decimal text."""

    dimension: Literal["model", "user_id"]
    key: str
    value: str
    share: str
    usual_share: str


class Anomaly(Answer):
    """A tenant's metric in a closed window outside its band (decimal text: never a float)."""

    id: str
    metric: Literal["cost_usd", "total_tokens", "error_rate"]
    window_start: str
    value: str
    expected: str
    low: str
    high: str
    breakdown: list[AnomalyContributor]


class AnomalyList(Answer):
    """``GET /v1/anomalies``: the tenant's anomalies whose window starts in [from, to)."""

    anomalies: list[Anomaly]


class UsageWindowRow(UsageCounters):
    """One window and group: its start (RFC 3339 in the query's zone) and the group's keys
    (only those named in ``group_by``)."""

    window_start: str
    model: str | None = None
    user_id: str | None = None
    session_type: str | None = None
    status: str | None = None
    tier: str | None = None
    provider: str | None = None


class UsageReport(Answer):
    """``GET /v1/usage``: non-empty windows by group, oldest first, and the totals."""

    from_: str = field(name="from")
    to: str
    window: Literal["hour", "day", "week", "month"]
    tz: str
    group_by: list[str]
    rows: list[UsageWindowRow]
    totals: UsageCounters


class UserCounters(Answer):
    """What ``GET /v1/usage/users`` counts for a user (or for all of them: the totals)."""

    sessions: Annotated[int, Meta(ge=0, description="sessions whose first event is in the range")]
    events: Count
    errors: Annotated[int, Meta(ge=0, description="events whose outcome.status is not success")]
    success_rate: Annotated[float, Meta(ge=0, le=1, description=(
        "(events − errors) / events, rounded half-even to 4 decimals; null without events"))] | None
    total_tokens: Count
    cost_usd: UsdAmount
    cost_per_session_usd: Annotated[UsdAmount | None, Meta(description=(
        "cost_usd / sessions, rounded half-even to 10 decimals; null without sessions"))]
    median_duration_ms: Annotated[int, Meta(ge=0, description=(
        "the lower median of the sessions' session.duration_ms (each session once, from its "
        "first event), within 1%; null without sessions"))] | None


class UserUsage(UserCounters):
    """One user of the top list (with encryption on: the user id, or ``erased:<hash prefix>``)."""

    user_id: str


class UserTotals(UserCounters):
    """Every user of the range, not only the listed ones."""

    users: Annotated[int, Meta(ge=0, description="users with events or sessions in the range")]


class UsersReport(Answer):
    """``GET /v1/usage/users``: the top users by ``order_by`` (ties by user id), and the totals."""

    from_: str = field(name="from")
    to: str
    tz: str
    order_by: Literal["cost_usd", "sessions", "events", "total_tokens", "errors"]
    limit: Annotated[int, Meta(ge=1)]
    users: list[UserUsage]
    totals: UserTotals


class BudgetView(Answer):
    """One of the tenant's budgets (``usage.budgets``) and the exact cost of its current period."""

    period: Literal["day", "month"]
    limit_usd: UsdAmount
    alert_at: list[float]
    period_start: Annotated[str, Meta(description="the current UTC period's start, RFC 3339")]
    period_end: Annotated[str, Meta(description="its end (exclusive), RFC 3339")]
    spent_usd: Annotated[UsdAmount, Meta(description="the period's `cost_usd` counted so far")]


class Budgets(Answer):
    """``GET /v1/budgets``: the key's tenant's budgets (none configured: an empty list)."""

    budgets: list[BudgetView]


class LiveEvent(Answer):
    """One Server-Sent Event of ``GET /v1/dashboard/live``, as a client parses it."""

    event: Literal["numbers"]
    data: Annotated[str, Meta(
        description='a JSON object: {"tenant", "ts", "accepted", "duplicate", "rejected", '
                    '"events_per_s", "acceptance_rate", "destinations": [{"name", "lag", "dead"}]}',
        extra_json_schema={"contentMediaType": "application/json"},
    )]


class ReconcileCounts(Answer):
    """One side of a (day, model), or provider − ours; ``null`` where the export does not say
    (OpenAI's costs carry no tokens, its usage no money)."""

    input_tokens: int | None
    output_tokens: int | None
    cost_usd: UsdAmount | None


class ReconcileDifference(Answer):
    """A (day, model) where the ledger and the export do not agree exactly."""

    day: Annotated[str, Meta(description="the UTC day, YYYY-MM-DD")]
    model: str
    ours: ReconcileCounts
    provider: ReconcileCounts
    delta: Annotated[ReconcileCounts, Meta(description="provider − ours")]
    explanation: Literal["missing_in_ledger", "missing_at_provider", "token_mismatch",
                         "price_mismatch", "rounding"]


class ReconcilePeriod(Answer):
    """The UTC days the export covers: ``from`` inclusive, ``to`` exclusive (RFC 3339)."""

    from_: str = field(name="from")
    to: str


class DestinationDelivery(Answer):
    """What became of the compared events at one destination."""

    delivered: Count
    dead: Count
    pending: Count


class ReconcileDelivery(Answer):
    """The compared events (``committed``) and their deliveries, by destination."""

    committed: Count
    destinations: dict[str, DestinationDelivery]


class Reconciliation(Answer):
    """``POST /v1/usage/reconcile``: the export compared per (day, model) with the ledger."""

    period: ReconcilePeriod
    matched: Annotated[int, Meta(ge=0, description="(day, model) pairs that agree exactly")]
    differences: list[ReconcileDifference]
    delivery: ReconcileDelivery


# ----- OpenTelemetry -------------------------------------------------------------------------


class PartialSuccess(Answer, rename="camel"):
    # proto3 JSON writes int64 as a string, and leaves out fields at their zero value
    rejected_spans: Annotated[str, Meta(pattern="^[0-9]+$")] = "0"
    error_message: str = ""


class TraceExport(Answer, rename="camel"):
    """OTLP's ``ExportTraceServiceResponse`` in proto3 JSON."""

    partial_success: PartialSuccess | None = None


# ----- operate -------------------------------------------------------------------------------


class ProcessView(Answer):
    """One process of ``scr serve`` as its supervisor sees it."""

    title: str
    state: Literal["starting", "running", "backing_off", "stopping"]
    restarts: int
    last_exit: str


class Health(Answer):
    status: Literal["ok"]
    version: str
    processes: list[ProcessView] = field(default_factory=list)  # under ``scr serve``'s supervisor


class Ready(Answer):
    status: Literal["ready"]


# ----- enrichment ------------------------------------------------------------------------------


class SimilarSession(Answer):
    """One similar session: its best vector's event, the cosine similarity, the fields embedded."""

    session_id: str
    event_id: str
    score: float
    source_fields: list[str]


class SimilarSessions(Answer):
    """``GET /v1/sessions/{session_id}/similar`` and ``POST /v1/search``: one result per session,
    best first; ``exact``: found by exact search (a selective filter, or a small index)."""

    results: list[SimilarSession]
    exact: bool


class BackfillProgress(Answer):
    """The backfill: the ledger seq it reached, the seq where the enricher started (it is done
    at ``end``), and whether one asked through ``POST /v1/enrichment/backfill`` is under way."""

    done: int
    end: int
    running: bool


class EnrichmentStatus(Answer):
    """``GET /v1/enrichment``: the embedder, the tenant's indexed sessions, the enricher's lag
    behind the ledger (entries not read yet) and its last error (``null`` once recovered)."""

    embedder: Literal["local", "openai"]
    model: str
    dimensions: int | None
    indexed: int
    lag: int
    last_error: str | None
    backfill: BackfillProgress

