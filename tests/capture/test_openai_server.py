"""The local OpenAI-compatible test server answers the real ``openai`` client as the API would."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest

from capture.openai_server import OpenAIServer, Reply


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as running:
        yield running


def client(server: OpenAIServer, timeout_s: float = 10.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0,
                         timeout=timeout_s)


def test_chat_completion_carries_usage_details(server: OpenAIServer) -> None:
    server.script(Reply(text="four", prompt_tokens=100, completion_tokens=20, cached_tokens=40,
                        reasoning_tokens=8, served_model="gpt-4o-mini-2024-07-18"))
    completion = client(server).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "2+2?"}])
    assert completion.choices[0].message.content == "four"
    assert completion.model == "gpt-4o-mini-2024-07-18"
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (100, 20, 120)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 40
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 8
    assert server.requests[0].path == "/v1/chat/completions"
    assert server.requests[0].headers["authorization"] == "Bearer test-key"


def test_chat_stream_sends_usage_only_when_asked(server: OpenAIServer) -> None:
    api = client(server)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    with_usage = list(api.chat.completions.create(
        model="gpt-4o", messages=messages, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in with_usage if c.choices)
    assert text == Reply().text
    assert with_usage[-1].usage is not None and with_usage[-1].usage.prompt_tokens == 12
    without = list(api.chat.completions.create(model="gpt-4o", messages=messages, stream=True))
    assert all(c.usage is None for c in without)


def test_responses_api_plain_and_streaming(server: OpenAIServer) -> None:
    server.default = Reply(text="a b c", prompt_tokens=50, completion_tokens=30, cached_tokens=10,
                           reasoning_tokens=5)
    api = client(server)
    response = api.responses.create(model="o4-mini", input="hello")
    assert response.output_text == "a b c"
    assert response.usage is not None
    assert response.usage.input_tokens_details.cached_tokens == 10
    assert response.usage.output_tokens_details.reasoning_tokens == 5
    events = list(api.responses.create(model="o4-mini", input="hello", stream=True))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "a b c"
    completed = [e for e in events if e.type == "response.completed"]
    assert len(completed) == 1 and completed[0].response.usage is not None
    assert completed[0].response.usage.total_tokens == 80


def test_injected_errors_and_delays(server: OpenAIServer) -> None:
    server.script(Reply(status=429, error_type="rate_limit_error", error_code="rate_limit_exceeded",
                        retry_after="1"),
                  Reply(status=500), Reply(delay_s=1.0))
    api = client(server, timeout_s=0.2)
    with pytest.raises(openai.RateLimitError) as limited:
        api.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.InternalServerError):
        api.responses.create(model="gpt-4o", input="x")
    with pytest.raises(openai.APITimeoutError):
        api.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])


def test_async_client_and_cut_stream(server: OpenAIServer) -> None:
    server.script(Reply(text="one two three", cut_stream_after=1))

    async def read() -> list[openai.types.chat.ChatCompletionChunk]:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as api:
            stream = await api.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True,
                stream_options={"include_usage": True})
            return [chunk async for chunk in stream]

    chunks = asyncio.run(read())
    assert all(c.usage is None for c in chunks)  # cut short: the usage chunk never came
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one"
