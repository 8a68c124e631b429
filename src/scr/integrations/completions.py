"""Read what a completion cost from OpenAI-shaped JSON: whole answers and streamed pieces.

One reader serves every integration that sees OpenAI-compatible traffic (the ``openai``
SDK wrapper, the ASGI gateway middleware). Feed it, in order, the JSON objects of one
completion: a whole Chat Completion or Responses API response, or each streamed Chat
Completion chunk or Responses API event. It keeps only the figures (id, model, token counts,
and at most ``MAX_TEXT_CHARS`` of text when asked), never the whole stream.

Token counts: Chat Completions ``usage.prompt_tokens`` / ``completion_tokens``, cached
``prompt_tokens_details.cached_tokens``, reasoning ``completion_tokens_details.reasoning_tokens``;
Responses ``usage.input_tokens`` / ``output_tokens``, ``input_tokens_details.cached_tokens``,
``output_tokens_details.reasoning_tokens``. Cached tokens are part of the input and reasoning
tokens part of the output, as the price table's cost rule expects.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from scr.schema import OutcomeStatus
from scr.sdk.client import BaseClient, CaptureFields
from scr.sdk.event import derive_event_id

MAX_TEXT_CHARS = 4096  # of the final message, when text is recorded at all
PROVIDER = "openai"
USAGE_TAG, USAGE_MISSING = "scr.usage", "missing"


@dataclass
class Completion:
    """The figures of one completion, as read so far."""

    response_id: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    usage_seen: bool = False
    error_code: str | None = None
    text_parts: list[str] = field(default_factory=list)
    text_chars: int = 0

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class CompletionReader:
    """Accumulates one completion from its JSON objects (see the module docstring)."""

    def __init__(self, record_text: bool = False) -> None:
        self.completion = Completion()
        self.record_text = record_text

    def feed(self, message: Mapping[str, Any]) -> None:
        """Take one JSON object: a whole response, a chat chunk, or a Responses API event."""
        kind = message.get("type")
        if kind == "error":  # a Responses API stream that failed
            self.completion.error_code = str(message.get("code") or "stream_error")
            return
        if isinstance(kind, str) and kind.startswith("response."):
            if kind == "response.output_text.delta":
                self._text(message.get("delta"))
            snapshot = message.get("response")
            if isinstance(snapshot, Mapping):
                self._response(snapshot, with_text=False)
            return
        if message.get("object") == "response":
            self._response(message, with_text=True)
            return
        self._chat(message)

    def _identity(self, message: Mapping[str, Any]) -> None:
        if isinstance(message.get("id"), str):
            self.completion.response_id = message["id"]
        if isinstance(message.get("model"), str) and message["model"]:
            self.completion.model = message["model"]

    def _chat(self, message: Mapping[str, Any]) -> None:
        self._identity(message)
        for choice in message.get("choices") or ():
            if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
                part = choice.get("delta") or choice.get("message") or {}
                if isinstance(part, Mapping):
                    self._text(part.get("content"))
        usage = message.get("usage")
        if isinstance(usage, Mapping):
            self._usage(usage, "prompt_tokens", "completion_tokens", "prompt_tokens_details",
                        "completion_tokens_details")

    def _response(self, response: Mapping[str, Any], with_text: bool) -> None:
        self._identity(response)
        if response.get("status") == "failed":
            error = response.get("error")
            code = error.get("code") if isinstance(error, Mapping) else None
            self.completion.error_code = str(code or "response_failed")
        if with_text:
            for item in response.get("output") or ():
                for content in (item.get("content") or ()) if isinstance(item, Mapping) else ():
                    if isinstance(content, Mapping) and content.get("type") == "output_text":
                        self._text(content.get("text"))
        usage = response.get("usage")
        if isinstance(usage, Mapping):
            self._usage(usage, "input_tokens", "output_tokens", "input_tokens_details",
                        "output_tokens_details")

    def _usage(self, usage: Mapping[str, Any], inputs: str, outputs: str, input_details: str,
               output_details: str) -> None:
        completion = self.completion
        completion.usage_seen = True
        completion.input_tokens = _int(usage.get(inputs)) or 0
        completion.output_tokens = _int(usage.get(outputs)) or 0
        cached = usage.get(input_details)
        if isinstance(cached, Mapping):
            completion.cached_tokens = _int(cached.get("cached_tokens"))
        reasoning = usage.get(output_details)
        if isinstance(reasoning, Mapping):
            completion.reasoning_tokens = _int(reasoning.get("reasoning_tokens"))

    def _text(self, piece: Any) -> None:
        completion = self.completion
        if not self.record_text or not isinstance(piece, str) or completion.text_chars >= MAX_TEXT_CHARS:
            return
        piece = piece[: MAX_TEXT_CHARS - completion.text_chars]
        completion.text_parts.append(piece)
        completion.text_chars += len(piece)


@dataclass(frozen=True)
class CaptureSettings:
    """How an integration fills the events it captures, beyond what the completion says."""

    session_id: str | None = None
    user_id: str | None = None
    organization_id: str | None = None
    tags: Mapping[str, str] | None = None
    provider: str = PROVIDER
    record_text: bool = False

    def merged(self, other: CaptureSettings | None) -> CaptureSettings:
        """These settings with ``other``'s given values on top."""
        if other is None:
            return self
        return CaptureSettings(
            other.session_id or self.session_id, other.user_id or self.user_id,
            other.organization_id or self.organization_id,
            {**(self.tags or {}), **(other.tags or {})}, other.provider or self.provider,
            other.record_text or self.record_text,
        )


_current_session: contextvars.ContextVar[CaptureSettings | None] = contextvars.ContextVar(
    "scr_capture_session", default=None
)


@contextlib.contextmanager
def session(
    session_id: str,
    *,
    user_id: str | None = None,
    organization_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[None]:
    """Group the completions captured inside (this thread or task) under one session.

    Each completion stays its own event (so each is billed once, by its own id), and all of
    them carry ``session_id``, user, organization and tags: ``GET /v1/sessions/{id}`` lists them.
    """
    token = _current_session.set(CaptureSettings(session_id, user_id, organization_id, tags, ""))
    try:
        yield
    finally:
        _current_session.reset(token)


def _part_text(content: Any) -> str | None:
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text") for part in content if isinstance(part, Mapping)]
        joined = "\n".join(text for text in texts if isinstance(text, str))
        return joined or None
    return None


def request_texts(request: Any) -> CaptureFields:
    """The texts of a request's messages (Chat Completions' ``messages``, or the Responses
    API's ``input``) as the event's content: the last user message is ``user_request``, each
    tool result a ``tool_outputs`` item."""
    if isinstance(request, str):
        return {"user_request": request}
    if not isinstance(request, list):
        return {}
    user, tools = None, []
    for message in request:
        if not isinstance(message, Mapping):
            continue
        if message.get("role") == "user":
            user = _part_text(message.get("content")) or user
        elif message.get("role") == "tool":
            text = _part_text(message.get("content"))
            if text is not None:
                tools.append(text)
        elif message.get("type") == "function_call_output" and isinstance(message.get("output"), str):
            tools.append(message["output"])
    return content_fields(user, tools)


def content_fields(user_request: str | None, tool_outputs: list[str]) -> CaptureFields:
    """The capture fields of a request's text (the event's ``content``)."""
    found: CaptureFields = {}
    if user_request is not None:
        found["user_request"] = user_request
    if tool_outputs:
        found["tool_outputs"] = tool_outputs
    return found


def report(
    scr_client: BaseClient,
    defaults: CaptureSettings,
    completion: Completion,
    requested_model: str | None,
    started_at: float,
    status: OutcomeStatus = "success",
    error_code: str | None = None,
    request: Any = None,
) -> str | None:
    """Capture one completion with ``scr_client``; its event id (``None`` if dropped).

    The completion's session is the enclosing ``session(...)``, else its own response id.
    Its event id derives from (session, response id): a completion re-reported is a duplicate.
    With ``record_text``, the answer's text is ``outcome.final_message`` and the ``request``'s
    messages (the call's ``messages`` or ``input``) the event's ``content``.
    """
    settings = defaults.merged(_current_session.get())
    error_code = error_code or completion.error_code
    if error_code is not None and status == "success":
        status = "error"
    fields: CaptureFields = {
        "input_tokens": completion.input_tokens,
        "output_tokens": completion.output_tokens,
        "cache_read_tokens": completion.cached_tokens,
        "reasoning_tokens": completion.reasoning_tokens,
        "provider": settings.provider,
        "status": status,
        "error_code": error_code,
        "start_time": started_at,
        "end_time": time.time(),
    }
    if settings.user_id is not None:
        fields["user_id"] = settings.user_id
    if settings.organization_id is not None:
        fields["organization_id"] = settings.organization_id
    tags = dict(settings.tags or {})
    if status == "success" and not completion.usage_seen:
        tags[USAGE_TAG] = USAGE_MISSING  # zero tokens here means "not reported", not "free"
    if tags:
        fields["tags"] = tags
    if settings.record_text and completion.text_parts:
        fields["final_message"] = completion.text
    if settings.record_text:
        fields.update(request_texts(request))
    # A failed call has no response id: a random one, since it is reported exactly once.
    call_id = completion.response_id or f"call_{uuid.uuid4().hex}"
    session_id = settings.session_id or call_id
    if settings.session_id is not None:
        fields["event_id"] = derive_event_id(f"{session_id}/{call_id}")
    model = completion.model or requested_model or "unknown"
    return scr_client.capture(session_id, model, **fields)
