"""What the HTTP API asks of the destinations: how each is doing, enable one, replay to one.

``LocalDestinations`` answers for workers that run in the same process. Under ``scr serve``
the workers run in reader processes, and ``scr.serve.readers`` answers the same questions
over their control sockets; the API cannot tell the two apart.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol

import msgspec

from scr.errors import BadRequest, NotFound
from scr.log.commit import Committer
from scr.metrics import Metrics
from scr.route.replay import requeue
from scr.route.worker import DestinationWorker
from scr.security.audit import Acting
from scr.store.protocol import Store

DELIVERY_STATUSES = ("pending", "retrying", "delivered", "dead")
MAX_REPLAY_EVENTS = 100_000


class DestinationView(msgspec.Struct, frozen=True):
    """One destination as ``GET /v1/destinations`` shows it."""

    name: str
    type: str
    transform: str
    state: Literal["active", "backing_off", "disabled"]
    lag: int
    cursor: int
    last_error: str
    retention_days: int | None


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True):
    destination: str
    event_ids: list[str] | None = None
    # RFC 3339 times of the ledger entries, from inclusive, to exclusive
    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    status: str | None = None

    def check(self) -> None:
        """Refuse a request that names nothing to replay, or an unknown status."""
        if self.event_ids is None and self.from_ is None:
            raise BadRequest("give event_ids, or from/to (and optionally status)")
        if self.status is not None and self.status not in DELIVERY_STATUSES:
            raise BadRequest(f"status must be one of {', '.join(DELIVERY_STATUSES)}")


class Destinations(Protocol):
    """The destinations of this instance, wherever their workers run."""

    def names(self) -> list[str]: ...

    async def views(self) -> list[DestinationView]: ...

    async def enable(self, name: str, acting: Acting) -> int:
        """Re-enable ``name``; ledgered for ``acting`` in the same write."""

    async def replay(self, acting: Acting, ask: ReplayRequest) -> int:
        """Requeue what ``ask`` names of ``acting``'s tenant; ledgered in the same write."""

    async def refresh_gauges(self) -> None:
        """Bring the lag and oldest-pending gauges up to date before ``/metrics`` renders."""

    async def forget(self, tenant: str, subject: str) -> None:
        """A subject was erased: drop what the workers hold of it in memory (``scr.privacy``)."""


class RemoteDestinations(Destinations, Protocol):
    """Destinations whose workers run in other processes of this instance."""

    async def start(self, store: Store, committer: Committer) -> None:
        """Take the workers' writes into ``committer``'s groups (the one writer)."""

    def notify(self, head_seq: int) -> None:
        """Tell the workers the ledger now reaches ``head_seq`` (from the committer's thread)."""

    def place(self, owned: set[int]) -> None:
        """In a cluster: this instance owns ``owned`` now (``scr.route.placement``)."""

    async def close(self) -> None: ...


def view_of(worker: DestinationWorker) -> DestinationView:
    config = worker.config
    state: Literal["active", "backing_off", "disabled"] = "active"
    if worker.state == "disabled":
        state = "disabled"
    elif worker.open_sessions:
        state = "backing_off"
    return DestinationView(
        name=worker.name, type=config.type,
        transform=config.transform if isinstance(config.transform, str) else "python",
        state=state, lag=worker.lag, cursor=worker.cursor,
        last_error=worker.last_error or worker.reason, retention_days=config.retention_days,
    )


class LocalDestinations:
    """Destinations whose workers run in this process."""

    def __init__(self, workers: dict[str, DestinationWorker], store: Store, committer: Committer,
                 metrics: Metrics) -> None:
        self.workers, self.store, self.committer, self.metrics = workers, store, committer, metrics

    def names(self) -> list[str]:
        return list(self.workers)

    def worker(self, name: str) -> DestinationWorker:
        worker = self.workers.get(name)
        if worker is None:
            raise NotFound(f"no destination '{name}'")
        return worker

    async def views(self) -> list[DestinationView]:
        return [view_of(worker) for worker in self.workers.values()]

    async def enable(self, name: str, acting: Acting) -> int:
        return await self.worker(name).enable(acting)

    async def replay(self, acting: Acting, ask: ReplayRequest) -> int:
        worker = self.worker(ask.destination)
        count = await requeue(self.store, self.committer, worker, acting, ask.event_ids,
                              ask.from_, ask.to, ask.status, MAX_REPLAY_EVENTS)
        worker.wake()
        return count

    async def forget(self, tenant: str, subject: str) -> None:
        """Nothing here: the workers read this process's tail, which the caller clears."""

    async def refresh_gauges(self) -> None:
        for worker in self.workers.values():
            self.metrics.lag_entries.labels(worker.name).set(worker.lag)
            age = await asyncio.to_thread(worker.oldest_pending_age_s)
            self.metrics.oldest_pending_age.labels(worker.name).set(age)
