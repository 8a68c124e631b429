"""``CaptureMiddleware`` in a real Starlette gateway (uvicorn on 127.0.0.1) that proxies to the
local OpenAI-compatible test server; the real ``openai`` client calls the gateway."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

import scr
from capture.conftest import LiveServer
from capture.openai_server import OpenAIServer, Reply, ThreadedUvicorn
from scr.integrations.asgi import CaptureMiddleware
from scr.integrations.sse import SSEReader

MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]


def gateway(upstream: str, scr_client: scr.Client) -> Starlette:
    """A minimal OpenAI-compatible proxy: forwards POST /v1/* and streams the answer back."""
    http = httpx.AsyncClient(base_url=upstream, timeout=10)

    async def forward(request: Request) -> Response:
        outgoing = http.build_request(
            "POST", f"/v1/{request.path_params['path']}", content=await request.body(),
            headers={"content-type": "application/json",
                     "authorization": request.headers.get("authorization", "")})
        answer = await http.send(outgoing, stream=True)
        return StreamingResponse(answer.aiter_raw(), status_code=answer.status_code,
                                 media_type=answer.headers.get("content-type"),
                                 background=BackgroundTask(answer.aclose))

    app = Starlette(routes=[Route("/v1/{path:path}", forward, methods=["POST"])])
    app.add_middleware(CaptureMiddleware, scr_client=scr_client)
    return app


@pytest.fixture(scope="module")
def proxied(llm: OpenAIServer, capture: scr.Client) -> Iterator[openai.OpenAI]:
    server = ThreadedUvicorn(gateway(llm.url, capture), "gateway").start()
    yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0, timeout=10)
    server.stop()


def test_a_proxied_completion_is_captured_and_answered_unchanged(
    llm: OpenAIServer, proxied: openai.OpenAI, capture: scr.Client, scr_server: LiveServer
) -> None:
    llm.script(Reply(text="proxied", prompt_tokens=500, completion_tokens=50, cached_tokens=256))
    completion = proxied.chat.completions.create(
        model="gpt-4o", messages=MESSAGES,
        extra_headers={"x-scr-session-id": "gw_sess_1", "x-scr-user-id": "user_gw"})
    assert completion.choices[0].message.content == "proxied"
    event = scr_server.only_event(capture, "gw_sess_1")
    assert event["user"]["user_id"] == "user_gw"
    usage = event["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["cache_read_tokens"]) == (500, 50, 256)
    assert event["outcome"]["status"] == "success"


def test_streams_are_read_as_they_pass(
    llm: OpenAIServer, proxied: openai.OpenAI, capture: scr.Client, scr_server: LiveServer
) -> None:
    llm.script(Reply(text="one two three four", prompt_tokens=33, completion_tokens=4,
                     chunk_delay_s=0.01),
               Reply(text="no usage asked"),
               Reply(text="responses stream", prompt_tokens=21, completion_tokens=9,
                     reasoning_tokens=3))
    chunks = list(proxied.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three four"
    usage = scr_server.only_event(capture, chunks[0].id)["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (33, 4)
    # A gateway cannot add what its client did not ask for: captured, and flagged as such.
    bare = list(proxied.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    event = scr_server.only_event(capture, bare[0].id)
    assert event["usage"]["input_tokens"] == 0
    assert event["metadata"]["custom_tags"] == {"scr.usage": "missing"}
    events = list(proxied.responses.create(model="o3", input="x", stream=True))
    response_id = next(e for e in events if e.type == "response.completed").response.id
    usage = scr_server.only_event(capture, response_id)["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["reasoning_tokens"]) == (21, 9, 3)


def test_an_upstream_error_is_captured_and_passed_on(
    llm: OpenAIServer, proxied: openai.OpenAI, capture: scr.Client, scr_server: LiveServer
) -> None:
    llm.script(Reply(status=429, error_type="rate_limit_error", error_code="rate_limit_exceeded"))
    with pytest.raises(openai.RateLimitError) as limited:
        proxied.responses.create(model="gpt-4o", input="x",
                                 extra_headers={"x-scr-session-id": "gw_limited"})
    assert limited.value.code == "rate_limit_exceeded"
    event = scr_server.only_event(capture, "gw_limited")
    assert event["outcome"] == {"status": "error", "error_code": "rate_limit_exceeded"}
    assert event["usage"]["model"] == "gpt-4o"  # from the request: the answer names none


def test_the_sse_reader_is_incremental_and_bounded() -> None:
    reader = SSEReader(max_event_bytes=64)
    assert reader.feed(b"data: {\"a\": 1}\r") == []
    assert reader.feed(b"\n\r\nevent: x\ndata: two\ndata: lines\n\n") == ['{"a": 1}', "two\nlines"]
    assert reader.feed(b"data: " + b"x" * 100) == []  # over the bound: dropped, not held
    assert reader.feed(b"y" * 100 + b"\n") == []
    assert reader.feed(b"\ndata: after\n\n") == ["after"]
    assert reader.skipped == 1
