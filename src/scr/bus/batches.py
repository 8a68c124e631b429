"""Atomic batch publishes: a request's events stored by JetStream with one acknowledgement.

JetStream fsyncs before it acknowledges a publish (``sync_interval: always``); published one
message at a time, each event of a 1,000-event request waited for an fsync of its own, which
held a stream to about 3,300 events/s on this project's machines. An atomic batch (nats-server
2.12 and later, ADR-50, a stream with ``allow_atomic``) is stored all at once or not at all,
and answered once, for the message that commits it:

- every message carries ``Nats-Batch-Id`` and its ``Nats-Batch-Sequence`` (from 1), and is sent
  without waiting; the last one also carries ``Nats-Batch-Commit: 1`` and is sent as a request;
- the answer names the batch and how many messages it stored (``{"batch", "count", "seq"}``),
  or an error, in which case nothing of the batch was stored;
- each message keeps its own ``Nats-Msg-Id``. A batch holding an id the stream has already seen
  within its duplicate window is refused whole (``atomic publish batch contains duplicate
  message id``): the caller then publishes those events one by one, which answers each one.

A server caps a batch at ``MAX_BATCH_MESSAGES`` (its ``jetstream.limits.batch.max_msgs``
default), so a longer request is sent as several batches.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NatsClient

BATCH_ID = "Nats-Batch-Id"
BATCH_SEQUENCE = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"
MAX_BATCH_MESSAGES = 1000
FIRST_ATOMIC_SERVER = (2, 12)  # nats-server release with atomic batch publishes


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a batch: its subject, body and headers (without the batch's own)."""

    subject: str
    body: bytes
    headers: dict[str, str]


class BatchRefused(Exception):
    """JetStream answered the commit with an error: nothing of the batch was stored."""


def supports_atomic(version: Any) -> bool:
    """Whether a server of this version (nats-py's ``ServerVersion``) takes atomic batches."""
    return (int(version.major), int(version.minor)) >= FIRST_ATOMIC_SERVER


def chunks(messages: Sequence[Message]) -> list[Sequence[Message]]:
    """The messages in batches a server takes (at most ``MAX_BATCH_MESSAGES`` each)."""
    return [messages[i : i + MAX_BATCH_MESSAGES] for i in range(0, len(messages), MAX_BATCH_MESSAGES)]


async def publish_batch(nc: NatsClient, messages: Sequence[Message], timeout_s: float) -> int:
    """Store ``messages`` as one atomic batch; the count JetStream stored (all of them).

    Raises ``BatchRefused`` when JetStream refused the batch (nothing stored), and the
    client's timeout or connection errors when its answer did not come (unknown: a retry
    finds what was stored as duplicates).
    """
    if not 0 < len(messages) <= MAX_BATCH_MESSAGES:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH_MESSAGES} messages, not {len(messages)}")
    batch_id = uuid.uuid4().hex
    last = len(messages)
    for sequence, message in enumerate(messages[:-1], start=1):
        await nc.publish(message.subject, message.body,
                         headers={**message.headers, BATCH_ID: batch_id, BATCH_SEQUENCE: str(sequence)})
    final = messages[-1]
    answer = await nc.request(
        final.subject, final.body, timeout=timeout_s,
        headers={**final.headers, BATCH_ID: batch_id, BATCH_SEQUENCE: str(last), BATCH_COMMIT: "1"},
    )
    return stored_count(answer.data, batch_id, last)


def stored_count(answer: bytes, batch_id: str, expected: int) -> int:
    """The count a commit's answer reports stored; ``BatchRefused`` for an error, or for an
    answer about another batch or another count (taken as nothing known to be stored)."""
    try:
        reply = json.loads(answer)
    except ValueError:
        raise BatchRefused(f"JetStream answered the commit with {answer[:200]!r}") from None
    if not isinstance(reply, dict):
        raise BatchRefused(f"JetStream answered the commit with {answer[:200]!r}")
    error = reply.get("error")
    if error is not None:
        description = error.get("description", error) if isinstance(error, dict) else error
        raise BatchRefused(f"JetStream refused the batch: {description}")
    if reply.get("batch") != batch_id or reply.get("count") != expected:
        raise BatchRefused(f"JetStream's answer does not match the batch sent: {answer[:200]!r}")
    return expected
