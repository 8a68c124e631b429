"""The OpenAPI 3.1 document of the HTTP API, served at ``/openapi.json``.

One ``Operation`` per (path, method) the app serves; ``tests/test_openapi.py`` walks the
app's routes and checks that the two sets are equal, validates the document with
openapi-spec-validator and runs schemathesis over every operation against a real server.
Every schema is derived from the code's own types (``msgspec.json.schema_components``): the
event (``scr.schema``), the canon's requests and answers (``scr.canon.model``), the other
request bodies and every answer body (``scr.answers``), so a type changes its description
with it. Who may call an operation is read from ``scr.security.keys.PERMISSIONS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from scr import __version__, answers
from scr.bus.routes import MAX_SEQ
from scr.canon.model import (
    CanonItem,
    DecideRequest,
    Decision,
    ItemKind,
    ItemSpec,
    Level,
    Observation,
    PromoteRequest,
    PromotionResult,
    WhyNot,
)
from scr.canon.routes import MAX_BODY_BYTES as MAX_CANON_BODY_BYTES
from scr.capture.browser import MAX_BEACON_BYTES, BeaconSession
from scr.capture.ingest import CloudEvent
from scr.config import DestinationName
from scr.dashboard.live import LIVE_PATH, MAX_LIVE_STREAMS, MAX_STREAM_EVENTS
from scr.dashboard.routes import STATIC_CACHE_S, STATIC_FILES
from scr.enrich.limits import DEFAULT_K as DEFAULT_SIMILAR_K
from scr.enrich.limits import MAX_K as MAX_SIMILAR_K
from scr.enrich.routes import MAX_SEARCH_BODY_BYTES, SearchRequest
from scr.ledger.routes import MAX_TREE_SIZE
from scr.retention.holds import HoldRequest
from scr.retention.routes import HOLD_PATH, HOLDS_PATH, MAX_HOLD_BODY_BYTES
from scr.route.control import DELIVERY_STATUSES, ReplayRequest
from scr.schema import MAX_EVENT_BYTES, Event, EventId, TenantId, with_money_schema
from scr.security.keys import PERMISSIONS
from scr.server import MAX_LIST_ROWS, MAX_QUERY_BODY_BYTES
from scr.usage.exports import FORMATS
from scr.usage.query import GROUP_KEYS, AwareTime
from scr.usage.query import MAX_RANGE_DAYS as MAX_USAGE_DAYS
from scr.usage.routes import EXPORT_MEDIA_TYPES, MAX_EXPORT_BYTES
from scr.usage.users import DEFAULT_LIMIT as DEFAULT_USERS_LIMIT
from scr.usage.users import MAX_LIMIT as MAX_USERS_LIMIT
from scr.usage.users import ORDERS as USER_ORDERS
from scr.usage.windows import WINDOWS

REF_TEMPLATE = "#/components/schemas/{name}"
JSON = "application/json"
TEXT = "text/plain"

# ----- parameter types (their schemas are derived like the bodies') ----------------------------

# Starlette's `{param}` matches one path segment, so a value with a '/' cannot be named in a
# path; nor can '.' or '..', which HTTP clients resolve away (RFC 3986 dot segments).
PathSegment = Annotated[
    str, Meta(min_length=1, max_length=256, pattern=r"^([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)$")
]
TreeSize = Annotated[int, Meta(ge=0, le=MAX_TREE_SIZE)]
ListLimit = Annotated[int, Meta(ge=1, le=MAX_LIST_ROWS)]
LedgerSeq = Annotated[int, Meta(ge=0, le=MAX_SEQ)]
UsersLimit = Annotated[int, Meta(ge=1, le=MAX_USERS_LIMIT)]


@dataclass(frozen=True)
class Parameter:
    name: str
    where: Literal["path", "query", "header"]
    kind: Any  # a type msgspec can describe
    description: str
    required: bool = False


@dataclass(frozen=True)
class Body:
    """A success answer: its media types and the type (or raw schema) of each."""

    description: str
    content: dict[str, Any]  # media type -> type, or a ready JSON Schema dict
    headers: dict[str, str] = field(default_factory=dict)  # name -> description (always sent)


@dataclass(frozen=True)
class Operation:
    path: str
    method: str
    operation_id: str
    tag: str
    summary: str
    # The permission a key needs (scr.security.keys.PERMISSIONS); None: no key at all;
    # "beacon": a publishable key in `?key=`.
    permission: str | None
    answers: dict[int, Body]
    errors: dict[int, str]  # status -> when it is answered (the body is always `Error`)
    parameters: tuple[Parameter, ...] = ()
    request: dict[str, Any] | None = None  # media type -> type, or a ready JSON Schema dict


# ----- what many operations share -------------------------------------------------------------

TENANT = Parameter(
    "tenant", "query", TenantId,
    "The tenant to act on, for a caller that spans tenants (a `platform` key, or authentication "
    "turned off); a tenant's own key always acts on its tenant and ignores it.",
)
# the usage reads: a `platform` key must name the tenant (GET /v1/usage and /v1/usage/users)
PLATFORM_TENANT = Parameter("tenant", "query", TenantId, "the tenant, for a `platform` key "
                            "(required then); a tenant's own key ignores it")
UNAVAILABLE = (
    "the store cannot be read or the ledger cannot commit now (nothing of the request was stored); "
    "retry later"
)
KEYED = {
    401: "no Authorization header, not `Bearer <api key>`, or an unknown or revoked key",
    403: "the key's role may not do this",
    503: UNAVAILABLE,
}
SPANNING = {400: "a caller that spans tenants named none with `?tenant=`"}
JSON_BODY = {
    400: "malformed JSON, or a body that breaks its schema (details name each path)",
    415: "the body is not application/json",
}
RETRY_AFTER = "whole seconds to wait before trying again"
KIB = 1024
MIB = 1024 * KIB


def _merge(*groups: dict[int, str]) -> dict[int, str]:
    """Error groups as one; a status in several groups lists each cause."""
    merged: dict[int, str] = {}
    for group in groups:
        for status, when in group.items():
            merged[status] = f"{merged[status]}; or {when}" if status in merged else when
    return merged


CANON_BODY = {413: f"body over {MAX_CANON_BODY_BYTES // MIB} MiB"}


def _json(kind: Any, description: str) -> Body:
    return Body(description, {JSON: kind})


def _operations() -> list[Operation]:
    """Every operation of the API, in the order the README lists them."""
    ingested = answers.Ingested
    return [
        # ----- capture
        Operation(
            "/v1/events", "post", "postEvents", "capture",
            "Capture one event, an array of events, or CloudEvents 1.0 (structured mode)",
            "ingest",
            {
                202: _json(ingested, "every event accepted or a duplicate (all durable)"),
                207: _json(ingested, "a batch with rejected events; the others were committed"),
            },
            {
                **KEYED,
                400: "malformed body (not UTF-8, nested over 128 levels, broken gzip), or the single "
                     "event is invalid (a key repeated in one object among the reasons)",
                403: "the key's role may not ingest, or the single event is another tenant's",
                409: "the single event's id is in the ledger with a different body",
                413: "body (as sent or inflated) over `server.max_body_bytes` (default 16 MiB), a batch over "
                     "`server.max_batch_events` (default 10,000) events, or the single event "
                     f"over {MAX_EVENT_BYTES // KIB} KiB",
                415: "not application/json, application/cloudevents+json or "
                     "application/cloudevents-batch+json, a charset other than utf-8, or an "
                     "encoding other than gzip",
                503: "the ledger could not commit, or the bus did not store the events; nothing "
                     "of this request was acknowledged",
            },
            (Parameter("content-encoding", "header", Literal["gzip", "x-gzip", "identity"],
                       "`gzip` for a compressed body"),),
            request={
                JSON: {"oneOf": [_ref("Event"), {"type": "array", "items": _ref("Event")}]},
                "application/cloudevents+json": CloudEvent,
                "application/cloudevents-batch+json": {"type": "array", "items": _ref("CloudEvent")},
            },
        ),
        Operation(
            "/v1/otlp/v1/traces", "post", "postOtlpTraces", "capture",
            "OTLP/HTTP traces: GenAI spans stored durably and aggregated into session completions",
            "ingest",
            {200: Body("ExportTraceServiceResponse, in the request's encoding (partialSuccess "
                       "counts rejected spans)",
                       {"application/x-protobuf": {"type": "string", "format": "binary"},
                        JSON: answers.TraceExport})},
            {
                **KEYED,
                400: "malformed protobuf, JSON or gzip, or a spanning caller named no tenant",
                413: "body or decompressed body over `server.max_body_bytes`",
                415: "not application/x-protobuf or application/json, or an encoding other "
                     "than gzip",
                503: UNAVAILABLE,
            },
            (TENANT, Parameter("content-encoding", "header", Literal["gzip", "identity"],
                               "`gzip` for a compressed body")),
            request={"application/x-protobuf": {"type": "string", "format": "binary"},
                     JSON: {"type": "object", "required": ["resourceSpans"],
                            "properties": {"resourceSpans": {"type": "array"}}}},
        ),
        Operation(
            "/v1/sdk/scr.js", "get", "getBeaconScript", "capture",
            "The browser beacon script (JavaScript, cacheable)", None,
            {200: Body("the script", {"text/javascript": {"type": "string"}},
                       {"cache-control": "public, max-age=3600"})},
            {},
        ),
        Operation(
            "/v1/browser/events", "post", "postBeacon", "capture",
            "A browser beacon: one chat session, as JSON in a text/plain body",
            "beacon",
            {202: Body("accepted or a duplicate (durable)", {JSON: ingested},
                       {"access-control-allow-origin": "the request's Origin"})},
            {
                400: "malformed JSON, or a session that makes an invalid event",
                401: "no `?key=`, or an unknown or revoked key",
                403: "not a publishable key, no Origin header, an origin the key does not "
                     "allow, or another tenant's organization_id",
                409: "the same segment was accepted with a different body",
                413: f"body over {MAX_BEACON_BYTES // KIB} KiB",
                415: "not text/plain or application/json",
                429: "over the key's rate limit (`capture.browser`)",
                503: UNAVAILABLE,
            },
            (Parameter("origin", "header", Annotated[str, Meta(max_length=2048)],
                       "the page's origin, as browsers send it; one of the key's origins",
                       required=True),),
            request={TEXT: BeaconSession, JSON: BeaconSession},
        ),
        Operation(
            "/v1/browser/events", "options", "preflightBeacon", "capture",
            "CORS preflight of a beacon, for the key's origins", "beacon",
            {204: Body("allowed", {}, {
                "access-control-allow-origin": "the request's Origin",
                "access-control-allow-methods": "POST",
                "access-control-allow-headers": "content-type",
                "access-control-max-age": "seconds a browser may cache this answer",
            })},
            {
                401: "no `?key=`, or an unknown or revoked key",
                403: "not a publishable key, no Origin header, an origin the key does not "
                     "allow, or a method other than POST",
                503: UNAVAILABLE,
            },
            (Parameter("origin", "header", Annotated[str, Meta(max_length=2048)],
                       "the page's origin; one of the key's origins", required=True),
             Parameter("access-control-request-method", "header", Literal["POST"],
                       "the method the page will use")),
        ),
        # ----- events
        Operation(
            "/v1/events/{event_id}", "get", "getEvent", "events",
            "One event of the key's tenant, with its ledger position and hash", "read",
            {200: _json(answers.StoredEvent, "the event")},
            _merge(KEYED, SPANNING, {404: "no such event in the tenant (another tenant's is not revealed)"}),
            (Parameter("event_id", "path", EventId, "the event's `event_id`", required=True), TENANT),
        ),
        Operation(
            "/v1/sessions/{session_id}", "get", "getSession", "events",
            "A session's events, in ledger order", "read",
            {200: _json(answers.SessionEvents, "the session's events")},
            _merge(KEYED, SPANNING, {404: "no event of this session in the tenant"}),
            (Parameter("session_id", "path", PathSegment, "the events' `session.session_id`",
                       required=True), TENANT),
        ),
        # ----- privacy
        Operation(
            "/v1/subjects/{user_id}", "delete", "eraseSubject", "privacy",
            "Erase a user: destroy its data keys and ledger an ERASURE entry (idempotent)", "admin",
            {202: _json(answers.Erased, "erased (now, or by an earlier call: the same answer)")},
            _merge(KEYED, SPANNING, {
                400: "user_id over 256 characters",
                404: "no event of this user is stored encrypted in the tenant",
                409: "encryption at rest is off (no master key), or the user is under a legal hold "
                     "(details name the hold)",
            }),
            (Parameter("user_id", "path", PathSegment, "the events' `user.user_id`", required=True),
             TENANT),
        ),
        Operation(
            "/v1/subjects/{user_id}/export", "get", "exportSubject", "privacy",
            "Every event of a user, each with its leaf, salt and inclusion proof against a "
            "checkpoint issued for the export (`scr ledger verify --export` checks it offline)",
            "admin",
            {200: _json(answers.SubjectExport, "the export")},
            _merge(KEYED, SPANNING, {
                400: "user_id over 256 characters",
                404: "no event of this user is stored encrypted in the tenant",
                409: "encryption at rest is off (no master key)",
                503: UNAVAILABLE,
            }),
            (Parameter("user_id", "path", PathSegment, "the events' `user.user_id`", required=True),
             TENANT),
        ),
        # ----- retention
        Operation(
            HOLDS_PATH, "post", "placeLegalHold", "retention",
            "Place a legal hold on the tenant, or on one of its users: purge and erasure are "
            "refused until it is released (ledgered, naming the acting key)", "admin",
            {201: _json(answers.LegalHoldView, "placed")},
            _merge(KEYED, JSON_BODY, {
                403: "the body names another tenant than the key's",
                413: f"body over {MAX_HOLD_BODY_BYTES // KIB} KiB",
            }),
            request={JSON: HoldRequest},
        ),
        Operation(
            HOLDS_PATH, "get", "listLegalHolds", "retention",
            "The tenant's legal holds, oldest first (active ones unless `all=true`)", "admin",
            {200: _json(answers.LegalHolds, "the holds")},
            _merge(KEYED, SPANNING, {400: "`all` is not true or false"}),
            (Parameter("all", "query", bool, "also the released holds (default false)"), TENANT),
        ),
        Operation(
            HOLD_PATH, "delete", "releaseLegalHold", "retention",
            "Release a legal hold (ledgered, naming the acting key); the user id is forgotten",
            "admin",
            {200: _json(answers.LegalHoldView, "released")},
            _merge(KEYED, SPANNING, {404: "no active hold of this id in the tenant"}),
            (Parameter("hold_id", "path", PathSegment, "the hold's `id`", required=True), TENANT),
        ),
        # ----- route
        Operation(
            "/v1/destinations", "get", "listDestinations", "route",
            "Destinations: state, lag, cursor, last error", "read",
            {200: _json(answers.Destinations, "every configured destination")},
            KEYED,
        ),
        Operation(
            "/v1/destinations/{name}/enable", "post", "enableDestination", "route",
            "Re-enable a destination disabled by a 410", "admin",
            {200: _json(answers.Enabled, "enabled (and ledgered); `requeued` deliveries go out again")},
            _merge(KEYED, SPANNING, {404: "no destination of that name"}),
            (Parameter("name", "path", DestinationName, "the destination's name", required=True),
             TENANT),
        ),
        Operation(
            "/v1/deliveries", "get", "listDeliveries", "route",
            "Deliveries by destination and status, newest first", "read",
            {200: _json(answers.Deliveries, "the deliveries")},
            _merge(KEYED, {400: "an unknown status, or a limit out of range",
                           404: "no destination of that name"}),
            (Parameter("destination", "query", DestinationName, "only this destination's"),
             Parameter("status", "query", {"enum": list(DELIVERY_STATUSES)},
                       "only deliveries in this status"),
             Parameter("limit", "query", ListLimit, "at most this many (default 100)"),
             Parameter("tenant", "query", TenantId, "for a caller that spans tenants: only "
                       "this tenant's (default all)")),
        ),
        Operation(
            "/v1/deliveries/replay", "post", "replayDeliveries", "route",
            "Requeue deliveries, keeping event ids and webhook ids", "admin",
            {200: _json(answers.Requeued, "how many deliveries were requeued")},
            _merge(KEYED, JSON_BODY, SPANNING, {
                400: "neither `event_ids` nor `from`, or an unknown status",
                404: "no destination of that name",
                413: f"body over {MAX_QUERY_BODY_BYTES // MIB} MiB",
            }),
            (TENANT,),
            request={JSON: ReplayRequest},
        ),
        Operation(
            "/v1/audit", "get", "listAuditEntries", "audit",
            "The tenant's admin actions (keys, replay, enable, ...), each naming the acting key, "
            "in ledger order", "audit",
            {200: _json(answers.AuditTrail, "the admin entries committed in [from, to)")},
            _merge(KEYED, SPANNING, {400: "`from` or `to` is not an RFC 3339 time with a zone"}),
            (Parameter("from", "query", str, "RFC 3339: entries committed at or after it"),
             Parameter("to", "query", str, "RFC 3339: entries committed before it"), TENANT),
        ),
        # ----- usage
        Operation(
            "/v1/usage", "get", "getUsage", "usage",
            "Exact usage by window (hour, day, week, month of a time zone) and group, and the "
            "totals; a `platform` key reads a tenant named with `tenant=`", "read",
            {200: _json(answers.UsageReport, "the non-empty windows and the totals")},
            _merge(KEYED, {400: "a parameter is missing or wrong (its name is the detail's path): "
                                "an unknown window, time zone or group key, `from`/`to` not on a "
                                "window boundary in `tz`, `to` not after `from`, or a range over "
                                f"{MAX_USAGE_DAYS} days; or a `platform` key named no `tenant`"}),
            (Parameter("from", "query", AwareTime, "start, inclusive: RFC 3339, a window start "
                       "in `tz`", required=True),
             Parameter("to", "query", AwareTime, "end, exclusive: RFC 3339, a window start in "
                       f"`tz`, at most {MAX_USAGE_DAYS} days after `from`", required=True),
             Parameter("window", "query", Literal[WINDOWS], "the window (default `day`); weeks "
                       "start on Monday"),
             Parameter("tz", "query", str, "an IANA time zone (default `UTC`); windows start at "
                       "its local midnight or hour"),
             Parameter("group_by", "query", str, "comma-separated keys among "
                       + ", ".join(f"`{k}`" for k in GROUP_KEYS)),
             PLATFORM_TENANT),
        ),
        Operation(
            "/v1/usage/users", "get", "getUsageByUser", "usage",
            "Per-user analytics over a range: sessions, events, success rate, cost per session, "
            "median session duration; the top users by `order_by`, and the totals", "read",
            {200: _json(answers.UsersReport, "the top users and the totals of every user")},
            _merge(KEYED, {400: "a parameter is wrong (its name is the detail's path): an unknown "
                                "time zone or `order_by`, a `limit` not from 1 to "
                                f"{MAX_USERS_LIMIT}, `from`/`to` not an hour start in `tz`, `to` "
                                f"not after `from`, or a range over {MAX_USAGE_DAYS} days; or a "
                                "`platform` key named no `tenant`"}),
            (Parameter("from", "query", AwareTime, "start, inclusive: RFC 3339, an hour start "
                       "in `tz`", required=True),
             Parameter("to", "query", AwareTime, "end, exclusive: RFC 3339, an hour start in "
                       f"`tz`, at most {MAX_USAGE_DAYS} days after `from`", required=True),
             Parameter("tz", "query", str, "an IANA time zone (default `UTC`)"),
             Parameter("order_by", "query", Literal[USER_ORDERS], "what ranks the users, "
                       "highest first (default `cost_usd`); ties by user id"),
             Parameter("limit", "query", UsersLimit, f"how many users to list, 1 to {MAX_USERS_LIMIT} "
                       f"(default {DEFAULT_USERS_LIMIT})"),
             PLATFORM_TENANT),
        ),
        Operation(
            "/v1/anomalies", "get", "listAnomalies", "usage",
            "The tenant's anomalies (cost, tokens or error rate of a closed window outside its "
            "band), each explained by model and user; a `platform` key reads a tenant named "
            "with `tenant=`", "read",
            {200: _json(answers.AnomalyList, "the anomalies whose window starts in [from, to)")},
            _merge(KEYED, {400: "`from` or `to` is not an RFC 3339 time with a zone, or a "
                                "`platform` key named no `tenant`"}),
            (Parameter("from", "query", str, "RFC 3339: windows starting at or after it"),
             Parameter("to", "query", str, "RFC 3339: windows starting before it"),
             Parameter("tenant", "query", TenantId, "the tenant, for a `platform` key (required "
                       "then); a tenant's own key ignores it")),
        ),
        Operation(
            "/v1/budgets", "get", "getBudgets", "usage",
            "The tenant's budgets and the exact cost spent in each one's current UTC period",
            "read",
            {200: _json(answers.Budgets, "the budgets of the key's tenant (maybe none)")},
            _merge(KEYED, SPANNING), (TENANT,),
        ),
        Operation(
            LIVE_PATH, "get", "getDashboardLive", "usage",
            "The tenant's live numbers as Server-Sent Events (`event: numbers`, `data:` a JSON "
            "object), one a second: accepted, duplicate and rejected events, events/s, the "
            "acceptance rate, and each destination's lag and the tenant's dead letters",
            "read",
            {200: Body("the stream; it ends after `events` updates",
                       {"text/event-stream": answers.LiveEvent},
                       {"cache-control": "no-store"})},
            _merge(KEYED, SPANNING, {
                400: f"`events` is not an integer from 1 to {MAX_STREAM_EVENTS}",
                503: f"{MAX_LIVE_STREAMS} streams are open on this HTTP process already",
            }),
            (Parameter("events", "query", Annotated[int, Meta(ge=1, le=MAX_STREAM_EVENTS)],
                       f"how many updates to send before the stream ends (default {MAX_STREAM_EVENTS})"),
             TENANT),
        ),
        # ----- enrichment
        Operation(
            "/v1/sessions/{session_id}/similar", "get", "getSimilarSessions", "enrichment",
            "The sessions of the tenant most similar to this one (its newest embedded text), "
            "one result per session, best first; never the session itself", "read",
            {200: _json(answers.SimilarSessions, "up to `k` sessions")},
            _merge(KEYED, SPANNING, {
                400: f"`k` is not a whole number from 1 to {MAX_SIMILAR_K}",
                404: "the tenant has no embedded session of this id (another tenant's is the "
                     "same), or enrichment is off",
            }),
            (Parameter("session_id", "path", PathSegment, "the session's `session.session_id`",
                       required=True),
             Parameter("k", "query", Annotated[int, Meta(ge=1, le=MAX_SIMILAR_K)],
                       f"how many sessions (default {DEFAULT_SIMILAR_K})"), TENANT),
        ),
        Operation(
            "/v1/search", "post", "searchSessions", "enrichment",
            "The tenant's sessions most similar to a text, filtered; never fewer than min(k, "
            "sessions the filter keeps)", "read",
            {200: _json(answers.SimilarSessions, "up to `k` sessions")},
            _merge(KEYED, SPANNING, JSON_BODY, {
                404: "enrichment is off",
                413: f"body over {MAX_SEARCH_BODY_BYTES // KIB} KiB",
                503: "the embedder cannot embed the text now, or " + UNAVAILABLE,
            }),
            (TENANT,),
            request={JSON: SearchRequest},
        ),
        *(Operation(
            f"/v1/enrichment/{verb}", "post", f"{verb}Enrichment", "enrichment",
            summary, "any_tenant",
            {202: _json(answers.EnrichmentStatus, "asked: the enricher does it after the live "
                        "entries (`backfill` in the answer shows its progress)")},
            _merge(KEYED, {404: "enrichment is off"}), (TENANT,),
        ) for verb, summary in (
            ("backfill", "Embed what the ledger held before enrichment was turned on (every "
                         "tenant's; resumes where an earlier backfill stopped)"),
            ("rebuild", "Delete every vector and saved index, then embed the whole ledger again "
                        "(after a change of model)"),
        )),
        Operation(
            "/v1/enrichment", "get", "getEnrichment", "enrichment",
            "The embedder, the tenant's indexed sessions, the enricher's lag and last error, the "
            "backfill's progress (a `platform` key too, to follow a backfill it asked for)",
            "read",
            {200: _json(answers.EnrichmentStatus, "the enrichment's state")},
            _merge(KEYED, SPANNING, {404: "enrichment is off"}), (TENANT,),
        ),
        Operation(
            "/v1/usage/reconcile", "post", "reconcileUsage", "usage",
            "Compare a provider's export (the body) with the ledger per (day, model); every "
            "difference explained", "admin",
            {200: _json(answers.Reconciliation, "matched pairs, explained differences, deliveries")},
            _merge(KEYED, SPANNING, {
                400: "an unknown `format`, or a bad export: one detail per bad line (`line N`)",
                413: f"body over {MAX_EXPORT_BYTES // MIB} MiB (as sent or inflated)",
                415: "a content type other than " + ", ".join(EXPORT_MEDIA_TYPES)
                     + ", or an encoding other than gzip",
            }),
            (Parameter("format", "query", Literal[FORMATS], "the export's format", required=True),
             TENANT),
            request={JSON: {"type": "object"}, TEXT: {"type": "string"}},
        ),
        # ----- ledger proofs
        *_ledger_operations(),
        # ----- canon
        Operation(
            "/v1/decide", "post", "decide", "canon",
            "Choose an agent's next action (Bickford Canon); the decision is ledgered", "decide",
            {200: _json(Decision, "the decision, selected or none admissible, with traces")},
            _merge(KEYED, JSON_BODY, SPANNING, CANON_BODY),
            (TENANT,),
            request={JSON: DecideRequest},
        ),
        Operation(
            "/v1/canon/items", "get", "listCanonItems", "canon",
            "Canon items, by level and kind", "read",
            {200: _json(answers.CanonItems, "the items")},
            _merge(KEYED, {400: "an unknown level or kind"}, SPANNING),
            (Parameter("level", "query", Level, "only items at this level"),
             Parameter("kind", "query", ItemKind, "only items of this kind"), TENANT),
        ),
        Operation(
            "/v1/canon/items", "post", "addCanonItem", "canon",
            "Add or change a canon item (it enters at EVIDENCE)", "admin",
            {201: _json(CanonItem, "the item as the ledger made it")},
            _merge(KEYED, JSON_BODY, SPANNING, CANON_BODY, {403: "the item is a built-in invariant"}),
            (TENANT,),
            request={JSON: ItemSpec},
        ),
        Operation(
            "/v1/canon/promote", "post", "promoteCanonItem", "canon",
            "Run the promotion gate for a canon item (one level up)", "admin",
            {200: _json(PromotionResult, "the promotion decision, approved or not, with its tests")},
            _merge(KEYED, JSON_BODY, SPANNING, CANON_BODY, {404: "no such canon item"}),
            (TENANT,),
            request={JSON: PromoteRequest},
        ),
        Operation(
            "/v1/canon/why-not/{trace_id}", "get", "getWhyNot", "canon",
            "Why a candidate was denied: one denial trace of a decision", "read",
            {200: _json(WhyNot, "the trace")},
            _merge(KEYED, SPANNING, {404: "no such trace in the tenant"}),
            (Parameter("trace_id", "path", PathSegment,
                       "`wn-<decision entry id>-<n>`, as a decision's traces name it", required=True),
             TENANT),
        ),
        Operation(
            "/v1/canon/observations", "post", "observe", "canon",
            "Record evidence about an action or a canon item", "ingest",
            {201: _json(answers.Observed, "recorded")},
            _merge(KEYED, JSON_BODY, SPANNING, CANON_BODY),
            (TENANT,),
            request={JSON: Observation},
        ),
        # ----- cluster
        Operation(
            "/v1/cluster", "get", "getCluster", "cluster",
            "Instances, the partitions each owns, bus lag per partition", "cluster",
            {200: _json(answers.Cluster, "this instance's view of the cluster")},
            KEYED,
        ),
        Operation(
            "/v1/conflicts", "get", "listConflicts", "cluster",
            "Events whose id came back through the bus with another body after its 202", "read",
            {200: _json(answers.Conflicts, "the tenant's conflicts, oldest first (at most 1,000)")},
            _merge(KEYED, {400: "`after` is not a ledger seq"}, SPANNING),
            (Parameter("after", "query", LedgerSeq, "only conflicts recorded after this ledger seq"),
             TENANT),
        ),
        # ----- operate
        Operation(
            "/", "get", "dashboard", "operate",
            "The dashboard page (HTML); a read key is typed into it, kept in memory only", None,
            {200: Body("the page", {"text/html": {"type": "string"}},
                       {"content-security-policy": "the page runs only its own files"})},
            {},
        ),
        Operation(
            "/dashboard/{name}", "get", "dashboardFile", "operate",
            "A file of the dashboard page (its script and style, uPlot and uPlot's licence)", None,
            {200: Body("the file", {media.split(";")[0]: {"type": "string"}
                                    for media in set(STATIC_FILES.values())},
                       {"cache-control": f"public, max-age={STATIC_CACHE_S}"})},
            {404: "no such file"},
            (Parameter("name", "path", Literal[tuple(STATIC_FILES)], "the file's name", required=True),),
        ),
        Operation(
            "/healthz", "get", "healthz", "operate", "Liveness", None,
            {200: _json(answers.Health, "the process answers")}, {},
        ),
        Operation(
            "/readyz", "get", "readyz", "operate",
            "Readiness: the ledger commits now (and the bus is reachable)", None,
            {200: _json(answers.Ready, "ready")},
            {503: "the ledger cannot commit, or the bus is unreachable"},
        ),
        Operation(
            "/metrics", "get", "metrics", "operate", "Prometheus metrics (text format 0.0.4)", None,
            {200: Body("the metrics", {TEXT: {"type": "string"}})},
            {503: "the store cannot be read now"},
        ),
        Operation(
            "/openapi.json", "get", "openapi", "operate", "This document (OpenAPI 3.1)", None,
            {200: Body("the document", {JSON: {"type": "object"}})}, {},
        ),
        Operation(
            "/v1/schema", "get", "eventSchema", "operate",
            "JSON Schema (draft 2020-12) of the event, schema v1.2", None,
            {200: Body("the schema", {JSON: {"type": "object"}})}, {},
        ),
    ]


def _ledger_operations() -> list[Operation]:
    bad = "a query parameter is missing or not a non-negative integer, or out of range"
    no_ledger = "the ledger no longer extends its newest checkpoint, or " + UNAVAILABLE
    errors = _merge({**KEYED, 503: no_ledger}, SPANNING)
    note = Body("the C2SP signed note, byte for byte", {TEXT: {"type": "string"}})
    since = Parameter("since", "query", TreeSize, "only checkpoints of at least this tree size")
    return [
        Operation(
            "/v1/ledger/checkpoint", "get", "getCheckpoint", "ledger",
            "The tenant's newest signed checkpoint (the first is issued on demand)", "ledger",
            {200: note}, _merge(errors, {404: "the tenant has no ledger entries yet"}), (TENANT,),
        ),
        Operation(
            "/v1/ledger/checkpoint", "post", "issueCheckpoint", "ledger",
            "Sign the tenant's tree now", "ledger",
            {200: note}, _merge(errors, {404: "the tenant has no ledger entries yet"}), (TENANT,),
        ),
        Operation(
            "/v1/ledger/public-key", "get", "getLedgerPublicKey", "ledger",
            "The C2SP verifier key `<name>+<key id>+<base64 key>`", "ledger",
            {200: Body("the verifier key and a newline", {TEXT: {"type": "string"}})},
            {**KEYED, 503: no_ledger},
        ),
        Operation(
            "/v1/ledger/checkpoints", "get", "listCheckpoints", "ledger",
            "The tenant's checkpoints of at least `since` entries, oldest first (at most 1,000)",
            "ledger",
            {200: _json(answers.Checkpoints, "the checkpoints")},
            _merge({400: bad}, errors), (since, TENANT),
        ),
        Operation(
            "/v1/ledger/entries", "get", "listLedgerEntries", "ledger",
            "The tenant's ledger entries [start, end) with their leaf bytes (at most 1,000)",
            "ledger",
            {200: _json(answers.LedgerEntries, "the entries (fewer past the tree's end)")},
            _merge({400: bad + ", or end below start"}, errors),
            (Parameter("start", "query", TreeSize, "first index", required=True),
             Parameter("end", "query", TreeSize, "index after the last", required=True), TENANT),
        ),
        Operation(
            "/v1/ledger/proof/inclusion", "get", "getInclusionProof", "ledger",
            "RFC 6962 inclusion proof of one entry, named by `event_id` or `index`", "ledger",
            {200: _json(answers.InclusionProof, "the proof")},
            _merge({400: bad + ", not exactly one of event_id and index, or a tree_size "
                         "beyond the log or not above the index",
                     404: "no such event or index in the tenant"}, errors),
            (Parameter("event_id", "query", EventId, "the entry's event id"),
             Parameter("index", "query", TreeSize, "the entry's index (entries without an event id)"),
             Parameter("tree_size", "query", TreeSize, "the tree the proof is for", required=True),
             TENANT),
        ),
        Operation(
            "/v1/ledger/proof/consistency", "get", "getConsistencyProof", "ledger",
            "RFC 6962 consistency proof between two tree sizes", "ledger",
            {200: _json(answers.ConsistencyProof, "the proof")},
            _merge({400: bad + ", first above second, or second beyond the log"}, errors),
            (Parameter("first", "query", TreeSize, "the smaller tree size", required=True),
             Parameter("second", "query", TreeSize, "the larger tree size", required=True), TENANT),
        ),
    ]


# ----- rendering ----------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(name=name)}


class _Schemas:
    """Collects the types an operation names and renders them, all at once, as components."""

    def __init__(self) -> None:
        self.types: list[Any] = []

    def of(self, kind: Any) -> Any:
        """A placeholder for ``kind``'s schema: a ready dict stays as is; a type is collected."""
        if isinstance(kind, dict):
            return kind
        self.types.append(kind)
        return _Pending(len(self.types) - 1)

    def render(self, document: Any) -> tuple[Any, dict[str, Any]]:
        schemas, components = msgspec.json.schema_components(self.types, ref_template=REF_TEMPLATE)
        # money as the API takes it (a number or a decimal string), as `scr schema` has it
        return _fill(document, with_money_schema(schemas)), with_money_schema(components)


@dataclass(frozen=True)
class _Pending:
    index: int


def _fill(value: Any, schemas: tuple[Any, ...]) -> Any:
    if isinstance(value, _Pending):
        return schemas[value.index]
    if isinstance(value, dict):
        return {key: _fill(item, schemas) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, schemas) for item in value]
    return value


def _operation(op: Operation, schemas: _Schemas) -> dict[str, Any]:
    rendered: dict[str, Any] = {"operationId": op.operation_id, "tags": [op.tag], "summary": op.summary}
    if op.permission is None:
        rendered["security"] = []
        rendered["description"] = "Needs no key."
    elif op.permission == "beacon":
        rendered["security"] = [{"publishableKey": []}]
        rendered["description"] = "A `publishable` key in `?key=`, from one of its origins."
    else:
        roles = [role.value for role, allowed in PERMISSIONS.items() if op.permission in allowed]
        rendered["security"] = [{"apiKey": []}]
        rendered["description"] = "Roles: " + ", ".join(f"`{role}`" for role in roles) + "."
        rendered["x-roles"] = roles  # the same, for machines (other roles get 403)
    if op.parameters:
        rendered["parameters"] = [
            {"name": p.name, "in": p.where, "required": p.required, "description": p.description,
             "schema": schemas.of(p.kind)}
            for p in op.parameters
        ]
    if op.request is not None:
        rendered["requestBody"] = {"required": True, "content": {
            media: {"schema": schemas.of(kind)} for media, kind in op.request.items()
        }}
    responses: dict[str, Any] = {}
    for status, body in op.answers.items():
        answer: dict[str, Any] = {"description": body.description}
        if body.content:
            answer["content"] = {media: {"schema": schemas.of(kind)} for media, kind in body.content.items()}
        if body.headers:
            answer["headers"] = {
                name: {"description": text, "required": True, "schema": {"type": "string"}}
                for name, text in body.headers.items()
            }
        responses[str(status)] = answer
    errors = {**op.errors, 500: "an unexpected error (logged by the server)"}
    for status, when in sorted(errors.items()):
        error: dict[str, Any] = {"description": when, "content": {JSON: {"schema": _ref("Error")}}}
        if status == 429:
            error["headers"] = {"retry-after": {"description": RETRY_AFTER, "required": True,
                                                "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
        responses[str(status)] = error
    rendered["responses"] = responses
    return rendered


def document() -> dict[str, Any]:
    """The OpenAPI document served at ``/openapi.json``."""
    schemas = _Schemas()
    for kind in (answers.Error, Event, CloudEvent, answers.ErasedEvent):  # named by `_ref`
        schemas.of(kind)
    paths: dict[str, dict[str, Any]] = {}
    for op in _operations():
        paths.setdefault(op.path, {})[op.method] = _operation(op, schemas)
    rendered_paths, components = schemas.render(paths)
    # CloudEvent keeps `data` as raw bytes to decode it later: it carries an Event.
    components["CloudEvent"]["properties"]["data"] = _ref("Event")
    # A stored event reads back erased once its subject is (scr.privacy): either shape.
    either = {"anyOf": [_ref("Event"), _ref("ErasedEvent")]}
    components["StoredEvent"]["properties"]["event"] = either
    components["ExportedEvent"]["properties"]["event"] = either
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "scr: Session Completion Runtime",
            "version": __version__,
            "description": (
                "Capture, validate, commit and route AI session completion events. Every error "
                'is `{"error": {"code", "message", "details": [{"path", "message"}]}}`. An API '
                "key is sent as `Authorization: Bearer <key>`; a key whose role may not use an "
                "operation gets 403."
            ),
        },
        "tags": [{"name": name} for name in
                 ("capture", "events", "privacy", "retention", "route", "usage", "enrichment",
                  "ledger", "audit", "canon", "cluster", "operate")],
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": "an API key, `scr_<key id>_<secret>`"},
                # sendBeacon cannot set headers: a publishable key rides in the query string
                "publishableKey": {"type": "apiKey", "in": "query", "name": "key"},
            },
            "schemas": components,
        },
        "paths": rendered_paths,
    }
