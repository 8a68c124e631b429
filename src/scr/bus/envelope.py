"""An event on the bus: its canonical bytes as the message body, who sent it in headers.

``Nats-Msg-Id`` is ``tenant:event_id``: JetStream drops a second publish of the same id within
its duplicate window (the front dedup); the ledger's unique ``(tenant, event_id)`` stays the
exact one. ``Scr-Digest`` lets a duplicate publish be told apart from a conflict (same id,
different body) without reading the body back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

from scr import native
from scr.event_check import latest_epoch_us
from scr.log.commit import Submission
from scr.schema import InvalidEvent, decode_accepted_event

MSG_ID = "Nats-Msg-Id"
DIGEST = "Scr-Digest"
ACTOR = "Scr-Actor"
SOURCE = "Scr-Source"
# An accepted event read again is not judged by the reader's clock (see submission_of): the
# native check is given the latest time it can hold as the clock.
NO_CLOCK_LIMIT_US = latest_epoch_us(datetime(9999, 12, 30, tzinfo=UTC))


def message_id(tenant: str, event_id: str) -> str:
    return f"{tenant}:{event_id}"


def headers_of(submission: Submission) -> dict[str, str]:
    """The message headers of a validated event."""
    return {
        MSG_ID: message_id(submission.tenant, submission.event_id),
        DIGEST: submission.digest.hex(),
        ACTOR: submission.actor,
        SOURCE: submission.source,
    }


class Undecodable(Exception):
    """A bus message that is not a valid event (written by another version, or corrupted)."""


def submission_of(body: bytes, headers: dict[str, str] | None, digest_bytes: int) -> Submission:
    """The submission a bus message carries; the digest is recomputed from the body."""
    try:
        # The edge checked the event's times against its clock when it arrived; a reader whose
        # clock runs behind the edge's must not turn an acknowledged event away.
        event = decode_accepted_event(body)
    except InvalidEvent as invalid:
        raise Undecodable(f"not a valid event: {invalid}") from None
    return Submission(event, body, *_sent(body, headers, digest_bytes))


def submissions_of(
    messages: Sequence[tuple[bytes, dict[str, str] | None]], digest_bytes: int
) -> list[Submission | Undecodable]:
    """``submission_of`` for each (body, headers) of a fetched batch, read by the native core
    in one call (``scr.native.check_events``) without decoding an ``Event``; a body it
    refuses is judged by ``submission_of``, which names why."""
    verdicts = native.check_events([body for body, _ in messages], NO_CLOCK_LIMIT_US)
    read: list[Submission | Undecodable] = []
    for (body, headers), verdict in zip(messages, verdicts, strict=True):
        if verdict is None:
            try:
                read.append(submission_of(body, headers, digest_bytes))
            except Undecodable as undecodable:
                read.append(undecodable)
            continue
        event_id, tenant, session_id, model, _, _ = verdict
        read.append(Submission.undecoded(body, *_sent(body, headers, digest_bytes), tenant, event_id,
                                         session_id, model))
    return read


def _sent(body: bytes, headers: dict[str, str] | None, digest_bytes: int) -> tuple[bytes, str, str]:
    """A message's digest (recomputed from the body, as sent), actor and source."""
    headers = headers or {}
    digest = hashlib.blake2b(body, digest_size=digest_bytes).digest()
    return digest, headers.get(ACTOR, "unknown"), headers.get(SOURCE, "bus")
