"""OpenTelemetry ingest: OTLP/HTTP traces at ``POST /v1/otlp/v1/traces`` → session completions.

The body is an ``ExportTraceServiceRequest`` in protobuf (``application/x-protobuf``,
decoded by the ``opentelemetry-proto`` generated classes) or OTLP JSON (``application/json``:
hex trace and span ids, camelCase keys, int64 as strings), optionally gzip-encoded; both the
body and its decompressed size are bounded before parsing. The key is a normal API key
(``Authorization: Bearer``, set in the exporter's headers); the tenant is the key's.

What the ``200`` means: every GenAI span of the request is **stored durably** (a pending-span
table, committed and fsynced by the committer, ``scr.store.spans``) before the answer, and every
session the request completed is already in the ledger, in that same transaction. A session
(``scr.capture.genai``) is emitted as one ``session.completed`` event when its root span
arrives or after ``capture.otlp.session_idle_s`` without a new span; its spans are deleted in
the transaction that appends the event, and its event id is derived from (tenant, session,
segment), so an emission repeated after a crash is a duplicate, never a second charge.
Emitted events pass the same validation, dedup and ledger append as ``POST /v1/events``.

The answer is an ``ExportTraceServiceResponse`` in the request's encoding, with
``partial_success`` counting rejected spans (bad ids, times or GenAI values) and, as a
warning, the spans ignored for having no ``gen_ai.*`` attribute. Errors (400, 401, 413, 415)
answer scr's standard JSON error body.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scr.capture.genai import (
    CONVERSATION_PREFIX,
    TRACE_PREFIX,
    GenAISpan,
    SpanRejected,
    closes_session,
    read_span,
    session_event,
    session_key,
)
from scr.capture.ingest import Item, count_outcomes, media_type, validate
from scr.errors import BadRequest, Unavailable, UnsupportedMediaType
from scr.httpio import read_decoded_body
from scr.jsontext import check_json_text
from scr.log.commit import Outcome, utc_now
from scr.route.price_file import live_prices
from scr.runtime import Runtime
from scr.schema import InvalidEvent
from scr.security.keys import Principal, Role, check_tenant_id
from scr.store.protocol import Transaction
from scr.store.records import ENTRY_TIME_FORMAT
from scr.store.spans import EMITTED_SPAN_RETENTION_S, PendingSpans, SpanRow, now_ms

log = logging.getLogger("scr.capture.otlp")

OTLP_TRACES_PATH = "/v1/otlp/v1/traces"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
IDLE_TICK_S = 1.0
PRUNE_EVERY_S = 600.0
# Idle sessions emitted per group transaction (a backlog takes several, one after another).
IDLE_SESSIONS_PER_GROUP = 500
MAX_ATTRIBUTES_PER_SPAN = 512
MAX_REPORTED_PROBLEMS = 5
_SCALARS = ("string_value", "bool_value", "int_value", "double_value")
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")

_span_encoder = msgspec.msgpack.Encoder()
_span_decoder = msgspec.msgpack.Decoder(GenAISpan)


# ----- decoding -------------------------------------------------------------------------------


def decode_export(body: bytes, kind: str) -> ExportTraceServiceRequest:
    """An ``ExportTraceServiceRequest`` from protobuf or OTLP JSON; 400 when malformed."""
    request = ExportTraceServiceRequest()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as error:
            raise BadRequest(f"malformed protobuf: {error}") from None
        return request
    check_json_text(body)
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise BadRequest(f"malformed JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadRequest("an OTLP JSON body is an object with resourceSpans")
    _hex_ids_to_base64(document)
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except json_format.ParseError as error:
        raise BadRequest(f"malformed OTLP JSON: {error}") from None
    return request


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    """OTLP JSON writes ids as hex where protobuf's JSON mapping expects base64: convert them
    in place (an id that is not hex becomes empty, and its span is rejected)."""
    for resource_spans in _dicts(document.get("resourceSpans")):
        for scope_spans in _dicts(resource_spans.get("scopeSpans")):
            for span in _dicts(scope_spans.get("spans")):
                for holder in (span, *_dicts(span.get("links"))):
                    for name in _ID_FIELDS:
                        value = holder.get(name)
                        if isinstance(value, str):
                            holder[name] = _hex_to_base64(value)


def _dicts(value: Any) -> Iterable[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _hex_to_base64(value: str) -> str:
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError:
        return ""


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    """Scalar attribute values by key (arrays and maps are not used by the mapping)."""
    found: dict[str, Any] = {}
    for number, pair in enumerate(pairs):
        if number >= MAX_ATTRIBUTES_PER_SPAN:
            break
        which = pair.value.WhichOneof("value")
        if which in _SCALARS:
            found[pair.key] = getattr(pair.value, which)
    return found


def read_spans(request: ExportTraceServiceRequest) -> tuple[list[GenAISpan], list[str]]:
    """Every usable span of an export (GenAI or not), and why each other one was rejected."""
    spans: list[GenAISpan] = []
    problems: list[str] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                try:
                    spans.append(read_span(
                        span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(),
                        span.start_time_unix_nano, span.end_time_unix_nano, span.status.code,
                        span.status.message, _attributes(span.attributes), resource,
                    ))
                except SpanRejected as rejected:
                    problems.append(str(rejected))
    return spans, problems


def export_response(kind: str, rejected: int, message: str) -> Response:
    """OTLP's ``ExportTraceServiceResponse`` in the request's encoding."""
    answer = ExportTraceServiceResponse()
    if rejected or message:
        answer.partial_success.rejected_spans = rejected
        answer.partial_success.error_message = message
    if kind == PROTOBUF:
        return Response(answer.SerializeToString(), media_type=PROTOBUF)
    return Response(msgspec.json.encode(json_format.MessageToDict(answer)), media_type=JSON)


# ----- sessions -------------------------------------------------------------------------------


class OtlpSessions:
    """Stores GenAI spans and emits their sessions: on the root span, or after idle time.

    Where a session is emitted, on a PostgreSQL store shared by several instances (a cluster,
    ``bus:``): its spans may reach any instance, and all of them are stored through that
    instance's committer in the shared tables. A session whose root span arrives is emitted
    by the instance that took the root, in the transaction that stores it, because the
    ``200`` promises that a completed session is already in the ledger. Every other session
    is emitted by the idle timer of the owner of its tenant's partition (``scr.bus``), which
    reads the open sessions and their newest span time from the store (``otlp_sessions``),
    so it also emits what another instance, alive or gone, received or left open; a partition
    that moves takes its open sessions with it. Two emitters of one session cannot both emit
    it: the spans are read and marked emitted in one transaction, and locked (SQLite's one
    write transaction, PostgreSQL's row locks), so the second finds none left;
    should one ever append the same segment again, its event id (tenant, session, segment)
    makes it a duplicate in the ledger. Idle time is measured by the instances' clocks (keep
    them in step, NTP): a skew between two only moves an idle emission by as much.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.pending = PendingSpans(runtime.store, runtime.config.cluster.partitions)
        self.prices = live_prices(runtime.data_dir)
        self.idle_s = runtime.config.capture.otlp.session_idle_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the idle timer (sessions a previous run left open are in the store)."""
        self._task = asyncio.create_task(self._idle_loop(), name="scr-otlp-idle")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def ingest(self, tenant: str, actor: str, spans: list[GenAISpan]) -> tuple[int, int]:
        """Store spans and emit the sessions they complete, in one durable transaction;
        answers (stored, ignored)."""
        def write(tx: Transaction) -> tuple[int, int]:
            return self._store(tx, tenant, actor, spans)

        stored, ignored = await self.runtime.committer.run(write, max(1, len(spans)))
        metrics = self.runtime.metrics.otlp_spans
        metrics.labels("stored").inc(stored)
        metrics.labels("ignored").inc(ignored)
        return stored, ignored

    def _store(
        self, tx: Transaction, tenant: str, actor: str, spans: list[GenAISpan]
    ) -> tuple[int, int]:
        """On the writer thread: keep the request's GenAI spans under their session keys,
        then emit the sessions whose root arrived; (stored, ignored)."""
        conversation_of_trace: dict[str, str] = {}
        for span in spans:
            if span.genai and span.conversation_id:
                conversation_of_trace.setdefault(span.trace_id, span.conversation_id)
        # Spans stored earlier under their trace join the conversation it turned out to have.
        for trace_id, conversation in conversation_of_trace.items():
            self.pending.rekey(tx, tenant, TRACE_PREFIX + trace_id, CONVERSATION_PREFIX + conversation)
        key_of_trace: dict[str, str] = {}
        rows: list[SpanRow] = []
        touched: set[str] = set()
        closed: set[str] = set()
        ignored = 0
        for span in sorted(spans, key=lambda s: not s.genai):  # GenAI spans first: they name keys
            known = conversation_of_trace.get(span.trace_id)
            if span.genai:
                stored_key = None if known or span.conversation_id else self.pending.trace_session(
                    tx, tenant, span.trace_id, CONVERSATION_PREFIX
                )
                key = stored_key or session_key(span, known)
            else:
                # Kept only as the root that ends a trace with GenAI spans (its times count).
                found = key_of_trace.get(span.trace_id) or (
                    self.pending.has_trace(tx, tenant, span.trace_id) if span.is_root else None
                )
                if not span.is_root or found is None:
                    ignored += 1
                    continue
                key = found
            key_of_trace.setdefault(span.trace_id, key)
            rows.append((tenant, span.trace_id, span.span_id, key, actor, _span_encoder.encode(span)))
            touched.add(key)
            if closes_session(span, key):
                closed.add(key)
        stored = self.pending.insert(tx, rows)
        self.pending.touch(tx, tenant, touched - closed, now_ms())
        for key in sorted(closed):
            self._emit(tx, tenant, key)
        return stored, ignored

    def _emit(self, tx: Transaction, tenant: str, key: str) -> bool:
        """On the writer thread: one session's stored spans → an event appended to the ledger,
        the spans marked emitted, atomically. False when it had no span left to emit (another
        emitter was first, or only retried spans touched it)."""
        stored = self.pending.session(tx, tenant, key)
        if not stored:
            self.pending.close(tx, tenant, key)
            return False
        metrics = self.runtime.metrics
        segment = self.pending.next_segment(tx, tenant, key)
        spans = [_span_decoder.decode(blob) for _actor, blob in stored]
        actor = stored[0][0]
        principal = Principal(actor.removeprefix("key:"), tenant, Role.INGEST)
        try:
            event = session_event(tenant, key, segment, spans, self.prices.current())
        except InvalidEvent as invalid:
            # The mapping only builds valid events; should one fail, say so, never drop quietly.
            log.error("OTLP session %s of %s made an invalid event: %s", key, tenant, invalid)
            metrics.otlp_sessions.labels("rejected").inc()
            metrics.rejected.labels(invalid.problems[0].code).inc()
            self.pending.finish(tx, tenant, key, segment, utc_now())
            return True
        batch = validate([Item(0, event.body)], principal, False, "otlp")
        if batch.submissions:
            outcomes = self.runtime.committer.append_events_in(tx, batch.submissions)
            outcome = outcomes[0][0]
            count_outcomes(metrics, outcomes)
            if outcome is Outcome.CONFLICT:
                log.error("OTLP session %s of %s conflicts with event %s already in the ledger",
                          key, tenant, event.event_id)
            metrics.otlp_sessions.labels(outcome.value).inc()
        else:
            log.error("OTLP session %s of %s was refused: %s", key, tenant,
                      batch.results[0].get("errors"))
            metrics.otlp_sessions.labels("rejected").inc()
            metrics.rejected.labels(batch.results[0]["errors"][0]["code"]).inc()
        self.pending.finish(tx, tenant, key, segment, utc_now())
        return True

    def owned_partitions(self) -> list[int] | None:
        """The partitions whose idle sessions this instance emits: those it owns in a
        cluster, every one (None) when it is alone on its store."""
        bus = self.runtime.bus
        return bus.owned if bus is not None and bus.clustered else None

    async def emit_idle(self) -> int:
        """Emit the sessions of this instance's partitions that had no span for
        ``session_idle_s``; how many were emitted here."""
        emitted = 0
        while True:
            due, done = await self._emit_idle_group(self.owned_partitions())
            emitted += done
            if due < IDLE_SESSIONS_PER_GROUP:
                return emitted

    async def _emit_idle_group(self, partitions: list[int] | None) -> tuple[int, int]:
        """One group of idle sessions: (how many were due, how many this call emitted)."""
        before_ms = now_ms() - int(self.idle_s * 1000)

        def idle(tx: Transaction) -> list[tuple[str, str]]:
            return self.pending.idle(tx, partitions, before_ms, IDLE_SESSIONS_PER_GROUP)

        # a look first, without a flush to disk: most ticks find nothing
        if not await self.runtime.committer.run(idle, durable=False):
            return 0, 0

        def write(tx: Transaction) -> tuple[int, int]:
            due = idle(tx)  # again, in the transaction that emits: another emitter may have been first
            return len(due), sum(self._emit(tx, tenant, key) for tenant, key in due)

        return await self.runtime.committer.run(write, IDLE_SESSIONS_PER_GROUP)

    async def forget_emitted(self) -> int:
        """Delete the spans emitted longer ago than their retention (see ``scr.store.spans``)."""
        before = (datetime.now(UTC) - timedelta(seconds=EMITTED_SPAN_RETENTION_S)).strftime(
            ENTRY_TIME_FORMAT
        )
        return await self.runtime.committer.run(
            lambda tx: self.pending.forget_emitted(tx, before), durable=False
        )

    async def _idle_loop(self) -> None:
        last_pruned = time.monotonic()
        while True:
            await asyncio.sleep(min(IDLE_TICK_S, self.idle_s / 2))
            try:
                await self.emit_idle()
                if time.monotonic() - last_pruned >= PRUNE_EVERY_S:
                    last_pruned = time.monotonic()
                    await self.forget_emitted()
            except Unavailable as error:  # the store is down: the spans stay stored, the next tick retries
                log.warning("emitting idle OTLP sessions failed: %s", error)
            except Exception:  # a failed commit is retried at the next tick; the spans stay stored
                log.exception("emitting idle OTLP sessions failed")


# ----- the route ------------------------------------------------------------------------------


def otlp_routes(runtime: Runtime) -> list[Route]:
    """``POST /v1/otlp/v1/traces`` over ``runtime``; its idle timer runs with the server."""
    sessions = OtlpSessions(runtime)
    runtime.on_start.append(sessions.start)
    runtime.before_stop.append(sessions.stop)

    async def post_traces(request: Request) -> Response:
        principal = runtime.principal(request, "ingest")
        tenant = principal.scope(request.query_params.get("tenant"))
        check_tenant_id(tenant)  # a spanning caller's ?tenant= becomes the events' organization_id
        kind = media_type(request.headers.get("content-type"))
        if kind not in (PROTOBUF, JSON):
            raise UnsupportedMediaType(f"send OTLP traces as {PROTOBUF} or {JSON}, not {kind[:60]}")
        body = await read_decoded_body(request, runtime.config.server.max_body_bytes)
        spans, problems = read_spans(decode_export(body, kind))
        runtime.metrics.otlp_spans.labels("rejected").inc(len(problems))
        _stored, ignored = await sessions.ingest(tenant, principal.actor, spans) if spans else (0, 0)
        notes = problems[:MAX_REPORTED_PROBLEMS]
        if len(problems) > MAX_REPORTED_PROBLEMS:
            notes.append(f"and {len(problems) - MAX_REPORTED_PROBLEMS} more rejected")
        if ignored:
            notes.append(f"{ignored} spans without gen_ai.* attributes were ignored")
        return export_response(kind, len(problems), "; ".join(notes))

    return [Route(OTLP_TRACES_PATH, post_traces, methods=["POST"])]
