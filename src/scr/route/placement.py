"""Where a cluster's destinations run: each on the owner of its home partition, and only there.

A destination's home partition is ``partition_of(name, partitions)``. After every ownership
poll the instance says which partitions it owns now; ``Placement.follow`` starts each
destination whose home it gained and stops each one whose home it lost. The call is
level-triggered: a destination whose start failed (the store was unreachable) is started at
the next one. Its durable cursor carries over: the new owner sends again what the old one
sent but had not recorded (at least once, with the same webhook ids), and counts those
entries in ``scr_cluster_failover_redeliveries_total``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from scr.config import DestinationConfig
from scr.metrics import Metrics
from scr.route.worker import DestinationWorker
from scr.store.postgres import partition_of
from scr.store.protocol import Store

log = logging.getLogger("scr.route")


class Placement:
    """Runs the destinations of ``workers`` whose home partition this instance owns.

    ``workers`` is the dict the API reads (``LocalDestinations``): a destination started
    again replaces its stopped worker there. ``build`` makes a worker from its config (it
    reads the destination's state from the store, so it runs in a thread).
    """

    def __init__(
        self, destinations: list[DestinationConfig], partitions: int,
        workers: dict[str, DestinationWorker], build: Callable[[DestinationConfig], DestinationWorker],
        store: Store, metrics: Metrics,
    ) -> None:
        self.destinations, self.partitions = destinations, partitions
        self.workers, self.build = workers, build
        self.store, self.metrics = store, metrics
        self._lock = asyncio.Lock()  # one change of placement at a time

    async def follow(self, owned: set[int]) -> None:
        """Run exactly the destinations whose home partition is in ``owned``."""
        async with self._lock:
            for config in self.destinations:
                worker = self.workers.get(config.name)
                running = worker is not None and worker.running
                if partition_of(config.name, self.partitions) not in owned:
                    if worker is not None and running:
                        await worker.stop()
                elif not running:
                    await self._start(config)

    async def _start(self, config: DestinationConfig) -> None:
        worker = await asyncio.to_thread(self.build, config)
        try:
            await worker.start()
        except BaseException:
            await worker.sink.close()
            raise
        self.workers[config.name] = worker
        if worker.cursor:  # it ran elsewhere before: what lies past its cursor may be resent
            inherited = max(0, await asyncio.to_thread(self.store.last_seq) - worker.cursor)
            self.metrics.failover_redeliveries.labels(config.name).inc(inherited)
            log.info("destination %s taken over at cursor %d (%d entries may be resent)",
                     config.name, worker.cursor, inherited)
