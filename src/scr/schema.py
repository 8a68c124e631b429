"""The ``session.completed`` event, schema v1.2, declared once.

The msgspec Structs below are the validation: types, enums, bounds and unknown-field
rejection come from the declarations. The few rules that relate two fields (token totals,
time order, duration) or bound a value msgspec cannot (money, see ``scr.money``; the window of
times) live in ``_event_problems``; how money and times are spelled is checked on the JSON as
written (``_Spelling``), since a parsed ``Decimal`` or ``datetime`` no longer shows it. How
far a time may run ahead of the server's clock is checked when an event arrives
(``decode_event``), not when an accepted one is read again (``decode_accepted_event``). The
JSON Schema (``scr schema``) is derived from the same declarations; ``NOT_IN_JSON_SCHEMA``
lists the rules it cannot express.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from scr.money import MONEY_JSON_SCHEMA, amount_problem, spelling_problem

SCHEMA_VERSION = "v1.2"
EVENT_TYPE = "session.completed"
MAX_EVENT_BYTES = 256 * 1024
MAX_CUSTOM_TAGS = 64
DURATION_TOLERANCE_MS = 1000
# The window of an event's times: history back to 2000 can be imported; a clock a little
# ahead (or a time zone mistaken for UTC) is tolerated, a year 9999 is not.
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_AHEAD_OF_CLOCK = timedelta(days=1)
EARLIEST_TEXT = f"{EARLIEST_EVENT_TIME:%Y-%m-%dT%H:%M:%SZ}"

# `$(?!\n)`: Python's `$` (msgspec's patterns) also matches before a final newline;
# ECMA-262's (JSON Schema's) never does. Both now refuse "evt_1\n".
ID_PATTERN = "^[A-Za-z0-9_.:-]{1,128}$(?!\n)"


def _timestamp_pattern() -> str:
    """RFC 3339 date-times msgspec reads: calendar dates (leap years included) of the years
    1999-9999 (an instant of 2000 may be written in 1999 with a negative offset), ``T`` or
    ``t``, seconds 00-59 with any fraction, ``Z``, ``z`` or ``+hh:mm``/``-hh:mm``."""
    year = "(?:1999|[2-9][0-9]{3})"
    leap_year = "(?:[2-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[3579][26])00)"
    month_day = (
        "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
        "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
        "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    )
    date = f"(?:{year}-{month_day}|{leap_year}-02-29)"
    time = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]+)?"
    offset = "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
    return f"^{date}[Tt]{time}{offset}$(?!\\n)"


TIMESTAMP_PATTERN = _timestamp_pattern()

EventId = Annotated[
    str,
    Meta(pattern=ID_PATTERN, description="1-128 characters of [A-Za-z0-9_.:-]"),
]
TenantId = Annotated[
    str,
    Meta(pattern=ID_PATTERN, description="the tenant: 1-128 characters of [A-Za-z0-9_.:-]"),
]
# No U+0000: PostgreSQL's text columns cannot hold it (the ledger's session_id, the usage
# tables' user_id, model and provider), and an event that one store refused after the bus
# acknowledged it would block its partition.
NAME_PATTERN = r"^[^\x00]*$"
Name = Annotated[str, Meta(min_length=1, max_length=256, pattern=NAME_PATTERN,
                           description="1-256 characters, none of them U+0000")]
Text = Annotated[str, Meta(max_length=MAX_EVENT_BYTES)]
Timestamp = Annotated[datetime, Meta(tz=True, description="RFC 3339 with an offset")]
EventTime = Annotated[datetime, Meta(
    tz=True,
    description=f"RFC 3339 with an offset, from {EARLIEST_TEXT} to one day ahead of the "
    "server's clock",
    extra_json_schema={"pattern": TIMESTAMP_PATTERN},
)]
IpAddress = Annotated[str, Meta(
    max_length=64, extra_json_schema={"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
)]
TokenCount = Annotated[int, Meta(ge=0, le=2**53)]
TagKey = Annotated[str, Meta(min_length=1, max_length=128)]
TagValue = Annotated[str, Meta(max_length=1024)]
SessionType = Literal["chat", "api", "autonomous", "webhook", "realtime"]
Tier = Literal["free", "pro", "enterprise"]
OutcomeStatus = Literal["success", "error", "timeout", "user_terminated"]


class Session(Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    session_id: Name
    session_type: SessionType
    start_time: EventTime
    end_time: EventTime
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
    # A JSON number or a decimal string in the bounds of scr.money, kept digit for digit.
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
    source_ip: IpAddress | None = None
    custom_tags: Annotated[dict[TagKey, TagValue], Meta(max_length=MAX_CUSTOM_TAGS)] = {}


MAX_CONTENT_TEXT_BYTES = 32 * 1024  # each content string, in UTF-8 bytes
MAX_TOOL_OUTPUTS = 64
ContentText = Annotated[str, Meta(
    max_length=MAX_CONTENT_TEXT_BYTES,
    description=f"at most {MAX_CONTENT_TEXT_BYTES:,} UTF-8 bytes",
)]


class Content(Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """Text for enrichment (``scr.enrich``): each key optional, never ``null``."""

    user_request: ContentText | msgspec.UnsetType = msgspec.UNSET
    summary: ContentText | msgspec.UnsetType = msgspec.UNSET
    tool_outputs: Annotated[list[ContentText], Meta(max_length=MAX_TOOL_OUTPUTS)] | msgspec.UnsetType = (
        msgspec.UNSET
    )

    def texts(self) -> dict[str, str]:
        """Each string by its path: ``content.user_request``, ``content.tool_outputs.0``, ..."""
        found = {}
        if isinstance(self.user_request, str):
            found["content.user_request"] = self.user_request
        if isinstance(self.summary, str):
            found["content.summary"] = self.summary
        if isinstance(self.tool_outputs, list):
            found.update({f"content.tool_outputs.{n}": text for n, text in enumerate(self.tool_outputs)})
        return found


class Event(Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """A ``session.completed`` event, schema v1.2."""

    event_type: Literal["session.completed"]
    event_id: EventId
    timestamp: EventTime
    session: Session
    user: User
    usage: Usage
    outcome: Outcome
    metadata: Metadata = msgspec.field(default_factory=Metadata)
    content: Content | msgspec.UnsetType = msgspec.UNSET  # additive to v1.2: text for enrichment

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


class _SessionSpelling(Struct, gc=False):
    start_time: Any  # a string as written (a Python caller of convert_event may give a datetime)
    end_time: Any


class _UsageSpelling(Struct, gc=False):
    estimated_cost_usd: Any  # a string as written, or a number (read as a Decimal)


class _Spelling(Struct, gc=False):
    """The fields whose spelling is a rule, as the JSON writes them (other fields skipped)."""

    timestamp: Any
    session: _SessionSpelling
    usage: _UsageSpelling


_decoder = msgspec.json.Decoder(Event)
class _TimesSpelling(Struct, gc=False):
    """``_Spelling`` without the cost: for an event whose cost no Python ``int`` holds."""

    timestamp: Any
    session: _SessionSpelling


_spelling_decoder = msgspec.json.Decoder(_Spelling, float_hook=Decimal)
_times_spelling_decoder = msgspec.json.Decoder(_TimesSpelling)
_PATH = re.compile(r" - at `(\$[^`]*)`$")
_FIELD = re.compile(r"field `([^`]+)`")
TIME_RULE = "an RFC 3339 date-time with an offset, e.g. 2026-11-25T10:00:05Z or 2026-11-25T11:00:05+01:00"


def error_location(error: msgspec.ValidationError | msgspec.DecodeError) -> tuple[str, str]:
    """A msgspec error's JSON path and message; a missing or unknown field's path names the
    field (``$.reason``, not the object holding it)."""
    text = str(error)
    match = _PATH.search(text)
    path = match.group(1) if match else "$"
    message = text[: match.start()] if match else text
    field = _FIELD.search(message)
    if field and message.startswith(("Object missing required field", "Object contains unknown field")):
        path = f"{path}.{field.group(1)}"
    return path, message


def _problem_from_msgspec(error: msgspec.ValidationError | msgspec.DecodeError) -> Problem:
    path, message = error_location(error)
    if message.startswith("Object missing required field"):
        code = "missing_field"
    elif message.startswith("Object contains unknown field"):
        code = "unknown_field"
    elif message.startswith("Invalid enum value"):
        code = "invalid_enum"
    elif message.startswith("Expected `") and (" got `" in message or "timezone" in message):
        code = "invalid_type"
    elif isinstance(error, msgspec.ValidationError):
        code = "invalid_value"
    else:
        code = "malformed_json"
    return Problem(code, path, message)


def decode_event(raw: bytes | memoryview, *, now: datetime | None = None) -> Event:
    """Decode and validate one arriving event from JSON bytes; raise ``InvalidEvent`` naming
    every problem. Its times may run at most ``MAX_AHEAD_OF_CLOCK`` ahead of ``now`` (the
    server's clock, read when not given)."""
    return _decode(raw, _latest(now))


class _SessionIdOnly(Struct, gc=False):
    session_id: str


class EventSessionId(Struct, gc=False):
    """An event read for its session id alone (msgspec skips the rest without building it)."""

    session: _SessionIdOnly


def read_stored_event(payload: bytes | memoryview) -> Event:
    """An event's bytes as scr wrote them (its canonical bytes, or a ledger entry's payload)
    read back: msgspec's one pass, no rule checked again (they held when it was accepted)."""
    return _decoder.decode(payload)


def decode_accepted_event(raw: bytes | memoryview) -> Event:
    """``decode_event`` for an event accepted before (a bus message read by the partition's
    owner): every rule but how far its times may run ahead of the clock, which was checked
    when it arrived and must not depend on the clock of whoever reads it again."""
    return _decode(raw, None)


def convert_event(value: Any, *, now: datetime | None = None) -> Event:
    """Validate an already-parsed JSON value (for example a ledger payload) as ``decode_event``
    does, with ``now`` as the clock its times may run ahead of (read when not given)."""
    try:
        event = msgspec.convert(value, Event, strict=True)
        spelling = msgspec.convert(value, _Spelling)
    except msgspec.ValidationError as error:
        raise InvalidEvent([_problem_from_msgspec(error)]) from None
    problems = _event_problems(event, _latest(now))
    problems += _spelling_problems(spelling, problems)
    _raise_if(problems)
    return event


def check_event(event: Event) -> None:
    """The rules the declarations cannot state (the clock's aside); raise ``InvalidEvent``
    naming each broken one."""
    _raise_if(_event_problems(event, None))


def _latest(now: datetime | None) -> datetime:
    """The latest time an event arriving at ``now`` (default: the clock) may carry."""
    return (now or datetime.now(UTC)) + MAX_AHEAD_OF_CLOCK


def _decode(raw: bytes | memoryview, latest: datetime | None) -> Event:
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(
            [Problem("event_too_large", "$", f"event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}")]
        )
    try:
        event = _decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise InvalidEvent([_problem_from_msgspec(error)]) from None
    problems = _event_problems(event, latest)
    problems += _spelling_problems(_read_spelling(raw), problems)
    _raise_if(problems)
    return event


def _read_spelling(raw: bytes | memoryview) -> _Spelling:
    """The spelling of a decoded event's times and cost. A cost written as an integer of more
    digits than Python reads into an ``int`` (4,300) fails to decode as ``Any``: its value is
    out of bounds already (a problem found), and a number's spelling is no rule, so only the
    times are read."""
    try:
        return _spelling_decoder.decode(raw)
    except msgspec.ValidationError:
        times = _times_spelling_decoder.decode(raw)
        return _Spelling(times.timestamp, times.session, _UsageSpelling(None))


def _raise_if(problems: list[Problem]) -> None:
    if problems:
        raise InvalidEvent(problems)


TIME_PATHS = ("$.timestamp", "$.session.start_time", "$.session.end_time")


def _times(event: Event) -> tuple[datetime, datetime, datetime]:
    """The event's times, in the order of ``TIME_PATHS``."""
    return event.timestamp, event.session.start_time, event.session.end_time


def _event_problems(event: Event, latest: datetime | None) -> list[Problem]:
    """Every rule the declarations cannot state that ``event`` breaks (none: an empty list):
    fields that must agree, money in bounds, times in their window (up to ``latest``, when
    the event is arriving)."""
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
    cost_problem = amount_problem(usage.estimated_cost_usd)
    if cost_problem is not None:
        problems.append(Problem("invalid_value", "$.usage.estimated_cost_usd", cost_problem))
    times = _times(event)
    if min(times) < EARLIEST_EVENT_TIME or (latest is not None and max(times) > latest):
        problems += _window_problems(times, latest)
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
    if isinstance(event.content, Content):
        problems += _content_problems(event.content)
    source_ip = event.metadata.source_ip
    if source_ip is not None and not _is_ip_address(source_ip):
        problems.append(
            Problem("invalid_value", "$.metadata.source_ip", "not an IPv4 or IPv6 address")
        )
    return problems


def _content_problems(content: Content) -> list[Problem]:
    """Each content string over ``MAX_CONTENT_TEXT_BYTES`` in UTF-8 (the declaration bounds
    characters, a multi-byte text can hold up to four times as many bytes)."""
    problems = []
    for path, text in content.texts().items():
        size = len(text.encode())
        if size > MAX_CONTENT_TEXT_BYTES:
            problems.append(Problem("invalid_value", _json_path(path),
                                    f"is {size} UTF-8 bytes; the limit is {MAX_CONTENT_TEXT_BYTES}"))
    return problems


def _json_path(path: str) -> str:
    """``content.tool_outputs.3`` as the error's JSON path, ``$.content.tool_outputs[3]``."""
    head, _, index = path.partition(".tool_outputs.")
    return f"$.{head}.tool_outputs[{index}]" if index else f"$.{path}"


def _window_problems(
    times: tuple[datetime, datetime, datetime], latest: datetime | None
) -> list[Problem]:
    problems = []
    for path, time in zip(TIME_PATHS, times, strict=True):
        if time < EARLIEST_EVENT_TIME:
            problems.append(Problem(
                "invalid_value", path,
                f"{time.isoformat()} is before {EARLIEST_TEXT}, the earliest time an event may have",
            ))
        elif latest is not None and time > latest:
            problems.append(Problem(
                "invalid_value", path,
                f"{time.isoformat()} is more than {MAX_AHEAD_OF_CLOCK.days} day ahead of the "
                f"server's clock ({(latest - MAX_AHEAD_OF_CLOCK).isoformat()})",
            ))
    return problems


def _spelling_problems(spelling: _Spelling, known: list[Problem]) -> list[Problem]:
    """How money and times are written (JSON Schema's ``pattern``), for the fields whose
    value broke no rule already (one problem per path)."""
    session, cost = spelling.session, spelling.usage.estimated_cost_usd
    times = (spelling.timestamp, session.start_time, session.end_time)
    if not isinstance(cost, str) and _plainly_spelled(*times):
        return []  # the path of every valid event: no set, no loop
    flagged = {problem.path for problem in known}
    problems = []
    for path, text in zip(TIME_PATHS, times, strict=True):
        if isinstance(text, str) and path not in flagged and not _spelled_as_rfc3339(text):
            problems.append(Problem("invalid_value", path, f"{text[:40]!r} is not {TIME_RULE}"))
    path = "$.usage.estimated_cost_usd"
    if isinstance(cost, str) and path not in flagged:
        cost_problem = spelling_problem(cost)  # its value was checked as the Decimal
        if cost_problem is not None:
            problems.append(Problem("invalid_value", path, cost_problem))
    return problems


def _plainly_spelled(timestamp: Any, start_time: Any, end_time: Any) -> bool:
    """Whether three times (the JSON's strings) are all spelled as RFC 3339 requires."""
    return (
        (not isinstance(timestamp, str) or _spelled_as_rfc3339(timestamp))
        and (not isinstance(start_time, str) or _spelled_as_rfc3339(start_time))
        and (not isinstance(end_time, str) or _spelled_as_rfc3339(end_time))
    )


def _spelled_as_rfc3339(text: str) -> bool:
    """``TIMESTAMP_PATTERN``, for a time msgspec read and ``_event_problems`` found in the window
    (a test proves it): all msgspec reads beyond RFC 3339 is a space for the ``T`` and an
    offset without its colon. Every event pays for it: a twentieth of the pattern's cost."""
    return text[10] in "Tt" and (text[-1] in "Zz" or text[-3] == ":")


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


# What the API checks that JSON Schema cannot say (it relates fields, the clock, the bytes or
# the way a number is written); the schema's description lists them, so does the README.
NOT_IN_JSON_SCHEMA = (
    "usage.total_tokens = usage.input_tokens + usage.output_tokens",
    "session.end_time >= session.start_time, and session.duration_ms within "
    f"{DURATION_TOLERANCE_MS} ms of their difference",
    f"timestamp, session.start_time and session.end_time from {EARLIEST_TEXT} (the pattern "
    "admits the year 1999, which such an instant may be written in with a negative offset) to "
    f"at most {MAX_AHEAD_OF_CLOCK.days} day ahead of the server's clock",
    f"an event is at most {MAX_EVENT_BYTES} bytes of JSON",
    f"each content string is at most {MAX_CONTENT_TEXT_BYTES} UTF-8 bytes (the schema bounds "
    "its characters)",
    "integers are written without a fraction or an exponent (1200, not 1200.0 or 1.2e3)",
    "an amount's exponent is one a decimal holds (about 18 digits at most)",
    "multipleOf on usage.estimated_cost_usd is exact only for validators that read JSON "
    "numbers as decimals, not binary floats",
)


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the event, derived from the Struct declarations."""
    schema: dict[str, Any] = with_money_schema(msgspec.json.schema(Event))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"session.completed event, schema {SCHEMA_VERSION}"
    schema["description"] = (
        "Formats (date-time, ipv4, ipv6) and patterns are part of the rules. Rules the API "
        "also checks, which this schema cannot express: " + "; ".join(NOT_IN_JSON_SCHEMA) + "."
    )
    return schema


def with_money_schema(node: Any) -> Any:
    """``node`` with every decimal (each one is money) as ``MONEY_JSON_SCHEMA``: msgspec
    declares a ``Decimal`` a string, and lets no annotation change that type."""
    if isinstance(node, dict):
        if node.get("format") == "decimal":
            return dict(MONEY_JSON_SCHEMA)
        return {key: with_money_schema(value) for key, value in node.items()}
    if isinstance(node, list):
        return [with_money_schema(value) for value in node]
    return node
