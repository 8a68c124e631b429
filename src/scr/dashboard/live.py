"""``GET /v1/dashboard/live``: a tenant's live numbers as Server-Sent Events, about once a second.

The numbers come from what every HTTP process can read, so an edge of ``scr serve`` answers
the stream itself (its writer proxy waits for whole answers) and the one-process app alike:
accepted, duplicate and rejected events from the ``scr_tenant_events`` counters (summed over
the whole set of processes, ``Metrics.whole_set``), each destination's lag from its gauge, and
the tenant's dead letters from the store. Each process serves at most ``MAX_LIVE_STREAMS``
streams at once (``503`` past it); a client that goes away ends its stream (Starlette's
``StreamingResponse`` listens for the disconnect), and every stream ends after ``events``
updates, or at the first update after its key is revoked, so a page reconnects now and then
and nothing is held forever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from scr.errors import BadRequest, Detail, ScrError, Unavailable
from scr.metrics import Metrics
from scr.security.auth import Authenticator
from scr.store.protocol import Store

LIVE_PATH = "/v1/dashboard/live"
LIVE_INTERVAL_S = 1.0
MAX_LIVE_STREAMS = 16  # open streams per HTTP process
MAX_STREAM_EVENTS = 3600  # an hour of updates, then the page reconnects
MAX_DEAD_LETTERS = 1000  # counted up to this many per destination ("1000" means at least)
OUTCOMES = ("accepted", "duplicate", "rejected")


class DestinationLive(msgspec.Struct):
    name: str
    lag: int  # ledger entries past its cursor (every tenant's: destinations are shared)
    dead: int  # the tenant's dead letters, up to MAX_DEAD_LETTERS


class LiveNumbers(msgspec.Struct):
    """One update of the stream: the tenant's counters since the server started counting."""

    tenant: str
    ts: float  # Unix time of the reading
    accepted: int
    duplicate: int
    rejected: int
    events_per_s: float  # accepted per second since the previous update (0 on the first)
    acceptance_rate: float | None  # accepted / (accepted + rejected); None before any event
    destinations: list[DestinationLive]


@dataclass
class LiveSource:
    """Where one process reads the live numbers: its metrics, its store, its destinations."""

    metrics: Metrics
    store: Store
    destination_names: Callable[[], Sequence[str]]
    refresh: Callable[[], Awaitable[None]] | None = None  # bring local gauges up to date first

    async def read(self, tenant: str) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """The tenant's counts by outcome, each destination's lag and the tenant's dead letters."""
        if self.refresh is not None:
            await self.refresh()
        counts = dict.fromkeys(OUTCOMES, 0)
        lags: dict[str, int] = {}
        for family in self.metrics.whole_set().collect():
            for sample in family.samples:
                if sample.name == "scr_tenant_events_total" and sample.labels.get("tenant") == tenant:
                    outcome = sample.labels.get("outcome", "")
                    if outcome in counts:
                        counts[outcome] += int(sample.value)
                elif sample.name == "scr_destination_lag_entries":
                    name = sample.labels.get("destination", "")
                    lags[name] = lags.get(name, 0) + int(sample.value)
        names = list(self.destination_names())
        dead = await asyncio.to_thread(self._dead_letters, tenant, names)
        return counts, {n: lags.get(n, 0) for n in names}, dead

    def _dead_letters(self, tenant: str, names: list[str]) -> dict[str, int]:
        return {
            name: len(self.store.list_deliveries(tenant, name, "dead", MAX_DEAD_LETTERS))
            for name in names
        }


class StreamSlots:
    """At most ``limit`` streams open at once in this process."""

    def __init__(self, limit: int = MAX_LIVE_STREAMS) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> None:
        if self.open >= self.limit:
            raise Unavailable(f"{self.limit} live streams are open on this process; try again later")
        self.open += 1

    def give_back(self) -> None:
        self.open -= 1


def _stream_events(request: Request) -> int:
    raw = request.query_params.get("events", str(MAX_STREAM_EVENTS))
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= MAX_STREAM_EVENTS):
        raise BadRequest(f"events must be an integer from 1 to {MAX_STREAM_EVENTS}",
                         [Detail("events", f"1 to {MAX_STREAM_EVENTS}")])
    return int(raw)


def live_handler(auth: Authenticator, source: LiveSource,
                 slots: StreamSlots) -> Callable[[Request], Awaitable[Response]]:
    """The ``GET /v1/dashboard/live`` endpoint over ``source`` (roles read and admin)."""

    async def live(request: Request) -> Response:
        principal = auth.principal(request.headers.get("authorization"))
        principal.require("read")
        tenant = principal.scope(request.query_params.get("tenant"))
        events = _stream_events(request)
        slots.take()
        try:
            first = await source.read(tenant)
        except BaseException:
            slots.give_back()
            raise
        def key_still_good() -> bool:  # a key revoked mid-stream ends it (the page then sees 401)
            try:
                auth.principal(request.headers.get("authorization"))
            except ScrError:
                return False
            return True

        return StreamingResponse(
            _updates(source, tenant, events, first, slots, key_still_good), media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    return live


_encode = msgspec.json.Encoder().encode


async def _updates(
    source: LiveSource, tenant: str, events: int,
    first: tuple[dict[str, int], dict[str, int], dict[str, int]], slots: StreamSlots,
    key_still_good: Callable[[], bool],
) -> AsyncIterator[bytes]:
    """``events`` updates, one per ``LIVE_INTERVAL_S``; the slot is given back however it ends
    (the client gone: Starlette cancels this generator)."""
    try:
        reading, previous = first, None
        for sent in range(events):
            if sent:
                await asyncio.sleep(LIVE_INTERVAL_S)
                if not key_still_good():
                    return
                reading = await source.read(tenant)
            numbers = _numbers(tenant, reading, previous)
            previous = (numbers.ts, numbers.accepted)
            yield b"event: numbers\ndata: " + _encode(numbers) + b"\n\n"
    finally:
        slots.give_back()


def _numbers(tenant: str, reading: tuple[dict[str, int], dict[str, int], dict[str, int]],
             previous: tuple[float, int] | None) -> LiveNumbers:
    counts, lags, dead = reading
    now = time.time()
    rate = 0.0
    if previous is not None and now > previous[0]:
        rate = max(0.0, (counts["accepted"] - previous[1]) / (now - previous[0]))
    judged = counts["accepted"] + counts["rejected"]
    return LiveNumbers(
        tenant=tenant, ts=now, accepted=counts["accepted"], duplicate=counts["duplicate"],
        rejected=counts["rejected"], events_per_s=round(rate, 3),
        acceptance_rate=counts["accepted"] / judged if judged else None,
        destinations=[DestinationLive(name, lags[name], dead[name]) for name in lags],
    )
