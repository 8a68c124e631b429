"""One instance's part in the bus: its connection, the partitions it owns, their consumers.

Every ``ownership_poll_ms`` the instance asks its ``Ownership`` which partitions it owns now
(taking free ones), starts a consumer for each partition it gained and stops the consumer of
each one it lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from scr.bus.consumer import PartitionConsumer, consumer_name
from scr.bus.jetstream import Bus
from scr.bus.leases import reader_roles, shares_partitions
from scr.bus.ownership import AdvisoryLocks
from scr.config import Config
from scr.log.commit import Committer
from scr.log.tail import LedgerTail, follow_ledger
from scr.metrics import Metrics
from scr.store import Store

log = logging.getLogger("scr.bus")

LAG_TIMEOUT_S = 2.0


class Ownership(Protocol):
    """Decides which partitions this instance appends (one live owner per partition)."""

    async def claim(self) -> set[int]:
        """The partitions owned now, after trying to take free ones."""

    async def instances(self) -> list[dict[str, Any]]:
        """The live instances: ``{"id", "url", "partitions": [...], "readers": [...]}`` each
        (``readers``: the singleton readers it runs, ``scr.bus.leases``)."""

    async def close(self) -> None:
        """Give up every partition."""


class SoleOwner:
    """The embedded store serves one instance: it owns every partition."""

    def __init__(self, partitions: int, instance_id: str, url: str, readers: list[str]) -> None:
        self.partitions = set(range(partitions))
        self.instance_id, self.url = instance_id, url
        self.readers = readers  # it runs every singleton reader (scr.bus.leases)

    async def claim(self) -> set[int]:
        return set(self.partitions)

    async def instances(self) -> list[dict[str, Any]]:
        return [{"id": self.instance_id, "url": self.url, "partitions": sorted(self.partitions),
                 "readers": self.readers}]

    async def close(self) -> None:
        return None


class _PayloadOnly(msgspec.Struct):
    payload: msgspec.Raw


_payload_only = msgspec.json.Decoder(_PayloadOnly)


def ledger_digest(
    find_event: Callable[[str, str], Any], digest_bytes: int
) -> Callable[[str, str], bytes | None]:
    """A lookup of an event's payload digest in the ledger (None when it is not there)."""

    def digest_of(tenant: str, event_id: str) -> bytes | None:
        stored = find_event(tenant, event_id)
        if stored is None:
            return None
        payload = bytes(_payload_only.decode(stored.entry).payload)
        return hashlib.blake2b(payload, digest_size=digest_bytes).digest()

    return digest_of


class BusInstance:
    """Publishes for the HTTP API and appends the partitions this instance owns."""

    def __init__(
        self, bus: Bus, ownership: Ownership, committer: Committer, metrics: Metrics,
        config: Config, digest_bytes: int,
    ) -> None:
        self.bus = bus
        self.ownership = ownership
        self.committer = committer
        self.metrics = metrics
        self.config = config
        self.digest_bytes = digest_bytes
        self.consumers: dict[int, PartitionConsumer] = {}
        # Called after every ownership poll with the partitions owned now (destinations
        # follow ownership): level-triggered, so what failed at one poll is tried at the next.
        self.on_owned: list[Callable[[set[int]], Any]] = []
        # Called with the ledger's head each time the follower reads it (other instances append).
        self.on_head: list[Callable[[int], None]] = []
        # A cluster's shared store and this process's tail: the tail follows the other writers.
        self.ledger: tuple[Store, LedgerTail] | None = None
        self._task: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None

    @property
    def clustered(self) -> bool:
        return self.ledger is not None

    @property
    def owned(self) -> list[int]:
        return sorted(self.consumers)

    async def start(self) -> None:
        await self.bus.start()
        self._task = asyncio.create_task(self._keep_ownership(), name="scr-ownership")
        if self.ledger is not None:
            # wakes this instance's destinations (here or in its readers) for entries other
            # instances commit, as soon as the store says something was appended
            store, tail = self.ledger
            self._follower = asyncio.create_task(follow_ledger(store, tail, self.on_head), name="scr-follow")

    async def stop(self) -> None:
        for task in (self._task, self._follower):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for consumer in self.consumers.values():
            await consumer.stop()
        self.consumers.clear()
        with contextlib.suppress(Exception):
            await self.ownership.close()
        await self.bus.close()

    async def _keep_ownership(self) -> None:
        poll_s = self.config.cluster.ownership_poll_ms / 1000
        task = asyncio.current_task()
        while True:
            try:
                await self.reconcile(await self.ownership.claim())
            except asyncio.CancelledError:
                if task is None or task.cancelling():
                    raise  # this loop is being stopped
                # a cancelled future awaited below: never let it end the ownership loop, whose
                # death would leave the partitions' consumers running without their locks
                log.warning("cluster: ownership check interrupted (a cancelled wait); going on")
            except Exception as error:  # the store is unreachable: keep what we have, retry
                log.warning("cluster: ownership check failed: %s", error)
            await asyncio.sleep(poll_s)

    async def reconcile(self, owned: set[int]) -> None:
        """Start consumers for gained partitions, stop those of lost ones."""
        gained, lost = owned - set(self.consumers), set(self.consumers) - owned
        for partition in sorted(lost):
            await self.consumers.pop(partition).stop()
            self.metrics.partition_lag.labels(str(partition)).set(0)
        for partition in sorted(gained):
            consumer = PartitionConsumer(
                partition, self.bus, self.committer, self.metrics, self.digest_bytes
            )
            self.consumers[partition] = consumer
            consumer.start()
        if gained or lost:
            log.info("cluster: owns partitions %s (gained %s, lost %s)",
                     self.owned, sorted(gained), sorted(lost))
        self.metrics.partitions_owned.set(len(self.consumers))
        for callback in self.on_owned:
            try:
                result = callback(set(self.consumers))
                if asyncio.iscoroutine(result):
                    await result
            except Exception as error:  # e.g. the store went away: the next poll tries again
                log.warning("cluster: following ownership failed: %s", error)

    async def partition_lag(self) -> dict[int, int | None]:
        """Per partition: bus events not yet appended (None when JetStream cannot say)."""
        js = self.bus.js
        lags: dict[int, int | None] = dict.fromkeys(range(self.bus.partitions))
        if js is None or not self.bus.ready:
            return lags

        async def one(partition: int) -> None:
            with contextlib.suppress(Exception):
                info = await js.consumer_info(
                    self.bus.stream, consumer_name(partition), timeout=LAG_TIMEOUT_S
                )
                lags[partition] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)

        await asyncio.gather(*(one(p) for p in range(self.bus.partitions)))
        for partition in self.consumers:
            lag = lags.get(partition)
            self.metrics.partition_lag.labels(str(partition)).set(lag or 0)
        return lags


def instance_id() -> str:
    """A name for this process in the cluster: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def bus_instance(
    config: Config, committer: Committer, metrics: Metrics, store: Store, tail: LedgerTail,
    url: str, digest_bytes: int, store_uri: str | None,
) -> BusInstance:
    """This process's bus instance, for a config with ``bus:`` (``scr.server`` imports this
    module only then).

    On a PostgreSQL store (``store_uri``) it shares the partitions with the other instances
    (``scr.bus.ownership``) and follows the ledger they write; on SQLite it owns them all.
    """
    if config.bus is None:
        raise ValueError("a bus instance needs a config with `bus:`")
    bus = Bus(
        config.bus, config.cluster, config.validation.deduplication_window_sec, metrics,
        ledger_digest(store.find_event, digest_bytes),
    )
    name, shown = instance_id(), config.cluster.instance_url or url
    ownership: Ownership = (
        AdvisoryLocks(store_uri, config.cluster, name, shown) if store_uri
        else SoleOwner(config.cluster.partitions, name, shown, reader_roles(config))
    )
    instance = BusInstance(bus, ownership, committer, metrics, config, digest_bytes)
    if shares_partitions(config, store_uri):
        instance.ledger = (store, tail)
    return instance
