"""Where a destination's requests go: an HTTP endpoint (``scr.route.http_sink``), a JSON-lines
file, or the log.

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


TORN_SCAN_BYTES = 16 * 1024 * 1024  # how far back a torn last line is looked for


class FileSink:
    """Appends one JSON line per event to a file: each attempt's lines in one write, then one
    fsync, before the attempt reports success (and so before the cursor moves past them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = asyncio.Lock()
        self._tail_checked = False

    async def send(self, body: bytes, lines: list[bytes], headers: dict[str, str]) -> Attempt:
        started = time.perf_counter()
        async with self._lock:
            try:
                await asyncio.to_thread(self._append, lines)
            except OSError as error:
                return Attempt(None, error, ms_since(started), "", None)
        return Attempt(200, None, ms_since(started), "", None)

    def _append(self, lines: list[bytes]) -> None:
        if not lines:
            return
        if not self._tail_checked:
            drop_torn_line(self.path)
            self._tail_checked = True
        with self.path.open("ab") as out:
            out.write(b"\n".join(lines) + b"\n")
            out.flush()
            os.fsync(out.fileno())

    async def close(self) -> None:
        return None


def drop_torn_line(path: Path) -> None:
    """Cut a last line left half-written by a crash (its delivery never settled, so it is
    sent again whole); otherwise the next append would glue onto it."""
    if not path.exists():
        return
    with path.open("r+b") as file:
        size = file.seek(0, os.SEEK_END)
        if size == 0:
            return
        file.seek(size - 1)
        if file.read(1) == b"\n":
            return
        start = max(0, size - TORN_SCAN_BYTES)
        file.seek(start)
        end = file.read(size - start).rfind(b"\n")
        file.truncate(start + end + 1 if end >= 0 else 0 if start == 0 else size)
        os.fsync(file.fileno())


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


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
