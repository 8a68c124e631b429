"""ASGI middleware for an OpenAI-compatible gateway: capture each completion passing through.

    app = CaptureMiddleware(gateway_app, scr.Client(organization_id="org_acme"))

For every ``POST`` whose path ends in ``/chat/completions`` or ``/responses``, the middleware
reads the answer as it is sent, JSON or server-sent events, and captures one event with its
model and token counts (``scr.integrations.completions``). It never holds the response back:
each message is forwarded first and read after, a streamed answer is read event by event
(at most ``sse.MAX_EVENT_BYTES`` of one event held), and a JSON answer is read only up to
``MAX_JSON_BYTES`` (a larger one is forwarded untouched and captured without usage). scr's
own failures are logged, never raised into the gateway.

Outcome: a 2xx answer is ``success``; another status is ``error`` with the answer's
``error.code`` (or ``http_<status>``); an answer cut by the app raising is ``error``
``gateway_error``; a client that went away is ``user_terminated``. A successful answer
without usage (a chat stream whose client did not ask for ``stream_options.include_usage``)
is captured with zero tokens and tagged ``scr.usage: missing``.

Who the session belongs to: ``identify(scope)`` answers the ``CaptureSettings`` of a request
(session id, user, organization, tags). The default reads the headers ``x-scr-session-id``,
``x-scr-user-id`` and ``x-scr-organization-id``; a gateway that authenticates its callers
should pass its own function that maps them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from scr.integrations.completions import CaptureSettings, CompletionReader, report
from scr.integrations.sse import SSEReader
from scr.schema import OutcomeStatus
from scr.sdk.client import BaseClient

log = logging.getLogger("scr.integrations.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CAPTURED_PATHS = ("/chat/completions", "/responses")
MAX_JSON_BYTES = 4 * 1024 * 1024
MAX_REQUEST_PEEK_BYTES = 256 * 1024  # enough for the request's model; larger bodies pass unread
SESSION_HEADER, USER_HEADER, ORGANIZATION_HEADER = (
    b"x-scr-session-id", b"x-scr-user-id", b"x-scr-organization-id",
)


def identify_by_headers(scope: Scope) -> CaptureSettings | None:
    """The default ``identify``: the ``x-scr-*`` request headers, when present."""
    headers = {name.lower(): value.decode("latin-1") for name, value in scope.get("headers", ())}
    return CaptureSettings(
        session_id=headers.get(SESSION_HEADER), user_id=headers.get(USER_HEADER),
        organization_id=headers.get(ORGANIZATION_HEADER), provider="",
    )


class CaptureMiddleware:
    """Captures the completions an OpenAI-compatible ASGI app answers (see the module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        scr_client: BaseClient,
        *,
        identify: Callable[[Scope], CaptureSettings | None] = identify_by_headers,
        paths: tuple[str, ...] = CAPTURED_PATHS,
        provider: str = "openai",
        record_text: bool = False,
    ) -> None:
        self.app, self.scr_client, self.identify, self.paths = app, scr_client, identify, paths
        self.defaults = CaptureSettings(provider=provider, record_text=record_text)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope.get("method") != "POST"
                or not str(scope.get("path", "")).rstrip("/").endswith(self.paths)):
            await self.app(scope, receive, send)
            return
        try:
            capture = _Exchange(self, scope)
        except Exception:  # scr must never break the gateway
            log.exception("scr: cannot capture this request")
            await self.app(scope, receive, send)
            return
        await capture.run(receive, send)


class _Exchange:
    """One request and its answer, read as they pass."""

    def __init__(self, middleware: CaptureMiddleware, scope: Scope) -> None:
        self.middleware, self.scope = middleware, scope
        self.settings = middleware.defaults.merged(middleware.identify(scope))
        self.reader = CompletionReader(self.settings.record_text)
        self.request_head = bytearray()
        self.status = 0
        self.streaming = False
        self.json_body: bytearray | None = bytearray()
        self.sse = SSEReader()
        self.done = False
        self.started_at = time.time()

    async def run(self, receive: Receive, send: Send) -> None:
        async def receive_and_peek() -> Message:
            message = await receive()
            self._quietly(self._peek_request, message)
            return message

        async def send_and_read(message: Message) -> None:
            try:
                await send(message)
            except BaseException:
                self._finish("user_terminated", "client_disconnected")
                raise
            self._quietly(self._read_response, message)

        try:
            await self.middleware.app(self.scope, receive_and_peek, send_and_read)
        except BaseException:
            self._finish("error", "gateway_error")
            raise
        self._finish("success" if self.status < 400 else "error")

    def _quietly(self, step: Callable[[Message], None], message: Message) -> None:
        try:
            step(message)
        except Exception:  # reading the figures must never break the proxied answer
            log.exception("scr: could not read a proxied completion")

    def _peek_request(self, message: Message) -> None:
        if message.get("type") == "http.request" and len(self.request_head) < MAX_REQUEST_PEEK_BYTES:
            self.request_head += message.get("body", b"")

    def _read_response(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            headers = {name.lower(): value for name, value in message.get("headers", ())}
            self.streaming = headers.get(b"content-type", b"").startswith(b"text/event-stream")
            return
        if message["type"] != "http.response.body":
            return
        chunk: bytes = message.get("body", b"")
        if self.streaming:
            for data in self.sse.feed(chunk):
                if data != "[DONE]":
                    self._feed(data)
        elif self.json_body is not None:
            self.json_body += chunk
            if len(self.json_body) > MAX_JSON_BYTES:
                self.json_body = None  # too large to read: forwarded untouched, captured without usage
        if not message.get("more_body", False) and not self.streaming and self.json_body:
            self._feed(self.json_body.decode("utf-8", "replace"))

    def _feed(self, text: str) -> None:
        try:
            value = json.loads(text)
        except ValueError:
            return
        if isinstance(value, dict):
            if self.status >= 400 and isinstance(value.get("error"), dict):
                code = value["error"].get("code") or value["error"].get("type")
                self.reader.completion.error_code = str(code) if code else None
            else:
                self.reader.feed(value)

    def _requested_model(self) -> str | None:
        try:
            request = json.loads(bytes(self.request_head))
        except ValueError:
            return None
        model = request.get("model") if isinstance(request, dict) else None
        return model if isinstance(model, str) else None

    def _finish(self, status: OutcomeStatus, error_code: str | None = None) -> None:
        if self.done:
            return
        self.done = True
        try:
            if status == "error" and error_code is None:
                error_code = self.reader.completion.error_code or f"http_{self.status}"
            report(self.middleware.scr_client, self.settings, self.reader.completion,
                   self._requested_model(), self.started_at, status, error_code)
        except Exception:
            log.exception("scr: could not capture a proxied completion")
