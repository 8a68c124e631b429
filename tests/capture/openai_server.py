"""A local OpenAI-compatible HTTP server for tests: real HTTP on 127.0.0.1, scripted answers.

It serves ``POST /v1/embeddings`` (a hashed bag of words per input) and
``POST /v1/chat/completions`` and ``POST /v1/responses``, non-streaming (JSON) and
streaming (server-sent events, as the OpenAI API sends them), with usage that carries cached
and reasoning token details, and injected failures (an HTTP error with an OpenAI error body,
a delay for client timeouts, a stream cut short). The official ``openai`` package talks to it
through ``base_url``; so does any OpenAI-compatible client or instrumentation.

    with OpenAIServer() as server:
        server.script(Reply(prompt_tokens=100, cached_tokens=40), Reply(status=500))
        client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)

Each request takes the next scripted ``Reply`` (then ``server.default``), and is recorded in
``server.requests`` (path, JSON body, headers).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.01


@dataclass
class Reply:
    """What the server answers to one request."""

    text: str = "Hello from the test server."
    prompt_tokens: int = 12
    completion_tokens: int = 7
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    # The model named in the answer; None echoes the requested one (OpenAI answers a snapshot,
    # e.g. "gpt-4o-mini-2024-07-18", which tests can ask for here).
    served_model: str | None = None
    # Anything but 200 answers an OpenAI error body with this status (and no completion).
    status: int = 200
    error_type: str = "server_error"
    error_code: str | None = None
    retry_after: str | None = None
    # Seconds to wait before answering (longer than the client's timeout: a timeout).
    delay_s: float = 0.0
    # Streaming only: close the stream after this many content chunks, without usage or [DONE].
    cut_stream_after: int | None = None
    # Streaming only: seconds between chunks.
    chunk_delay_s: float = 0.0
    # Embeddings only: the answer's vectors' width (None: the server's ``embedding_dimensions``).
    embedding_dimensions: int | None = None


@dataclass
class Recorded:
    """One request the server received."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class ThreadedUvicorn:
    """Any ASGI app served by uvicorn in a daemon thread on a free port of 127.0.0.1."""

    def __init__(self, app: Any, name: str = "test-server") -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(
            app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1,
        ))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name=name, daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedUvicorn:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(POLL_S)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(STOP_TIMEOUT_S)
        self._socket.close()


@dataclass
class OpenAIServer:
    """A real OpenAI-compatible server (Starlette on uvicorn, in a thread) on a free port."""

    default: Reply = field(default_factory=Reply)
    requests: list[Recorded] = field(default_factory=list)
    embedding_dimensions: int = 64
    _queue: list[Reply] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/responses", self._responses, methods=["POST"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
        ])
        self._server = ThreadedUvicorn(self.app, "openai-test-server")
        self.port = self._server.port

    @property
    def url(self) -> str:
        """The server's root, e.g. ``http://127.0.0.1:PORT``."""
        return self._server.url

    @property
    def base_url(self) -> str:
        """What the ``openai`` client takes as ``base_url``."""
        return f"{self.url}/v1"

    def start(self) -> OpenAIServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order (then ``default``)."""
        with self._lock:
            self._queue.extend(replies)

    def _next(self, request: Request, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(Recorded(request.url.path, body, dict(request.headers)))
            return self._queue.pop(0) if self._queue else self.default

    async def _begin(self, request: Request) -> tuple[dict[str, Any], Reply, Response | None]:
        body = json.loads(await request.body())
        reply = self._next(request, body)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.status != 200:
            headers = {"retry-after": reply.retry_after} if reply.retry_after else {}
            error = {"error": {"message": f"injected {reply.status}", "type": reply.error_type,
                               "param": None, "code": reply.error_code}}
            return body, reply, JSONResponse(error, status_code=reply.status, headers=headers)
        return body, reply, None

    async def _embeddings(self, request: Request) -> Response:
        """Each input's hashed bag of words: texts that share words are near, others not."""
        body, reply, failure = await self._begin(request)
        if failure is not None:
            return failure
        width = reply.embedding_dimensions or self.embedding_dimensions
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for index, text in enumerate(texts):
            vector = [0.0] * width
            for word in text.lower().split():
                vector[zlib.crc32(word.encode()) % width] += 1.0
            vector[0] += 0.01  # never all zeros
            data.append({"object": "embedding", "index": index, "embedding": vector})
        return JSONResponse({"object": "list", "data": data, "model": body.get("model"),
                             "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    async def _chat(self, request: Request) -> Response:
        body, reply, failure = await self._begin(request)
        if failure is not None:
            return failure
        model = reply.served_model or body.get("model", "unknown")
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if not body.get("stream"):
            return JSONResponse({
                "id": completion_id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": reply.text, "refusal": None}}],
                "usage": chat_usage(reply), "system_fingerprint": "fp_test",
            })
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
            return {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                    "model": model, "system_fingerprint": "fp_test", "choices": choices,
                    "usage": usage}

        def chunks() -> Iterator[dict[str, Any] | None]:
            yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                          "finish_reason": None}])
            for count, piece in enumerate(_pieces(reply.text), start=1):
                yield chunk([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
                if reply.cut_stream_after is not None and count >= reply.cut_stream_after:
                    return
            yield chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
            if include_usage:
                yield chunk([], chat_usage(reply))
            yield None  # [DONE]

        return _sse(((None, c) for c in chunks()), reply.chunk_delay_s)

    async def _responses(self, request: Request) -> Response:
        body, reply, failure = await self._begin(request)
        if failure is not None:
            return failure
        model = reply.served_model or body.get("model", "unknown")
        response = _response_object(model, reply)
        if not body.get("stream"):
            return JSONResponse(response)
        return _sse(_response_events(response, reply), reply.chunk_delay_s)


def chat_usage(reply: Reply) -> dict[str, Any]:
    """The ``usage`` of a Chat Completion (with cached and reasoning token details)."""
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reply.reasoning_tokens, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


def responses_usage(reply: Reply) -> dict[str, Any]:
    """The ``usage`` of a Responses API response."""
    return {
        "input_tokens": reply.prompt_tokens,
        "input_tokens_details": {"cached_tokens": reply.cached_tokens},
        "output_tokens": reply.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def _pieces(text: str) -> list[str]:
    """The text in word-sized deltas, as a model streams it."""
    words = text.split(" ")
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


def _response_object(model: str, reply: Reply, status: str = "completed") -> dict[str, Any]:
    return {
        "id": f"resp_{uuid.uuid4().hex[:24]}", "object": "response", "created_at": int(time.time()),
        "status": status, "model": model, "error": None, "incomplete_details": None,
        "instructions": None, "metadata": {}, "parallel_tool_calls": True, "temperature": 1.0,
        "tool_choice": "auto", "tools": [], "top_p": 1.0,
        "output": [{
            "type": "message", "id": f"msg_{uuid.uuid4().hex[:24]}", "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
        }],
        "usage": responses_usage(reply),
    }


def _response_events(
    response: dict[str, Any], reply: Reply
) -> Iterator[tuple[str | None, dict[str, Any] | None]]:
    """The Responses API's streaming events for ``response``."""
    item = response["output"][0]
    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    sequence = iter(range(1_000_000))

    def event(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        return kind, {"type": kind, "sequence_number": next(sequence), **fields}

    yield event("response.created", response=pending)
    yield event("response.in_progress", response=pending)
    yield event("response.output_item.added", output_index=0,
                item={**item, "status": "in_progress", "content": []})
    yield event("response.content_part.added", item_id=item["id"], output_index=0, content_index=0,
                part={"type": "output_text", "text": "", "annotations": []})
    for count, piece in enumerate(_pieces(reply.text), start=1):
        yield event("response.output_text.delta", item_id=item["id"], output_index=0,
                    content_index=0, delta=piece, logprobs=[])
        if reply.cut_stream_after is not None and count >= reply.cut_stream_after:
            return
    yield event("response.output_text.done", item_id=item["id"], output_index=0, content_index=0,
                text=reply.text, logprobs=[])
    yield event("response.content_part.done", item_id=item["id"], output_index=0, content_index=0,
                part=item["content"][0])
    yield event("response.output_item.done", output_index=0, item=item)
    yield event("response.completed", response=response)


def _sse(
    events: Iterator[tuple[str | None, dict[str, Any] | None]]
    | Iterator[tuple[None, dict[str, Any] | None]],
    chunk_delay_s: float,
) -> StreamingResponse:
    """Server-sent events; a ``None`` payload is the ``[DONE]`` sentinel."""

    async def body() -> AsyncIterator[bytes]:
        for kind, payload in events:
            if chunk_delay_s:
                await asyncio.sleep(chunk_delay_s)
            data = "[DONE]" if payload is None else json.dumps(payload)
            prefix = f"event: {kind}\n" if kind else ""
            yield f"{prefix}data: {data}\n\n".encode()

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache"})
