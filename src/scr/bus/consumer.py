"""The owner's side of a partition: take its events from JetStream, append, then ack.

Each partition has one durable pull consumer (``scr-p<N>``, explicit ack). Its owner fetches
up to ``cluster.fetch_events`` messages, appends them in one group commit and acks them only
after the commit: a crash before the ack means JetStream delivers them again (after
``ack_wait``, then the consumer's backoff) and the ledger's exact dedup answers
``duplicate``. While the store cannot commit, the owner keeps the fetched messages, tells
JetStream they are in progress, and retries; so an outage of the store does not spend
``max_deliver``, which only bounds crash loops on one message.

A conflict found here (the id is in the ledger with another body, beyond the duplicate
window) cannot change the ``202`` already sent: it is recorded as an ``EVENT_CONFLICT``
entry in the tenant's ledger (``GET /v1/conflicts``) and counted, never merged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from scr.bus.envelope import Undecodable, submissions_of
from scr.bus.jetstream import Bus, subject_of
from scr.config import ClusterConfig
from scr.log.commit import Committer, Outcome, Submission, utc_now
from scr.log.entry import Kind
from scr.metrics import Metrics
from scr.tasks import stop_task

log = logging.getLogger("scr.bus")
T = TypeVar("T")

FETCH_WAIT_S = 1.0
COMMIT_RETRY_S = 0.5
IDLE_RETRY_S = 0.5
BACKOFF_STEPS = 5
MAX_BACKOFF_S = 60.0
CONFLICT_SOURCE = "bus"


def consumer_name(partition: int) -> str:
    return f"scr-p{partition}"


def consumer_config(cluster: ClusterConfig, stream: str, partition: int) -> ConsumerConfig:
    """The durable consumer of one partition (created by whichever instance owns it first)."""
    ack_wait_s = cluster.ack_wait_ms / 1000
    # Redeliveries back off: ack_wait, then doubling, up to MAX_BACKOFF_S.
    backoff = [min(MAX_BACKOFF_S, ack_wait_s * 2**step) for step in range(BACKOFF_STEPS)]
    return ConsumerConfig(
        durable_name=consumer_name(partition),
        filter_subject=subject_of(stream, partition),
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        backoff=backoff if cluster.max_deliver > BACKOFF_STEPS else None,
        max_deliver=cluster.max_deliver,
        max_ack_pending=cluster.max_ack_pending,
    )


class PartitionConsumer:
    """Appends one partition's events while this instance owns it."""

    def __init__(
        self, partition: int, bus: Bus, committer: Committer, metrics: Metrics,
        digest_bytes: int, on_appended: Callable[[int, int], None] | None = None,
    ) -> None:
        self.partition = partition
        self.bus = bus
        self.committer = committer
        self.metrics = metrics
        self.digest_bytes = digest_bytes
        self.on_appended = on_appended
        self.last_error = ""
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"scr-partition-{self.partition}")

    async def stop(self) -> None:
        """Stop taking messages; a batch being committed is left unacked (redelivered).

        Returns once the task has ended: the partition may have a new owner already, so this
        one must not go on appending (a cancellation lost in ``fetch`` is why the flag is
        checked too).
        """
        self._stopping = True
        if self._task is not None:
            await stop_task(self._task)
            self._task = None

    async def _run(self) -> None:
        subscription: JetStreamContext.PullSubscription | None = None
        while not self._stopping:
            try:
                if not self.bus.ready or self.bus.js is None:
                    await asyncio.sleep(IDLE_RETRY_S)
                    continue
                if subscription is None:
                    subscription = await self._subscribe(self.bus.js)
                try:
                    messages = await subscription.fetch(self.bus.cluster.fetch_events, FETCH_WAIT_S)
                except TimeoutError:
                    continue
                if self._stopping:  # stopped while fetching: leave them to the next owner
                    return
                await self._append(messages)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # NATS went away or the consumer vanished: start over
                self.last_error = f"partition {self.partition}: {error}"
                log.warning("bus: %s", self.last_error)
                if subscription is not None:
                    with contextlib.suppress(Exception):
                        await subscription.unsubscribe()
                subscription = None
                await asyncio.sleep(IDLE_RETRY_S)

    async def _subscribe(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        config = consumer_config(self.bus.cluster, self.bus.stream, self.partition)
        with contextlib.suppress(nats.js.errors.BadRequestError):  # it exists: keep its state
            await js.add_consumer(self.bus.stream, config)
        return await js.pull_subscribe_bind(
            durable=consumer_name(self.partition), stream=self.bus.stream
        )

    async def _append(self, messages: list[Msg]) -> None:
        submissions: list[Submission] = []
        kept: list[Msg] = []
        read = submissions_of([(m.data, m.headers) for m in messages], self.digest_bytes)
        for message, submission in zip(messages, read, strict=True):
            if isinstance(submission, Undecodable):
                # validated before it was published: only another version could have sent it
                log.error("bus: partition %s: dropping an undecodable message: %s",
                          self.partition, submission)
                self.metrics.bus_undecodable.inc()
                await message.term()
            else:
                submissions.append(submission)
                kept.append(message)
        if submissions:
            outcomes = await self._until_committed(
                lambda: self.committer.append_events(submissions), kept
            )
            self._count(outcomes)
            conflicts = [
                (sub, seq) for sub, (outcome, seq) in zip(submissions, outcomes, strict=True)
                if outcome is Outcome.CONFLICT
            ]
            if conflicts:
                await self._record_conflicts(conflicts, kept)
        for message in kept:
            await message.ack()

    async def _until_committed(self, write: Callable[[], Awaitable[T]], messages: list[Msg]) -> T:
        """Run ``write`` until the store commits it, telling JetStream the messages are in
        progress meanwhile (so they are neither redelivered nor counted against max_deliver)."""
        touched = time.monotonic()
        while True:
            try:
                return await write()
            except Exception as error:  # the store is down: hold on to the batch and retry
                self.last_error = f"partition {self.partition}: cannot commit: {error}"
                log.warning("bus: %s", self.last_error)
                await asyncio.sleep(COMMIT_RETRY_S)
                if time.monotonic() - touched > self.bus.cluster.ack_wait_ms / 2000:
                    touched = time.monotonic()
                    for message in messages:
                        with contextlib.suppress(nats.errors.Error):
                            await message.in_progress()

    def _count(self, outcomes: list[tuple[Outcome, int]]) -> None:
        accepted = sum(1 for outcome, _ in outcomes if outcome is Outcome.ACCEPTED)
        duplicates = sum(1 for outcome, _ in outcomes if outcome is Outcome.DUPLICATE)
        self.metrics.bus_appended.inc(accepted)
        self.metrics.bus_duplicates.inc(duplicates)
        if self.on_appended is not None:
            self.on_appended(self.partition, accepted)

    async def _record_conflicts(
        self, conflicts: list[tuple[Submission, int]], messages: list[Msg]
    ) -> None:
        """One EVENT_CONFLICT entry per conflicting event, in its tenant's ledger.

        At least once: a crash between this commit and the ack records it again.
        """
        received_at = utc_now()

        def write(tx: Any) -> None:  # the store's Transaction
            for sub, first_seq in conflicts:
                self.committer.append_entry(
                    tx,
                    sub.tenant, Kind.EVENT_CONFLICT,
                    {
                        "event_id": sub.event_id, "ledger_seq": first_seq,
                        "digest": sub.digest.hex(), "received_at": received_at,
                    },
                    sub.actor, CONFLICT_SOURCE, sub.event_id,
                )

        self.metrics.bus_conflicts.inc(len(conflicts))
        log.warning("bus: partition %s: %d conflicting event(s) recorded", self.partition, len(conflicts))
        await self._until_committed(lambda: self.committer.run(write, size=len(conflicts)), messages)
