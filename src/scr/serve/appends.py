"""Edges hand validated events to the one writer, and the writer answers each one's outcome.

An edge decodes, validates and hashes a request's events itself; what crosses to the writer
is the compact record of each (its canonical bytes and digest, who sent it, and the tenant,
event id, session id and model it is keyed and counted by; never the decoded event, which the
writer reads back from the bytes only to seal it), as msgpack over the writer's Unix socket
(``scr.serve.frames``). The writer appends them in its group commit (or, in a cluster,
publishes them to the bus) and answers once they are durable: only then does the edge answer
``202``. A writer that is gone is ``503`` at once, never a hang.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import msgspec

from scr.capture.ingest import Appender
from scr.errors import Unavailable
from scr.log.commit import Outcome, Submission
from scr.serve.frames import FrameClient, FrameServer

APPEND_TIMEOUT_S = 30.0  # a writer this slow is as good as gone: the edge answers 503


class Record(msgspec.Struct, array_like=True, gc=False):
    """A submission as it crosses from an edge to the writer."""

    payload: bytes
    digest: bytes
    actor: str
    source: str
    tenant: str
    event_id: str
    session_id: str
    model: str


class Appended(msgspec.Struct, array_like=True):
    """The writer's answer: each record's outcome and ledger position, or why none."""

    outcomes: list[tuple[Outcome, int]]
    error: str | None = None


class AppendClient:
    """The edge's ``Appender``: the writer's group commit, over its socket."""

    def __init__(self, path: Path) -> None:
        self._calls = FrameClient(path, "the writer")
        self._answer = msgspec.msgpack.Decoder(Appended).decode

    async def append_events(self, submissions: Sequence[Submission]) -> list[tuple[Outcome, int]]:
        records = [Record(s.payload, s.digest, s.actor, s.source, s.tenant, s.event_id, s.session_id, s.model)
                   for s in submissions]
        try:
            reply = await asyncio.wait_for(self._calls.call(msgspec.msgpack.encode(records)),
                                           APPEND_TIMEOUT_S)
        except TimeoutError:
            raise Unavailable(
                f"the writer did not answer within {APPEND_TIMEOUT_S:.0f} s; send again (a duplicate "
                "of what it did commit is answered as such)"
            ) from None
        answer = self._answer(reply)
        if answer.error is not None:
            raise Unavailable(answer.error)
        return answer.outcomes

    async def close(self) -> None:
        await self._calls.close()


class AppendService:
    """The writer's side: appends what the edges send through ``appender`` (the runtime)."""

    def __init__(self, appender: Appender, path: Path) -> None:
        self.appender = appender
        self._server = FrameServer(path, self._append)
        self._decode = msgspec.msgpack.Decoder(list[Record]).decode

    async def start(self) -> None:
        await self._server.start()

    async def close(self) -> None:
        await self._server.close()

    async def _append(self, body: bytes) -> bytes:
        submissions = [Submission.undecoded(r.payload, r.digest, r.actor, r.source, r.tenant, r.event_id,
                                            r.session_id, r.model) for r in self._decode(body)]
        try:
            answer = Appended(await self.appender.append_events(submissions))
        except Unavailable as error:  # the edge answers 503 with the same message
            answer = Appended([], error.message)
        return msgspec.msgpack.encode(answer)
