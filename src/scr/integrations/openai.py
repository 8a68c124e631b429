"""Capture every completion made with the official ``openai`` SDK (sync and async clients).

    client = scr.integrations.openai.instrument(openai.OpenAI(), scr.Client(organization_id="org_acme"))

``instrument`` wraps ``chat.completions.create`` and ``responses.create`` of one client: each
call becomes one event (session type ``api``) with the answer's model, input, output, cached
and reasoning tokens. Streams are captured when they end (``stream=True``; a Chat Completions
stream is asked for its usage with ``stream_options={"include_usage": True}``, and if the
caller had not asked for it, the extra usage-only chunk is kept from the caller, so the stream
reads as before). A failed call is captured with ``status`` ``error`` or ``timeout`` and its
``error_code`` (the API's error code, ``http_<status>``, ``connection_error`` or
``timeout``), then its exception is raised as before; a stream closed early is
``user_terminated``. scr's own work never raises into the caller.

Calls inside ``scr.integrations.session("chat_42", user_id=...)`` share that session id (each
call stays its own event, billed once). The session is otherwise the response id.
Not wrapped: ``with_raw_response`` / ``with_streaming_response`` and the ``.stream()`` helpers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, Literal

import openai
from pydantic import BaseModel

from scr.integrations.completions import CaptureSettings, CompletionReader, report
from scr.schema import OutcomeStatus
from scr.sdk.client import BaseClient

log = logging.getLogger("scr.integrations.openai")

Api = Literal["chat", "responses"]
INSTRUMENTED = "_scr_instrumented"


def instrument(
    openai_client: openai.OpenAI | openai.AsyncOpenAI,
    scr_client: BaseClient,
    *,
    user_id: str | None = None,
    organization_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    provider: str = "openai",
    record_text: bool = False,
) -> openai.OpenAI | openai.AsyncOpenAI:
    """Capture the completions of ``openai_client`` with ``scr_client``; answer the same client.

    ``user_id``, ``organization_id`` and ``tags`` fill every event (over ``scr_client``'s
    defaults); ``record_text`` keeps the answer's first 4,096 characters as the event's
    ``final_message``, and the request's last user message and tool results as its
    ``content`` (off by default: text may hold personal data). Idempotent.
    """
    if getattr(openai_client, INSTRUMENTED, False):
        return openai_client
    defaults = CaptureSettings(None, user_id, organization_id, tags, provider, record_text)
    wrap = _wrap_async if isinstance(openai_client, openai.AsyncOpenAI) else _wrap_sync
    resources: tuple[tuple[Api, Any], ...] = (
        ("chat", openai_client.chat.completions), ("responses", openai_client.responses),
    )
    for api, resource in resources:
        # An instance attribute shadows the class's method for this client only.
        setattr(resource, "create", wrap(resource.create, api, scr_client, defaults))  # noqa: B010
    setattr(openai_client, INSTRUMENTED, True)
    return openai_client


class _Call:
    """One API call being captured: its reader, and capture exactly once when it ends."""

    def __init__(self, api: Api, kwargs: dict[str, Any], scr_client: BaseClient,
                 defaults: CaptureSettings) -> None:
        self.scr_client, self.defaults = scr_client, defaults
        self.model = kwargs.get("model") if isinstance(kwargs.get("model"), str) else None
        self.request = kwargs.get("messages", kwargs.get("input"))  # read only with record_text
        self.streaming = kwargs.get("stream") is True
        self.hide_usage_chunk = False
        if self.streaming and api == "chat":
            asked = dict(kwargs.get("stream_options") or {})
            self.hide_usage_chunk = not asked.get("include_usage")
            kwargs["stream_options"] = {**asked, "include_usage": True}
        self.reader = CompletionReader(defaults.record_text)
        self.started_at = time.time()
        self.done = False

    def feed(self, answer: object) -> None:
        try:
            if isinstance(answer, BaseModel):
                self.reader.feed(answer.model_dump())
        except Exception:  # reading the figures must never break the caller's call
            log.exception("scr: could not read an OpenAI answer")

    def is_hidden(self, chunk: object) -> bool:
        """The usage-only chunk scr asked for and the caller did not."""
        return (self.hide_usage_chunk and isinstance(chunk, openai.types.chat.ChatCompletionChunk)
                and not chunk.choices and chunk.usage is not None)

    def finish(self, status: OutcomeStatus = "success", error_code: str | None = None) -> None:
        if self.done:
            return
        self.done = True
        try:
            report(self.scr_client, self.defaults, self.reader.completion, self.model,
                   self.started_at, status, error_code, self.request)
        except Exception:  # scr must never break the caller
            log.exception("scr: could not capture an OpenAI completion")

    def fail(self, error: BaseException) -> None:
        self.finish(*outcome_of(error))


def outcome_of(error: BaseException) -> tuple[OutcomeStatus, str]:
    """The outcome status and error code of a failed call."""
    if isinstance(error, asyncio.CancelledError | KeyboardInterrupt | GeneratorExit):
        return "user_terminated", "cancelled"
    if isinstance(error, openai.APITimeoutError | TimeoutError) or "Timeout" in type(error).__name__:
        return "timeout", "timeout"
    if isinstance(error, openai.APIStatusError):
        return "error", str(error.code or f"http_{error.status_code}")
    if isinstance(error, openai.APIConnectionError):
        return "error", "connection_error"
    return "error", type(error).__name__


def _wrap_sync(create: Callable[..., Any], api: Api, scr_client: BaseClient,
               defaults: CaptureSettings) -> Callable[..., Any]:
    @functools.wraps(create)
    def create_and_capture(*args: Any, **kwargs: Any) -> Any:
        call = _Call(api, kwargs, scr_client, defaults)
        try:
            answer = create(*args, **kwargs)
        except BaseException as error:
            call.fail(error)
            raise
        if call.streaming:
            return CapturedStream(answer, call)
        call.feed(answer)
        call.finish()
        return answer

    return create_and_capture


def _wrap_async(create: Callable[..., Any], api: Api, scr_client: BaseClient,
                defaults: CaptureSettings) -> Callable[..., Any]:
    @functools.wraps(create)
    async def create_and_capture(*args: Any, **kwargs: Any) -> Any:
        call = _Call(api, kwargs, scr_client, defaults)
        try:
            answer = await create(*args, **kwargs)
        except BaseException as error:
            call.fail(error)
            raise
        if call.streaming:
            return CapturedAsyncStream(answer, call)
        call.feed(answer)
        call.finish()
        return answer

    return create_and_capture


class CapturedStream:
    """An ``openai.Stream`` that captures its completion when it ends; otherwise the same."""

    def __init__(self, stream: openai.Stream[Any], call: _Call) -> None:
        self._stream, self._call = stream, call
        self._iterator: Iterator[Any] = iter(stream)

    def __iter__(self) -> CapturedStream:
        return self

    def __next__(self) -> Any:
        while True:
            try:
                chunk = next(self._iterator)
            except StopIteration:
                self._call.finish()
                raise
            except BaseException as error:
                self._call.fail(error)
                raise
            self._call.feed(chunk)
            if not self._call.is_hidden(chunk):
                return chunk

    def close(self) -> None:
        self._call.finish("user_terminated")  # a no-op when the stream already ended
        self._stream.close()

    def __enter__(self) -> CapturedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class CapturedAsyncStream:
    """An ``openai.AsyncStream`` that captures its completion when it ends."""

    def __init__(self, stream: openai.AsyncStream[Any], call: _Call) -> None:
        self._stream, self._call = stream, call
        self._iterator: AsyncIterator[Any] = stream.__aiter__()

    def __aiter__(self) -> CapturedAsyncStream:
        return self

    async def __anext__(self) -> Any:
        while True:
            try:
                chunk = await self._iterator.__anext__()
            except StopAsyncIteration:
                self._call.finish()
                raise
            except BaseException as error:
                self._call.fail(error)
                raise
            self._call.feed(chunk)
            if not self._call.is_hidden(chunk):
                return chunk

    async def close(self) -> None:
        self._call.finish("user_terminated")
        await self._stream.close()

    async def __aenter__(self) -> CapturedAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
