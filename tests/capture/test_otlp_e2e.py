"""OTLP end to end against a real ``scr serve``: the OpenTelemetry SDK's OTLP/HTTP exporter
(protobuf, gzip), OTLP JSON from a real HTTP client, the official OpenAI instrumentation on the
real ``openai`` client, and spans that survive a crash of the server before their session ends;
each on the SQLite store and on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from capture.openai_server import OpenAIServer, Reply
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
from conftest import STORE_BACKENDS
from scr.capture.genai import session_event_id
from support import ServerProcess, create_key, wait_for

pytestmark = pytest.mark.every_store  # the crash test takes store_uri: on each store

IDLE_S = 2
ARRIVAL_TIMEOUT_S = 15.0


@dataclass
class Scr:
    process: ServerProcess
    ingest: str
    read: dict[str, str]
    store_uri: str | None = None

    @property
    def traces_url(self) -> str:
        return self.process.url + OTLP_PATH

    def events(self, session_id: str) -> list[Any]:
        return session_events(None, self.process.url, session_id, self.read)

    def provider(self, compression: Compression = Compression.Gzip) -> TracerProvider:
        """A tracer provider exporting every span at its end to scr (OTLP/HTTP protobuf)."""
        provider = TracerProvider(resource=Resource.create({"service.name": "support-bot",
                                                            "service.version": "2.0.1"}))
        exporter = OTLPSpanExporter(endpoint=self.traces_url, compression=compression,
                                    headers={"authorization": f"Bearer {self.ingest}"}, timeout=10)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return provider


def _config(tmp: Path) -> Path:
    path = tmp / "scr.yaml"
    path.write_text(f"session_completion_runtime:\n  capture:\n    otlp:\n      session_idle_s: {IDLE_S}\n")
    return path


def _start(data: Path, config: Path, store_uri: str | None) -> Scr:
    ingest = create_key(data, "org_otel", "ingest", store_uri)
    read = {"authorization": f"Bearer {create_key(data, 'org_otel', 'read', store_uri)}"}
    return Scr(ServerProcess(data, config, store=store_uri).start(), ingest, read, store_uri)


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def scr(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scr]:
    """One server for the module's tests on each store: SQLite, then a PostgreSQL database."""
    tmp = tmp_path_factory.mktemp("otlp")
    store_uri = (None if request.param == "sqlite"
                 else request.getfixturevalue("postgres_server").fresh_database())
    server = _start(tmp / "data", _config(tmp), store_uri)
    yield server
    server.process.stop()


def test_the_sdk_exporter_sends_a_conversation_that_ends_with_its_root(scr: Scr) -> None:
    provider = scr.provider()
    tracer = provider.get_tracer("support-bot")
    with tracer.start_as_current_span("invoke_agent support", attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.conversation.id": "otel-conv-1",
        "enduser.id": "u_otel",
    }):
        for model, tokens in (("gpt-4o", (1000, 200)), ("gpt-4o-mini", (400, 50))):
            with tracer.start_as_current_span(f"chat {model}", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                "gen_ai.request.model": model, "gen_ai.response.model": model,
                "gen_ai.usage.input_tokens": tokens[0], "gen_ai.usage.output_tokens": tokens[1],
            }):
                pass
        assert scr.events("otel-conv-1") == []  # the root has not ended
    provider.shutdown()
    # SimpleSpanProcessor exported the root before end() returned: the session is committed
    (event,) = scr.events("otel-conv-1")
    assert event["event_id"] == session_event_id("org_otel", "c:otel-conv-1", 0)
    assert event["user"]["user_id"] == "u_otel"
    usage = event["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (1400, 250)
    assert usage["model"] == "gpt-4o" and usage["provider"] == "openai"
    # 1000 x 2.50 + 200 x 10.00 + 400 x 0.15 + 50 x 0.60, per 1M tokens
    assert usage["estimated_cost_usd"] == "0.0045900000"
    assert event["session"]["session_type"] == "autonomous"
    assert event["metadata"]["client_version"] == "2.0.1"
    assert event["metadata"]["custom_tags"]["service"] == "support-bot"


def test_a_failed_call_is_an_error_outcome(scr: Scr) -> None:
    provider = scr.provider(Compression.NoCompression)
    tracer = provider.get_tracer("support-bot")
    with tracer.start_as_current_span("chat gpt-4o", attributes={
        "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.conversation.id": "otel-conv-err", "error.type": "RateLimitError",
        "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 0,
    }) as span:
        span.set_status(Status(StatusCode.ERROR, "429 Too Many Requests"))
    provider.shutdown()
    (event,) = scr.events("otel-conv-err")
    assert event["outcome"] == {"status": "error", "error_code": "RateLimitError"}
    assert event["usage"]["provider"] == "openai"  # from the older gen_ai.system


def test_otlp_json_from_a_real_http_client(scr: Scr) -> None:
    trace, root = trace_id(), span_id()
    document = export(
        chat_span(trace, root, 0.2, 1.0, 30, 3, gen_ai__conversation__id="otel-json-1"),
        json_span(trace, root, "", 0.0, 1.5, name="session", gen_ai__conversation__id="otel-json-1",
                  user__id="u_json"),
    )
    response = httpx.post(scr.traces_url, content=json.dumps(document),
                          headers={"content-type": "application/json",
                                   "authorization": f"Bearer {scr.ingest}"})
    assert response.status_code == 200 and response.json() == {}
    (event,) = scr.events("otel-json-1")
    assert event["user"]["user_id"] == "u_json"
    assert event["session"]["duration_ms"] == 1500


def test_the_official_openai_instrumentation_on_the_real_client(scr: Scr) -> None:
    provider = scr.provider()
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with OpenAIServer() as llm:
            llm.script(Reply(prompt_tokens=321, completion_tokens=45, served_model="gpt-4o-mini-2024-07-18"),
                       Reply(prompt_tokens=100, completion_tokens=10, cached_tokens=60,
                             served_model="gpt-4o-mini-2024-07-18"))
            client = openai.OpenAI(base_url=llm.base_url, api_key="test", max_retries=0)
            tracer = provider.get_tracer("app")
            # the app names the conversation on its own root span; the instrumentation's
            # chat spans are its children
            with tracer.start_as_current_span("conversation", attributes={
                "gen_ai.conversation.id": "otel-openai-1", "user.id": "u_openai",
            }):
                for question in ("Hello?", "And then?"):
                    client.chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
                    )
            assert len(llm.requests) == 2
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    (event,) = wait_for(lambda: scr.events("otel-openai-1"), ARRIVAL_TIMEOUT_S, "the session")
    usage = event["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (421, 55)
    assert usage["model"] == "gpt-4o-mini-2024-07-18"  # the served snapshot, priced as gpt-4o-mini
    assert usage["provider"] == "openai"
    assert event["user"]["user_id"] == "u_openai"
    assert event["metadata"]["custom_tags"]["spans"] == "3"
    assert event["outcome"] == {"status": "success"}
    assert "price" not in event["metadata"]["custom_tags"]
    assert "content" not in event  # the host did not turn message content capture on


def test_message_content_captured_by_the_instrumentation_becomes_content(
    scr: Scr, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_only")
    provider = scr.provider()
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    conversation: list[Any] = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Oslo: 3 °C, light snow"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    try:
        with OpenAIServer() as llm:
            llm.script(Reply(), Reply())
            client = openai.OpenAI(base_url=llm.base_url, api_key="test", max_retries=0)
            with provider.get_tracer("app").start_as_current_span(
                "conversation", attributes={"gen_ai.conversation.id": "otel-content-1"},
            ):
                client.chat.completions.create(model="gpt-4o-mini", messages=conversation[:1])
                client.chat.completions.create(model="gpt-4o-mini", messages=conversation)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    (event,) = wait_for(lambda: scr.events("otel-content-1"), ARRIVAL_TIMEOUT_S, "the session")
    # the latest call's input messages: its last user message and the tool's result
    assert event["content"] == {"user_request": "And tomorrow?",
                                "tool_outputs": ["Oslo: 3 °C, light snow"]}
    # the emitted spans are kept to recognise a retry, without their texts
    spans = [body for _span, _emitted, body in stored_spans(scr.process.data, scr.store_uri)]
    assert spans and not any(b"light snow" in span for span in spans)


@pytest.mark.slow
def test_stored_spans_survive_a_crash_and_are_emitted_after_restart(
    tmp_path: Path, store_uri: str | None
) -> None:
    config = _config(tmp_path)
    first = _start(tmp_path / "data", config, store_uri)
    trace = trace_id()
    document = export(chat_span(trace, span_id(), 0, 1, 77, 7, gen_ai__conversation__id="otel-crash"))
    try:
        response = httpx.post(first.traces_url, content=json.dumps(document),
                              headers={"content-type": "application/json",
                                       "authorization": f"Bearer {first.ingest}"})
        assert response.status_code == 200  # acknowledged: the span is durable
    finally:
        first.process.kill()  # before the idle time could emit it
    again = ServerProcess(tmp_path / "data", config, store=store_uri).start()
    try:
        server = Scr(again, first.ingest, first.read, store_uri)
        (event,) = wait_for(lambda: server.events("otel-crash"), ARRIVAL_TIMEOUT_S,
                            "the session left open by the crash")
        assert event["usage"]["input_tokens"] == 77
    finally:
        again.stop()
