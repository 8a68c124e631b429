"""``scr.integrations.openai`` with the real ``openai`` package, the local OpenAI-compatible
test server and a real ``scr serve``."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import openai
import pytest

import scr
import scr.integrations
from capture.conftest import LiveServer
from capture.openai_server import OpenAIServer, Reply
from scr.integrations.openai import instrument
from scr.route.prices import default_prices
from scr.schema import Usage
from scr.sdk import derive_event_id
from support import free_port

MESSAGES: list[Any] = [{"role": "user", "content": "What is 2 + 2?"}]


def sync_client(llm: OpenAIServer, capture: scr.Client, timeout_s: float = 10) -> openai.OpenAI:
    api = openai.OpenAI(base_url=llm.base_url, api_key="test", max_retries=0, timeout=timeout_s)
    instrument(api, capture, user_id="user_9", tags={"feature": "qa"})
    return api


def stored(scr_server: LiveServer, capture: scr.Client, response_id: str) -> dict[str, Any]:
    assert capture.flush(timeout_s=10)
    event = scr_server.event(derive_event_id(response_id))
    assert event is not None, f"no event for {response_id}"
    return event


def cost(model: str, inputs: int, outputs: int, cached: int) -> Decimal | None:
    return default_prices().cost(Usage(inputs, outputs, inputs + outputs, model, Decimal(0),
                                       cache_read_tokens=cached))


def test_a_chat_completion_is_captured_with_cached_and_reasoning_tokens(
    llm: OpenAIServer, capture: scr.Client, scr_server: LiveServer
) -> None:
    llm.script(Reply(prompt_tokens=2000, completion_tokens=500, cached_tokens=1500,
                     reasoning_tokens=300, served_model="gpt-4o-mini-2024-07-18"))
    completion = sync_client(llm, capture).chat.completions.create(model="gpt-4o-mini",
                                                                   messages=MESSAGES)
    event = stored(scr_server, capture, completion.id)
    usage = event["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (2000, 500, 2500)
    assert (usage["cache_read_tokens"], usage["reasoning_tokens"]) == (1500, 300)
    assert usage["model"] == "gpt-4o-mini-2024-07-18" and usage["provider"] == "openai"
    # Cached tokens at the cached rate: 500 × 0.15 + 1500 × 0.075 + 500 × 0.60 per 1M tokens.
    assert Decimal(usage["estimated_cost_usd"]) == cost("gpt-4o-mini", 2000, 500, 1500)
    assert Decimal(usage["estimated_cost_usd"]) == Decimal("0.0004875")
    assert event["session"]["session_id"] == completion.id
    assert event["user"]["user_id"] == "user_9"
    assert event["outcome"] == {"status": "success"}  # no text kept unless asked
    assert event["metadata"]["custom_tags"] == {"feature": "qa"}


def test_a_chat_stream_asks_for_usage_and_hides_the_extra_chunk(
    llm: OpenAIServer, capture: scr.Client, scr_server: LiveServer
) -> None:
    llm.script(Reply(text="four, of course", prompt_tokens=40, completion_tokens=4, cached_tokens=8))
    stream = sync_client(llm, capture).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True)
    chunks = list(stream)
    assert llm.requests[-1].body["stream_options"] == {"include_usage": True}
    assert all(chunk.choices for chunk in chunks)  # the caller's loop sees what it asked for
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "four, of course"
    usage = stored(scr_server, capture, chunks[0].id)["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["cache_read_tokens"]) == (40, 4, 8)


def test_a_caller_asking_for_stream_usage_still_gets_it(
    llm: OpenAIServer, capture: scr.Client, scr_server: LiveServer
) -> None:
    chunks = list(sync_client(llm, capture).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and not chunks[-1].choices
    assert stored(scr_server, capture, chunks[0].id)["usage"]["input_tokens"] == 12


def test_responses_api_plain_and_streamed(
    llm: OpenAIServer, capture: scr.Client, scr_server: LiveServer
) -> None:
    api = sync_client(llm, capture)
    llm.script(Reply(prompt_tokens=300, completion_tokens=900, cached_tokens=100,
                     reasoning_tokens=700),
               Reply(text="streamed answer", prompt_tokens=30, completion_tokens=20,
                     reasoning_tokens=5))
    response = api.responses.create(model="o4-mini", input="think hard")
    usage = stored(scr_server, capture, response.id)["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (300, 900)
    assert (usage["cache_read_tokens"], usage["reasoning_tokens"]) == (100, 700)
    events = list(api.responses.create(model="o4-mini", input="again", stream=True))
    completed = [e for e in events if e.type == "response.completed"]
    usage = stored(scr_server, capture, completed[0].response.id)["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["reasoning_tokens"]) == (30, 20, 5)


def test_errors_and_timeouts_are_outcomes_and_still_raised(
    llm: OpenAIServer, capture: scr.Client, scr_server: LiveServer
) -> None:
    api = sync_client(llm, capture, timeout_s=0.3)
    llm.script(Reply(status=429, error_type="rate_limit_error", error_code="rate_limit_exceeded"),
               Reply(status=503), Reply(delay_s=1.0))
    with scr.integrations.session("sess_failures"):
        with pytest.raises(openai.RateLimitError):
            api.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        with pytest.raises(openai.InternalServerError):
            api.responses.create(model="gpt-4o", input="x")
        with pytest.raises(openai.APITimeoutError):
            api.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert capture.flush(timeout_s=10)
    outcomes = sorted((e["event"]["outcome"]["status"], e["event"]["outcome"]["error_code"])
                      for e in scr_server.session("sess_failures"))
    assert outcomes == [("error", "http_503"), ("error", "rate_limit_exceeded"),
                        ("timeout", "timeout")]


def test_a_session_groups_calls_and_a_stream_closed_early_is_user_terminated(
    llm: OpenAIServer, capture: scr.Client, scr_server: LiveServer
) -> None:
    api = sync_client(llm, capture)
    with scr.integrations.session("chat_42", user_id="user_session", tags={"room": "7"}):
        first = api.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        stream = api.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        next(stream)
        stream.close()
    assert capture.flush(timeout_s=10)
    events = [e["event"] for e in scr_server.session("chat_42")]
    assert sorted(e["outcome"]["status"] for e in events) == ["success", "user_terminated"]
    assert {e["user"]["user_id"] for e in events} == {"user_session"}
    assert all(e["metadata"]["custom_tags"] == {"feature": "qa", "room": "7"} for e in events)
    assert len(events) == 2 and derive_event_id(f"chat_42/{first.id}") in {e["event_id"] for e in events}


def test_the_async_client_chat_stream_and_responses(
    llm: OpenAIServer, capture: scr.Client, scr_server: LiveServer
) -> None:
    llm.script(Reply(prompt_tokens=70, completion_tokens=7, cached_tokens=64),
               Reply(prompt_tokens=11, completion_tokens=22))

    async def calls() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=llm.base_url, api_key="k", max_retries=0) as api:
            instrument(api, capture)
            stream = await api.chat.completions.create(model="gpt-4.1", messages=MESSAGES,
                                                       stream=True)
            chunks = [chunk async for chunk in stream]
            response = await api.responses.create(model="gpt-4.1", input="x")
            return chunks[0].id, response.id

    chat_id, response_id = asyncio.run(calls())
    assert stored(scr_server, capture, chat_id)["usage"]["cache_read_tokens"] == 64
    assert stored(scr_server, capture, response_id)["usage"]["output_tokens"] == 22


def test_an_unreachable_scr_server_never_breaks_the_call(llm: OpenAIServer) -> None:
    with scr.Client(f"http://127.0.0.1:{free_port()}", "k", organization_id="org_acme",
                    exit_timeout_s=0.2) as unreachable:
        api = openai.OpenAI(base_url=llm.base_url, api_key="k", max_retries=0)
        instrument(api, unreachable)
        assert instrument(api, unreachable) is api  # instrumenting twice changes nothing
        completion = api.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert completion.choices[0].message.content == Reply().text
        assert unreachable.stats().pending == 1


def test_record_text_puts_the_request_in_content_and_nothing_without_it(
    llm: OpenAIServer, capture: scr.Client, scr_server: LiveServer
) -> None:
    conversation: list[Any] = [
        {"role": "system", "content": "You are a billing assistant."},
        {"role": "user", "content": "Was I charged twice?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function", "function": {"name": "charges", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "two charges of 9.99 on 11-02"},
        {"role": "user", "content": [{"type": "text", "text": "Please refund the second one"}]},
    ]
    recording = openai.OpenAI(base_url=llm.base_url, api_key="test", max_retries=0)
    instrument(recording, capture, record_text=True)
    said = recording.chat.completions.create(model="gpt-4o-mini", messages=conversation)
    event = stored(scr_server, capture, said.id)
    assert event["content"] == {"user_request": "Please refund the second one",
                                "tool_outputs": ["two charges of 9.99 on 11-02"]}
    answered = recording.responses.create(model="gpt-4o-mini", input="Summarize my invoices")
    assert stored(scr_server, capture, answered.id)["content"] == {"user_request": "Summarize my invoices"}
    quiet = sync_client(llm, capture).chat.completions.create(model="gpt-4o-mini", messages=conversation)
    assert "content" not in stored(scr_server, capture, quiet.id)  # off by default
