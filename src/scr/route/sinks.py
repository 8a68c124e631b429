"""Where a destination's requests go: an HTTP endpoint, a JSON-lines file, or the log.

A sink sends one prepared body and says what happened; deciding what to do next (retry,
dead letter, disable) is the worker's job, from ``scr.route.retry.classify``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

RESPONSE_EXCERPT_BYTES = 512
USER_AGENT = "scr/0.1 (+session-completion-runtime)"

log = logging.getLogger("scr.route")


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one delivery attempt produced."""

    status: int | None
    error: BaseException | None
    latency_ms: float
    excerpt: str
    retry_after: str | None


class Sink(Protocol):
    async def send(self, body: bytes, lines: list[bytes], headers: dict[str, str]) -> Attempt: ...

    async def close(self) -> None: ...


class HttpSink:
    """POSTs to the endpoint; never follows redirects."""

    def __init__(self, endpoint: str, timeout_ms: int, concurrency: int) -> None:
        self.endpoint = endpoint
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout_ms / 1000),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers={"user-agent": USER_AGENT, "content-type": "application/json"},
        )

    async def send(self, body: bytes, lines: list[bytes], headers: dict[str, str]) -> Attempt:
        started = time.perf_counter()
        try:
            response = await self.client.post(self.endpoint, content=body, headers=headers)
        except httpx.HTTPError as error:
            return Attempt(None, error, _ms_since(started), "", None)
        excerpt = response.content[:RESPONSE_EXCERPT_BYTES].decode("utf-8", "replace")
        return Attempt(
            response.status_code, None, _ms_since(started), excerpt,
            response.headers.get("retry-after"),
        )

    async def close(self) -> None:
        await self.client.aclose()


class FileSink:
    """Appends one JSON line per event to a file (flushed and fsynced per attempt)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = asyncio.Lock()

    async def send(self, body: bytes, lines: list[bytes], headers: dict[str, str]) -> Attempt:
        started = time.perf_counter()
        async with self._lock:
            try:
                await asyncio.to_thread(self._append, lines)
            except OSError as error:
                return Attempt(None, error, _ms_since(started), "", None)
        return Attempt(200, None, _ms_since(started), "", None)

    def _append(self, lines: list[bytes]) -> None:
        with self.path.open("ab") as out:
            out.write(b"".join(line + b"\n" for line in lines))
            out.flush()
            os.fsync(out.fileno())

    async def close(self) -> None:
        return None


class LogSink:
    """Writes each event as one line to the ``scr.route.log_destination`` logger."""

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(f"scr.route.log_destination.{name}")

    async def send(self, body: bytes, lines: list[bytes], headers: dict[str, str]) -> Attempt:
        for line in lines:
            self.logger.info("%s", line.decode())
        return Attempt(200, None, 0.0, "", None)

    async def close(self) -> None:
        return None


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
