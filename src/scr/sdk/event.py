"""Normalize what a caller knows about a finished session into a full schema v1.2 event.

The event is built from ``scr.schema``'s Structs and validated by the same declaration the
server uses (encode, then ``decode_event``), so an event the SDK accepts is one the server
accepts. Cost comes from the same price table as the server's (``scr.route.prices``); a
model the table does not know is flagged (``model_priced`` false and the custom tag
``price: unknown`` with ``price_table_version``, as the server's own sources tag it), never
silently priced at zero.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec

from scr import __version__
from scr.route.prices import (
    PRICE_VERSION_TAG,
    UNKNOWN_PRICE_TAG,
    UNKNOWN_PRICE_VALUE,
    PriceTable,
    default_prices,
)
from scr.schema import (
    EVENT_TYPE,
    MAX_CONTENT_TEXT_BYTES,
    MAX_EVENT_BYTES,
    MAX_TOOL_OUTPUTS,
    Content,
    Event,
    InvalidEvent,
    Metadata,
    Outcome,
    OutcomeStatus,
    Problem,
    Session,
    SessionType,
    Tier,
    Usage,
    User,
    decode_event,
)

CLIENT_VERSION = f"scr-python/{__version__}"
EVENT_ID_PREFIX = "evt_"
EVENT_ID_HEX_DIGITS = 32  # 128 bits of SHA-256: no collision among any realistic sessions
MS_PER_S = 1000
ZERO_USD = Decimal(0)

_encode = msgspec.json.Encoder(decimal_format="string").encode

# A time is an aware datetime, a naive one (local time, as Python reads it), or Unix seconds.
TimeLike = datetime | float | int


@dataclass(frozen=True, slots=True)
class CapturedEvent:
    """A normalized, validated event and the exact JSON the SDK sends for it."""

    event: Event
    body: bytes
    model_priced: bool

    @property
    def event_id(self) -> str:
        return self.event.event_id


def derive_event_id(session_id: str, event_type: str = EVENT_TYPE) -> str:
    """The event id of a session's completion: the same for every re-emission, so one charge."""
    digest = hashlib.sha256(f"{event_type}\x00{session_id}".encode()).hexdigest()
    return EVENT_ID_PREFIX + digest[:EVENT_ID_HEX_DIGITS]


def _as_time(value: TimeLike) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.astimezone()
    return datetime.fromtimestamp(value, UTC)


def cut_text(text: str, limit: int = MAX_CONTENT_TEXT_BYTES) -> str:
    """``text`` within ``limit`` UTF-8 bytes, cut at a character boundary; a lone surrogate
    (no UTF-8 for it: the whole event would fail to encode, usage included) becomes ``?``."""
    return text.encode("utf-8", "replace")[:limit].decode("utf-8", "ignore")


def content_of(user_request: str | None, summary: str | None,
               tool_outputs: Sequence[str] | None) -> Content | msgspec.UnsetType:
    """The event's ``content`` from the texts given (``UNSET``: none given), within its limits:
    each text cut to 32 KiB of UTF-8, the last ``MAX_TOOL_OUTPUTS`` tool outputs."""
    if user_request is None and summary is None and not tool_outputs:
        return msgspec.UNSET
    return Content(
        user_request=msgspec.UNSET if user_request is None else cut_text(user_request),
        summary=msgspec.UNSET if summary is None else cut_text(summary),
        tool_outputs=[cut_text(text) for text in tool_outputs[-MAX_TOOL_OUTPUTS:]] if tool_outputs
        else msgspec.UNSET,
    )


def build_event(
    *,
    session_id: str,
    model: str,
    user_id: str,
    organization_id: str | None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    tier: Tier = "free",
    session_type: SessionType = "api",
    status: OutcomeStatus = "success",
    final_message: str | None = None,
    error_code: str | None = None,
    provider: str | None = None,
    cache_read_tokens: int | None = None,
    cache_write_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    start_time: TimeLike | None = None,
    end_time: TimeLike | None = None,
    duration_ms: int | None = None,
    tags: Mapping[str, str] | None = None,
    event_id: str | None = None,
    cost_usd: Decimal | str | None = None,
    client_version: str | None = CLIENT_VERSION,
    source_ip: str | None = None,
    prices: PriceTable | None = None,
    now: datetime | None = None,
    user_request: str | None = None,
    summary: str | None = None,
    tool_outputs: Sequence[str] | None = None,
) -> CapturedEvent:
    """A full v1.2 event from what the caller knows; raise ``scr.schema.InvalidEvent`` if invalid.

    Times: ``end_time`` defaults to ``now``; ``start_time`` to ``end_time - duration_ms`` (or
    ``end_time``); ``duration_ms`` to their difference; the event's ``timestamp`` is the end
    time, so re-emitting a session with the same facts gives the same body (a duplicate).
    ``total_tokens`` is input + output.
    ``estimated_cost_usd`` is ``cost_usd`` when given, else the price table's exact cost; an
    unknown model without ``cost_usd`` costs 0 and is flagged (see the module docstring).
    ``user_request``, ``summary`` and ``tool_outputs`` become the event's ``content`` (text
    for enrichment: only when given), each cut to the schema's limits (``content_of``).
    """
    if not organization_id:
        raise InvalidEvent([Problem(
            "missing_field", "$.user.organization_id",
            "give organization_id to the client or to capture(): it names the tenant",
        )])
    end = _as_time(end_time) if end_time is not None else (now or datetime.now(UTC))
    earliest = end - timedelta(milliseconds=duration_ms or 0)
    start = _as_time(start_time) if start_time is not None else earliest
    if duration_ms is None:
        duration_ms = max(0, round((end - start).total_seconds() * MS_PER_S))
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        model=model,
        estimated_cost_usd=ZERO_USD,
        provider=provider,
        cache_read_tokens=cache_read_tokens,
        cache_write_tokens=cache_write_tokens,
        reasoning_tokens=reasoning_tokens,
    )
    table = prices or default_prices()
    priced = table.price(model) is not None
    if cost_usd is not None:
        # str() first: a float that slipped in is taken as written, not as its binary expansion.
        usage.estimated_cost_usd = Decimal(str(cost_usd))
    elif priced:
        usage.estimated_cost_usd = table.cost(usage) or ZERO_USD
    custom_tags = dict(tags) if tags else {}
    if not priced:
        custom_tags[UNKNOWN_PRICE_TAG] = UNKNOWN_PRICE_VALUE
        custom_tags[PRICE_VERSION_TAG] = table.version
    event = Event(
        event_type="session.completed",
        event_id=event_id or derive_event_id(session_id),
        timestamp=end,
        session=Session(session_id, session_type, start, end, duration_ms),
        user=User(user_id, organization_id, tier),
        usage=usage,
        outcome=Outcome(status, final_message, error_code),
        metadata=Metadata(client_version, source_ip, custom_tags),
        content=content_of(user_request, summary, tool_outputs),
    )
    body = _encode(event)
    while len(body) > MAX_EVENT_BYTES and isinstance(event.content, Content) and event.content.tool_outputs:
        # too long with all its text: the oldest tool outputs give way, one at a time
        outputs = event.content.tool_outputs[1:]
        event.content = msgspec.structs.replace(event.content, tool_outputs=outputs or msgspec.UNSET)
        body = _encode(event)
    decode_event(body)  # the server's own validation: raises InvalidEvent naming each problem
    return CapturedEvent(event, body, priced)
