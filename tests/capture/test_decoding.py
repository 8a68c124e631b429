"""What every JSON-reading endpoint does with hostile or unusual bodies, sent as raw bytes to
the real app: deep nesting, invalid UTF-8, content types, gzip and duplicate keys. Each bad
request answers the standard error body, stores nothing, and the next good request works."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from capture.otlp_support import OTLP_PATH, chat_span, export, trace_id
from capture.test_browser import APP, publishable_key, session
from scr.capture.browser import BEACON_PATH
from support import make_event

MAX_JSON_DEPTH = 128  # the nesting bound the README documents
# Far past the interpreter's recursion limit, and within every endpoint's body limit (64 KiB).
DEEP = b"[" * 30_000 + b"]" * 30_000
BAD_UTF8 = (b'{"a":"\xff"}', b'{"\xff":1}')  # in a value, in a key
CLOUDEVENT = "application/cloudevents+json"
CLOUDEVENT_BATCH = "application/cloudevents-batch+json"
SMALL_BODY_LIMIT = 64 * 1024  # server.max_body_bytes for the gzip bomb test
BOMB_BYTES = 32 * 1024 * 1024  # what the bomb inflates to: 512 times that limit
BOMB_PEAK_BYTES = 8 * 1024 * 1024  # allocated at most while refusing it (inflating it: 32 MiB)


def envelope(data: bytes) -> bytes:
    """A CloudEvent carrying ``data`` (JSON bytes, as sent) as its event."""
    return (b'{"specversion": "1.0", "id": "ce-1", "source": "/chat", '
            b'"type": "session.completed", "data": ' + data + b"}")


def raw_event(event_id: str, **changes: Any) -> bytes:
    return json.dumps(make_event(event_id, **changes), ensure_ascii=False).encode()


@dataclass
class Site:
    """A running app, its keys, and how to read what it stored."""

    client: Any
    ingest: dict[str, str]
    admin: dict[str, str]
    reader: dict[str, str]
    beacon_key: str

    def ledger_size(self) -> int:
        size: int = self.client.app.state.runtime.store.last_seq()
        return size

    def stored(self, event_id: str) -> bool:
        return bool(self.client.get(f"/v1/events/{event_id}", headers=self.reader).status_code == 200)

    def events(self, raw: bytes, content_type: str = "application/json", **headers: str) -> Any:
        return self.client.post("/v1/events", content=raw,
                                headers={**self.ingest, "content-type": content_type, **headers})

    def still_serves(self, event_id: str) -> None:
        """The service is up: a good event is accepted and readable."""
        answer = self.events(raw_event(event_id))
        assert answer.status_code == 202, answer.text
        assert self.stored(event_id)


@pytest.fixture
def site(serve: Callable[..., Any]) -> Site:
    client = serve()
    site = Site(client, client.key(), client.key(role="admin"), client.key(role="read"),
                publishable_key(client.data))
    return site


def assert_error(answer: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["message"], error
    assert all(set(detail) == {"path", "message"} for detail in error["details"]), error
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


# Every endpoint that reads a JSON body: how to send raw bytes to it.
Send = Callable[[Site, bytes], Any]
ENDPOINTS: dict[str, Send] = {
    "events": lambda s, body: s.events(body),
    "events-cloudevent": lambda s, body: s.events(envelope(body), CLOUDEVENT),
    "events-cloudevent-batch": lambda s, body: s.events(b"[" + envelope(body) + b"]", CLOUDEVENT_BATCH),
    "otlp-json": lambda s, body: s.client.post(
        OTLP_PATH, content=body, headers={**s.ingest, "content-type": "application/json"}),
    "decide": lambda s, body: s.client.post("/v1/decide", content=body, headers=s.ingest),
    "canon-items": lambda s, body: s.client.post("/v1/canon/items", content=body, headers=s.admin),
    "canon-promote": lambda s, body: s.client.post("/v1/canon/promote", content=body, headers=s.admin),
    "canon-observations": lambda s, body: s.client.post(
        "/v1/canon/observations", content=body, headers=s.ingest),
    "deliveries-replay": lambda s, body: s.client.post(
        "/v1/deliveries/replay", content=body, headers=s.admin),
    "browser-beacon": lambda s, body: s.client.post(
        BEACON_PATH, params={"key": s.beacon_key}, content=body,
        headers={"origin": APP, "content-type": "text/plain;charset=UTF-8"}),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_deeply_nested_json_is_400_on_every_endpoint(site: Site, endpoint: str) -> None:
    before = site.ledger_size()
    error = assert_error(ENDPOINTS[endpoint](site, DEEP), 400)
    assert f"{MAX_JSON_DEPTH} levels" in error["message"] and error["details"][0]["path"] == "$"
    assert site.ledger_size() == before  # nothing stored
    site.still_serves("evt_after_deep")


@pytest.mark.parametrize("body", BAD_UTF8, ids=["value", "key"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_invalid_utf8_is_400_naming_the_byte_on_every_endpoint(
    site: Site, endpoint: str, body: bytes
) -> None:
    before = site.ledger_size()
    error = assert_error(ENDPOINTS[endpoint](site, body), 400)
    assert "UTF-8" in error["message"] and "0xff" in error["details"][0]["message"]
    assert site.ledger_size() == before
    site.still_serves("evt_after_utf8")


def test_invalid_utf8_inside_a_valid_event_is_400_and_not_stored(site: Site) -> None:
    raw = raw_event("evt_latin1").replace(b"Here is your summary.", b"R\xe9sum\xe9")
    error = assert_error(site.events(raw), 400)
    assert "offset" in error["details"][0]["message"]
    batch = b"[" + raw_event("evt_fine") + b"," + raw + b"]"
    assert_error(site.events(batch), 400)  # the text is not JSON: no event of it is read
    assert not site.stored("evt_latin1") and not site.stored("evt_fine")
    utf8 = raw_event("evt_utf8", **{"outcome.final_message": "Résumé ✓"})
    assert site.events(utf8).status_code == 202  # real UTF-8 is fine
    site.still_serves("evt_after_latin1")


def test_nesting_up_to_the_bound_is_read_and_past_it_refused(site: Site) -> None:
    def nested_in_tags(levels: int) -> bytes:
        # levels counted from the top: event, metadata, custom_tags, then the rest
        inner = b"[" * (levels - 3) + b"]" * (levels - 3)
        return raw_event("evt_nest").replace(b'"summarize"', inner)

    at_bound = assert_error(site.events(nested_in_tags(MAX_JSON_DEPTH)), 400, "invalid_type")
    assert at_bound["details"][0]["path"] == "$.metadata.custom_tags[...]"  # decoded: a schema error
    assert_error(site.events(nested_in_tags(MAX_JSON_DEPTH + 1)), 400, "bad_request")
    site.still_serves("evt_after_nest")


def test_otlp_json_nested_just_within_the_bound_is_read(site: Site) -> None:
    """The bound keeps Python's own recursive readers (protobuf's ParseDict) within reach."""
    document = export(chat_span(trace_id()))
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(39):  # 10 levels down to an attribute's value, then 3 per array in it: 127
        value = {"arrayValue": {"values": [value]}}
    span["attributes"].append({"key": "deep", "value": value})
    answer = site.client.post(OTLP_PATH, content=json.dumps(document).encode(),
                              headers={**site.ingest, "content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    value = {"arrayValue": {"values": [value]}}  # 130 levels
    span["attributes"][-1]["value"] = value
    too_deep = site.client.post(OTLP_PATH, content=json.dumps(document).encode(),
                                headers={**site.ingest, "content-type": "application/json"})
    assert_error(too_deep, 400)


# ----- content types (415) --------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "named"), [
    ("text/csv", "text/csv"), ("application/xml", "application/xml"),
    ("application/json; charset=latin-1", "latin-1"),
    ('application/cloudevents+json; charset="UTF-16"', "utf-16"),
    ("multipart/form-data; boundary=x", "multipart/form-data"),
])
def test_a_content_type_events_does_not_read_is_415(site: Site, content_type: str, named: str) -> None:
    before = site.ledger_size()
    error = assert_error(site.events(raw_event("evt_415"), content_type), 415, "unsupported_media_type")
    assert f"'{named}'" in error["message"]
    assert site.ledger_size() == before
    site.still_serves("evt_after_415")


@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", 'Application/JSON;Charset="UTF-8"',
])
def test_json_with_no_charset_or_utf8_is_read(site: Site, content_type: str) -> None:
    assert site.events(raw_event("evt_ct"), content_type).status_code == 202
    single = site.events(envelope(raw_event("evt_ce")), CLOUDEVENT + "; charset=utf-8")
    assert single.status_code == 202, single.text
    assert site.stored("evt_ct") and site.stored("evt_ce")


# ----- content encodings ----------------------------------------------------------------------


def test_a_gzip_body_is_read_like_a_plain_one(site: Site) -> None:
    single = site.events(gzip.compress(raw_event("evt_gz")), **{"content-encoding": "gzip"})
    assert single.status_code == 202, single.text
    batch = b"[" + raw_event("evt_gz1") + b"," + raw_event("evt_gz2") + b"]"
    answer = site.events(gzip.compress(batch), **{"content-encoding": "GZIP"})
    assert answer.status_code == 202 and answer.json()["accepted"] == 2, answer.text
    cloudevent = site.events(gzip.compress(envelope(raw_event("evt_gzce"))), CLOUDEVENT,
                             **{"content-encoding": "gzip"})
    assert cloudevent.status_code == 202, cloudevent.text
    assert all(site.stored(e) for e in ("evt_gz", "evt_gz1", "evt_gz2", "evt_gzce"))


@pytest.mark.parametrize(("encoding", "status", "named"), [
    ("br", 415, "br"), ("deflate", 415, "deflate"), ("gzip, gzip", 415, "gzip, gzip"),
    ("gzip", 400, "gzip"),  # not gzip at all
])
def test_another_or_a_broken_encoding_is_refused_by_name(
    site: Site, encoding: str, status: int, named: str
) -> None:
    before = site.ledger_size()
    error = assert_error(site.events(raw_event("evt_enc"), **{"content-encoding": encoding}), status)
    assert named in error["message"]
    assert site.ledger_size() == before
    site.still_serves("evt_after_enc")


def test_a_gzip_bomb_is_413_without_inflating_it(serve: Callable[..., Any]) -> None:
    client = serve(f"session_completion_runtime:\n  server: {{max_body_bytes: {SMALL_BODY_LIMIT}}}\n")
    ingest = client.key()
    squeezer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"\0" * (1024 * 1024)
    bomb = b"".join(squeezer.compress(zeros) for _ in range(BOMB_BYTES // len(zeros)))
    bomb += squeezer.flush()
    assert len(bomb) < SMALL_BODY_LIMIT  # the body itself is within the limit
    before = client.app.state.runtime.store.last_seq()
    tracemalloc.start()
    try:
        answer = client.post("/v1/events", content=bomb, headers={
            **ingest, "content-type": "application/json", "content-encoding": "gzip"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_error(answer, 413, "payload_too_large")
    assert "decompressed" in answer.json()["error"]["message"]
    assert peak < BOMB_PEAK_BYTES, peak
    assert client.app.state.runtime.store.last_seq() == before
    event = json.dumps(make_event("evt_after_bomb")).encode()
    ok = client.post("/v1/events", content=gzip.compress(event),
                     headers={**ingest, "content-type": "application/json", "content-encoding": "gzip"})
    assert ok.status_code == 202, ok.text


# ----- duplicate keys -------------------------------------------------------------------------


TWICE_MODEL = raw_event("evt_twice").replace(b'"model": "gpt-4o"', b'"model": "cheap", "model": "gpt-4o"')


def test_an_event_repeating_a_key_is_400_naming_it(site: Site) -> None:
    assert TWICE_MODEL.count(b'"model"') == 2
    before = site.ledger_size()
    error = assert_error(site.events(TWICE_MODEL), 400, "duplicate_key")
    assert error["details"][0]["path"] == "$.usage.model"
    assert site.ledger_size() == before and not site.stored("evt_twice")
    site.still_serves("evt_after_twice")


def test_a_repeated_key_rejects_its_event_alone_in_a_batch(site: Site) -> None:
    tenant_twice = raw_event("evt_tenant").replace(
        b'"organization_id": "org_acme"', b'"organization_id": "org_acme", "organization_id": "org_acme"')
    tag_twice = raw_event("evt_tag").replace(
        b'"feature": "summarize"', b'"feature": "a", "feature": "summarize"')
    batch = b"[" + b",".join([raw_event("evt_ok1"), TWICE_MODEL, tenant_twice, tag_twice,
                              raw_event("evt_ok2")]) + b"]"
    answer = site.events(batch)
    assert answer.status_code == 207, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "rejected", "rejected", "accepted"]
    assert [r["errors"][0]["path"] for r in results[1:4]] == [
        "$.usage.model", "$.user.organization_id", "$.metadata.custom_tags.feature"]
    assert {r["errors"][0]["code"] for r in results[1:4]} == {"duplicate_key"}
    assert site.stored("evt_ok1") and site.stored("evt_ok2")
    assert not any(site.stored(e) for e in ("evt_twice", "evt_tenant", "evt_tag"))


def test_a_repeated_key_in_cloudevents_data_is_refused(site: Site) -> None:
    error = assert_error(site.events(envelope(TWICE_MODEL), CLOUDEVENT), 400, "duplicate_key")
    assert error["details"][0]["path"] == "$.usage.model"
    batch = b"[" + envelope(TWICE_MODEL) + b"," + envelope(raw_event("evt_ce_ok")) + b"]"
    answer = site.events(batch, CLOUDEVENT_BATCH)
    assert answer.status_code == 207
    assert [r["status"] for r in answer.json()["results"]] == ["rejected", "accepted"]
    assert not site.stored("evt_twice") and site.stored("evt_ce_ok")


def test_keys_alike_at_different_levels_and_keys_inside_strings_are_no_repeat(site: Site) -> None:
    tags = {"model": "gpt-4o", "usage": "model", "q": 'say "model": "x", {"model": 1}'}
    raw = raw_event("evt_alike", **{"metadata.custom_tags": tags,
                                    "outcome.final_message": '"model":\\"gpt-4o\\" \u00e9 \\u0041'})
    answer = site.events(raw)
    assert answer.status_code == 202, answer.text
    stored = site.client.get("/v1/events/evt_alike", headers=site.reader).json()["event"]
    assert stored["metadata"]["custom_tags"] == tags


def test_a_key_spelled_two_ways_is_a_repeat(site: Site) -> None:
    raw = raw_event("evt_spelled").replace(b'"tier": "pro"', b'"tier": "free", "\\u0074ier": "pro"')
    error = assert_error(site.events(raw), 400, "duplicate_key")
    assert error["details"][0]["path"] == "$.user.tier"
    assert not site.stored("evt_spelled")


def test_an_otlp_trace_body_is_still_read(site: Site) -> None:
    """The shared decompressor and checks did not change what OTLP accepts."""
    body = json.dumps(export(chat_span(trace_id()))).encode()
    for encoding, content in (("identity", body), ("gzip", gzip.compress(body))):
        answer = site.client.post(OTLP_PATH, content=content, headers={
            **site.ingest, "content-type": "application/json", "content-encoding": encoding})
        assert answer.status_code == 200, answer.text


def test_a_browser_beacon_is_still_read(site: Site) -> None:
    answer = site.client.post(
        BEACON_PATH, params={"key": site.beacon_key}, content=json.dumps(session()).encode(),
        headers={"origin": APP, "content-type": "text/plain;charset=UTF-8"})
    assert answer.status_code == 202, answer.text
