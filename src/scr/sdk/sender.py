"""The SDK's background delivery: a bounded buffer, one sender thread, retries, counters.

The caller's thread only appends what it captured to a bounded buffer (a full buffer drops
the event and counts it: the caller is never blocked). One daemon thread takes batches of
at most ``MAX_BATCH_EVENTS`` as soon as a batch is full or ``flush_interval_ms`` has passed,
turns each into its JSON event with ``prepare`` (normalization and validation run here, off
the caller's thread; an invalid one is counted and logged), and POSTs them to
``/v1/events`` as JSON arrays of at most ``MAX_BATCH_BYTES``:

    202 / 207            each event counted as accepted, duplicate or rejected (logged)
    connection error,    retried with full-jitter exponential backoff, or exactly
    timeout, 408, 429,   ``Retry-After`` when the server sends it (``scr.route.retry``);
    5xx                  a batch being retried still counts against ``buffer_size``
    any other 4xx        the batch is rejected: counted and logged, never retried

At exit (``atexit``) pending events get up to ``exit_timeout_s`` to be sent; what is left
is counted as dropped and logged. After ``os.fork`` the child starts with an empty buffer,
fresh locks and no thread (the parent still owns and sends what it had queued).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import httpx
import msgspec

from scr.route.retry import Verdict, classify, next_delay_ms, retry_after_seconds

log = logging.getLogger("scr.sdk")

MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 4 * 1024 * 1024  # well under the server's 16 MiB body bound
REQUEST_TIMEOUT_S = 10.0
EXIT_TIMEOUT_S = 5.0
BACKOFF_BASE_MS = 200
BACKOFF_MAX_MS = 30_000
MS_PER_S = 1000
MAX_LOGGED_REJECTIONS = 5  # per batch: enough to act on, bounded so a bad batch cannot flood logs

_answer = msgspec.json.Decoder()

Captured = TypeVar("Captured")
_OUTCOMES = ("accepted", "duplicate", "rejected", "conflict", "dropped", "invalid")  # per event


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """What became of captured events so far (counts of events, ``retried`` of retries)."""

    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    conflict: int = 0  # the id was already captured with another body: the first one stands
    dropped: int = 0
    invalid: int = 0
    retried: int = 0
    pending: int = 0


class Sender(Generic[Captured]):
    """Buffers captured events and sends them from one background thread."""

    def __init__(
        self,
        url: str,
        key: str | None,
        prepare: Callable[[Captured], bytes],
        *,
        buffer_size: int,
        flush_interval_ms: int,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        exit_timeout_s: float = EXIT_TIMEOUT_S,
        backoff_base_ms: int = BACKOFF_BASE_MS,
        backoff_max_ms: int = BACKOFF_MAX_MS,
    ) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        if flush_interval_ms < 0:
            raise ValueError("flush_interval_ms must be >= 0")
        self.endpoint = url.rstrip("/") + "/v1/events"
        self._prepare = prepare
        self._headers = {"content-type": "application/json"}
        if key:
            self._headers["authorization"] = f"Bearer {key}"
        self.buffer_size = buffer_size
        self.flush_interval_s = flush_interval_ms / MS_PER_S
        self.request_timeout_s = request_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.backoff_base_ms, self.backoff_max_ms = backoff_base_ms, backoff_max_ms
        self._batch_events = min(MAX_BATCH_EVENTS, buffer_size)
        self._reset()
        _live_senders.add(self)
        atexit.register(self._at_exit)

    def _reset(self) -> None:
        """Fresh state: at construction, and in a forked child."""
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._pending: deque[Captured] = deque()
        self._flushing = 0  # callers waiting in flush(): send what is queued without waiting
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._closed = False
        self._deadline = float("inf")  # monotonic time after which retries give up (closing)
        self._counts: dict[str, int] = dict.fromkeys(
(*_OUTCOMES, "retried"), 0)
        self._dropping = False

    # ----- the caller's side ------------------------------------------------------------------

    def put(self, captured: Captured) -> bool:
        """Queue one captured event; ``False`` (counted as dropped) when full or closed."""
        with self._lock:
            if self._closed or len(self._pending) + self._in_flight >= self.buffer_size:
                self._counts["dropped"] += 1
                first = not self._dropping
                self._dropping = True
            else:
                self._pending.append(captured)
                self._dropping = False
                if self._thread is None:
                    self._start()
                queued = len(self._pending)
                if queued == 1 or queued >= self._batch_events:
                    self._wake.set()  # the first event starts the interval; a full batch goes now
                return True
        if first:
            log.warning("scr: capture buffer full (%d events) or closed; dropping events "
                        "(counted in stats().dropped)", self.buffer_size)
        return False

    def stats(self) -> CaptureStats:
        with self._lock:
            return CaptureStats(**self._counts, pending=len(self._pending) + self._in_flight)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Send everything queued now; ``True`` if all of it was settled within ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            self._flushing += 1
            self._wake.set()
            try:
                while self._pending or self._in_flight:
                    if self._thread is None or not self._thread.is_alive():
                        return False
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._settled.wait(remaining)
                return True
            finally:
                self._flushing -= 1

    def close(self, timeout_s: float | None = None) -> CaptureStats:
        """Stop accepting events, send what is queued (retrying up to ``timeout_s``), stop."""
        wait_s = self.exit_timeout_s if timeout_s is None else timeout_s
        with self._lock:
            if self._closed:
                return CaptureStats(**self._counts, pending=len(self._pending) + self._in_flight)
            self._closed = True
            self._deadline = time.monotonic() + wait_s
            thread = self._thread
        self._closing.set()
        self._wake.set()
        if thread is not None:
            thread.join(wait_s + self.request_timeout_s)
        with self._lock:
            lost = len(self._pending)
            self._pending.clear()
            self._counts["dropped"] += lost
        atexit.unregister(self._at_exit)
        final = self.stats()
        level = logging.WARNING if lost or final.dropped or final.rejected else logging.INFO
        log.log(level, "scr: capture closed: %s", final)
        return final

    def _at_exit(self) -> None:
        try:
            self.close()
        except Exception:  # an exit hook must never fail the host's shutdown
            log.exception("scr: flushing at exit failed")

    # ----- the sender thread ------------------------------------------------------------------

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scr-sender", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=self.request_timeout_s) as http:
            while True:
                with self._lock:
                    queued = len(self._pending)
                    urgent = queued >= self._batch_events or self._flushing > 0
                closing = self._closing.is_set()
                if closing and (not queued or time.monotonic() > self._deadline):
                    return  # close() counts what is left as dropped
                if not queued:  # idle: sleep until the first event arrives
                    self._wake.wait()
                elif not (urgent or closing):  # a partial batch: gather up to the interval
                    self._wake.wait(self.flush_interval_s)
                self._wake.clear()
                batch = self._take()
                if not batch:
                    continue
                counts = dict.fromkeys(_OUTCOMES, 0)
                try:
                    for chunk in self._chunks(batch, counts):
                        for name, count in self._deliver(http, chunk).items():
                            counts[name] += count
                except Exception:  # the sender must outlive any surprise; the batch is lost
                    log.exception("scr: sending %d events failed", len(batch))
                    counts["dropped"] += len(batch) - sum(counts.values())
                self._settle(counts)

    def _take(self) -> list[Captured]:
        with self._lock:
            batch = [self._pending.popleft() for _ in range(min(self._batch_events, len(self._pending)))]
            self._in_flight = len(batch)
            return batch

    def _chunks(self, batch: list[Captured], counts: dict[str, int]) -> Iterator[list[bytes]]:
        """The batch's events as JSON, in request bodies of at most ``MAX_BATCH_BYTES``."""
        chunk: list[bytes] = []
        size = 0
        for captured in batch:
            try:
                body = self._prepare(captured)
            except Exception as error:  # invalid input: counted and logged, never raised
                counts["invalid"] += 1
                log.warning("scr: event not sent: %s", error)
                continue
            if chunk and size + len(body) > MAX_BATCH_BYTES:
                yield chunk
                chunk, size = [], 0
            chunk.append(body)
            size += len(body)
        if chunk:
            yield chunk

    def _settle(self, counts: dict[str, int]) -> None:
        with self._lock:
            for name, count in counts.items():
                self._counts[name] += count
            self._in_flight = 0
            self._settled.notify_all()

    def _deliver(self, http: httpx.Client, batch: list[bytes]) -> dict[str, int]:
        """Send one body until it is answered, refused, or closing runs out of time."""
        body = b"[" + b",".join(batch) + b"]"
        attempt = 0
        while True:
            status: int | None = None
            retry_after: str | None = None
            response: httpx.Response | None = None
            try:
                response = http.post(self.endpoint, content=body, headers=self._headers)
                status, retry_after = response.status_code, response.headers.get("retry-after")
            except httpx.HTTPError as error:
                log.debug("scr: sending %d events failed: %s", len(batch), error)
            verdict = classify(status)
            if response is not None and verdict is Verdict.DELIVERED:
                return _answer_counts(response.content, len(batch))
            if response is not None and verdict is not Verdict.RETRY:
                log.error("scr: the server refused %d events with %s: %s", len(batch), status,
                          response.text[:512])
                return {"rejected": len(batch)}
            attempt += 1
            delay_s = next_delay_ms(
                attempt, self.backoff_base_ms, self.backoff_max_ms,
                retry_after_seconds(retry_after, datetime.now(UTC)),
            ) / MS_PER_S
            if time.monotonic() + delay_s > self._deadline:
                log.warning("scr: closing with %d events unsent after %d attempts (last: %s)",
                            len(batch), attempt, status or "no connection")
                return {"dropped": len(batch)}
            with self._lock:
                self._counts["retried"] += 1
            if self._closing.is_set():
                time.sleep(delay_s)
            else:
                self._closing.wait(delay_s)  # close() cuts a long wait short to try once more

    def _after_fork_in_child(self) -> None:
        self._reset()


def _answer_counts(content: bytes, sent: int) -> dict[str, int]:
    """Per-event outcomes of a 202/207 answer; rejections are logged with their reasons."""
    try:
        answer: Any = _answer.decode(content)
        counts = {name: int(answer[name]) for name in ("accepted", "duplicate", "rejected")}
        refused = [result for result in answer["results"] if result["status"] == "rejected"]
    except (msgspec.DecodeError, KeyError, TypeError, ValueError):
        log.error("scr: unreadable answer from the server for %d events: %r", sent, content[:512])
        return {"rejected": sent}
    conflicts = [r for r in refused if any(e.get("code") == "conflict" for e in r.get("errors", []))]
    counts["conflict"] = len(conflicts)
    counts["rejected"] -= len(conflicts)
    for result in conflicts[:MAX_LOGGED_REJECTIONS]:
        log.warning("scr: event %s was already captured with other facts; the first one stands",
                    result.get("event_id"))
    for result in [r for r in refused if r not in conflicts][:MAX_LOGGED_REJECTIONS]:
        log.error("scr: event %s rejected: %s", result.get("event_id"), result.get("errors"))
    return counts


_live_senders: weakref.WeakSet[Sender[Any]] = weakref.WeakSet()


def _reset_senders_in_child() -> None:
    for sender in list(_live_senders):
        sender._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_senders_in_child)
