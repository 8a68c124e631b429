"""The JetStream side of the bus: the connection, the stream, and publishing events.

The stream (``cluster.stream``) has file storage and work-queue retention: a message stays
until its partition's owner acks it, which it does only after the ledger commit, so an
event JetStream acknowledged is never dropped by an age or size limit. Subjects are
``<stream>.<N>``, one per partition. ``nats-server`` must run with ``sync_interval: always``
(fsync before each publish ack; the default flushes every 2 minutes) or the stream must be
replicated in a NATS cluster (``cluster.replicas`` >= 3: a publish is acked once a majority
of the replicas stored it). The README's "Scaling out" section says how to run both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from scr.bus.batches import BatchRefused, Message, chunks, publish_batch, supports_atomic
from scr.bus.envelope import DIGEST, headers_of
from scr.config import ClusterConfig
from scr.errors import Unavailable
from scr.log.commit import Outcome, Submission
from scr.metrics import Metrics
from scr.store.postgres import partition_of

log = logging.getLogger("scr.bus")

RECONNECT_WAIT_S = 0.5
CONNECT_RETRY_S = 1.0
CLOSE_TIMEOUT_S = 2.0
# JetStream needs a positive duplicate window; 0 in the config means "the smallest".
MIN_DUPLICATE_WINDOW_S = 1.0

# Looks up an event already in the ledger: its payload digest, or None.
LedgerDigest = Callable[[str, str], bytes | None]


def subject_of(stream: str, partition: int) -> str:
    return f"{stream}.{partition}"


class Bus:
    """One instance's connection to JetStream; ``ready`` while it can publish."""

    def __init__(
        self, url: str, cluster: ClusterConfig, dedup_window_s: float, metrics: Metrics,
        ledger_digest: LedgerDigest,
    ) -> None:
        self.url = url
        self.cluster = cluster
        self.stream = cluster.stream
        self.partitions = cluster.partitions
        self.duplicate_window_s = max(MIN_DUPLICATE_WINDOW_S, float(dedup_window_s))
        self.metrics = metrics
        self.ledger_digest = ledger_digest
        self.nc: NatsClient | None = None
        self.js: JetStreamContext | None = None
        self.last_error = "not connected yet"
        self._stream_ready = False
        self.atomic = False  # the server takes atomic batches (scr.bus.batches)
        self._connector: asyncio.Task[None] | None = None

    # ----- connection -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.nc is not None and self.nc.is_connected and self._stream_ready

    async def start(self) -> None:
        """Connect in the background: the instance serves (not ready) until NATS answers."""
        self._connector = asyncio.create_task(self._connect_until_done(), name="scr-bus-connect")

    async def wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.ready and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.ready

    async def _connect_until_done(self) -> None:
        while True:
            try:
                self.nc = await nats.connect(
                    self.url,
                    connect_timeout=self.cluster.connect_timeout_ms / 1000,
                    reconnect_time_wait=RECONNECT_WAIT_S,
                    max_reconnect_attempts=-1,
                    allow_reconnect=True,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                    error_cb=self._error,
                    name="scr",
                )
                self.js = self.nc.jetstream(timeout=self.cluster.publish_timeout_ms / 1000)
                await self._ensure_stream()
                self.metrics.bus_connected.set(1)
                return
            except Exception as error:  # NATS not up yet: keep trying, report not ready
                self.last_error = f"cannot reach NATS: {error}"
                log.warning("bus: %s", self.last_error)
                if self.nc is not None:
                    with contextlib.suppress(Exception):
                        await self.nc.close()
                    self.nc = None
                await asyncio.sleep(CONNECT_RETRY_S)

    async def _ensure_stream(self) -> None:
        assert self.js is not None and self.nc is not None
        self.atomic = supports_atomic(self.nc.connected_server_version)
        config = StreamConfig(
            name=self.stream,
            subjects=[f"{self.stream}.*"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.WORK_QUEUE,
            num_replicas=self.cluster.replicas,
            duplicate_window=self.duplicate_window_s,
            allow_direct=True,
            allow_atomic=True if self.atomic else None,  # an older server knows no such field
        )
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await self.js.update_stream(config)  # exists with other settings: bring it in line
        self._stream_ready = True
        self.last_error = ""

    async def _disconnected(self) -> None:
        self.last_error = "disconnected from NATS"
        self.metrics.bus_connected.set(0)
        log.warning("bus: %s", self.last_error)

    async def _reconnected(self) -> None:
        self.last_error = ""
        self.metrics.bus_connected.set(1)
        log.info("bus: reconnected to NATS")

    async def _error(self, error: Exception) -> None:
        log.warning("bus: %s", error)

    async def close(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self.nc is not None:
            # every publish was awaited and the consumers are stopped: nothing to drain
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), CLOSE_TIMEOUT_S)
            self.nc = None
        self.metrics.bus_connected.set(0)

    # ----- publishing -----------------------------------------------------------------------

    async def publish(self, submissions: Sequence[Submission]) -> list[Outcome]:
        """Store events in JetStream; per event accepted, duplicate or conflict.

        Several events go as atomic batches (``scr.bus.batches``), one acknowledgement each; a
        batch JetStream refuses (an id it has seen, a limit) is published again one message
        at a time. Raises ``Unavailable`` (503) unless every event was stored: the client
        retries, and the ones already stored come back as duplicates.
        """
        if not self.ready or self.nc is None or self.js is None:
            raise Unavailable(f"the bus is unavailable ({self.last_error}); nothing was acknowledged")
        started = time.perf_counter()
        messages = [Message(subject_of(self.stream, partition_of(s.tenant, self.partitions)),
                            s.payload, headers_of(s)) for s in submissions]
        try:
            timeout_s = self.cluster.publish_timeout_ms / 1000
            repeats = await asyncio.wait_for(self._publish_all(messages), timeout_s)
        except (TimeoutError, nats.errors.Error) as error:
            self.last_error = f"publish failed: {error}"
            raise Unavailable(
                "the bus did not store every event in time; retry (stored ones answer duplicate)"
            ) from None
        self.metrics.bus_publish_seconds.observe(time.perf_counter() - started)
        outcomes = []
        for submission, repeated_seq in zip(submissions, repeats, strict=True):
            if repeated_seq is None:
                outcomes.append(Outcome.ACCEPTED)
            else:
                outcomes.append(await self._duplicate_or_conflict(submission, repeated_seq))
        return outcomes

    async def _publish_all(self, messages: Sequence[Message]) -> list[int | None]:
        """Per message None (stored), or the seq of the message whose id it repeats (JetStream
        dropped it as a duplicate): several as atomic batches, one alone."""
        if not self.atomic or len(messages) == 1:
            return await self._publish_each(messages)
        parts = await asyncio.gather(*(self._publish_batch(part) for part in chunks(messages)))
        return [repeated_seq for part in parts for repeated_seq in part]

    async def _publish_batch(self, messages: Sequence[Message]) -> list[int | None]:
        """One atomic batch, published again one message at a time if JetStream refuses it."""
        assert self.nc is not None
        try:
            await publish_batch(self.nc, messages, self.cluster.publish_timeout_ms / 1000)
        except BatchRefused as refused:
            self.metrics.bus_batches_refused.inc()
            log.info("bus: %s; publishing its %d events one by one", refused, len(messages))
            return await self._publish_each(messages)
        self.metrics.bus_batches.inc()
        return [None] * len(messages)

    async def _publish_each(self, messages: Sequence[Message]) -> list[int | None]:
        """Each message on its own, pipelined (the caller bounds the wait)."""
        assert self.js is not None
        js = self.js
        futures = [await js.publish_async(m.subject, m.body, headers=m.headers) for m in messages]
        return [ack.seq if ack.duplicate else None for ack in await asyncio.gather(*futures)]

    async def _duplicate_or_conflict(self, submission: Submission, seq: int) -> Outcome:
        """A publish JetStream dropped as a duplicate: compare the body with the first one's."""
        assert self.js is not None
        first: bytes | None = None
        try:
            stored = await self.js.get_msg(self.stream, seq)
            digest = (stored.headers or {}).get(DIGEST)
            first = bytes.fromhex(digest) if digest else None
        except nats.js.errors.NotFoundError:
            # already appended and acked (work-queue retention removed it): ask the ledger
            event = submission.event
            first = await asyncio.to_thread(
                self.ledger_digest, event.user.organization_id, event.event_id
            )
        if first is None or first == submission.digest:
            return Outcome.DUPLICATE
        return Outcome.CONFLICT
