"""Capture: from a ``POST /v1/events`` body to validated submissions and per-event results.

Bodies are plain JSON (one event or an array) or CloudEvents 1.0 structured mode (one
CloudEvent or a batch) carrying the event as ``data``, in UTF-8, optionally gzip-encoded.
The body's size is bounded before it is read (and inflated); its text is checked
(``scr.jsontext``: UTF-8, nesting depth) before it is decoded; each event's size is bounded
before it is decoded, and an event that repeats a key is refused. Every event is judged on
its own: in a batch, a bad event is rejected and the others go on to commit. The judging is
``scr.event_check``'s, done by the native core for a whole request when it is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from scr import native
from scr.capture.pricing import count_unpriced
from scr.config import ServerConfig
from scr.errors import (
    BadRequest,
    Conflict,
    Detail,
    Forbidden,
    PayloadTooLarge,
    ScrError,
    UnsupportedMediaType,
)
from scr.event_check import Judged, Refused, Verdict, judge_event, latest_epoch_us
from scr.httpio import JSONResponse, read_decoded_body
from scr.jsontext import check_json_text
from scr.log.commit import Outcome, Submission
from scr.metrics import Metrics
from scr.route.price_file import PriceSource
from scr.route.prices import default_prices
from scr.schema import EVENT_TYPE, MAX_EVENT_BYTES, Problem
from scr.security.keys import Principal

JSON = "application/json"
CLOUDEVENT = "application/cloudevents+json"
CLOUDEVENT_BATCH = "application/cloudevents-batch+json"
PLAIN_JSON_TYPES = (JSON, "application/x-json", "text/json")
EVENT_MEDIA_TYPES = (*PLAIN_JSON_TYPES, CLOUDEVENT, CLOUDEVENT_BATCH)


class CloudEvent(msgspec.Struct, gc=False):
    """CloudEvents 1.0 structured mode; extension attributes are allowed and ignored."""

    specversion: str
    id: str
    source: str
    type: str
    data: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b""))  # b"": absent
    datacontenttype: str | None = None
    data_base64: str | None = None


_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
_cloudevent = msgspec.json.Decoder(CloudEvent)


@dataclass(slots=True)
class Item:
    """One event of a request: its raw bytes or why it could not be read."""

    index: int
    raw: bytes | None = None
    problem: Problem | None = None
    status: int = 400


@dataclass(slots=True)
class Batch:
    """A request's events after validation, ready to commit."""

    is_batch: bool
    source: str
    results: list[dict[str, Any]] = field(default_factory=list)
    submissions: list[Submission] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # result index of each submission
    statuses: list[int] = field(default_factory=list)  # the status a single event answers
    tenant: str | None = None  # the key's tenant, which its rejected events count against


def media_type(content_type: str | None) -> str:
    return (content_type or JSON).split(";", 1)[0].strip().lower()


def events_media_type(content_type: str | None) -> str:
    """The media type of a ``POST /v1/events`` body (JSON when none is given); 415 for any
    other type, or a charset other than UTF-8 (the only one JSON is exchanged in, RFC 8259)."""
    kind = media_type(content_type)
    if kind not in EVENT_MEDIA_TYPES:
        raise _unsupported(kind)
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset != "utf-8":
            raise UnsupportedMediaType(
                f"charset '{charset[:40]}' is not supported; JSON is read as UTF-8 "
                "(send charset=utf-8, or no charset)"
            )
    return kind


def _unsupported(kind: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(
        f"unsupported content type '{kind[:60]}'; send {JSON}, {CLOUDEVENT} or {CLOUDEVENT_BATCH}"
    )


def split_body(body: bytes, kind: str, max_events: int) -> tuple[bool, list[Item], str]:
    """Split a body into its events: (is batch, items, source name)."""
    if kind not in EVENT_MEDIA_TYPES:
        raise _unsupported(kind)
    check_json_text(body)
    if kind == CLOUDEVENT:
        return False, [_cloudevent_item(0, body)], "cloudevents"
    if kind == CLOUDEVENT_BATCH:
        raws = _decode_list(body, max_events)
        return True, [_cloudevent_item(i, bytes(r)) for i, r in enumerate(raws)], "cloudevents"
    stripped = body.lstrip()
    if stripped[:1] == b"[":
        raws = _decode_list(body, max_events)
        return True, [Item(i, bytes(r)) for i, r in enumerate(raws)], "http"
    if stripped[:1] != b"{":
        raise BadRequest("body must be a JSON object (one event) or an array of events")
    return False, [Item(0, body)], "http"


def _decode_list(body: bytes, max_events: int) -> list[msgspec.Raw]:
    try:
        raws = _raw_list.decode(body)
    except msgspec.DecodeError as error:
        raise BadRequest(f"malformed JSON: {error}") from None
    if len(raws) > max_events:
        raise PayloadTooLarge(f"a batch holds at most {max_events} events; this one has {len(raws)}")
    return raws


def _cloudevent_item(index: int, raw: bytes) -> Item:
    try:
        envelope = _cloudevent.decode(raw)
    except msgspec.DecodeError as error:
        if index == 0 and not raw.lstrip().startswith(b"{"):
            raise BadRequest(f"malformed CloudEvent: {error}") from None
        return Item(index, problem=Problem("invalid_cloudevent", "$", str(error)))
    if envelope.specversion != "1.0":
        return Item(index, problem=Problem("invalid_cloudevent", "$.specversion", "must be '1.0'"))
    if envelope.type != EVENT_TYPE and not envelope.type.endswith("." + EVENT_TYPE):
        return Item(
            index,
            problem=Problem("invalid_cloudevent", "$.type", f"type must be '{EVENT_TYPE}'"),
        )
    if not envelope.data:
        message = "carry the event as JSON 'data'" + (
            " (data_base64 is not supported)" if envelope.data_base64 else ""
        )
        return Item(index, problem=Problem("invalid_cloudevent", "$.data", message))
    return Item(index, bytes(envelope.data))


def validate(items: list[Item], principal: Principal, is_batch: bool, source: str) -> Batch:
    """Decode and check each event; keep what may be committed.

    The native core judges the request's events in one call (``scr.native.check_events``);
    an event it does not accept, and every event when the core is off, is judged by the
    Python path alone (``scr.event_check.judge_event``), which names every problem.
    """
    batch = Batch(is_batch, source, tenant=principal.tenant)
    raws = [item.raw for item in items if item.problem is None and item.raw is not None]
    verdicts = iter(_verdicts(raws))
    for item in items:
        result: dict[str, Any] = {"index": item.index, "event_id": None, "status": "rejected"}
        batch.results.append(result)
        if item.problem is not None or item.raw is None:
            assert item.problem is not None
            _refuse(batch, result, Refused([item.problem]), item.status)
            continue
        verdict = next(verdicts)  # one for each raw event, in order: take it before any refusal
        if len(item.raw) > MAX_EVENT_BYTES:
            _refuse(batch, result, Refused([Problem(
                "event_too_large", "$", f"event is {len(item.raw)} bytes; the limit is {MAX_EVENT_BYTES}",
            )]), 413)
            continue
        judged = _judged(verdict) or judge_event(item.raw)
        if isinstance(judged, Refused):
            _refuse(batch, result, judged, 400)
            continue
        result["event_id"] = judged.event_id
        if not principal.may_write_for(judged.tenant):
            _refuse(batch, result, Refused([Problem(
                "forbidden_tenant", "$.user.organization_id",
                f"this key may not write events for organization '{judged.tenant}'",
            )], judged.event_id), 403)
            continue
        batch.submissions.append(_submission(judged, principal.actor, source))
        batch.positions.append(item.index)
        batch.statuses.append(202)
    return batch


def _submission(judged: Judged, actor: str, source: str) -> Submission:
    """What goes to the writer: the Python path's Event, else the native core's fields alone."""
    if judged.event is not None:
        return Submission(judged.event, judged.payload, judged.digest, actor, source)
    return Submission.undecoded(judged.payload, judged.digest, actor, source, judged.tenant,
                                judged.event_id, judged.session_id, judged.model)


def _verdicts(raws: list[bytes]) -> list[Verdict]:
    """The native core's verdict on each raw event; without the core, none (``None`` each):
    the reference of ``check_events`` would make the Python path decode each event twice."""
    if not native.NATIVE:
        return [None] * len(raws)
    return native.check_events(raws, latest_epoch_us())


def _judged(verdict: Verdict) -> Judged | None:
    if verdict is None:
        return None
    return Judged(*verdict)


def _refuse(batch: Batch, result: dict[str, Any], refused: Refused, status: int) -> None:
    """Record a refused event: its problems, and the status it answers when sent alone."""
    result["event_id"] = refused.event_id
    result["errors"] = [problem.as_dict() for problem in refused.problems]
    batch.statuses.append(status)


def settle(batch: Batch, outcomes: list[tuple[Outcome, int]]) -> None:
    """Record the commit's outcome of each submission in the results."""
    for position, (outcome, _seq) in zip(batch.positions, outcomes, strict=True):
        result = batch.results[position]
        if outcome is Outcome.CONFLICT:
            result["errors"] = [
                Problem(
                    "conflict", "$.event_id",
                    "an event with this id and a different body is already in the ledger",
                ).as_dict()
            ]
            batch.statuses[position] = 409
        else:
            result["status"] = outcome.value
            batch.statuses[position] = 202


def answer(batch: Batch) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body of a settled request."""
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    for result in batch.results:
        counts[result["status"]] += 1
    if not batch.is_batch:
        status = batch.statuses[0]
        if status != 202:
            raise _single_error(status, batch.results[0])
    body: dict[str, Any] = {**counts, "results": batch.results}
    return (207 if counts["rejected"] else 202), body


def _single_error(status: int, result: dict[str, Any]) -> ScrError:
    errors = result.get("errors", [])
    details = [Detail(e["path"], e["message"]) for e in errors]
    code = errors[0]["code"] if errors else "invalid_event"
    error: ScrError
    if status == 409:
        error = Conflict("an event with this id and a different body is already stored", details)
    elif status == 403:
        error = Forbidden("this key may not write events for that organization", details)
    elif status == 413:
        error = PayloadTooLarge(f"the event is over {MAX_EVENT_BYTES} bytes", details)
    else:
        error = BadRequest("the event is invalid", details)
    error.code = code
    return error


class Appender(Protocol):
    """Where validated events go: the committer, or the runtime (which may use the bus)."""

    async def append_events(self, submissions: Sequence[Submission]) -> list[tuple[Outcome, int]]: ...


async def ingest_request(
    request: Request, principal: Principal, limits: ServerConfig, appender: Appender,
    metrics: Metrics, prices: PriceSource | None,
) -> Response:
    """``POST /v1/events``, from the bounded body to the answer (edges and the writer alike)."""
    kind = events_media_type(request.headers.get("content-type"))
    body = await read_decoded_body(request, limits.max_body_bytes)
    is_batch, items, source = split_body(body, kind, limits.max_batch_events)
    batch = validate(items, principal, is_batch, source)
    status, content = await commit(batch, appender, metrics, prices)
    return JSONResponse(content, status_code=status)


async def commit(
    batch: Batch, appender: Appender, metrics: Metrics, prices: PriceSource | None = None
) -> tuple[int, dict[str, Any]]:
    """Commit a validated batch and count it: the HTTP status and body every ingest route answers.

    ``prices`` (the server's table in force; default the bundled one) finds unpriced models.
    """
    if batch.submissions:
        outcomes = await appender.append_events(batch.submissions)
        settle(batch, outcomes)
        count_outcomes(metrics, outcomes)
        count_tenants(metrics, batch.submissions, outcomes)
        table = prices.current() if prices is not None else default_prices()
        count_unpriced(metrics.unpriced_model, table, batch.submissions, outcomes)
    rejected = 0
    for result in batch.results:
        if result["status"] == "rejected":
            metrics.rejected.labels(result["errors"][0]["code"]).inc()
            rejected += 1
    if rejected and batch.tenant is not None:  # a key that spans tenants: whose is unknown
        metrics.tenant_events.labels(batch.tenant, "rejected").inc(rejected)
    return answer(batch)


def count_tenants(
    metrics: Metrics, submissions: list[Submission], outcomes: list[tuple[Outcome, int]]
) -> None:
    """Count accepted and duplicate events by tenant (the dashboard's live numbers)."""
    counted: dict[tuple[str, str], int] = {}
    for submission, (outcome, _) in zip(submissions, outcomes, strict=True):
        if outcome in (Outcome.ACCEPTED, Outcome.DUPLICATE):
            key = (submission.tenant, outcome.value)
            counted[key] = counted.get(key, 0) + 1
    for (tenant, outcome_name), count in counted.items():
        metrics.tenant_events.labels(tenant, outcome_name).inc(count)


def count_outcomes(metrics: Metrics, outcomes: list[tuple[Outcome, int]]) -> None:
    """Count accepted and duplicate events."""
    metrics.accepted.inc(sum(1 for outcome, _ in outcomes if outcome is Outcome.ACCEPTED))
    metrics.duplicate.inc(sum(1 for outcome, _ in outcomes if outcome is Outcome.DUPLICATE))
