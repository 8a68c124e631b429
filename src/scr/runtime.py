"""What one running scr process holds: config, store, writer, tail, keys, metrics, destinations.

The HTTP routes of every room (capture, the ledger, the canon, the cluster) take what they
need from it; it sits below them all, so none of them imports the server that wires them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request

from scr.config import Config
from scr.log.commit import Committer, Outcome, Submission
from scr.log.tail import LedgerTail
from scr.metrics import Metrics
from scr.privacy.subjects import Subjects
from scr.route.control import Destinations
from scr.route.worker import DestinationWorker
from scr.security.auth import Authenticator
from scr.security.keys import Principal
from scr.store import Store

if TYPE_CHECKING:  # the bus (nats, aiohttp) loads only where the config has one
    from scr.bus.instance import BusInstance


@dataclass
class Runtime:
    """Everything one running scr process holds."""

    config: Config
    data_dir: Path
    store: Store
    committer: Committer
    tail: LedgerTail
    auth: Authenticator
    metrics: Metrics
    destinations: Destinations  # what the API asks of them, wherever they run
    # the destinations' workers when they run in this process (else empty: the reader
    # processes run them)
    workers: dict[str, DestinationWorker] = field(default_factory=dict)
    subjects: Subjects | None = None  # set when encryption is on (scr.privacy)
    bus: BusInstance | None = None  # set with `bus:` (scale-out): events go through JetStream
    # Run after the committer has stopped, in order (the ledger's checkpoint thread).
    on_shutdown: list[Callable[[], None]] = field(default_factory=list)
    # Run once the committer runs, and before it stops (background tasks that write).
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    before_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def append_events(self, submissions: Sequence[Submission]) -> list[tuple[Outcome, int]]:
        """Commit validated events; with a bus, ``202`` follows JetStream's ack and the
        partition's owner appends them (the ledger seq is then not known yet: 0)."""
        if self.bus is not None:
            return [(outcome, 0) for outcome in await self.bus.bus.publish(submissions)]
        return await self.committer.append_events(submissions)

    def principal(self, request: Request, permission: str) -> Principal:
        principal = self.auth.principal(request.headers.get("authorization"))
        principal.require(permission)
        return principal

    def tenant(self, request: Request, permission: str) -> str:
        """The tenant a request may act on: the key's own, or ``?tenant=`` for a caller
        that spans tenants (after checking ``permission``)."""
        return self.principal(request, permission).scope(request.query_params.get("tenant"))
