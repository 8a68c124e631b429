"""Reader leases on a real PostgreSQL: one holder at a time, a standby that takes over when
the holder's session ends, a holder that stops at once when it loses its session, and nobody
working while PostgreSQL refuses connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import psycopg

from scr.bus.leases import LEASE_RETRY_S, ReaderLease
from scr.metrics import Metrics
from servers import PostgresServer

# The holder sees its session end through its socket, at once; the slack covers a busy machine.
STOPPED_WITHIN_S = 0.5
TAKEN_WITHIN_S = LEASE_RETRY_S + 1.5
TICK_S = 0.01
CANCELLED_WITHIN_S = 10.0


class Worker:
    """Work that records when it runs, and when it was stopped."""

    def __init__(self) -> None:
        self.ticks = 0
        self.spells: list[list[float]] = []  # [start, stop] of each spell of work (stop: inf while on)
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.stops: list[float] = []  # every stop (a holder may take the lease again at once)

    async def work(self) -> None:
        self.started_at, self.stopped_at = time.monotonic(), None
        self.spells.append([self.started_at, float("inf")])
        try:
            while True:
                self.ticks += 1
                await asyncio.sleep(TICK_S)
        finally:
            self.stopped_at = self.spells[-1][1] = time.monotonic()
            self.stops.append(self.stopped_at)

    def stopped_since(self, moment: float) -> bool:
        return any(stop >= moment for stop in self.stops)

    @property
    def working(self) -> bool:
        return self.started_at is not None and self.stopped_at is None


async def until(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until ``condition``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(TICK_S / 2)
    return time.monotonic() - started


def terminate(admin_uri: str, application_name: str) -> int:
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = %s", (application_name,)).fetchall()
    return len(rows)


def test_one_holder_a_standby_takes_over_and_a_cut_holder_stops_at_once(
    postgres_server: PostgresServer, postgres_uri: str
) -> None:
    async def scenario() -> None:
        metrics = Metrics()
        first, second = (ReaderLease(postgres_uri, "usage", url, metrics)
                         for url in ("http://a:8787", "http://b:8787"))
        one, two = Worker(), Worker()
        both = (one, two)
        holding = [asyncio.ensure_future(first.hold(one.work))]
        await until(lambda: one.working, TAKEN_WITHIN_S, "the first to take the lease")
        holding.append(asyncio.ensure_future(second.hold(two.work)))
        deadline = time.monotonic() + 2 * LEASE_RETRY_S
        while time.monotonic() < deadline:  # the standby tries, and waits
            assert one.working and not two.working and not second.held
            await asyncio.sleep(TICK_S)
        try:
            # the holder's session ended by the server: it stops at once; then one holds it again
            cut_at = time.monotonic()
            assert terminate(postgres_server.uri, first.application_name) == 1
            await until(lambda: one.stopped_since(cut_at), STOPPED_WITHIN_S, "the holder stopped")
            stopped_s = min(stop for stop in one.stops if stop >= cut_at) - cut_at
            await until(lambda: one.working or two.working, TAKEN_WITHIN_S, "a holder again")
            # the holder dies (its process ends, and its session with it): the standby takes over
            dead = 0 if one.working else 1
            holding[dead].cancel()
            await asyncio.gather(holding[dead], return_exceptions=True)
            alive = two if dead == 0 else one
            taken_s = await until(lambda: alive.working, TAKEN_WITHIN_S, "the standby took over")
            holding[dead] = asyncio.ensure_future((first, second)[dead].hold(both[dead].work))
            await asyncio.sleep(2 * LEASE_RETRY_S)  # the newcomer tries, and waits
            assert alive.working and not both[dead].working
            # PostgreSQL cut off from both: the holder stops, and nobody works until it is back
            postgres_server.refuse_connections(postgres_uri, True)
            try:
                assert postgres_server.cut_connections(postgres_uri) == 2  # the holder's and the standby's
                await until(lambda: not alive.working, STOPPED_WITHIN_S, "the cut-off holder stopped")
                quiet_until = time.monotonic() + 2 * LEASE_RETRY_S
                while time.monotonic() < quiet_until:
                    assert not one.working and not two.working, "working without the lease"
                    await asyncio.sleep(TICK_S)
            finally:
                postgres_server.refuse_connections(postgres_uri, False)
            await until(lambda: one.working or two.working, TAKEN_WITHIN_S + 5, "a holder again")
            await asyncio.sleep(2 * LEASE_RETRY_S)  # the other keeps trying, and waits
            assert one.working != two.working
            print(f"\nthe holder stopped {stopped_s * 1000:.0f} ms after its session was ended; "
                  f"the standby took over {taken_s * 1000:.0f} ms after the holder died")
        finally:
            for task in holding:
                task.cancel()
            _, pending = await asyncio.wait(holding, timeout=CANCELLED_WITHIN_S)
            assert not pending, "a lease's hold() did not end when cancelled"
            await asyncio.sleep(TICK_S * 5)  # the cancelled work notes its stop
        # Two workers at once only in the moment between PostgreSQL ending a holder's session
        # (freeing its lock) and the holder seeing it: never longer than that takes.
        overlaps = [min(a[1], b[1]) - max(a[0], b[0]) for a in one.spells for b in two.spells]
        assert max(overlaps) < STOPPED_WITHIN_S, overlaps

    asyncio.run(scenario())
