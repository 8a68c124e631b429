"""A destination: a ledger consumer with its own durable cursor, and its retries.

Two tasks per destination:
- the *consumer* reads entries after its cursor, filters, samples, transforms, signs and
  delivers them, then records the attempts, any failures and the new cursor in one write;
- the *retrier* resends deliveries that failed (``retrying``) or wait their turn
  (``pending``), with backoff, until they are delivered or dead.

A slow or dead destination holds back only its own cursor. Delivery is at least once: after a
crash the last chunk may be sent again, with the same ``webhook-id``. A file destination
delivers each chunk it reads as one delivery: one append and one fsync, and its cursor
recorded after that fsync (so a crash in between writes the chunk again, never loses it).
A BUDGET_ALERT or ANOMALY entry (``scr.usage.alerts``) goes only to the destinations it names, whatever
their filter and sampling: alone in its request, untransformed, signed like any delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scr.config import DestinationConfig
from scr.log.commit import Committed, Committer, session_id_of, utc_now
from scr.log.entry import Kind
from scr.log.tail import LedgerTail
from scr.metrics import Metrics
from scr.native import batch_webhook_id, sign, webhook_ids
from scr.privacy.sealing import SUBJECT_PREFIX, without_personal
from scr.route.choices import Chooser
from scr.route.outputs import Outputs
from scr.route.price_file import live_prices
from scr.route.recording import ChunkOutcome, Recorder
from scr.route.retry import Verdict, classify, next_delay_ms, retry_after_seconds
from scr.route.signing import webhook_id
from scr.route.sinks import Attempt, FileSink, LogSink, Sink
from scr.schema import Event
from scr.security.audit import Acting, append_admin_action
from scr.store.protocol import Store, Transaction
from scr.store.records import AttemptRow, DeliveryRow, session_key
from scr.tasks import stop_task
from scr.usage.alerts import KIND_VALUES as ALERT_KINDS
from scr.usage.alerts import alert_body, key_of

log = logging.getLogger("scr.route")


CHUNK_ENTRIES = 1000
RETRY_SCAN_ROWS = 1000
RETRY_IDLE_S = 1.0
# Chunks one destination delivers at once (one with ordering: session); each up to
# CHUNK_ENTRIES entries and `concurrency` requests.
MAX_CHUNKS_IN_FLIGHT = 4
# On stop, how long chunks in flight may take to end and be recorded (a graceful stop that
# cancelled them sent their events again after the restart)
STOP_GRACE_S = 5.0
# A file destination writes a whole chunk in one append and one fsync: an fsync per event
# held each file to ~850 events/s (batch_size is a webhook's request size, not a file's).
FILE_DELIVERY_EVENTS = CHUNK_ENTRIES
ERROR_EXCERPT_CHARS = 300


@dataclass(slots=True)
class Delivery:
    """Events sent together in one request (one event unless batching)."""

    webhook_id: str
    entries: list[Committed]
    attempts: list[int]  # attempts made before this one, per event
    outputs: list[bytes] = field(default_factory=list)


def now_ms() -> int:
    return int(time.time() * 1000)


class DestinationWorker:
    """Runs one configured destination."""

    def __init__(
        self,
        config: DestinationConfig,
        store: Store,
        committer: Committer,
        tail: LedgerTail,
        metrics: Metrics,
        data_dir: Path,
    ) -> None:
        self.config = config
        self.name = config.name
        self.store = store
        self.committer = committer
        self.tail = tail
        self.metrics = metrics
        self.outputs = Outputs(config.transform, live_prices(data_dir),
                               None if config.personal_fields else self._without_personal)
        self.chooser = Chooser(self.name, config.filter, config.sampling_rate)
        self.secrets = config.secrets()
        self.sink = _make_sink(config, data_dir)
        self.events_per_delivery = (
            FILE_DELIVERY_EVENTS if config.type == "file" else config.batch_size
        )
        self.cursor = 0
        self.state, self.reason = store.destination_state(self.name)
        self.last_error = ""
        self.open_sessions: dict[int, int] = {}
        self._wake_retrier = asyncio.Event()
        self._enabled = asyncio.Event()
        self._slots = asyncio.Semaphore(config.concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self.recorder = Recorder(self.name, store, committer, 0, self._wake_retrier.set, self._failed)
        self._draining = asyncio.Event()  # stopping: end the chunks in flight, read no more

    # ----- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        # read in a thread: a store slow to answer (just back from an outage) must not stall
        # the event loop, and with it every request of this instance
        durable = await asyncio.to_thread(self.store.cursor, self.name)
        self.cursor = self.recorder.written_seq = durable or 0
        for row in await asyncio.to_thread(self.store.open_deliveries, self.name, 1_000_000):
            self.open_sessions[row.session_key] = self.open_sessions.get(row.session_key, 0) + 1
        if self.state != "disabled":
            self._enabled.set()
        self._tasks = [
            asyncio.create_task(self._consume(), name=f"scr-consume-{self.name}"),
            asyncio.create_task(self._retry(), name=f"scr-retry-{self.name}"),
        ]

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    async def stop(self) -> None:
        """Stop delivering; what was delivered is recorded first (the chunks in flight end,
        within ``STOP_GRACE_S``, and the last recording write), so a restart or a new owner
        resends as little as possible. ``running`` is then False: a cluster instance that
        gets the destination back starts it again."""
        consume, *others = self._tasks  # the retrier, and the writes of a disabling
        for task in others:
            await stop_task(task)
        self._draining.set()
        await asyncio.wait({consume}, timeout=STOP_GRACE_S)
        await stop_task(consume)
        self._tasks = []
        self._draining.clear()
        if unrecorded := await self.recorder.stop(STOP_GRACE_S):
            log.warning("destination %s: stopped with %d entries delivered but not recorded (the store "
                        "was out of reach): they will be sent again", self.name, unrecorded)
            self.metrics.resent.labels(self.name).inc(unrecorded)
        await self.sink.close()

    async def enable(self, acting: Acting) -> int:
        """Re-enable after a 410; open deliveries become due now. Ledgered for ``acting``."""
        def write(tx: Transaction) -> int:
            self.store.set_destination_state(tx, self.name, "active", "", utc_now())
            requeued = self.store.make_due(tx, self.name, now_ms())
            append_admin_action(self.committer, tx, acting.tenant, Kind.DESTINATION_ENABLED,
                                {"destination": self.name, "was": self.state}, key_id=acting.key_id,
                                ref=self.name)
            return requeued

        requeued = await self.committer.run(write)
        self.state, self.reason = "active", ""
        self._enabled.set()
        self._wake_retrier.set()
        return requeued

    def wake(self) -> None:
        self._wake_retrier.set()

    def oldest_pending_age_s(self) -> float:
        """Seconds since the oldest entry past the cursor was committed (0 without lag)."""
        if not self.lag:
            return 0.0
        committed_at = self.store.entry_time(self.cursor + 1)
        return max(0.0, time.time() - committed_at) if committed_at is not None else 0.0

    @property
    def lag(self) -> int:
        return max(0, self.tail.head_seq - self.cursor)

    # ----- the consumer ---------------------------------------------------------------------

    async def _consume(self) -> None:
        """Read the ledger after the cursor and deliver it, several chunks at a time.

        Chunks are delivered concurrently (one at a time with ``ordering: session``); their
        outcomes are recorded, and the cursor advanced, strictly in ledger order.
        """
        read_seq = self.cursor
        resume = False  # after an error: resume past the last chunk recorded (or waiting to be)
        chunks: deque[asyncio.Task[ChunkOutcome]] = deque()
        limit = 1 if self.config.ordering == "session" else MAX_CHUNKS_IN_FLIGHT
        while True:
            try:
                if resume:  # what was read past the settled chunks may have been sent: it goes again
                    self.metrics.resent.labels(self.name).inc(max(0, read_seq - self.cursor))
                    read_seq = self.cursor
                    resume = False
                while chunks and chunks[0].done():
                    self._record(chunks.popleft().result())
                self._update_gauges()
                if self._draining.is_set():
                    if not chunks:
                        return
                    await asyncio.wait({chunks[0]})
                    continue
                if self.state == "disabled" and not chunks:
                    await self._enabled.wait()
                    read_seq = self.cursor
                    continue
                ready = self.state != "disabled" and len(chunks) < limit and not self.recorder.full
                if ready and self.tail.head_seq > read_seq:
                    if self.config.batch_size > 1 and self.tail.head_seq - read_seq < self.config.batch_size:
                        await self.tail.wait_beyond(
                            read_seq + self.config.batch_size - 1, self.config.batch_wait_ms / 1000
                        )
                    entries = await self.tail.read(read_seq, CHUNK_ENTRIES)
                    if entries:
                        read_seq = entries[-1].seq
                        chunks.append(asyncio.create_task(self._deliver_chunk(entries)))
                    continue
                await self._wait_for_work(read_seq if ready else None, chunks)
            except asyncio.CancelledError:
                # record what was delivered already (stop waits for that write); drop the rest
                while chunks and chunks[0].done() and not chunks[0].cancelled() \
                        and chunks[0].exception() is None:
                    self._record(chunks.popleft().result())
                for chunk in chunks:
                    chunk.cancel()
                raise
            except Exception as error:  # keep the destination alive; resume from the durable cursor
                self.last_error = f"consumer: {error}"
                log.exception("destination %s: consumer error", self.name)
                for chunk in chunks:
                    chunk.cancel()
                chunks.clear()
                resume = True
                await asyncio.sleep(RETRY_IDLE_S)

    async def _wait_for_work(
        self, read_seq: int | None, chunks: deque[asyncio.Task[ChunkOutcome]]
    ) -> None:
        """Until new entries arrive (when there is room for them), the oldest chunk ends, or
        the recorder, full, stores a write."""
        made: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._draining.wait())]
        if read_seq is not None:
            made.append(asyncio.ensure_future(self.tail.wait_beyond(read_seq, RETRY_IDLE_S)))
        if self.recorder.full:
            made.append(asyncio.ensure_future(self.recorder.progressed()))
        waits: list[asyncio.Future[Any]] = list(made)
        if chunks:
            waits.append(chunks[0])
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED,
                               timeout=None if len(waits) > 1 else RETRY_IDLE_S)
        finally:
            for waiting in made:
                waiting.cancel()

    def _update_gauges(self) -> None:
        self.metrics.lag_entries.labels(self.name).set(self.lag)

    def _without_personal(self, event: Event) -> Event:
        """The event as a destination with ``personal_fields: false`` may see it."""
        user_id, opener = event.user.user_id, self.tail.opener
        subject = None
        if user_id.startswith(SUBJECT_PREFIX):  # as ledgered already (its subject erased)
            subject = user_id.removeprefix(SUBJECT_PREFIX)
        elif opener is not None:
            subject = opener.subject_of(event.tenant, user_id)
        return without_personal(event, subject)

    def chooses(self, entry: Committed) -> bool:
        """Whether this destination's filter and sampling pick the entry (deterministic)."""
        return self.chooser.reason(entry) is None

    def track_open(self, entry: Committed) -> None:
        """Count a new open delivery of the entry's session (for ``ordering: session``)."""
        self._open(self.session_of(entry))

    def _chosen(self, entries: Sequence[Committed]) -> list[Committed]:
        """The entries this destination sends, counting what filter and sampling skip."""
        reasons = self.chooser.reasons(entries)
        if filtered := reasons.count("filtered_out"):
            self.metrics.filtered_out.labels(self.name).inc(filtered)
        if sampled := reasons.count("sampled_out"):
            self.metrics.sampled_out.labels(self.name).inc(sampled)
        return [entry for entry, reason in zip(entries, reasons, strict=True) if reason is None]

    async def _deliver_chunk(self, entries: list[Committed]) -> ChunkOutcome:
        """Deliver one chunk; what to record of it (nothing is written here)."""
        chosen = self._chosen(entries)
        parked: list[Committed] = []
        if self.config.ordering == "session":
            ready: list[Committed] = []
            for entry in chosen:
                (parked if self.session_of(entry) in self.open_sessions else ready).append(entry)
            chosen = ready
        deliveries = self._group(chosen)
        self._prepare(deliveries)
        attempts = await self._send_all(deliveries)
        rows, attempt_rows = self._settle(deliveries, attempts, parked)
        return ChunkOutcome(entries[-1].seq, rows, attempt_rows)

    def _record(self, outcome: ChunkOutcome) -> None:
        """Record a settled chunk's attempts, failures and cursor, behind the chunks before it
        (``Recorder``: not awaited, and tried again until the store takes it)."""
        self.recorder.add(outcome)
        self.cursor = outcome.last_seq

    def _failed(self, error: str) -> None:
        self.last_error = error

    def session_of(self, entry: Committed) -> int:
        if _is_alert(entry):
            return session_key(entry.tenant, _delivery_key(entry))
        return session_key(entry.tenant, session_id_of(entry))

    def _group(self, chosen: Sequence[Committed]) -> list[Delivery]:
        """The deliveries of chosen entries: events one by one or in batches, each budget
        alert alone (its webhook-id derived from its identity, stable forever)."""
        alerts = [
            Delivery(webhook_id(self.name, _delivery_key(e)), [e], [0]) for e in chosen if _is_alert(e)
        ]
        entries = [e for e in chosen if not _is_alert(e)] if alerts else chosen
        size = self.events_per_delivery
        if size == 1:
            hook_ids = webhook_ids(self.name, [e.event_id for e in entries])
            return alerts + [
                Delivery(hook_id, [e], [0]) for hook_id, e in zip(hook_ids, entries, strict=True)
            ]
        return alerts + [
            Delivery(
                batch_webhook_id(self.name, part[0].seq, part[-1].seq), list(part), [0] * len(part)
            )
            for part in (entries[i : i + size] for i in range(0, len(entries), size))
        ]

    async def _send_all(self, deliveries: list[Delivery]) -> list[Attempt]:
        """Send every delivery; per session in order when ``ordering: session``."""
        if self.config.ordering != "session":
            return list(await asyncio.gather(*(self._send(d) for d in deliveries)))
        results: dict[int, Attempt] = {}
        lanes: dict[int, list[int]] = {}
        for index, delivery in enumerate(deliveries):
            lanes.setdefault(self.session_of(delivery.entries[0]), []).append(index)

        async def lane(indexes: list[int]) -> None:
            for position, index in enumerate(indexes):
                attempt = await self._send(deliveries[index])
                results[index] = attempt
                if classify(attempt.status, attempt.error) is not Verdict.DELIVERED:
                    for later in indexes[position + 1 :]:
                        results[later] = _NOT_SENT
                    return

        if self.events_per_delivery > 1:
            await lane(list(range(len(deliveries))))
        else:
            await asyncio.gather(*(lane(indexes) for indexes in lanes.values()))
        return [results[i] for i in range(len(deliveries))]

    def _prepare(self, deliveries: Sequence[Delivery]) -> None:
        """Fill in the outputs of the deliveries that have none yet: each budget alert's body,
        and the events of all the others transformed together (``Outputs``: one native call)."""
        waiting = [d for d in deliveries if not d.outputs]
        for delivery in waiting:
            if _is_alert(delivery.entries[0]):  # alone in its delivery, sent as it is
                delivery.outputs = [alert_body(delivery.entries[0].payload)]
        events = [d for d in waiting if not d.outputs]
        outputs = iter(self.outputs.of([e for d in events for e in d.entries]))
        for delivery in events:
            delivery.outputs = [next(outputs) for _ in delivery.entries]

    async def _send(self, delivery: Delivery) -> Attempt:
        alone = _is_alert(delivery.entries[0])
        self._prepare([delivery])
        if self.events_per_delivery > 1 and not alone:
            body = b"[" + b",".join(delivery.outputs) + b"]"
        else:
            body = delivery.outputs[0]
        timestamp = int(time.time())
        headers = {
            **self.config.headers,
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(timestamp),
        }
        if self.secrets:
            headers["webhook-signature"] = sign(self.secrets, delivery.webhook_id, timestamp, body)
        async with self._slots:
            attempt = await self.sink.send(body, delivery.outputs, headers)
        self.metrics.attempt_latency.labels(self.name).observe(attempt.latency_ms / 1000)
        if attempt.status is None or attempt.status >= 300:
            self.last_error = _describe(attempt)
            log.warning(
                "destination %s: attempt for %s failed: %s",
                self.name, delivery.webhook_id, self.last_error,
            )
        return attempt

    def _settle(
        self, deliveries: list[Delivery], attempts: list[Attempt], parked: list[Committed]
    ) -> tuple[list[DeliveryRow], list[AttemptRow]]:
        """Rows to write for these attempts: the attempts log and every unfinished delivery."""
        rows: list[DeliveryRow] = []
        attempt_rows: list[AttemptRow] = []
        stamp = utc_now()
        for delivery, attempt in zip(deliveries, attempts, strict=True):
            if attempt is _NOT_SENT:
                parked.extend(delivery.entries)
                continue
            number = max(delivery.attempts) + 1
            attempt_rows.append(self._attempt_row(delivery, attempt, number, stamp))
            rows.extend(self._outcome_rows(delivery, attempt, number, stamp, recorded=False))
        for entry in parked:
            rows.append(self._row(
                entry, webhook_id(self.name, _delivery_key(entry)), "pending", 0, now_ms(),
                None, "waiting for an earlier delivery of the same session", stamp,
            ))
            self._open(self.session_of(entry))
        return rows, attempt_rows

    def _attempt_row(
        self, delivery: Delivery, attempt: Attempt, number: int, stamp: str
    ) -> AttemptRow:
        """The attempts-log row of one request."""
        return AttemptRow(
            self.name, delivery.webhook_id, [e.seq for e in delivery.entries],
            number, attempt.status, _describe(attempt) if attempt.error else "",
            attempt.latency_ms, attempt.excerpt, stamp,
        )

    def _outcome_rows(
        self, delivery: Delivery, attempt: Attempt, number: int, stamp: str, recorded: bool
    ) -> list[DeliveryRow]:
        """Delivery rows after an attempt; ``recorded``: the deliveries already have rows."""
        verdict = classify(attempt.status, attempt.error)
        error = _describe(attempt) if verdict is not Verdict.DELIVERED else ""
        count = len(delivery.entries)
        if verdict is Verdict.DELIVERED:
            self.metrics.delivered.labels(self.name).inc(count)
            if not recorded:
                return []  # a first-time success is recorded in the attempts log only
            status, due = "delivered", 0
        elif verdict is Verdict.RETRY and number <= self.config.retry_attempts:
            self.metrics.retried.labels(self.name).inc(count)
            retry_after = retry_after_seconds(attempt.retry_after, datetime.now(UTC))
            delay = next_delay_ms(
                number, self.config.backoff_base_ms, self.config.backoff_max_ms, retry_after,
                retry_after_max_s=self.config.retry_after_max_s,
            )
            status, due = "retrying", now_ms() + delay
        elif verdict is Verdict.DISABLE:
            self._disable(f"endpoint answered 410 Gone for {delivery.webhook_id}")
            status, due = "pending", now_ms()
        else:
            self.metrics.dead.labels(self.name).inc(count)
            status, due = "dead", 0
        rows = []
        for entry in delivery.entries:
            session = self.session_of(entry)
            if status in ("pending", "retrying"):
                if not recorded:
                    self._open(session)
            elif recorded:
                self._close(session)
            rows.append(self._row(
                entry, delivery.webhook_id, status, number, due, attempt.status, error, stamp
            ))
        return rows

    def _row(
        self, entry: Committed, hook: str, status: str, attempts: int, due: int,
        last_status: int | None, error: str, stamp: str,
    ) -> DeliveryRow:
        return DeliveryRow(
            self.name, entry.seq, entry.tenant, _delivery_key(entry), self.session_of(entry),
            hook, status, attempts, due, last_status, error, stamp,
        )

    def _open(self, session: int) -> None:
        self.open_sessions[session] = self.open_sessions.get(session, 0) + 1

    def _close(self, session: int) -> None:
        left = self.open_sessions.get(session, 0) - 1
        if left > 0:
            self.open_sessions[session] = left
        else:
            self.open_sessions.pop(session, None)

    def _disable(self, reason: str) -> None:
        if self.state == "disabled":
            return
        self.state, self.reason = "disabled", reason
        self._enabled.clear()
        log.error("destination %s disabled: %s", self.name, reason)

        def write(tx: Transaction) -> None:
            self.store.set_destination_state(tx, self.name, "disabled", reason, utc_now())

        self._tasks.append(asyncio.ensure_future(self.committer.run(write)))

    # ----- the retrier ----------------------------------------------------------------------

    async def _retry(self) -> None:
        while True:
            try:
                await self._enabled.wait()
                wait_s = await self._retry_due()
                self._wake_retrier.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake_retrier.wait(), wait_s)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.last_error = f"retrier: {error}"
                log.exception("destination %s: retrier error", self.name)
                await asyncio.sleep(RETRY_IDLE_S)

    async def _retry_due(self) -> float:
        """Resend what is due; return how long to sleep before the next due delivery."""
        rows = await asyncio.to_thread(self.store.open_deliveries, self.name, RETRY_SCAN_ROWS)
        now = now_ms()
        due: list[DeliveryRow] = []
        seen_sessions: set[int] = set()
        next_due = now + int(RETRY_IDLE_S * 1000)
        for row in rows:
            if self.config.ordering == "session":
                if row.session_key in seen_sessions:
                    continue
                seen_sessions.add(row.session_key)
            if row.next_attempt_ms <= now:
                due.append(row)
            else:
                next_due = min(next_due, row.next_attempt_ms)
        if not due:
            return max(0.0, (next_due - now) / 1000)
        entries = await asyncio.to_thread(self.store.entries_by_seq, [r.seq for r in due])
        groups: dict[str, Delivery] = {}
        for row in due:
            stored = entries.get(row.seq)
            if stored is None:
                continue
            delivery = groups.setdefault(row.webhook_id, Delivery(row.webhook_id, [], []))
            delivery.entries.append(self.tail.committed(stored))
            delivery.attempts.append(row.attempts)
        deliveries = list(groups.values())
        self._prepare(deliveries)
        attempts = await asyncio.gather(*(self._send(d) for d in deliveries))
        rows_out: list[DeliveryRow] = []
        attempt_rows: list[AttemptRow] = []
        stamp = utc_now()
        for delivery, attempt in zip(deliveries, attempts, strict=True):
            number = max(delivery.attempts) + 1
            attempt_rows.append(self._attempt_row(delivery, attempt, number, stamp))
            rows_out.extend(self._outcome_rows(delivery, attempt, number, stamp, recorded=True))

        def write(tx: Transaction) -> None:
            self.store.insert_attempts(tx, attempt_rows)
            self.store.upsert_deliveries(tx, rows_out)

        await self.committer.run(write, size=max(1, len(rows_out)), durable=False)
        return 0.0


# Marks a delivery held back behind an earlier failure of its session.
_NOT_SENT: Any = Attempt(None, None, 0.0, "not sent: an earlier delivery of the session failed", None)


def reads_events(config: DestinationConfig) -> bool:
    """Whether a destination reads each event decoded: to withhold its personal fields or to
    shape it in Python. One that does not sends each event's ledgered line through a built-in
    transform of the native core (``Outputs``), having filtered and sampled it there too
    (``Chooser``)."""
    return not config.personal_fields or Outputs.native_transform_of(config.transform) is None


def _is_alert(entry: Committed) -> bool:
    return entry.kind in ALERT_KINDS


def _delivery_key(entry: Committed) -> str:
    """What a delivery row names: the event id, or a budget alert's identity."""
    if _is_alert(entry):
        return key_of(entry.payload)
    return entry.event_id


def _describe(attempt: Attempt) -> str:
    if attempt.error is not None:
        return f"{type(attempt.error).__name__}: {attempt.error}"[:ERROR_EXCERPT_CHARS]
    return f"HTTP {attempt.status}: {attempt.excerpt}"[:ERROR_EXCERPT_CHARS]


def _make_sink(config: DestinationConfig, data_dir: Path) -> Sink:
    if config.type == "file":
        assert config.path is not None
        path = Path(config.path)
        return FileSink(path if path.is_absolute() else data_dir / path)
    if config.type == "log":
        return LogSink(config.name)
    assert config.endpoint is not None
    from scr.route.http_sink import HttpSink  # aiohttp loads only for a destination that posts

    return HttpSink(config.endpoint, config.timeout_ms, config.concurrency)
