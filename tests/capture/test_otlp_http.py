"""OTLP/HTTP ingest over HTTP (in-process app): sessions from GenAI spans, and every bad input."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from capture.otlp_support import (
    OTLP_PATH,
    chat_span,
    export,
    json_span,
    session_events,
    span_id,
    stored_spans,
    trace_id,
)
from conftest import config_text
from scr.capture.genai import session_event_id
from support import wait_for

pytestmark = pytest.mark.every_store  # each test on SQLite and on PostgreSQL

IDLE_CONFIG = config_text().replace(
    "session_completion_runtime:\n",
    "session_completion_runtime:\n  capture:\n    otlp:\n      session_idle_s: 0.5\n",
)


def post(client: Any, document: Any, key: dict[str, str], **headers: str) -> Any:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return client.post(OTLP_PATH, content=body,
                       headers={"content-type": "application/json", **key, **headers})


def events(client: Any, session_id: str) -> list[Any]:
    return session_events(client, "", session_id, client.key("org_acme", "read"))


def assert_error(response: Any, status: int) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["message"]


def test_a_conversation_ends_with_its_root_span_as_one_event(serve: Any) -> None:
    client = serve()
    key = client.key()
    trace = trace_id()
    root = span_id()
    children = [
        chat_span(trace, root, 0.5, 2.0, 1000, 200),
        chat_span(trace, root, 2.5, 4.0, 500, 100, model="gpt-4o-mini",
                  gen_ai__usage__cache_read__input_tokens=300),
    ]
    first = post(client, export(*children), key)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/json"
    assert events(client, "conv-42") == []  # no conversation id yet: nothing to emit
    root_span = json_span(trace, root, "", 0.0, 5.0, name="invoke_agent support",
                          gen_ai__operation__name="invoke_agent", gen_ai__conversation__id="conv-42",
                          user__id="u_9")
    answer = post(client, export(root_span), key)
    assert answer.status_code == 200 and answer.json() == {}
    (event,) = events(client, "conv-42")
    assert event["event_id"] == session_event_id("org_acme", "c:conv-42", 0)
    assert event["session"]["session_type"] == "autonomous"
    assert event["session"]["duration_ms"] == 5000
    assert event["user"] == {"user_id": "u_9", "organization_id": "org_acme", "tier": "free"}
    usage = event["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (1500, 300, 1800)
    assert usage["model"] == "gpt-4o" and usage["provider"] == "openai"
    assert usage["cache_read_tokens"] == 300
    # gpt-4o: 1000 x 2.50 + 200 x 10.00; gpt-4o-mini: 200 x 0.15 + 300 x 0.075 + 100 x 0.60 (per 1M)
    assert usage["estimated_cost_usd"] == "0.0046125000"
    assert event["outcome"] == {"status": "success"}
    assert event["metadata"]["client_version"] == "3.1.4"
    assert event["metadata"]["custom_tags"] == {"capture": "otlp", "spans": "3", "traces": "1",
                                                "service": "chat-service"}


def test_a_trace_without_conversation_is_a_session_of_its_own(serve: Any) -> None:
    client = serve()
    key = client.key()
    trace, root = trace_id(), span_id()
    post(client, export(chat_span(trace, root, 0.1, 0.9)), key)
    # the root has no gen_ai attributes: it only ends the trace's session
    response = post(client, export(json_span(trace, root, "", 0.0, 1.0, name="POST /chat")), key)
    assert response.status_code == 200
    (event,) = events(client, trace)
    assert event["session"]["session_type"] == "api"
    assert event["session"]["duration_ms"] == 1000
    assert event["usage"]["input_tokens"] == 100


def test_an_agent_span_that_sums_its_calls_is_not_counted_twice(serve: Any) -> None:
    client = serve()
    key = client.key()
    trace, root = trace_id(), span_id()
    agent = json_span(trace, root, "", 0, 3, gen_ai__operation__name="invoke_agent",
                      gen_ai__conversation__id="conv-sum", gen_ai__usage__input_tokens=300,
                      gen_ai__usage__output_tokens=60, gen_ai__request__model="gpt-4o")
    calls = [chat_span(trace, root, 0, 1, 100, 20), chat_span(trace, root, 1, 2, 200, 40)]
    post(client, export(*calls, agent), key)
    (event,) = events(client, "conv-sum")
    assert (event["usage"]["input_tokens"], event["usage"]["output_tokens"]) == (300, 60)


def test_a_span_of_an_unknown_model_adds_nothing_and_is_tagged(serve: Any) -> None:
    client = serve()
    trace = trace_id()
    post(client, export(chat_span(trace, "", 0, 1, 1000, 200),
                        chat_span(trace, "", 1, 2, 500, 50, model="house-model-9")), client.key())
    (event,) = [e for e in events(client, trace)]
    assert event["usage"]["input_tokens"] == 1500
    assert event["usage"]["estimated_cost_usd"] == "0.0045000000"  # the gpt-4o span alone
    assert event["metadata"]["custom_tags"]["price"] == "unknown"


def test_errors_and_timeouts_become_the_outcome(serve: Any) -> None:
    client = serve()
    key = client.key()
    trace = trace_id()
    failed = chat_span(trace, "", 0, 1, 10, 0, error__type="openai.APITimeoutError")
    failed["status"] = {"code": 2, "message": "Request timed out."}
    post(client, export(failed), key)
    (event,) = events(client, trace)
    assert event["outcome"] == {"status": "timeout", "error_code": "openai.APITimeoutError"}
    other = trace_id()
    broken = chat_span(other, "", 0, 1, 10, 0)
    broken["status"] = {"code": 2, "message": "upstream 500"}
    post(client, export(broken), key)
    (event,) = events(client, other)
    assert event["outcome"] == {"status": "error", "error_code": "upstream 500"}


def test_an_open_conversation_is_emitted_after_the_idle_time(serve: Any) -> None:
    client = serve(IDLE_CONFIG)
    key = client.key()
    for turn in range(2):  # two traces (two user turns), one conversation
        trace, root = trace_id(), span_id()
        post(client, export(chat_span(trace, root, turn * 10, turn * 10 + 1, 50, 5,
                                      gen_ai__conversation__id="conv-idle")), key)
        post(client, export(json_span(trace, root, "", turn * 10, turn * 10 + 2, name="POST /chat")), key)
    assert events(client, "conv-idle") == []  # roots without the conversation id do not end it
    (event,) = wait_for(lambda: events(client, "conv-idle"), 10, "the idle conversation")
    assert event["session"]["session_type"] == "chat"
    assert event["usage"]["input_tokens"] == 100
    assert event["session"]["duration_ms"] == 12000
    assert event["metadata"]["custom_tags"]["traces"] == "2"


def test_a_retried_export_is_not_counted_again_and_late_spans_are_a_new_segment(serve: Any) -> None:
    client = serve()
    key = client.key()
    trace = trace_id()
    batch = export(chat_span(trace, "", 0, 1, 100, 10, gen_ai__conversation__id="conv-retry"))
    assert post(client, batch, key).status_code == 200
    assert post(client, batch, key).status_code == 200  # the exporter retries the same batch
    (event,) = events(client, "conv-retry")
    assert event["usage"]["input_tokens"] == 100
    late = export(chat_span(trace_id(), "", 5, 6, 7, 1, gen_ai__conversation__id="conv-retry"))
    post(client, late, key)
    later = events(client, "conv-retry")
    assert len(later) == 2
    assert later[1]["event_id"] == session_event_id("org_acme", "c:conv-retry", 1)
    assert later[1]["metadata"]["custom_tags"]["segment"] == "1"
    assert later[1]["usage"]["input_tokens"] == 7


def test_protobuf_bodies_and_answers(serve: Any) -> None:
    from google.protobuf import json_format

    client = serve()
    trace = trace_id()
    document = export(chat_span(trace, "", 0, 1, 42, 4))
    # the protobuf of the same export (ids converted as the server does for JSON)
    from scr.capture.otlp import _hex_ids_to_base64

    _hex_ids_to_base64(document)
    message = json_format.ParseDict(document, ExportTraceServiceRequest())
    response = client.post(OTLP_PATH, content=message.SerializeToString(),
                           headers={"content-type": "application/x-protobuf", **client.key()})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert ExportTraceServiceResponse.FromString(response.content) == ExportTraceServiceResponse()
    (event,) = events(client, trace)
    assert event["usage"]["input_tokens"] == 42


def test_gzip_bodies_are_read_and_bounded(serve: Any) -> None:
    client = serve(config_text().replace(
        "session_completion_runtime:\n", "session_completion_runtime:\n  server:\n    max_body_bytes: 4096\n"
    ))
    key = client.key()
    trace = trace_id()
    body = gzip.compress(json.dumps(export(chat_span(trace, "", 0, 1))).encode())
    assert post(client, body, key, **{"content-encoding": "gzip"}).status_code == 200
    assert len(events(client, trace)) == 1
    padded = export(chat_span(trace_id(), "", 0, 1, padding="x" * 20_000))
    bomb = gzip.compress(json.dumps(padded).encode())
    assert len(bomb) < 4096  # small on the wire, over the limit once inflated
    assert_error(post(client, bomb, key, **{"content-encoding": "gzip"}), 413)
    assert_error(post(client, b"\x1f\x8bnot gzip", key, **{"content-encoding": "gzip"}), 400)
    assert_error(post(client, body[:-8], key, **{"content-encoding": "gzip"}), 400)
    assert_error(post(client, body, key, **{"content-encoding": "br"}), 415)
    assert_error(post(client, json.dumps(padded).encode(), key), 413)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-protobuf", b"\xff\xff\xff\xff not a protobuf"),
        ("application/json", b"{not json"),
        ("application/json", b"[]"),
        ("application/json", b'{"resourceSpans": "many"}'),
        ("application/json",
         b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}'),
    ],
)
def test_malformed_bodies_are_400_and_store_nothing(serve: Any, content_type: str, body: bytes) -> None:
    client = serve()
    response = client.post(OTLP_PATH, content=body, headers={"content-type": content_type, **client.key()})
    assert_error(response, 400)
    assert client.get("/readyz").status_code == 200
    assert stored_spans(client.data, client.store_uri) == []


def test_a_spanning_caller_names_a_valid_tenant_or_nothing_is_stored(serve: Any) -> None:
    """Without authentication the caller spans tenants: ``?tenant=`` becomes the events'
    ``organization_id``, so it is checked as one before anything is stored."""
    client = serve(config_text().replace(
        "session_completion_runtime:\n",
        "session_completion_runtime:\n  validation:\n    require_authentication: false\n",
    ))
    document = json.dumps(export(chat_span(trace_id(), "", gen_ai__conversation__id="conv-tenant")))
    headers = {"content-type": "application/json"}
    assert_error(client.post(OTLP_PATH, content=document, headers=headers), 400)  # no ?tenant=
    for tenant in ("bad tenant", "x" * 129, "org\x00acme"):
        response = client.post(OTLP_PATH, params={"tenant": tenant}, content=document, headers=headers)
        assert_error(response, 400)
        assert "tenant" in response.json()["error"]["message"]
    assert stored_spans(client.data, client.store_uri) == []
    answer = client.post(OTLP_PATH, params={"tenant": "org_other"}, content=document, headers=headers)
    assert answer.status_code == 200, answer.text
    read = client.get("/v1/sessions/conv-tenant", params={"tenant": "org_other"})
    assert read.status_code == 200, read.text
    (item,) = read.json()["events"]
    assert item["event"]["user"]["organization_id"] == "org_other"


def test_a_nul_character_in_a_span_name_rejects_that_span_only(serve: Any) -> None:
    """PostgreSQL's text columns refuse NUL: such a span is rejected on every store alike,
    never a 500 or a request stored half-way."""
    client = serve()
    good = trace_id()
    response = post(client, export(chat_span(trace_id(), "", gen_ai__conversation__id="conv\x00nul"),
                                   chat_span(trace_id(), "", user__id="u\x00", model="gpt-4o"),
                                   chat_span(good, "")), client.key())
    assert response.status_code == 200, response.text
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "2"
    assert "gen_ai.conversation.id contains a NUL character" in partial["errorMessage"]
    assert len(events(client, good)) == 1
    assert len(stored_spans(client.data, client.store_uri)) == 1


def test_keys_and_content_types_are_checked(serve: Any) -> None:
    client = serve()
    document = export(chat_span(trace_id()))
    assert_error(post(client, document, {}), 401)
    assert_error(post(client, document, {"authorization": "Bearer scr_00000000_nope"}), 401)
    assert_error(post(client, document, client.key("org_acme", "read")), 403)
    assert_error(post(client, document, client.key(), **{"content-type": "text/plain"}), 415)


def test_spans_without_genai_attributes_are_ignored_and_counted(serve: Any) -> None:
    client = serve()
    trace = trace_id()
    plain = export(json_span(trace, span_id(), "", 0, 1, name="GET /health", http__method="GET"),
                   json_span(trace, span_id(), span_id(), 0, 1, name="db.query"))
    response = post(client, plain, client.key())
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert "rejectedSpans" not in partial  # ignored is not rejected
    assert "2 spans without gen_ai.* attributes were ignored" in partial["errorMessage"]
    assert events(client, trace) == []
    assert 'scr_otlp_spans_total{result="ignored"} 2.0' in client.get("/metrics").text


def test_invalid_spans_are_rejected_in_partial_success_and_the_rest_kept(serve: Any) -> None:
    client = serve()
    good = trace_id()
    bad_id = chat_span("abcd", "")
    bad_tokens = chat_span(trace_id(), "", input_tokens=-5)
    text_tokens = chat_span(trace_id(), "")
    text_tokens["attributes"].append({"key": "gen_ai.usage.output_tokens", "value": {"stringValue": "x"}})
    backwards = chat_span(trace_id(), "", 5, 1)
    response = post(client, export(bad_id, bad_tokens, text_tokens, backwards, chat_span(good, "")),
                    client.key())
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "4"  # int64 as a string, as OTLP JSON has it
    assert "trace id" in partial["errorMessage"]
    assert len(events(client, good)) == 1
    assert 'scr_otlp_spans_total{result="rejected"} 4.0' in client.get("/metrics").text
