"""Reader leases: in a cluster, one instance at a time runs each of the singleton readers.

The usage aggregator (``scr: usage``), the enricher (``scr: enrich``) and the archiver
(``scr: archive``) each read the whole ledger from one durable cursor in the shared store.
Every instance of a cluster starts them, and each works only while it holds its role's
lease: the PostgreSQL session-level advisory lock ``(READER_LEASES, ROLE_KEYS[role])`` on a
connection of its own. PostgreSQL grants it to one session at a time and frees it when that
session ends, as partition ownership does (``scr.bus.ownership``): a holder killed outright
(its TCP connection closes) frees it at once, and a standby, trying every
``LEASE_RETRY_S``, takes it over and resumes from the cursor the last holder committed.

A holder stops working as soon as its session is in doubt: the moment its socket turns
readable while no query runs (the server ended the session, e.g. ``pg_terminate_backend``
or a restart), or a check (every ``LEASE_CHECK_S``) that fails or does not answer within
``LEASE_CHECK_TIMEOUT_S``. A holder cut off from PostgreSQL by the network therefore stops
within about 3 s, while the server keeps the lock until its own keepalives
(``SESSION_KEEPALIVES``, about 11 s) find the session dead: the standby takes over only
after the old holder stopped. When the server itself ends the session, it frees the lock a
few milliseconds before the holder sees it (measured 5-30 ms, ``tests/bus/test_leases.py``),
and a standby may start in that moment. Correctness does not rest on this timing: every write
of these readers moves their cursor by compare-and-set in the writer's transaction
(``scr.serve.writes``), so even two workers at once could never count or store a round
twice; the lease keeps the work (and the CPU) on one instance.

Without a cluster (SQLite, or no bus) the one instance always holds every lease
(``SoleLease``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import psycopg

from scr.config import Config
from scr.metrics import Metrics

log = logging.getLogger("scr.cluster")

# The first key of every reader lease: the ASCII of "scrr" (the second key is the role's).
READER_LEASES = 0x73637272
ROLE_KEYS = {"usage": 1, "enrich": 2, "archive": 3}
LEASE_RETRY_S = 1.0  # a standby tries to take a free lease this often
LEASE_CHECK_S = 1.0  # a holder checks its session at least this often
LEASE_CHECK_TIMEOUT_S = 2.0  # a check unanswered by then gives the lease up
CONNECT_TIMEOUT_S = 5
# Server-side keepalives of the lease session (seconds, probes): PostgreSQL ends the session
# of a holder the network cut off after about 5 + 3 × 2 s, so its lock does not wait for the
# kernel's default of two hours, and never before the holder stopped (LEASE_CHECK_*).
SESSION_KEEPALIVES = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
APPLICATION_PREFIX = "scr-lease"
HOLDER_DIGEST_CHARS = 12  # application_name holds 63 bytes: the instance's URL goes as a digest

Work = Callable[[], Awaitable[None]]

_HOLDERS = """
SELECT l.objid::int, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objsubid = 2 AND l.granted
"""


def reader_roles(config: Config) -> list[str]:
    """The singleton readers the config asks for: usage always, the enricher with
    ``enrichment:``, the archiver with ``retention:``."""
    roles = ["usage"]
    if config.enrichment is not None:
        roles.append("enrich")
    if config.retention is not None:
        roles.append("archive")
    return roles


def shares_partitions(config: Config, store_uri: str | None) -> bool:
    """Whether this instance shares the partitions with others: a bus over a shared
    (PostgreSQL) store. Alone (SQLite), it owns them all and runs every destination."""
    return config.bus is not None and bool(store_uri)


def holder_digest(url: str) -> str:
    """How a lease session names its instance (``application_name`` is short)."""
    return hashlib.sha256(url.encode()).hexdigest()[:HOLDER_DIGEST_CHARS]


class Lease(Protocol):
    """Runs a reader's work while this instance holds the reader's lease."""

    async def hold(self, work: Work) -> None:
        """Run ``work`` each time the lease is taken, cancel it when the lease is lost; until
        cancelled. An exception of ``work`` ends ``hold`` with it (the process restarts)."""


class SoleLease:
    """One instance alone: the lease is always held."""

    def __init__(self, role: str, metrics: Metrics) -> None:
        self.role, self.metrics = role, metrics

    async def hold(self, work: Work) -> None:
        self.metrics.reader_lease_held.labels(self.role).set(1)
        await work()


class ReaderLease:
    """The role's advisory lock on a PostgreSQL session of this process's own."""

    def __init__(self, uri: str, role: str, instance_url: str, metrics: Metrics) -> None:
        self.uri, self.role, self.metrics = uri, role, metrics
        self.key = ROLE_KEYS[role]
        self.application_name = f"{APPLICATION_PREFIX} {role} {holder_digest(instance_url)}"
        self.held = False
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None

    async def hold(self, work: Work) -> None:
        self._show(False)
        try:
            while True:
                if not await self._take():
                    await asyncio.sleep(LEASE_RETRY_S)
                    continue
                log.info("this instance holds the %s lease: working", self.role)
                self._show(True)
                task = asyncio.ensure_future(work())
                try:
                    await self._keep(task)
                finally:
                    task.cancel()
                    self._show(False)
                    await self._drop()
                await asyncio.wait([task])  # cancelled above, it ends at its next await
                failure = None if task.cancelled() else task.exception()
                if failure is not None:
                    raise failure  # the work's own failure ends hold()
                log.warning("the %s lease is lost: stopped working; trying to take it again", self.role)
        finally:
            await self._drop()

    async def _take(self) -> bool:
        """Try to take the lock once (connecting first if need be); whether it is held now."""
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # comes as its inner call ends, and hold() would then never stop
            if self._conn is None or self._conn.closed or self._conn.broken:
                await self._drop()
                async with asyncio.timeout(CONNECT_TIMEOUT_S + 1):
                    self._conn = await psycopg.AsyncConnection.connect(
                        self.uri, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                        application_name=self.application_name, options=SESSION_KEEPALIVES)
            async with asyncio.timeout(LEASE_CHECK_TIMEOUT_S):
                row = await self._try_lock(self._conn)
        except (psycopg.Error, OSError, TimeoutError) as error:
            log.debug("%s: cannot try the lease: %s", self.role, error)
            await self._drop()
            return False
        return bool(row and row[0])

    async def _try_lock(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> tuple[Any, ...] | None:
        cursor = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (READER_LEASES, self.key))
        return await cursor.fetchone()

    async def _keep(self, task: asyncio.Future[None]) -> None:
        """Return as soon as the session is in doubt (or the work ended)."""
        conn = self._conn
        assert conn is not None
        while not task.done():
            await _quiet(conn, task, LEASE_CHECK_S)
            if task.done():
                return
            try:
                async with asyncio.timeout(LEASE_CHECK_TIMEOUT_S):
                    await conn.execute("SELECT 1")
            except (psycopg.Error, OSError, TimeoutError) as error:
                log.warning("%s: the lease's PostgreSQL session is in doubt (%s)", self.role,
                            error or type(error).__name__)
                return

    async def _drop(self) -> None:
        """Close the session: PostgreSQL frees the lock when it sees it end."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(Exception):
                conn.pgconn.finish()  # no goodbye round trip: the server may be out of reach
            with contextlib.suppress(Exception):
                await conn.close()

    def _show(self, held: bool) -> None:
        self.held = held
        self.metrics.reader_lease_held.labels(self.role).set(1 if held else 0)


async def _quiet(conn: psycopg.AsyncConnection[tuple[Any, ...]], task: asyncio.Future[None],
                 seconds: float) -> None:
    """Wait ``seconds``, less if the session's socket turns readable while no query runs (the
    server sends nothing unasked but to end the session) or ``task`` ends."""
    loop = asyncio.get_running_loop()
    stirred: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not stirred.done():
            stirred.set_result(None)

    fd = conn.fileno()
    loop.add_reader(fd, readable)
    try:
        await asyncio.wait([stirred, task], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_reader(fd)
        stirred.cancel()


def lease_for(config: Config, store_uri: str | None, role: str, instance_url: str,
              metrics: Metrics) -> Lease:
    """The role's lease: a PostgreSQL lock in a cluster (a bus over a shared store), else held."""
    if config.bus is not None and store_uri:
        return ReaderLease(store_uri, role, config.cluster.instance_url or instance_url, metrics)
    return SoleLease(role, metrics)


async def lease_holders(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> dict[str, str]:
    """Per role whose lease is held, the holder's instance digest (``holder_digest``)."""
    roles = {key: role for role, key in ROLE_KEYS.items()}
    rows = await (await conn.execute(_HOLDERS, (READER_LEASES,))).fetchall()
    holders = {}
    for key, name in rows:
        prefix, _, rest = str(name or "").partition(" ")
        role, _, digest = rest.partition(" ")
        if prefix == APPLICATION_PREFIX and roles.get(key) == role:
            holders[role] = digest
    return holders
