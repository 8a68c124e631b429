"""The exported JSON Schema accepts exactly what the API accepts; the window of event times.

The corpus is judged twice: by the real API (one batch to ``POST /v1/events``, each event on
its own) and by the ``jsonschema`` library over the document ``GET /v1/schema`` serves, with
format checking. JSON numbers are read as decimals on both sides, as the API reads them.
Rules JSON Schema cannot express (the schema's description lists them) are marked and kept
out of the comparison; for those only the API's verdict is checked.
"""

from __future__ import annotations

import decimal
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from support import make_event, run_scr

ROOT = Path(__file__).resolve().parent.parent
LARGEST = "999999999.999999999999999999"
JSON = {"content-type": "application/json"}
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Case:
    name: str
    text: str  # the event, exactly as sent
    valid: bool  # what the API must answer
    # Why JSON Schema cannot judge this case (then only the API's verdict is checked).
    beyond_schema: str | None = None


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def event(name: str, **changes: Any) -> dict[str, Any]:
    """A valid event (its id from ``name``, so every case is its own event) with changes."""
    return make_event(f"evt_{abs(hash(name)):x}", **changes)


def case(name: str, valid: bool, beyond_schema: str | None = None, /, **changes: Any) -> Case:
    return Case(name, json.dumps(event(name, **changes)), valid, beyond_schema)


def literal(name: str, path: str, text: str, valid: bool, beyond_schema: str | None = None) -> Case:
    """A case whose value at ``path`` is the JSON ``text`` exactly as written."""
    body = json.dumps(event(name, **{path: "@literal@"})).replace('"@literal@"', text)
    return Case(name, body, valid, beyond_schema)


def at(name: str, moment: str, valid: bool, beyond_schema: str | None = None) -> Case:
    """Every time of the event at ``moment`` (a session of 0 ms)."""
    return case(name, valid, beyond_schema, timestamp=moment, **{
        "session.start_time": moment, "session.end_time": moment, "session.duration_ms": 0})


WINDOW = "the window of times: from 2000-01-01T00:00:00Z to one day ahead of the server's clock"
SUM = "total_tokens = input_tokens + output_tokens"
DURATION = "duration_ms within 1 s of end_time - start_time"
SIZE = "an event is at most 256 KiB"
INTEGER = "integers are written without a fraction or an exponent"
BYTES = "each content string is at most 32768 UTF-8 bytes"
EXPONENT = "an amount's exponent is one a decimal holds"

MONEY_ACCEPTED = [
    f'"{LARGEST}"', LARGEST, '"0.0075"', "0.0075", '"1E-18"', "1e-18", '"7.5E-3"', '"5E+8"',
    "5e8", '"1.50"', '"0"', "0", "-0", "-0.0", '"-0"', '"0E-20"', "0.00000000000000000000",
    "1000e-21", '"1.0000000000000000000000"', '"0e999999999999999999"',
]
MONEY_REJECTED = [
    '"1e999999999"', "1e999999999", '"1e100000"', "1e100000", "1000000000", '"1000000000"',
    "1E+9", '"999999999.9999999999999999999"', "1e-19", '"1e-19"', "0.0000000000000000001",
    "-1", '"-1"', "-0.5", '"NaN"', '"Infinity"', '"1_000"', '" 1.5"', '"+1.5"', '".5"', '"1."',
    '"01.5"', '"1.5\\n"', '"\\u0661"', '"0x10"', '"0.5e9"', '"1000e-21"', '"abc"', '""',
    "true", "null", "[1]", '{"usd": 1}',
]
IPS_ACCEPTED = ["203.0.113.77", "0.0.0.0", "255.255.255.255", "::1", "::", "2001:db8::1",
                "::ffff:192.0.2.1", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:1.2.3.4", "FE80::ABCD"]
IPS_REJECTED = ["999.1.1.1", "01.2.3.4", "1.2.3", "1.2.3.4.5", "", "localhost", "2001:db8::g",
                "1:2:3:4:5:6:7:8:9", "1::2::3", "fe80::1%eth0", " 1.2.3.4", "1.2.3.4\n",
                "::ffff:1.2.3.04", "1.2.3.4/24"]


def corpus() -> list[Case]:
    now = datetime.now(UTC)  # at the test, not at collection: the window moves with the clock
    big = 2**53
    cases = [
        case("the base event", True),
        case("extra top-level property", False, extra=1),
        literal("no event_type", "event_type", '"session.started"', False),
        literal("event_type not a string", "event_type", "1", False),
        literal("extra usage property", "usage.tokens", "3", False),
        literal("extra session property", "session.id", '"s"', False),
        literal("extra user property", "user.email", '"a@b"', False),
        literal("extra outcome property", "outcome.code", '"x"', False),
        literal("extra metadata property", "metadata.ip", '"1.2.3.4"', False),
        literal("user is null", "user", "null", False),
        literal("metadata is null", "metadata", "null", False),
        literal("metadata is empty", "metadata", "{}", True),
        literal("session is a list", "session", "[]", False),
        # event_id and organization_id: 1-128 of [A-Za-z0-9_.:-]
        case("event_id of 128", True, None, event_id="e" * 128),
        case("event_id of 129", False, None, event_id="e" * 129),
        case("event_id empty", False, None, event_id=""),
        case("event_id with a space", False, None, event_id="has space"),
        case("event_id with a trailing newline", False, None, event_id="evt_nl\n"),
        case("event_id not ASCII", False, None, event_id="évt"),
        case("event_id of every allowed character", True, None, event_id="A.b:c_d-e9"),
        literal("event_id a number", "event_id", "5", False),
        case("organization_id of 128", True, None, **{"user.organization_id": "o" * 128}),
        case("organization_id of 129", False, None, **{"user.organization_id": "o" * 129}),
        case("organization_id with a newline", False, None, **{"user.organization_id": "org\n"}),
        case("organization_id with a space", False, None, **{"user.organization_id": "org a"}),
        # names: 1-256 characters
        case("user_id of 256", True, None, **{"user.user_id": "u" * 256}),
        case("user_id of 257", False, None, **{"user.user_id": "u" * 257}),
        case("user_id empty", False, None, **{"user.user_id": ""}),
        case("session_id of 256", True, None, **{"session.session_id": "s" * 256}),
        case("session_id empty", False, None, **{"session.session_id": ""}),
        case("model of 257", False, None, **{"usage.model": "m" * 257}),
        case("model null", False, None, **{"usage.model": None}),
        case("provider null", True, None, **{"usage.provider": None}),
        case("provider empty", False, None, **{"usage.provider": ""}),
        # enums
        *[case(f"session_type {t}", True, None, **{"session.session_type": t})
          for t in ("chat", "api", "autonomous", "webhook", "realtime")],
        case("session_type phone", False, None, **{"session.session_type": "phone"}),
        *[case(f"tier {t}", True, None, **{"user.tier": t}) for t in ("free", "pro", "enterprise")],
        case("tier gold", False, None, **{"user.tier": "gold"}),
        *[case(f"status {s}", True, None, **{"outcome.status": s})
          for s in ("success", "error", "timeout", "user_terminated")],
        case("status unknown", False, None, **{"outcome.status": "unknown"}),
        # token counts: integers 0..2^53
        case("tokens at 2^53", True, None, **{"usage.input_tokens": big, "usage.output_tokens": 0,
                                              "usage.total_tokens": big}),
        case("tokens over 2^53", False, None, **{"usage.input_tokens": big + 1,
                                                 "usage.output_tokens": 0,
                                                 "usage.total_tokens": big + 1}),
        case("negative tokens", False, None, **{"usage.output_tokens": -1,
                                                "usage.total_tokens": 1199}),
        case("tokens as a string", False, None, **{"usage.input_tokens": "1200"}),
        case("tokens as a boolean", False, None, **{"usage.reasoning_tokens": True}),
        literal("tokens with a fraction", "usage.reasoning_tokens", "1.5", False),
        literal("tokens written 1200.0", "usage.reasoning_tokens", "1200.0", False, INTEGER),
        literal("tokens written 1.2e3", "usage.reasoning_tokens", "1.2e3", False, INTEGER),
        case("cache_read_tokens null", True, None, **{"usage.cache_read_tokens": None}),
        case("cache_write_tokens 0", True, None, **{"usage.cache_write_tokens": 0}),
        case("cache_write_tokens -1", False, None, **{"usage.cache_write_tokens": -1}),
        case("total_tokens not the sum", False, SUM, **{"usage.total_tokens": 1}),
        case("duration_ms negative", False, None, **{"session.duration_ms": -1}),
        case("duration_ms off by a minute", False, DURATION, **{"session.duration_ms": 180000}),
        case("end before start", False, DURATION, **{"session.end_time": "2026-11-25T09:00:00Z"}),
        # text lengths
        case("final_message null", True, None, **{"outcome.final_message": None}),
        case("final_message of 200,000", True, None, **{"outcome.final_message": "x" * 200_000}),
        case("final_message at its length, over 256 KiB", False, SIZE,
             **{"outcome.final_message": "x" * 262_144}),
        case("final_message a number", False, None, **{"outcome.final_message": 5}),
        case("error_code of 256", True, None, **{"outcome.error_code": "e" * 256}),
        case("error_code of 257", False, None, **{"outcome.error_code": "e" * 257}),
        case("client_version of 128", True, None, **{"metadata.client_version": "v" * 128}),
        case("client_version of 129", False, None, **{"metadata.client_version": "v" * 129}),
        case("client_version null", True, None, **{"metadata.client_version": None}),
        # content (additive to v1.2): keys optional, never null, 32,768 bytes, 64 tool outputs
        case("content empty", True, None, content={}),
        case("content with every key", True, None, content={
            "user_request": "why?", "summary": "", "tool_outputs": ["a", ""]}),
        case("content null", False, None, content=None),
        case("content a list", False, None, content=["x"]),
        case("content user_request null", False, None, content={"user_request": None}),
        case("content summary null", False, None, content={"summary": None}),
        case("content tool_outputs null", False, None, content={"tool_outputs": None}),
        case("content tool output null", False, None, content={"tool_outputs": [None]}),
        case("content tool output a number", False, None, content={"tool_outputs": [1]}),
        case("content unknown key", False, None, content={"answer": "x"}),
        case("content of 32,768 bytes", True, None, content={"user_request": "x" * 32_768}),
        case("content of 32,769 bytes", False, None, content={"user_request": "x" * 32_769}),
        case("content of 32,768 multibyte bytes", True, None,
             content={"summary": "€" * 10_922 + "ab"}),
        case("content of 32,769 multibyte bytes", False, BYTES,
             content={"summary": "é" * 16_384 + "a"}),
        case("content with 64 tool outputs", True, None, content={"tool_outputs": ["x"] * 64}),
        case("content with 65 tool outputs", False, None, content={"tool_outputs": ["x"] * 65}),
        case("content over 256 KiB", False, SIZE, content={"tool_outputs": ["x" * 32_768] * 9}),
        # custom tags: at most 64, keys 1-128, values strings up to 1024
        case("64 tags", True, None, **{"metadata.custom_tags": {f"k{i}": "v" for i in range(64)}}),
        case("65 tags", False, None, **{"metadata.custom_tags": {f"k{i}": "v" for i in range(65)}}),
        case("tag key empty", False, None, **{"metadata.custom_tags": {"": "v"}}),
        case("tag key of 128", True, None, **{"metadata.custom_tags": {"k" * 128: "v"}}),
        case("tag key of 129", False, None, **{"metadata.custom_tags": {"k" * 129: "v"}}),
        case("tag value of 1024", True, None, **{"metadata.custom_tags": {"k": "v" * 1024}}),
        case("tag value of 1025", False, None, **{"metadata.custom_tags": {"k": "v" * 1025}}),
        case("tag value a number", False, None, **{"metadata.custom_tags": {"k": 5}}),
        case("tag value null", False, None, **{"metadata.custom_tags": {"k": None}}),
        case("tags null", False, None, **{"metadata.custom_tags": None}),
        # source_ip: IPv4 or IPv6
        *[case(f"source_ip {ip!r}", True, None, **{"metadata.source_ip": ip}) for ip in IPS_ACCEPTED],
        *[case(f"source_ip {ip!r}", False, None, **{"metadata.source_ip": ip}) for ip in IPS_REJECTED],
        case("source_ip null", True, None, **{"metadata.source_ip": None}),
        # money, in every accepted and rejected form
        *[literal(f"cost {m}", "usage.estimated_cost_usd", m, True) for m in MONEY_ACCEPTED],
        *[literal(f"cost {m}", "usage.estimated_cost_usd", m, False) for m in MONEY_REJECTED],
        literal("cost 0e1000000000000000000", "usage.estimated_cost_usd",
                "0e1000000000000000000", False, EXPONENT),
        literal('cost "0e1000000000000000000"', "usage.estimated_cost_usd",
                '"0e1000000000000000000"', False, EXPONENT),
        # how times are written (the pattern), in the window
        at("time with nanoseconds", "2026-11-25T10:00:05.123456789Z", True),
        at("time with t and z", "2026-11-25t10:00:05z", True),
        at("time with an offset", "2026-11-25T11:00:05+01:00", True),
        at("time with -00:00", "2026-11-25T10:00:05-00:00", True),
        at("time with +23:59", "2026-11-25T10:00:05+23:59", True),
        at("time with a space", "2026-11-25 10:00:05Z", False),
        at("time with +0100", "2026-11-25T10:00:05+0100", False),
        at("time without an offset", "2026-11-25T10:00:05", False),
        at("time without seconds", "2026-11-25T10:00Z", False),
        at("time at second 60", "2026-11-25T10:00:60Z", False),
        at("time at hour 24", "2026-11-25T24:00:00Z", False),
        at("time with +24:00", "2026-11-25T10:00:05+24:00", False),
        at("time in month 13", "2026-13-01T00:00:00Z", False),
        at("time on November 31", "2026-11-31T00:00:00Z", False),
        at("time on 2026-02-29", "2026-02-29T00:00:00Z", False),
        at("time on 2024-02-29", "2024-02-29T00:00:00Z", True),
        at("time on 2000-02-29", "2000-02-29T00:00:00Z", True),
        at("time with a trailing newline", "2026-11-25T10:00:05Z\n", False),
        literal("time a number", "timestamp", "1764064805", False),
        # the window: its lower bound is a pattern too for years before 1999
        at("time in year 0001", "0001-01-01T00:00:00Z", False),
        at("time in 1998", "1998-12-31T23:59:59Z", False),
        at("time at 2000-01-01T00:00:00Z", "2000-01-01T00:00:00Z", True),
        at("time at 2000-01-01Z written in 1999", "1999-12-31T23:00:00-01:00", True),
        at("time a second before 2000", "1999-12-31T23:59:59Z", False, WINDOW),
        at("time before 2000 written in 2000", "2000-01-01T00:30:00+01:00", False, WINDOW),
        at("time a minute inside one day ahead", rfc3339(now + DAY - MINUTE), True),
        at("time a minute past one day ahead", rfc3339(now + DAY + MINUTE), False, WINDOW),
        at("time in year 9999", "9999-12-31T23:59:59Z", False, WINDOW),
    ]
    return cases


def api_verdicts(client: Any, cases: list[Case]) -> list[bool]:
    """Each case as the API judges it: one batch, each event on its own."""
    body = "[" + ",".join(c.text for c in cases) + "]"
    response = client.post("/v1/events", content=body.encode(), headers={
        **JSON, **client.key(role="platform")})  # platform: events of any organization_id
    assert response.status_code in (202, 207), response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(len(cases)))
    return [r["status"] == "accepted" for r in results]


def schema_verdict(validator: Draft202012Validator, text: str) -> bool:
    instance = json.loads(text, parse_float=Decimal)  # numbers as the API reads them: exactly
    with decimal.localcontext() as context:
        # multipleOf is computed as instance % 1E-18: past 10^10 or so the quotient outgrows any
        # precision, and the remainder is NaN (not a multiple), as it must be for such amounts.
        context.traps[decimal.InvalidOperation] = False
        return bool(validator.is_valid(instance))


def served_validator(client: Any) -> Draft202012Validator:
    schema = json.loads(client.get("/v1/schema").text, parse_float=Decimal)
    Draft202012Validator.check_schema(schema)
    checker = Draft202012Validator.FORMAT_CHECKER
    # ipv4 and ipv6 are checked with the standard library; date-time would need another
    # package, so the schema states times as a pattern as well (and the corpus tests it).
    assert {"ipv4", "ipv6"} <= set(checker.checkers)
    return Draft202012Validator(schema, format_checker=checker)


def test_the_json_schema_accepts_exactly_what_the_api_accepts(serve: Any) -> None:
    client = serve()
    cases = corpus()
    assert len({c.text for c in cases}) == len(cases), "every case is its own event"
    assert len({c.name for c in cases}) == len(cases)
    validator = served_validator(client)
    by_api = dict(zip((c.name for c in cases), api_verdicts(client, cases), strict=True))
    compared = [c for c in cases if c.beyond_schema is None]
    disagree = [(c.name, by_api[c.name]) for c in compared
                if schema_verdict(validator, c.text) != by_api[c.name]]
    assert not disagree, f"the schema and the API disagree (case, API verdict): {disagree}"
    wrong_api = [(c.name, by_api[c.name]) for c in cases if by_api[c.name] != c.valid]
    assert not wrong_api, f"the API broke its documented rules (case, its verdict): {wrong_api}"
    assert sum(c.valid for c in compared) > 50 and sum(not c.valid for c in compared) > 50
    described = client.get("/v1/schema").json()["description"]
    for reason in ("total_tokens", "duration_ms", "2000-01-01T00:00:00Z", "day ahead", "bytes",
                   "without a fraction", "exponent is one a decimal holds", "UTF-8 bytes"):
        assert reason in described, f"the schema's description does not list: {reason}"


def test_the_schema_is_the_same_from_the_cli_and_the_api_and_takes_the_examples(serve: Any) -> None:
    client = serve()
    served = json.loads(client.get("/v1/schema").text, parse_float=Decimal)
    printed = json.loads(run_scr("schema").stdout, parse_float=Decimal)
    assert printed == served
    validator = served_validator(client)
    example = (ROOT / "examples" / "event.json").read_text()
    assert schema_verdict(validator, example)  # its cost is a JSON number: 0.0075
    assert not schema_verdict(validator, example.replace("0.0075", '"abc"'))
    assert not schema_verdict(validator, example.replace("0.0075", "1e999999999"))


@pytest.mark.parametrize(("path", "change"), [
    ("$.event_id", {"event_id": "evt_nl\n"}),
    ("$.user.organization_id", {"user.organization_id": "org_acme\n"}),
])
def test_an_id_with_a_trailing_newline_is_400(serve: Any, path: str, change: dict[str, str]) -> None:
    # Python's `$` (msgspec's patterns) matched before a final newline, JSON Schema's never
    # did: "org_acme\n" was a second tenant next to "org_acme".
    client = serve()
    response = client.post("/v1/events", content=json.dumps(make_event("evt_nl", **change)),
                           headers={**JSON, **client.key(role="platform")})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"][0]["path"] == path


# ----- the window of event times (rules beyond the schema, checked here by path) ---------------

TIME_FIELDS = {"$.timestamp": "timestamp", "$.session.start_time": "session.start_time",
               "$.session.end_time": "session.end_time"}


def with_time(path: str, moment: str) -> dict[str, Any]:
    """The base event with one of its times at ``moment``, the others kept consistent."""
    changes: dict[str, Any] = {TIME_FIELDS[path]: moment}
    if path != "$.timestamp":  # a session of 0 ms at ``moment``
        changes.update({"session.start_time": moment, "session.end_time": moment,
                        "session.duration_ms": 0})
    return make_event("evt_when", **changes)


OUTSIDE = ["0001-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2000-01-01T00:30:00+01:00",
           "9999-12-31T23:59:59Z", "far ahead"]


@pytest.mark.parametrize("path", list(TIME_FIELDS))
@pytest.mark.parametrize("moment", OUTSIDE)
def test_a_time_outside_the_window_is_400_naming_the_path(serve: Any, path: str, moment: str) -> None:
    client = serve()
    ingest, reader = client.key(), client.key(role="read")
    moment = rfc3339(datetime.now(UTC) + DAY + MINUTE) if moment == "far ahead" else moment
    body = with_time(path, moment)
    response = client.post("/v1/events", content=json.dumps(body), headers={**JSON, **ingest})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert path in [detail["path"] for detail in error["details"]], error
    assert client.get("/v1/events/evt_when", headers=reader).status_code == 404
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("path", list(TIME_FIELDS))
@pytest.mark.parametrize("moment", ["2000-01-01T00:00:00Z", "1999-12-31T23:00:00-01:00", "just ahead"])
def test_a_time_at_the_edges_of_the_window_is_accepted(serve: Any, path: str, moment: str) -> None:
    client = serve()
    moment = rfc3339(datetime.now(UTC) + DAY - MINUTE) if moment == "just ahead" else moment
    response = client.post("/v1/events", content=json.dumps(with_time(path, moment)),
                           headers={**JSON, **client.key()})
    assert response.status_code == 202, response.text


def test_an_accepted_event_read_again_is_not_judged_by_the_readers_clock() -> None:
    # A bus message is decoded again by the partition's owner: a clock behind the edge's
    # must not turn an acknowledged event away (scr.bus.envelope).
    from scr.bus.envelope import Undecodable, submission_of

    ahead = rfc3339(datetime.now(UTC) + 2 * DAY)  # as if the edge's clock ran a day ahead
    body = json.dumps(with_time("$.timestamp", ahead)).encode()
    submission = submission_of(body, {}, 16)
    assert submission.event.event_id == "evt_when"
    with pytest.raises(Undecodable):  # every other rule still holds
        submission_of(json.dumps(with_time("$.timestamp", "0001-01-01T00:00:00Z")).encode(), {}, 16)


def test_a_fetched_batch_is_read_as_each_message_alone() -> None:
    # the owner reads a fetched batch in one native call (submissions_of): the same
    # submissions as submission_of gives one by one, and the same refusals
    from scr.bus.envelope import Undecodable, submission_of, submissions_of
    from scr.schema import canonical_bytes, decode_event

    ahead = rfc3339(datetime.now(UTC) + 2 * DAY)
    bodies = [canonical_bytes(decode_event(json.dumps(with_time("$.timestamp", ahead)).encode(),
                                           now=datetime.now(UTC) + 2 * DAY)),
              json.dumps(with_time("$.timestamp", "0001-01-01T00:00:00Z")).encode(), b"{not json"]
    headers = {"Scr-Actor": "key:k1", "Scr-Source": "http"}
    read = submissions_of([(body, headers) for body in bodies], 16)
    alone = submission_of(bodies[0], headers, 16)
    first = read[0]
    assert not isinstance(first, Undecodable)
    assert (first.payload, first.digest, first.actor, first.source, first.tenant, first.event_id,
            first.session_id, first.model) == (alone.payload, alone.digest, alone.actor, alone.source,
                                               alone.tenant, alone.event_id, alone.session_id, alone.model)
    assert first.event == alone.event
    for body, refused in zip(bodies[1:], read[1:], strict=True):
        with pytest.raises(Undecodable) as expected:
            submission_of(body, headers, 16)
        assert isinstance(refused, Undecodable) and str(refused) == str(expected.value)


@given(
    # all in the past: the window's upper end is the clock, which the corpus tests
    moment=st.datetimes(min_value=datetime(1998, 12, 30), max_value=datetime(2025, 12, 31)),
    offset_minutes=st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
    separator=st.sampled_from("Tt "),
    zone=st.sampled_from(["Z", "z", "colon", "no colon"]),
    fraction=st.text(alphabet="0123456789", max_size=10),
)
def test_the_time_pattern_is_the_rule_the_api_applies(
    moment: datetime, offset_minutes: int, separator: str, zone: str, fraction: str
) -> None:
    # The API checks a time's spelling with a shortcut (scr.schema._spelled_as_rfc3339) after
    # msgspec has read it; the schema states it as TIMESTAMP_PATTERN. Inside the window they
    # must agree on every spelling.
    from scr.schema import EARLIEST_EVENT_TIME, TIMESTAMP_PATTERN, InvalidEvent, decode_event

    sign, minutes = ("-" if offset_minutes < 0 else "+"), abs(offset_minutes)
    hours = f"{minutes // 60:02d}"
    suffix = {"Z": "Z", "z": "z", "colon": f"{sign}{hours}:{minutes % 60:02d}",
              "no colon": f"{sign}{hours}{minutes % 60:02d}"}[zone]
    zoned = "colon" in zone
    instant = moment - timedelta(minutes=offset_minutes if zoned else 0)
    text = f"{moment:%Y-%m-%d}{separator}{moment:%H:%M:%S}{'.' + fraction if fraction else ''}{suffix}"
    body = json.dumps(with_time("$.session.start_time", text)).encode()
    try:
        decode_event(body)
        accepted = True
    except InvalidEvent:
        accepted = False
    in_window = instant.replace(tzinfo=UTC) >= EARLIEST_EVENT_TIME
    matches = re.search(TIMESTAMP_PATTERN, text) is not None
    if in_window or not matches:  # outside the window the API refuses what the pattern admits
        assert accepted == matches, text


def test_a_cost_too_long_for_an_int_is_refused_with_its_problems_not_a_crash() -> None:
    # msgspec reads the integer into a Decimal (out of bounds), but the spelling check's
    # untyped read of it fails past Python's 4,300-digit int limit: the times' spelling is
    # still judged, and the answer is the problems, never an exception.
    from scr.schema import InvalidEvent, decode_event

    text = json.dumps(event("too_long", timestamp="2026-11-25 10:00:05Z")).encode()
    raw = re.sub(rb'"estimated_cost_usd": [^,}]+', b'"estimated_cost_usd": ' + b"1" * 5000, text)
    with pytest.raises(InvalidEvent) as refused:
        decode_event(raw)
    assert [(p.code, p.path) for p in refused.value.problems] == [
        ("invalid_value", "$.usage.estimated_cost_usd"), ("invalid_value", "$.timestamp")]
