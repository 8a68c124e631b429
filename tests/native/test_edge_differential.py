"""The edge's per-event validation, native against the Python reference, over the Python boundary.

For valid events (times with offsets, fractions, lower-case ``t`` and ``z``; any Unicode;
big integers; costs as numbers and strings with many digits; optional fields absent, null
or set; content; tags) the core's canonical bytes and digests equal the reference's byte for
byte. For invalid and adversarial input (each field mutated, truncated JSON, random bytes,
repeated keys, huge strings, deep nesting, invalid UTF-8, NaN-like numbers, ``-0``,
``1e400``, lone surrogates) both give the same verdict, and ``validate`` gives the same
answer (status, codes, paths, messages) with the core on and off; nothing crashes. This is
the fuzzing of the edge: each property is bounded, so the file runs in seconds.
"""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import ModuleType
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scr import event_check, native
from scr.capture.ingest import Batch, Item, validate
from scr.errors import BadRequest
from scr.event_check import Verdict, latest_epoch_us
from scr.jsontext import check_json_text
from scr.schema import MAX_EVENT_BYTES, Problem
from scr.security.keys import Principal, Role

EXAMPLES = 100
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
LATEST_US = latest_epoch_us(NOW)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Instants well inside the window, so that rounding a fraction never leaves it.
FIRST_INSTANT = datetime(2000, 1, 2, tzinfo=UTC)
LAST_INSTANT = datetime(2026, 12, 1, tzinfo=UTC)
LONGEST_SESSION_S = 3 * 86400
COST = "__cost__"  # placeholder for a cost written as a raw JSON literal
LITERAL = "__literal__"  # placeholder for any raw JSON literal
PLATFORM = Principal("key_test", None, Role.PLATFORM)
ONE_TENANT = Principal("key_test", "org_one", Role.INGEST)
bounded = settings(max_examples=EXAMPLES, deadline=None)

EXAMPLE = json.dumps({
    "event_type": "session.completed", "event_id": "evt_1", "timestamp": "2026-11-25T10:00:05Z",
    "session": {"session_id": "s_1", "session_type": "chat", "start_time": "2026-11-25T09:58:00Z",
                "end_time": "2026-11-25T10:00:00Z", "duration_ms": 120000},
    "user": {"user_id": "user_42", "organization_id": "org_one", "tier": "pro"},
    "usage": {"input_tokens": 1200, "output_tokens": 300, "total_tokens": 1500, "model": "gpt-4o",
              "estimated_cost_usd": 0.0075},
    "outcome": {"status": "success"},
}).encode()

ID_CHARACTERS = string.ascii_letters + string.digits + "_.:-"
ids = st.text(ID_CHARACTERS, min_size=1, max_size=128)
unicode = st.characters(codec="utf-8")  # any character JSON can carry: no lone surrogates
# a Name holds no U+0000 (scr.schema.NAME_PATTERN); a tag key or a text may
names = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=40)
tag_keys = st.text(unicode, min_size=1, max_size=40)
texts = st.text(unicode, max_size=60)
token_counts = st.integers(0, 2**52)


def reference(raws: list[bytes]) -> list[Verdict]:
    return event_check.check_events(raws, LATEST_US)


def assert_agree(core: ModuleType, raws: list[bytes]) -> list[Verdict]:
    """The core's verdicts equal the reference's, for each raw event that a route could hand
    to ``validate`` (the body's text checked first); the core accepts no other."""
    verdicts = core.check_events(raws, LATEST_US)
    readable = []
    for raw, verdict in zip(raws, verdicts, strict=True):
        try:
            check_json_text(raw)
        except BadRequest:
            assert verdict is None
            continue
        readable.append((raw, verdict))
    assert [verdict for _, verdict in readable] == reference([raw for raw, _ in readable])
    return verdicts


@st.composite
def time_texts(draw: st.DrawFn, instant: datetime) -> str:
    """``instant`` written as RFC 3339 in any spelling msgspec reads the same way: any
    offset, any fraction (more than six digits too), ``T`` or ``t``, ``Z``, ``z`` or ``+00:00``."""
    offset = timedelta(minutes=draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59)))
    local = instant + offset
    fraction = f"{local.microsecond:06d}"
    fraction = draw(st.sampled_from([
        "" if local.microsecond == 0 else "." + fraction,
        "." + fraction,
        "." + fraction.rstrip("0") if local.microsecond else "",
        "." + fraction + draw(st.text("0123456789", min_size=1, max_size=12)),
    ]))
    if offset:
        minutes = int(abs(offset).total_seconds()) // 60
        zone = f"{'-' if offset < timedelta(0) else '+'}{minutes // 60:02d}:{minutes % 60:02d}"
    else:
        zone = draw(st.sampled_from(["Z", "z", "+00:00", "-00:00"]))
    return f"{local:%Y-%m-%d}{draw(st.sampled_from('Tt'))}{local:%H:%M:%S}{fraction}{zone}"


@st.composite
def costs(draw: st.DrawFn) -> str:
    """A valid amount as a raw JSON literal: a number or a decimal string, in many spellings."""
    places = draw(st.integers(0, 18))
    coefficient = draw(st.one_of(st.integers(0, 10 ** (9 + places) - 1), st.just(0)))
    amount = Decimal(coefficient).scaleb(-places)
    spellings = [format(amount, "f"), str(amount), f"{coefficient}e-{places}", f"{coefficient}E-{places}",
                 format(amount, "f") + ("0" * draw(st.integers(0, 30)) if places else "")]
    spelled = draw(st.sampled_from(spellings))
    if coefficient == 0:
        spelled = draw(st.sampled_from([spelled, "-" + spelled, "0e" + str(draw(st.integers(-40, 40)))]))
    as_string = draw(st.booleans())
    if spelled.startswith("-") and not as_string:
        spelled = draw(st.sampled_from(["-0", "-0.0", "0"]))
    return json.dumps(spelled) if as_string else spelled


def optional(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value, ``None`` (written as null) or ``...`` (the field left out)."""
    return st.one_of(st.just(...), st.none(), value)


def without_absent(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not ...}


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid v1.2 event as a JSON value (the cost a placeholder for its raw literal)."""
    start = draw(st.datetimes(FIRST_INSTANT.replace(tzinfo=None), LAST_INSTANT.replace(tzinfo=None),
                              timezones=st.just(UTC)))
    elapsed = timedelta(microseconds=draw(st.integers(1_000_000, LONGEST_SESSION_S * 1_000_000)))
    start_text, end_text = draw(time_texts(start)), draw(time_texts(start + elapsed))
    read_start, read_end = (msgspec.json.decode(json.dumps(t), type=datetime) for t in (start_text, end_text))
    elapsed_ms = round((read_end - read_start).total_seconds() * 1000)
    input_tokens, output_tokens = draw(token_counts), draw(token_counts)
    event = {
        "event_type": "session.completed",
        "event_id": draw(ids),
        "timestamp": draw(time_texts(draw(st.datetimes(FIRST_INSTANT.replace(tzinfo=None),
                                                       LAST_INSTANT.replace(tzinfo=None),
                                                       timezones=st.just(UTC))))),
        "session": {"session_id": draw(names), "session_type": draw(st.sampled_from(
            ["chat", "api", "autonomous", "webhook", "realtime"])), "start_time": start_text,
            "end_time": end_text, "duration_ms": max(0, elapsed_ms + draw(st.integers(-999, 999)))},
        "user": {"user_id": draw(names), "organization_id": draw(ids),
                 "tier": draw(st.sampled_from(["free", "pro", "enterprise"]))},
        "usage": without_absent({
            "input_tokens": input_tokens, "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens, "model": draw(names),
            "estimated_cost_usd": COST, "provider": draw(optional(names)),
            "cache_read_tokens": draw(optional(st.integers(0, 2**53))),
            "cache_write_tokens": draw(optional(st.integers(0, 2**53))),
            "reasoning_tokens": draw(optional(st.integers(0, 2**53))),
        }),
        "outcome": without_absent({
            "status": draw(st.sampled_from(["success", "error", "timeout", "user_terminated"])),
            "final_message": draw(optional(texts)), "error_code": draw(optional(texts)),
        }),
        "metadata": draw(optional(st.builds(without_absent, st.fixed_dictionaries({
            "client_version": optional(texts),
            "source_ip": optional(st.ip_addresses().map(str)),
            "custom_tags": st.one_of(st.just(...), st.dictionaries(tag_keys, texts, max_size=8)),
        })))),
        "content": draw(optional(st.builds(without_absent, st.fixed_dictionaries({
            "user_request": st.one_of(st.just(...), texts),
            "summary": st.one_of(st.just(...), texts),
            "tool_outputs": st.one_of(st.just(...), st.lists(texts, max_size=4)),
        })))),
    }
    event = without_absent({key: (value if value is not None else ...) for key, value in event.items()})
    order = draw(st.permutations(list(event)))
    return {key: event[key] for key in order}


@st.composite
def written(draw: st.DrawFn, event: dict[str, Any], literal: str | None = None) -> bytes:
    """``event`` as JSON text: ASCII-escaped or not, compact or indented, the placeholders
    replaced by a drawn cost and by ``literal``."""
    text = json.dumps(event, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1])))
    text = text.replace(json.dumps(COST), draw(costs()))
    if literal is not None:
        text = text.replace(json.dumps(LITERAL), literal)
    return text.encode("utf-8", "surrogatepass")


@bounded
@given(st.data())
def test_valid_events_have_the_references_canonical_bytes_and_digest(
    core: ModuleType, data: st.DataObject
) -> None:
    raws = [data.draw(written(data.draw(valid_events()))) for _ in range(data.draw(st.integers(1, 3)))]
    verdicts = assert_agree(core, raws)
    assert all(verdict is not None for verdict in verdicts)


# ----- invalid and adversarial input ----------------------------------------------------------

JUNK_LITERALS = ["-0", "-0.0", "0", "1e400", "-1e400", "1.0", "1E2", "NaN", "Infinity", "-1",
                 str(2**53), str(2**53 + 1), str(2**64), "1" * 5000, "0." + "0" * 5000, "true",
                 "null", "[]", "{}", '""', '"\\ud800"', '"\\udc00x"', '"a\\u0000"', "[[[[[[]]]]]]",
                 '"1e-19"', '"7.5E-3"', '"0e-99999999999999999999"', '" 1"', '"1_0"', "1e-18",
                 '"2026-11-25T10:00:05+0100"', '"2026-11-25 10:00:05Z"', '"2026-02-29T10:00:00Z"',
                 '"1999-12-31T23:59:59Z"', '"2027-12-31T00:00:00Z"', '"2026-11-25T10:00:05.9999995z"',
                 '"::ffff:1.2.3.4"', '"01.2.3.4"', '"1::2::3"', '"fe80::1%eth0"', '"x' + "é" * 40000 + '"']
junk = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(unicode, max_size=300), st.text(ID_CHARACTERS + " \n", max_size=140),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.just(LITERAL),
)


def paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every member path of a JSON value's objects."""
    found = []
    if isinstance(value, dict):
        for key, member in value.items():
            found.append((*prefix, key))
            found += paths(member, (*prefix, key))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid event with one field replaced by junk, dropped, or joined by an unknown one."""
    event = draw(valid_events())
    path = draw(st.sampled_from(paths(event)))
    holder = event
    for key in path[:-1]:
        holder = holder[key]
    change = draw(st.sampled_from(["replace", "drop", "add"]))
    if change == "replace":
        holder[path[-1]] = draw(junk)
    elif change == "drop":
        del holder[path[-1]]
    else:
        holder[draw(st.text(max_size=12))] = draw(junk)
    return draw(written(event, draw(st.sampled_from(JUNK_LITERALS))))


@bounded
@given(st.lists(mutated(), min_size=1, max_size=3))
def test_mutated_events_get_the_references_verdict(core: ModuleType, raws: list[bytes]) -> None:
    assert_agree(core, raws)


@st.composite
def adversarial(draw: st.DrawFn) -> bytes:
    """Bytes built to break a reader: truncated, flipped, repeated keys, huge, deep, not UTF-8."""
    raw = draw(written(draw(valid_events())))
    kind = draw(st.sampled_from(["truncate", "flip", "repeat", "repeat_escaped", "huge", "deep",
                                 "not_utf8", "surrogate", "random", "tags"]))
    if kind == "truncate":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if kind == "flip":
        at = draw(st.integers(0, len(raw) - 1))
        return raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    if kind == "repeat":
        key = draw(st.sampled_from(["event_id", "event_type", "timestamp", "usage", "metadata"]))
        return raw.replace(b"{", b'{"' + key.encode() + b'": "x", ', 1)
    if kind == "repeat_escaped":  # the same key spelled with an escape
        return raw.replace(b'"user_id"', b'"user_id": "again", "user\\u005fid"', 1)
    if kind == "huge":
        size = draw(st.sampled_from([MAX_EVENT_BYTES, 33 * 1024, MAX_EVENT_BYTES - len(raw) - 40]))
        return raw.replace(b'"session_type"', b'"final":"' + b"a" * size + b'","session_type"', 1).replace(
            b'"final"', draw(st.sampled_from([b'"x"', b'"model"'])), 1)
    if kind == "deep":
        depth = draw(st.integers(100, 200))
        return raw.replace(b'"event_type"', b'"x":' + b"[" * depth + b"]" * depth + b',"event_type"', 1)
    if kind == "not_utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"]))
        return raw.replace(b'"user_id": "', b'"user_id": "' + bad, 1)
    if kind == "surrogate":
        return raw.replace(b'"model": "', b'"model": "\\ud800', 1)
    if kind == "tags":
        tags = {f"k{n}": "v" for n in range(draw(st.integers(60, 70)))}
        return raw.replace(b'"user_id"', b'"custom_tags": ' + json.dumps(tags).encode() + b', "user_id"', 1)
    return draw(st.binary(max_size=200))


@bounded
@given(st.lists(adversarial(), min_size=1, max_size=3))
def test_adversarial_input_gets_the_references_verdict(core: ModuleType, raws: list[bytes]) -> None:
    assert_agree(core, raws)


@pytest.mark.parametrize("literal", [*JUNK_LITERALS, '"0.0075"', "0.0075", "0e400", '"-0.0e5"', "0.00000010"])
def test_every_junk_literal_as_the_cost_gets_the_references_verdict(core: ModuleType, literal: str) -> None:
    event = msgspec.json.decode(EXAMPLE)
    event["usage"]["estimated_cost_usd"] = LITERAL
    assert_agree(core, [json.dumps(event).replace(json.dumps(LITERAL), literal).encode()])




def with_times(start: str, end: str, duration_ms: int, timestamp: str = "2026-11-25T10:00:05Z") -> bytes:
    event = msgspec.json.decode(EXAMPLE)
    event["timestamp"] = timestamp
    event["session"].update(start_time=start, end_time=end, duration_ms=duration_ms)
    return json.dumps(event).encode()


@pytest.mark.parametrize(("end", "duration_ms", "valid"), [
    # 120,000 ms elapsed: a difference of exactly 1,000 ms is within the tolerance
    ("2026-11-25T10:00:00Z", 118_999, False), ("2026-11-25T10:00:00Z", 119_000, True),
    ("2026-11-25T10:00:00Z", 121_000, True), ("2026-11-25T10:00:00Z", 121_001, False),
    # 120,000.5 ms elapsed
    ("2026-11-25T10:00:00.0005Z", 119_000, False), ("2026-11-25T10:00:00.0005Z", 119_001, True),
    ("2026-11-25T10:00:00.0005Z", 121_000, True), ("2026-11-25T10:00:00.0005Z", 121_001, False),
    ("2026-11-25T09:57:59.999999Z", 0, False),  # before the start
])
def test_the_duration_tolerance_is_judged_alike_at_its_edges(
    core: ModuleType, end: str, duration_ms: int, valid: bool
) -> None:
    (verdict,) = assert_agree(core, [with_times("2026-11-25T09:58:00Z", end, duration_ms)])
    assert (verdict is not None) == valid


LATEST_TEXT = (EPOCH + timedelta(microseconds=LATEST_US)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
JUST_AFTER_LATEST = (EPOCH + timedelta(microseconds=LATEST_US + 1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize(("moment", "valid"), [
    ("2000-01-01T00:00:00Z", True), ("2000-01-01T01:00:00+01:00", True),
    ("1999-12-31T23:59:59.999999Z", False), ("1999-12-31T23:59:59.9999995Z", True),
    ("1999-12-31T23:00:00-01:00", True), (LATEST_TEXT, True), (JUST_AFTER_LATEST, False),
])
def test_the_window_is_judged_alike_at_its_edges(core: ModuleType, moment: str, valid: bool) -> None:
    (verdict,) = assert_agree(core, [with_times(moment, moment, 0, timestamp=moment)])
    assert (verdict is not None) == valid


@pytest.mark.parametrize(("section", "field"), [
    ("session", "session_id"), ("user", "user_id"), ("usage", "model"), ("usage", "provider")])
@pytest.mark.parametrize("name", ["\0", "a\0", "\0b", "a\0b"])
def test_a_name_holding_u0000_is_refused_alike(core: ModuleType, section: str, field: str, name: str) -> None:
    event = msgspec.json.decode(EXAMPLE)
    event[section][field] = name
    (verdict,) = assert_agree(core, [msgspec.json.encode(event)])
    assert verdict is None  # refused (the reference names the path: tests/test_ingest.py)


@bounded
@given(st.one_of(st.text("0123456789abcdefABCDEF:.", max_size=45), st.ip_addresses().map(str),
                 st.ip_addresses(v=6).map(lambda address: address.exploded)))
def test_source_ips_are_judged_as_inet_pton_judges_them(core: ModuleType, address: str) -> None:
    event = msgspec.json.decode(EXAMPLE)
    event["metadata"] = {"source_ip": address}
    assert_agree(core, [json.dumps(event).encode()])


# ----- through validate, with the core on and off ---------------------------------------------


def answered(batch: Batch) -> tuple[Any, ...]:
    return (batch.results, batch.statuses, batch.positions,
            [(s.event, s.payload, s.digest, s.actor, s.source) for s in batch.submissions])


def validate_both_ways(raws: list[bytes], principal: Principal) -> None:
    items = [Item(index, raw) for index, raw in enumerate(raws)]
    items.append(Item(len(raws), problem=Problem("invalid_cloudevent", "$.specversion", "must be '1.0'")))
    on = validate(items, principal, True, "http")
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(native, "NATIVE", False)
        off = validate(items, principal, True, "http")
    assert answered(on) == answered(off)


@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(st.lists(st.one_of(mutated(), adversarial(), st.just(EXAMPLE)), min_size=1, max_size=4),
       st.sampled_from([PLATFORM, ONE_TENANT]))
def test_validate_answers_the_same_with_the_core_on_and_off(
    core: ModuleType, raws: list[bytes], principal: Principal
) -> None:
    readable = []
    for raw in raws:  # what a route hands to validate: text that passed check_json_text
        try:
            check_json_text(raw)
        except BadRequest:
            continue
        readable.append(raw)
    validate_both_ways(readable, principal)


def test_validate_uses_the_core_when_it_is_live(core: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def counted(raws: list[bytes], latest: int) -> list[Verdict]:
        calls.append(len(raws))
        verdicts: list[Verdict] = core.check_events(raws, latest)
        return verdicts

    monkeypatch.setattr(native, "NATIVE", True)
    monkeypatch.setattr(native, "check_events", counted)
    batch = validate([Item(0, EXAMPLE), Item(1, EXAMPLE.replace(b"1500", b"1501"))], PLATFORM, True, "http")
    assert calls == [2]  # one crossing for the whole request
    assert batch.statuses == [202, 400]
    assert batch.results[1]["errors"][0]["code"] == "inconsistent_tokens"


def test_validate_keeps_each_verdict_with_its_event(core: ModuleType) -> None:
    # every kind of refusal between accepted events: each verdict of the one call must stay
    # with its own event
    padding = b"a" * MAX_EVENT_BYTES
    oversized = EXAMPLE.replace(b'"status": "success"', b'"status": "success", "x": "' + padding + b'"')
    inconsistent = EXAMPLE.replace(b"1500", b"1501")
    other_tenant = EXAMPLE.replace(b"org_one", b"org_two")
    raws = [oversized, EXAMPLE, inconsistent, other_tenant, EXAMPLE.replace(b"evt_1", b"evt_2")]
    validate_both_ways(raws, ONE_TENANT)
    batch = validate([Item(index, raw) for index, raw in enumerate(raws)], ONE_TENANT, True, "http")
    assert batch.statuses == [413, 202, 400, 403, 202]
    assert [s.event.event_id for s in batch.submissions] == ["evt_1", "evt_2"]
