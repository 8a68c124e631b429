"""Partition ownership through PostgreSQL session-level advisory locks.

Each instance keeps one connection of its own to the shared store. Owning partition ``p``
is holding the advisory lock ``(OWNERSHIP_LOCKS, p)`` on that connection
(``pg_try_advisory_lock``): PostgreSQL grants it to one session at a time, and frees it
when the session ends, so when an instance dies (its TCP connection closes) its partitions
are free at once and the next poll of a survivor takes them. An instance that is alive but
cut off from PostgreSQL loses its session, hence its locks, the same way.

Every ``cluster.ownership_poll_ms`` an instance records a heartbeat (``cluster_instances``),
counts the live instances (a heartbeat newer than ``cluster.instance_timeout_ms`` and a
session still connected), and moves towards its fair share, ceil(partitions / live): it
takes free partitions up to it and gives back what it holds above it (a newcomer gets its
share within two polls). A partition left free for a whole poll is taken by whoever sees it,
above its share if need be, so no partition stays without an owner.

Ownership decides who *works* on a partition (its bus consumer, and destinations); it is not
what keeps the ledger right: every write takes the write lock of each partition it appends
to and re-reads the chain heads another writer moved there (``scr.store.postgres``), and the
ledger's unique (tenant, event_id) dedups what a stale owner appends twice.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import psycopg

from scr.bus.leases import holder_digest, lease_holders
from scr.config import ClusterConfig

log = logging.getLogger("scr.cluster")

# The first key of every ownership lock: the ASCII of "scrp" (the second key is the partition).
OWNERSHIP_LOCKS = 0x73637270
CONNECT_TIMEOUT_S = 5

_HEARTBEAT = """
INSERT INTO cluster_instances (id, url, backend_pid, partitions, started_at, heartbeat_at)
VALUES (%s, %s, pg_backend_pid(), %s, now(), now())
ON CONFLICT (id) DO UPDATE SET url = excluded.url, backend_pid = excluded.backend_pid,
    partitions = excluded.partitions, heartbeat_at = now()
"""
_LIVE = """
SELECT i.id, i.url, i.partitions FROM cluster_instances i
WHERE i.heartbeat_at > now() - make_interval(secs => %s)
  AND i.backend_pid IN (SELECT pid FROM pg_stat_activity)
ORDER BY i.started_at, i.id
"""
_HELD = """
SELECT objid::int, pid = pg_backend_pid() FROM pg_locks
WHERE locktype = 'advisory' AND classid = %s AND objsubid = 2 AND granted
"""


class AdvisoryLocks:
    """This instance's partitions, as advisory locks on its own PostgreSQL session."""

    def __init__(self, uri: str, cluster: ClusterConfig, instance_id: str, url: str) -> None:
        self.uri = uri
        self.partitions = cluster.partitions
        self.timeout_s = cluster.instance_timeout_ms / 1000
        self.instance_id, self.url = instance_id, url
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._owned: set[int] = set()
        self._free_before: set[int] = set()

    async def _connection(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                log.warning("cluster: the ownership session was lost, and its locks with it")
            self._owned = set()
            self._conn = None
            self._conn = await psycopg.AsyncConnection.connect(
                self.uri, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                application_name=f"scr-ownership {self.instance_id}",
            )
        return self._conn

    async def claim(self) -> set[int]:
        """Heartbeat, then take or give back partitions towards the fair share."""
        try:
            conn = await self._connection()
            await conn.execute(_HEARTBEAT, (self.instance_id, self.url, sorted(self._owned)))
            live = (await (await conn.execute(_LIVE, (self.timeout_s,))).fetchall())
            fair = math.ceil(self.partitions / max(1, len(live)))
            held = {p: mine for p, mine in await (await conn.execute(_HELD, (OWNERSHIP_LOCKS,))).fetchall()}
            self._owned = {p for p, mine in held.items() if mine}
            for partition in sorted(self._owned, reverse=True)[: max(0, len(self._owned) - fair)]:
                await conn.execute("SELECT pg_advisory_unlock(%s, %s)", (OWNERSHIP_LOCKS, partition))
                self._owned.discard(partition)
            free = [p for p in range(self.partitions) if p not in held]
            for partition in free:
                if len(self._owned) >= fair and partition not in self._free_before:
                    continue
                row = await (await conn.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (OWNERSHIP_LOCKS, partition)
                )).fetchone()
                if row is not None and row[0]:
                    self._owned.add(partition)
            self._free_before = set(free) - self._owned
            await conn.execute(_HEARTBEAT, (self.instance_id, self.url, sorted(self._owned)))
        except psycopg.Error as error:
            # Without the session the locks are gone: own nothing until it is back.
            log.warning("cluster: cannot reach the store for ownership: %s", error)
            if self._conn is not None:
                await self._conn.close()
            self._conn, self._owned = None, set()
        return set(self._owned)

    async def instances(self) -> list[dict[str, Any]]:
        """The live instances, oldest first, with the partitions each reported and the
        singleton readers whose lease it holds (``scr.bus.leases``)."""
        conn = await self._connection()
        rows = await (await conn.execute(_LIVE, (self.timeout_s,))).fetchall()
        holders = await lease_holders(conn)
        return [{"id": i, "url": url, "partitions": sorted(parts),
                 "readers": sorted(role for role, by in holders.items() if by == holder_digest(url))}
                for i, url, parts in rows]

    async def close(self) -> None:
        """Give every partition back and leave the cluster."""
        if self._conn is None or self._conn.closed:
            return
        try:
            await self._conn.execute("SELECT pg_advisory_unlock_all()")
            await self._conn.execute("DELETE FROM cluster_instances WHERE id = %s", (self.instance_id,))
        finally:
            await self._conn.close()
            self._conn, self._owned = None, set()
