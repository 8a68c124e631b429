"""OpenTelemetry GenAI spans → ``session.completed`` events: the mapping, as pure functions.

A span is a GenAI span when it has at least one ``gen_ai.*`` attribute. Its session is its
``gen_ai.conversation.id`` when one is known for its trace, else its trace id. The attribute
→ event mapping (the README's table is this module):

- ``session.session_id``: the conversation id, else the trace id (32 hex digits);
  ``start_time``/``end_time``: the earliest span start and the latest span end;
  ``session_type``: ``autonomous`` when an agent operation (``gen_ai.operation.name`` of
  ``invoke_agent``, ``create_agent``, ``execute_tool``, ``invoke_workflow``) is present, else
  ``chat`` with a conversation id, else ``api``.
- ``user.user_id``: ``user.id``, else ``enduser.id`` (span, then resource), else ``anonymous``;
  ``organization_id``: the API key's tenant; ``tier``: ``free`` (spans carry no tier).
- ``usage``: ``gen_ai.usage.input_tokens`` (or the older ``prompt_tokens``),
  ``output_tokens`` (``completion_tokens``), ``cache_read.input_tokens``,
  ``cache_creation.input_tokens`` (→ ``cache_write_tokens``), ``reasoning.output_tokens``,
  summed over the spans that report them. A span's usage is not counted when one of its
  descendants also reports usage (an agent span that sums its model calls is not counted
  twice). ``model``: ``gen_ai.response.model``, else ``gen_ai.request.model``, of the span(s)
  with the most tokens; ``provider``: ``gen_ai.provider.name``, else ``gen_ai.system``.
  ``estimated_cost_usd``: each counted span priced with its own model by the server's price
  table, summed exactly; a model without a price adds 0 and the tags ``price: unknown``
  and ``price_table_version`` (as the SDK tags it).
- ``outcome.status``: ``error`` when a span has status ERROR or an ``error.type``
  (``timeout`` when that type names a timeout), else ``success``; ``error_code``: the first
  ``error.type``, else the span status message.
- ``metadata.client_version``: resource ``service.version``; tags ``capture: otlp``,
  ``service`` (resource ``service.name``), ``spans``, ``traces``, and ``segment`` for the
  later parts of a session that went on after it was emitted.
- ``event_id``: derived from (tenant, session, segment): re-emitting after a crash is a
  duplicate, never a second charge. ``timestamp``: the session's end time.
- ``content``: only when the spans carry message content, which instrumentations record only
  when the host turns it on (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=span_only``
  or ``span_and_event``): from ``gen_ai.input.messages`` (JSON) of the latest span that has
  it, ``user_request`` is the text of the last ``user`` message and ``tool_outputs`` each
  ``tool_call_response`` part's response, each cut to 32,768 bytes of UTF-8.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

from scr.route.prices import (
    PRICE_VERSION_TAG,
    UNKNOWN_PRICE_TAG,
    UNKNOWN_PRICE_VALUE,
    PriceTable,
    default_prices,
)
from scr.schema import MAX_TOOL_OUTPUTS, OutcomeStatus, SessionType, Usage
from scr.sdk.event import CapturedEvent, build_event, cut_text

STATUS_ERROR = 2  # OTLP Status.code: 0 unset, 1 ok, 2 error
MAX_NAME_CHARS = 256
# No real call reports more; it keeps any sum of tokens far below the schema's 2**53.
MAX_SPAN_TOKENS = 2**40
EVENT_ID_PREFIX = "otel_"
EVENT_ID_DIGEST_BYTES = 16
CONVERSATION_PREFIX = "c:"
TRACE_PREFIX = "t:"
AGENT_OPERATIONS = frozenset({"invoke_agent", "create_agent", "execute_tool", "invoke_workflow"})
NANOS_PER_MICRO = 1000
ANONYMOUS_USER = "anonymous"
MAX_CLIENT_VERSION_CHARS = 128
NANOS_PER_SECOND = 1_000_000_000
INPUT_MESSAGES = "gen_ai.input.messages"  # set only when the host captures message content

# Token attributes, newest name first.
_TOKENS: dict[str, tuple[str, ...]] = {
    "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
    "output_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
    "cache_read_tokens": ("gen_ai.usage.cache_read.input_tokens",),
    "cache_write_tokens": ("gen_ai.usage.cache_creation.input_tokens",),
    "reasoning_tokens": ("gen_ai.usage.reasoning.output_tokens",),
}
_NAMES: dict[str, tuple[str, ...]] = {
    "conversation_id": ("gen_ai.conversation.id",),
    "user_id": ("user.id", "enduser.id"),
    "operation": ("gen_ai.operation.name",),
    "request_model": ("gen_ai.request.model",),
    "response_model": ("gen_ai.response.model",),
    "provider": ("gen_ai.provider.name", "gen_ai.system"),
    "error_type": ("error.type",),
}

Attributes = Mapping[str, Any]


class GenAISpan(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """The part of a span that sessions are made of (stored until its session is emitted)."""

    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    start_ns: int
    end_ns: int
    genai: bool = True
    status: int = 0
    status_message: str = ""
    conversation_id: str | None = None
    user_id: str | None = None
    operation: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    provider: str | None = None
    error_type: str | None = None
    service_name: str | None = None
    service_version: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    user_request: str | None = None  # from message content, when the host captures it
    tool_outputs: tuple[str, ...] = ()

    @property
    def is_root(self) -> bool:
        return not self.parent_span_id

    @property
    def reports_usage(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None

    @property
    def model(self) -> str | None:
        return self.response_model or self.request_model


class SpanRejected(ValueError):
    """A span that cannot be used; the message says why (OTLP ``partial_success``)."""


def is_genai(attributes: Attributes) -> bool:
    return any(name.startswith("gen_ai.") for name in attributes)


def read_span(
    trace_id: str, span_id: str, parent_span_id: str, start_ns: int, end_ns: int,
    status: int, status_message: str, attributes: Attributes, resource: Attributes,
) -> GenAISpan:
    """The ``GenAISpan`` of one OTLP span (its attributes over its resource's); raise
    ``SpanRejected`` for ids, times or GenAI values that break the conventions."""
    if len(trace_id) != 32 or trace_id == "0" * 32:
        raise SpanRejected("trace id must be 16 bytes, not all zero")
    if len(span_id) != 16 or span_id == "0" * 16:
        raise SpanRejected(f"span {trace_id}: span id must be 8 bytes, not all zero")
    if parent_span_id and len(parent_span_id) != 16:
        raise SpanRejected(f"span {span_id}: parent span id must be 8 bytes")
    if start_ns <= 0 or end_ns < start_ns:
        raise SpanRejected(f"span {span_id}: needs a start time and an end time not before it")
    merged = {**resource, **attributes}
    found: dict[str, Any] = {}
    genai = is_genai(attributes)
    if genai:
        for field_name, names in _TOKENS.items():
            found[field_name] = _tokens(merged, names, span_id)
        for field_name, names in _NAMES.items():
            found[field_name] = _name(merged, names, span_id)
        found["user_request"], found["tool_outputs"] = message_texts(attributes.get(INPUT_MESSAGES))
    return GenAISpan(
        trace_id, span_id, parent_span_id, start_ns, end_ns, genai=genai, status=status,
        status_message=status_message[:MAX_NAME_CHARS],
        service_name=_name(resource, ("service.name",), span_id, required=False),
        service_version=_name(resource, ("service.version",), span_id, required=False),
        **found,
    )


def message_texts(messages: Any) -> tuple[str | None, tuple[str, ...]]:
    """The last user message's text and the tool responses of GenAI input messages (the JSON
    text of ``gen_ai.input.messages``), each cut to the content limit; none if unreadable."""
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except ValueError:
            return None, ()
    user_request, outputs = None, []
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict) or not isinstance(message.get("parts"), list):
            continue
        parts = [part for part in message["parts"] if isinstance(part, dict)]
        if message.get("role") == "user":
            user_request = "".join(part["content"] for part in parts
                                   if part.get("type") == "text" and isinstance(part.get("content"), str))
        for part in parts:
            if part.get("type") == "tool_call_response":
                response = part.get("response")
                outputs.append(response if isinstance(response, str) else json.dumps(response))
    clipped = tuple(cut_text(text) for text in outputs[-MAX_TOOL_OUTPUTS:])
    return (None if user_request is None else cut_text(user_request)), clipped


def _first(attributes: Attributes, names: Iterable[str]) -> Any:
    for name in names:
        if name in attributes:
            return attributes[name]
    return None


def _tokens(attributes: Attributes, names: Sequence[str], span_id: str) -> int | None:
    value = _first(attributes, names)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SPAN_TOKENS:
        raise SpanRejected(f"span {span_id}: {names[0]} must be an integer from 0 to {MAX_SPAN_TOKENS}")
    return value


def _name(
    attributes: Attributes, names: Sequence[str], span_id: str, required: bool = True
) -> str | None:
    value = _first(attributes, names)
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if not text:
        return None
    if "\0" in text:  # no store's text column holds one (PostgreSQL refuses it)
        if required:
            raise SpanRejected(f"span {span_id}: {names[0]} contains a NUL character")
        return None
    if len(text) > MAX_NAME_CHARS:
        if required:
            raise SpanRejected(f"span {span_id}: {names[0]} is over {MAX_NAME_CHARS} characters")
        return text[:MAX_NAME_CHARS]
    return text


def session_key(span: GenAISpan, trace_conversation: str | None) -> str:
    """The key a span is kept under until its session is emitted."""
    conversation = span.conversation_id or trace_conversation
    if conversation is not None:
        return CONVERSATION_PREFIX + conversation
    return TRACE_PREFIX + span.trace_id


def closes_session(span: GenAISpan, key: str) -> bool:
    """Whether this span's arrival completes its session: the root of a trace-keyed session,
    or a root span that carries its conversation id (a conversation spread over several
    traces ends by idle time instead)."""
    if not span.is_root:
        return False
    if key.startswith(TRACE_PREFIX):
        return True
    return span.conversation_id is not None and key == CONVERSATION_PREFIX + span.conversation_id


def session_event_id(tenant: str, key: str, segment: int) -> str:
    """The deterministic event id of one segment of an OpenTelemetry session."""
    digest = hashlib.blake2b(
        f"{tenant}\0{key}\0{segment}".encode(), digest_size=EVENT_ID_DIGEST_BYTES
    ).hexdigest()
    return EVENT_ID_PREFIX + digest


@dataclass(frozen=True, slots=True)
class _Counted:
    input_tokens: int
    output_tokens: int
    cache_read: int | None
    cache_write: int | None
    reasoning: int | None


def counted_spans(spans: Sequence[GenAISpan]) -> list[GenAISpan]:
    """The spans whose usage is counted: those reporting usage with no descendant that does."""
    parents = {span.span_id: span.parent_span_id for span in spans}
    covered: set[str] = set()
    for span in spans:
        if not span.reports_usage:
            continue
        ancestor, hops = span.parent_span_id, 0
        while ancestor and hops < len(parents):
            covered.add(ancestor)
            ancestor, hops = parents.get(ancestor, ""), hops + 1
    return [s for s in spans if s.reports_usage and s.span_id not in covered]


def _time(nanos: int) -> datetime:
    seconds, rest = divmod(nanos, NANOS_PER_SECOND)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // NANOS_PER_MICRO)


def _optional_sum(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _span_cost(span: GenAISpan, model: str, table: PriceTable) -> Decimal | None:
    inputs, outputs = span.input_tokens or 0, span.output_tokens or 0
    return table.cost(Usage(
        input_tokens=inputs, output_tokens=outputs, total_tokens=inputs + outputs, model=model,
        estimated_cost_usd=Decimal(0), cache_read_tokens=span.cache_read_tokens,
    ))


def session_event(
    tenant: str, key: str, segment: int, spans: Sequence[GenAISpan],
    prices: PriceTable | None = None,
) -> CapturedEvent:
    """The v1.2 event of one session's spans (see the module docstring for the mapping);
    ``InvalidEvent`` should the spans' facts break the schema."""
    table = prices or default_prices()
    ordered = sorted(spans, key=lambda s: (s.end_ns, s.span_id))
    genai = [s for s in ordered if s.genai] or ordered
    counted = counted_spans(genai)
    tokens_by_model: dict[str, int] = {}
    cost = Decimal(0)
    priced = True
    for span in counted:
        model = span.model or "unknown"
        tokens_by_model[model] = tokens_by_model.get(model, 0) + (span.input_tokens or 0) + (
            span.output_tokens or 0
        )
        span_cost = _span_cost(span, model, table)
        priced = priced and span_cost is not None
        cost += span_cost or 0
    model = max(tokens_by_model, key=lambda m: tokens_by_model[m]) if tokens_by_model else (
        next((s.model for s in genai if s.model), None) or "unknown"
    )
    conversation = key.startswith(CONVERSATION_PREFIX)
    operations = {s.operation for s in genai if s.operation}
    session_type: SessionType = (
        "autonomous" if operations & AGENT_OPERATIONS else ("chat" if conversation else "api")
    )
    tags: dict[str, str] = {
        "capture": "otlp", "spans": str(len(ordered)),
        "traces": str(len({s.trace_id for s in ordered})),
    }
    service = next((s.service_name for s in ordered if s.service_name), None)
    if service is not None:
        tags["service"] = service
    if segment:
        tags["segment"] = str(segment)
    if not priced:
        tags[UNKNOWN_PRICE_TAG] = UNKNOWN_PRICE_VALUE
        tags[PRICE_VERSION_TAG] = table.version
    version = next((s.service_version for s in ordered if s.service_version), None)
    status, error_code = _outcome(ordered)
    texted = [s for s in genai if s.user_request is not None or s.tool_outputs]
    latest = texted[-1] if texted else None
    return build_event(
        session_id=key[len(CONVERSATION_PREFIX):] if conversation else key[len(TRACE_PREFIX):],
        model=model,
        user_id=next((s.user_id for s in ordered if s.user_id), None) or ANONYMOUS_USER,
        organization_id=tenant,
        input_tokens=sum(s.input_tokens or 0 for s in counted),
        output_tokens=sum(s.output_tokens or 0 for s in counted),
        session_type=session_type,
        status=status,
        error_code=error_code,
        provider=next((s.provider for s in genai if s.provider), None),
        cache_read_tokens=_optional_sum(s.cache_read_tokens for s in counted),
        cache_write_tokens=_optional_sum(s.cache_write_tokens for s in counted),
        reasoning_tokens=_optional_sum(s.reasoning_tokens for s in counted),
        start_time=_time(min(s.start_ns for s in ordered)),
        end_time=_time(max(s.end_ns for s in ordered)),
        tags=tags,
        event_id=session_event_id(tenant, key, segment),
        cost_usd=cost,
        client_version=version[:MAX_CLIENT_VERSION_CHARS] if version else None,
        prices=table,
        user_request=latest.user_request if latest else None,
        tool_outputs=latest.tool_outputs if latest else None,
    )


def _outcome(spans: Sequence[GenAISpan]) -> tuple[OutcomeStatus, str | None]:
    failed = [s for s in spans if s.status == STATUS_ERROR or s.error_type]
    if not failed:
        return "success", None
    first = failed[0]
    code = first.error_type or first.status_message or "error"
    return ("timeout" if "timeout" in code.lower() else "error"), code[:MAX_NAME_CHARS]
