"""Atomic batch publishes (``scr.bus.batches``): one acknowledgement for a request's events.

Real nats-server (JetStream, file storage, ``sync_interval: always``) and nats-py, no mock:
what a batch stores, or refuses, is read back from the stream itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
import pytest
from nats.aio.client import Client as NatsClient

from scr.bus.batches import (
    MAX_BATCH_MESSAGES,
    BatchRefused,
    Message,
    chunks,
    publish_batch,
    stored_count,
)
from scr.bus.jetstream import Bus
from scr.config import ClusterConfig
from scr.errors import Unavailable
from scr.log.commit import Outcome, Submission
from scr.metrics import Metrics
from scr.schema import canonical_bytes, decode_event
from servers import NatsServer
from support import make_event

T = TypeVar("T")
TIMEOUT_S = 10.0


def run_with(nats_server: NatsServer, work: Callable[[NatsClient], Awaitable[T]]) -> T:
    async def main() -> T:
        nc = await nats.connect(nats_server.url)
        try:
            return await work(nc)
        finally:
            await nc.close()

    return asyncio.run(main())


async def make_stream(nc: NatsClient, name: str) -> None:
    await nc.jetstream().add_stream(name=name, subjects=[f"{name}.*"], allow_atomic=True,
                                    duplicate_window=60)


async def stored(nc: NatsClient, name: str) -> int:
    return int((await nc.jetstream().stream_info(name)).state.messages)


def messages(stream: str, ids: range, body: bytes = b"{}") -> list[Message]:
    return [Message(f"{stream}.{i % 3}", body, {"Nats-Msg-Id": f"id-{i}"}) for i in ids]


def test_a_batch_is_stored_whole_with_one_answer(nats_server: NatsServer) -> None:
    async def work(nc: NatsClient) -> tuple[int, int]:
        await make_stream(nc, "B")
        count = await publish_batch(nc, messages("B", range(250)), TIMEOUT_S)
        return count, await stored(nc, "B")

    assert run_with(nats_server, work) == (250, 250)


def test_a_batch_repeating_a_seen_id_is_refused_and_stores_nothing(nats_server: NatsServer) -> None:
    async def work(nc: NatsClient) -> tuple[str, int]:
        await make_stream(nc, "R")
        await publish_batch(nc, messages("R", range(10)), TIMEOUT_S)
        with pytest.raises(BatchRefused) as refused:  # id-9 again, beside five new ids
            await publish_batch(nc, messages("R", range(9, 15)), TIMEOUT_S)
        return str(refused.value), await stored(nc, "R")

    reason, count = run_with(nats_server, work)
    assert "duplicate message id" in reason
    assert count == 10


def test_a_batch_past_the_server_cap_is_not_sent() -> None:
    with pytest.raises(ValueError, match="1 to 1000 messages"):
        asyncio.run(publish_batch(None, messages("X", range(MAX_BATCH_MESSAGES + 1)), TIMEOUT_S))  # type: ignore[arg-type]
    parts = chunks(messages("X", range(2 * MAX_BATCH_MESSAGES + 1)))
    assert [len(part) for part in parts] == [MAX_BATCH_MESSAGES, MAX_BATCH_MESSAGES, 1]


@pytest.mark.parametrize("answer", [
    b"not json", b"[1]", b'{"error": {"code": 503, "description": "no responders"}}',
    b'{"stream": "S", "seq": 9, "batch": "another", "count": 3}',
    b'{"stream": "S", "seq": 9, "batch": "mine", "count": 2}',
])
def test_an_answer_that_does_not_confirm_the_batch_is_a_refusal(answer: bytes) -> None:
    with pytest.raises(BatchRefused):
        stored_count(answer, "mine", 3)
    assert stored_count(b'{"stream": "S", "seq": 9, "batch": "mine", "count": 3}', "mine", 3) == 3


def submission(event_id: str, tenant: str = "org_acme", session: str = "sess_1") -> Submission:
    changes = {"user.organization_id": tenant, "session.session_id": session}
    event = decode_event(json.dumps(make_event(event_id, **changes)).encode())
    payload = canonical_bytes(event)
    return Submission(event, payload, hashlib.blake2b(payload, digest_size=16).digest(), "key:test", "http")


def bus_publish(
    nats_server: NatsServer, rounds: list[list[Submission]]
) -> tuple[list[list[Outcome]], Metrics, int]:
    """Each round published by one ``Bus`` in turn; the outcomes, its metrics, and the
    messages its stream holds at the end."""
    metrics = Metrics()
    bus = Bus(nats_server.url, ClusterConfig(partitions=4), 60, metrics, lambda tenant, event_id: None)

    async def main() -> tuple[list[list[Outcome]], int]:
        await bus.start()
        try:
            assert await bus.wait_ready(TIMEOUT_S), bus.last_error
            assert bus.atomic  # the test's nats-server takes atomic batches
            outcomes = [await bus.publish(submissions) for submissions in rounds]
            assert bus.js is not None
            return outcomes, int((await bus.js.stream_info(bus.stream)).state.messages)
        finally:
            await bus.close()

    outcomes, count = asyncio.run(main())
    return outcomes, metrics, count


def counted(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


def test_the_bus_publishes_a_long_request_as_batches_and_answers_every_event(
    nats_server: NatsServer,
) -> None:
    events = [submission(f"evt_{i}", tenant=f"org_{i % 5}") for i in range(2300)]
    [outcomes], metrics, count = bus_publish(nats_server, [events])
    assert outcomes == [Outcome.ACCEPTED] * 2300
    assert count == 2300
    assert counted(metrics, "scr_bus_batches_total") == 3  # 1,000 + 1,000 + 300
    assert counted(metrics, "scr_bus_batches_refused_total") == 0


def test_a_retried_request_answers_duplicates_and_conflicts_as_before(nats_server: NatsServer) -> None:
    first = [submission(f"evt_{i}") for i in range(20)]
    retry = [*first[:10], submission("evt_10", session="another"), submission("evt_new")]
    [accepted, again], metrics, count = bus_publish(nats_server, [first, retry])
    assert accepted == [Outcome.ACCEPTED] * 20
    assert again == [Outcome.DUPLICATE] * 10 + [Outcome.CONFLICT, Outcome.ACCEPTED]
    assert count == 21  # the new event once; no repeat stored
    assert counted(metrics, "scr_bus_batches_refused_total") == 1


def test_a_single_event_is_published_on_its_own(nats_server: NatsServer) -> None:
    [[outcome]], metrics, count = bus_publish(nats_server, [[submission("evt_alone")]])
    assert outcome == Outcome.ACCEPTED and count == 1
    assert counted(metrics, "scr_bus_batches_total") == 0


def test_the_bus_down_answers_unavailable_and_stores_nothing(nats_server: NatsServer) -> None:
    bus = Bus(nats_server.url, ClusterConfig(partitions=4, publish_timeout_ms=500), 60, Metrics(),
              lambda tenant, event_id: None)

    async def main() -> None:
        await bus.start()
        try:
            assert await bus.wait_ready(TIMEOUT_S)
            nats_server.stop()
            with pytest.raises(Unavailable):
                await bus.publish([submission(f"evt_{i}") for i in range(50)])
        finally:
            await bus.close()

    asyncio.run(main())
