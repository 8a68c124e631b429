"""``scr.Client`` and ``scr.AsyncClient``: capture session completions from Python code.

    client = scr.Client(organization_id="org_acme")        # SCR_URL / SCR_KEY from the env
    client.capture("sess_42", model="gpt-4o", input_tokens=1200, output_tokens=300)

``capture`` only derives the event id, stamps the time and queues what it was given (a few
µs on the caller's thread); the background sender normalizes, validates and sends it (see
``scr.sdk.sender``). It never raises and never blocks: an invalid event is logged and
counted (``stats().invalid``), a full buffer drops and counts (``stats().dropped``).
``normalize`` builds the same event on the spot and raises ``scr.schema.InvalidEvent``.

``AsyncClient`` is the same client for asyncio code: ``capture`` is the same non-blocking
call, and ``flush`` / ``aclose`` are awaitable. Its sender is a thread too, so a busy or
closed event loop never holds events back, and flush at exit works after the loop is gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypedDict, Unpack

from scr.config import DEFAULT_BUFFER_SIZE, DEFAULT_FLUSH_INTERVAL_MS
from scr.route.prices import PriceTable, default_prices
from scr.schema import OutcomeStatus, SessionType, Tier
from scr.sdk.event import CLIENT_VERSION, CapturedEvent, TimeLike, build_event, derive_event_id
from scr.sdk.sender import (
    BACKOFF_BASE_MS,
    BACKOFF_MAX_MS,
    EXIT_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    CaptureStats,
    Sender,
)

DEFAULT_URL = "http://127.0.0.1:8787"
ANONYMOUS_USER = "anonymous"

log = logging.getLogger("scr.sdk")


class CaptureFields(TypedDict, total=False):
    """What ``capture`` accepts besides the session id and model (all optional)."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    user_id: str
    organization_id: str | None
    tier: Tier
    session_type: SessionType
    status: OutcomeStatus
    final_message: str | None
    error_code: str | None
    provider: str | None
    start_time: TimeLike | None
    end_time: TimeLike | None
    duration_ms: int | None
    tags: Mapping[str, str] | None
    event_id: str | None
    cost_usd: Decimal | str | None
    source_ip: str | None
    now: datetime | None
    # text for enrichment (the event's `content`), sent only when given
    user_request: str | None
    summary: str | None
    tool_outputs: Sequence[str] | None


@dataclass(frozen=True, slots=True)
class _Pending:
    """A capture waiting in the buffer, as the caller gave it."""

    session_id: str
    model: str
    event_id: str
    fields: CaptureFields
    captured_at: float  # Unix seconds


class BaseClient:
    """What both clients share: defaults, normalization, the sender and its counters."""

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        organization_id: str | None = None,
        user_id: str = ANONYMOUS_USER,
        tier: Tier = "free",
        session_type: SessionType = "api",
        provider: str | None = None,
        tags: Mapping[str, str] | None = None,
        client_version: str = CLIENT_VERSION,
        prices: PriceTable | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        flush_interval_ms: int = DEFAULT_FLUSH_INTERVAL_MS,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        exit_timeout_s: float = EXIT_TIMEOUT_S,
        backoff_base_ms: int = BACKOFF_BASE_MS,
        backoff_max_ms: int = BACKOFF_MAX_MS,
    ) -> None:
        """A client of the server at ``url`` (else ``SCR_URL``, else the local default) with
        API key ``key`` (else ``SCR_KEY``). The keyword defaults fill every captured event."""
        self.url = url or os.environ.get("SCR_URL") or DEFAULT_URL
        self.prices = prices or default_prices()
        self._defaults: CaptureFields = {"user_id": user_id, "tier": tier,
                                         "session_type": session_type}
        if organization_id is not None:
            self._defaults["organization_id"] = organization_id
        if provider is not None:
            self._defaults["provider"] = provider
        self._tags = dict(tags or {})
        self._client_version = client_version
        self._sender: Sender[_Pending] = Sender(
            self.url, key or os.environ.get("SCR_KEY"), self._prepare, buffer_size=buffer_size,
            flush_interval_ms=flush_interval_ms, request_timeout_s=request_timeout_s,
            exit_timeout_s=exit_timeout_s, backoff_base_ms=backoff_base_ms,
            backoff_max_ms=backoff_max_ms,
        )

    def normalize(self, session_id: str, model: str, **fields: Unpack[CaptureFields]) -> CapturedEvent:
        """The full v1.2 event ``capture`` would send; raise ``InvalidEvent`` if it is invalid."""
        merged: CaptureFields = {"organization_id": None, **self._defaults, **fields}
        if self._tags:
            merged["tags"] = {**self._tags, **(merged.get("tags") or {})}
        return build_event(session_id=session_id, model=model, client_version=self._client_version,
                           prices=self.prices, **merged)

    def capture(self, session_id: str, model: str, **fields: Unpack[CaptureFields]) -> str | None:
        """Queue a session's completion; its event id, or ``None`` if it was dropped.

        Never raises and never blocks: an invalid event is counted in ``stats().invalid``
        and logged, a full buffer drops (``stats().dropped``). The event id derives from the
        session id unless ``event_id`` is given, so capturing the same session again is a
        duplicate on the server, never a second charge.
        """
        try:
            event_id = fields.get("event_id") or derive_event_id(session_id)
            pending = _Pending(session_id, model, event_id, fields, time.time())
        except Exception as error:  # scr must never crash the host application
            log.warning("scr: session %r not captured: %s", session_id, error)
            return None
        return event_id if self._sender.put(pending) else None

    def _prepare(self, pending: _Pending) -> bytes:
        """The JSON of a queued capture (on the sender's thread); raises if it is invalid."""
        fields: CaptureFields = {"now": datetime.fromtimestamp(pending.captured_at, UTC),
                                 **pending.fields, "event_id": pending.event_id}
        return self.normalize(pending.session_id, pending.model, **fields).body

    def stats(self) -> CaptureStats:
        """Counters: accepted, duplicate, rejected, dropped, invalid, retried, pending."""
        return self._sender.stats()


class Client(BaseClient):
    """Capture session completions; events are batched and sent in the background."""

    def flush(self, timeout_s: float | None = None) -> bool:
        """Send what is queued now; ``True`` once all of it is settled (within ``timeout_s``)."""
        return self._sender.flush(timeout_s)

    def close(self, timeout_s: float | None = None) -> CaptureStats:
        """Send what is queued (up to ``timeout_s``, default ``exit_timeout_s``), then stop."""
        return self._sender.close(timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(BaseClient):
    """``Client`` for asyncio code: the same ``capture``; awaitable ``flush`` and ``aclose``."""

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Send what is queued now, without blocking the event loop."""
        return await asyncio.to_thread(self._sender.flush, timeout_s)

    async def aclose(self, timeout_s: float | None = None) -> CaptureStats:
        """Send what is queued, then stop, without blocking the event loop."""
        return await asyncio.to_thread(self._sender.close, timeout_s)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
