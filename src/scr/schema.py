"""The ``session.completed`` event, schema v1.2, declared once.

The msgspec Structs below are the validation: types, enums, bounds and unknown-field
rejection come from the declarations. The few rules that relate two fields (token totals,
time order, duration) live in ``check_event``. The JSON Schema (``scr schema``) is derived
from the same declarations.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

SCHEMA_VERSION = "v1.2"
EVENT_TYPE = "session.completed"
MAX_EVENT_BYTES = 256 * 1024
MAX_CUSTOM_TAGS = 64
DURATION_TOLERANCE_MS = 1000

ID_PATTERN = "^[A-Za-z0-9_.:-]{1,128}$"

EventId = Annotated[
    str,
    Meta(pattern=ID_PATTERN, description="1-128 characters of [A-Za-z0-9_.:-]"),
]
TenantId = Annotated[
    str,
    Meta(pattern=ID_PATTERN, description="the tenant: 1-128 characters of [A-Za-z0-9_.:-]"),
]
Name = Annotated[str, Meta(min_length=1, max_length=256)]
Text = Annotated[str, Meta(max_length=MAX_EVENT_BYTES)]
Timestamp = Annotated[datetime, Meta(tz=True, description="RFC 3339 with an offset")]
TokenCount = Annotated[int, Meta(ge=0, le=2**53)]
TagKey = Annotated[str, Meta(min_length=1, max_length=128)]
TagValue = Annotated[str, Meta(max_length=1024)]
SessionType = Literal["chat", "api", "autonomous", "webhook", "realtime"]
Tier = Literal["free", "pro", "enterprise"]
OutcomeStatus = Literal["success", "error", "timeout", "user_terminated"]


class Session(Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    session_id: Name
    session_type: SessionType
    start_time: Timestamp
    end_time: Timestamp
    duration_ms: TokenCount


class User(Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    user_id: Name
    organization_id: TenantId
    tier: Tier


class Usage(Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    input_tokens: TokenCount
    output_tokens: TokenCount
    total_tokens: TokenCount
    model: Name
    # A JSON number or a decimal string, kept digit for digit (never a float).
    estimated_cost_usd: Decimal
    provider: Name | None = None
    cache_read_tokens: TokenCount | None = None
    cache_write_tokens: TokenCount | None = None
    reasoning_tokens: TokenCount | None = None


class Outcome(Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    status: OutcomeStatus
    final_message: Text | None = None
    error_code: Annotated[str, Meta(max_length=256)] | None = None


class Metadata(Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    client_version: Annotated[str, Meta(max_length=128)] | None = None
    source_ip: Annotated[str, Meta(max_length=64)] | None = None
    custom_tags: Annotated[dict[TagKey, TagValue], Meta(max_length=MAX_CUSTOM_TAGS)] = {}


class Event(Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """A ``session.completed`` event, schema v1.2."""

    event_type: Literal["session.completed"]
    event_id: EventId
    timestamp: Timestamp
    session: Session
    user: User
    usage: Usage
    outcome: Outcome
    metadata: Metadata = msgspec.field(default_factory=Metadata)

    @property
    def tenant(self) -> str:
        return self.user.organization_id


@dataclass(frozen=True, slots=True)
class Problem:
    """Why one event was rejected: a stable code, the JSON path and a readable message."""

    code: str
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "message": self.message}


class InvalidEvent(ValueError):
    """An event that breaks schema v1.2; ``problems`` lists every located rule it breaks."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))
        self.problems = problems


_decoder = msgspec.json.Decoder(Event)
_PATH = re.compile(r" - at `(\$[^`]*)`$")
_FIELD = re.compile(r"field `([^`]+)`")


def _problem_from_msgspec(error: msgspec.ValidationError | msgspec.DecodeError) -> Problem:
    text = str(error)
    match = _PATH.search(text)
    path = match.group(1) if match else "$"
    message = text[: match.start()] if match else text
    field = _FIELD.search(message)
    if message.startswith("Object missing required field"):
        code = "missing_field"
        path = f"{path}.{field.group(1)}" if field else path
    elif message.startswith("Object contains unknown field"):
        code = "unknown_field"
        path = f"{path}.{field.group(1)}" if field else path
    elif message.startswith("Invalid enum value"):
        code = "invalid_enum"
    elif message.startswith("Expected `") and (" got `" in message or "timezone" in message):
        code = "invalid_type"
    elif isinstance(error, msgspec.ValidationError):
        code = "invalid_value"
    else:
        code = "malformed_json"
    return Problem(code, path, message)


def decode_event(raw: bytes | memoryview) -> Event:
    """Decode and validate one event from JSON bytes; raise ``InvalidEvent`` on any problem."""
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(
            [Problem("event_too_large", "$", f"event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}")]
        )
    try:
        event = _decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise InvalidEvent([_problem_from_msgspec(error)]) from None
    check_event(event)
    return event


def convert_event(value: Any) -> Event:
    """Validate an already-parsed JSON value (for example CloudEvents ``data``)."""
    try:
        event = msgspec.convert(value, Event, strict=True)
    except msgspec.ValidationError as error:
        raise InvalidEvent([_problem_from_msgspec(error)]) from None
    check_event(event)
    return event


def check_event(event: Event) -> None:
    """The rules that relate fields to each other; raise ``InvalidEvent`` naming each."""
    problems: list[Problem] = []
    usage, session = event.usage, event.session
    if usage.total_tokens != usage.input_tokens + usage.output_tokens:
        problems.append(
            Problem(
                "inconsistent_tokens",
                "$.usage.total_tokens",
                f"total_tokens ({usage.total_tokens}) must equal input_tokens + output_tokens "
                f"({usage.input_tokens} + {usage.output_tokens})",
            )
        )
    cost = usage.estimated_cost_usd
    if not cost.is_finite() or cost < 0:
        problems.append(
            Problem("invalid_value", "$.usage.estimated_cost_usd", "must be a finite amount >= 0")
        )
    if session.end_time < session.start_time:
        problems.append(
            Problem("invalid_time_order", "$.session.end_time", "end_time is before start_time")
        )
    else:
        elapsed_ms = (session.end_time - session.start_time).total_seconds() * 1000
        if abs(elapsed_ms - session.duration_ms) > DURATION_TOLERANCE_MS:
            problems.append(
                Problem(
                    "inconsistent_duration",
                    "$.session.duration_ms",
                    f"duration_ms ({session.duration_ms}) differs from end_time - start_time "
                    f"({elapsed_ms:.0f} ms) by more than {DURATION_TOLERANCE_MS} ms",
                )
            )
    source_ip = event.metadata.source_ip
    if source_ip is not None and not _is_ip_address(source_ip):
        problems.append(
            Problem("invalid_value", "$.metadata.source_ip", "not an IPv4 or IPv6 address")
        )
    if problems:
        raise InvalidEvent(problems)


def _is_ip_address(text: str) -> bool:
    """IPv4 or IPv6, strictly (``inet_pton``: C speed, unlike ``ipaddress`` on the hot path)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
        except (OSError, ValueError):
            continue
        return True
    return False


_canonical = msgspec.json.Encoder(order="sorted", decimal_format="string")


def canonical_bytes(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8, decimals as strings.

    Equivalent to RFC 8785 for the values scr stores: every number is an integer
    (money is a decimal string), so JCS number formatting never comes into play.
    """
    return _canonical.encode(value)


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the event, derived from the Struct declarations."""
    schema = msgspec.json.schema(Event)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"session.completed event, schema {SCHEMA_VERSION}"
    return schema
