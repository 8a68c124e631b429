"""Cluster benchmark (scale-out issue): 1, 2 and 3 ``scr serve`` on PostgreSQL + JetStream,
and one instance on PostgreSQL against one on SQLite, with and without the bus, same run; and
the scaling curve: 1, 2 and 4 instances, each limited to ``THROTTLED_SHARE`` of a core
(``bench.cpu_limit``), standing in for one machine each on this 2-core box.

Every scenario starts fresh servers over one real PostgreSQL (pgserver; a fresh database
each) and, with the bus, a fresh nats-server (JetStream, ``sync_interval: always``). One
destination: a webhook receiver on 127.0.0.1 running in this process, so a POST's send time
and the event's arrival are read from one monotonic clock. Each scenario measures

(a) throughput: 1,000-event batches (events of ``TENANTS`` tenants, a platform key) sent
    round-robin over the instances on ``CONNECTIONS`` connections; events/s acknowledged
    (every ``202``), and events/s delivered (the last event at the receiver);
(b) latency: single events offered at ``LATENCY_RATE_PER_S``, round-robin; POST → 202, and
    capture → route (POST sent → event at the receiver);
(c) cost: CPU seconds per 1,000 events of every ``scr serve``, of nats-server and of
    PostgreSQL (all its processes), from /proc/<pid>/stat; group commits from each
    instance's ``scr_commit_groups_total``; on PostgreSQL, how often a writer waited for the
    store's partition write locks (``pg_locks`` sampled).

Figures are ratios against baselines of the same run (N instances / 1 instance; PostgreSQL /
SQLite; bus / no bus). The machine has 2 cores shared by everything, this client included.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import msgspec
import psycopg

from bench.bench_store import create_key
from bench.cpu_limit import CpuLimit
from bench.ingest import BATCH_EVENTS, client_session, event, percentile, post_all, start, stop
from bench.receiver import Receiver
from scr.store.postgres import PARTITION_WRITE_LOCKS
from scr.store.records import ENTRY_TIME_FORMAT
from scr.testing.servers import NatsServer, PostgresServer, free_port

BATCHES = int(os.environ.get("SCR_BENCH_CLUSTER_BATCHES", "40"))
LATENCY_RATE_PER_S = int(os.environ.get("SCR_BENCH_CLUSTER_RATE", "200"))
LATENCY_SECONDS = float(os.environ.get("SCR_BENCH_CLUSTER_LATENCY_S", "4"))
SETTLE_S = float(os.environ.get("SCR_BENCH_CLUSTER_SETTLE_S", "0"))
INSTANCE_COUNTS = (1, 2, 3)
THROTTLED_COUNTS = (1, 2, 4)
# Each throttled instance's share of a core: 4 of them take 0.6 of the 2 cores, leaving the rest
# to PostgreSQL, nats-server and this client, so the instances are what limits the rate.
THROTTLED_SHARE = float(os.environ.get("SCR_BENCH_CLUSTER_SHARE", "0.15"))
TENANTS = 48
PARTITIONS = 12  # shared evenly by 1, 2, 3 or 4 instances
CONNECTIONS = 6  # 2 per instance with 3 instances
OWNERSHIP_POLL_MS = 200
DESTINATION_BATCH = 1000
DESTINATION_BATCH_WAIT_MS = 5
READY_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 120.0
LOCK_SAMPLE_S = 0.02
FSYNC_PROBE_S = 1.0
FSYNC_PROBE_BYTES = 4096
POLL_S = 0.05
ONLY = os.environ.get("SCR_BENCH_CLUSTER_ONLY")  # run these scenarios alone (names, comma-separated)
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    """One setup: how many instances, on which store, with or without the bus."""

    instances: int
    store: str  # "postgresql" | "sqlite"
    bus: bool
    # False: nats-server's default sync (not durable against power loss): a diagnosis only
    nats_sync: bool = True
    cpu_share: float = 0.0  # each instance limited to this share of a core (0: unlimited)

    @property
    def name(self) -> str:
        bus = ("bus" if self.nats_sync else "bus_nosync") if self.bus else "no_bus"
        return f"{self.store}_{bus}_{self.instances}" + ("_throttled" if self.cpu_share else "")

    @property
    def connections(self) -> int:
        """Two per instance for the scaling curve (the same offered load per instance)."""
        return 2 * self.instances if self.cpu_share else CONNECTIONS

    @property
    def destination(self) -> bool:
        """The scaling curve measures ingest and append alone: one destination runs on one
        instance (its home partition's owner), and would time that instance's share alone."""
        return not self.cpu_share


SCENARIOS = [
    Scenario(1, "sqlite", False), Scenario(1, "postgresql", False), Scenario(1, "sqlite", True),
    *(Scenario(n, "postgresql", True) for n in INSTANCE_COUNTS),
    # where the bus's time goes: the same cluster without an fsync per JetStream write
    Scenario(1, "postgresql", True, nats_sync=False), Scenario(3, "postgresql", True, nats_sync=False),
    # the scaling curve: every instance limited to the same share of a core
    *(Scenario(n, "postgresql", True, cpu_share=THROTTLED_SHARE) for n in THROTTLED_COUNTS),
]


# ----- cost: CPU from /proc, counters from /metrics ----------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of a process and its live children (PostgreSQL: postmaster and backends;
    `scr serve`: the supervisor and its edges, writer and readers)."""
    total = cpu_seconds(root)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2:].split()[1]) == root:
                    total += cpu_seconds(int(entry.name))
    return total


def machine_cpu_seconds() -> tuple[float, float]:
    """CPU seconds of the whole machine so far, (busy, iowait), from the first line of /proc/stat."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, iowait, irq, softirq, steal = ticks[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy / CLOCK_TICKS_PER_S, iowait / CLOCK_TICKS_PER_S


def counters(url: str) -> dict[str, float]:
    """This instance's counters that the benchmark reads, from its /metrics."""
    wanted = ("scr_commit_groups_total", "scr_events_accepted_total", "scr_bus_appended_total")
    found = dict.fromkeys(wanted, 0.0)
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        name, _, value = line.partition(" ")
        if name in found:
            found[name] = float(value)
    return found


@dataclass
class Costs:
    """CPU seconds and counters of every process of a scenario, read at one moment."""

    instances: list[float]
    nats: float
    postgres: float
    client: float
    machine: tuple[float, float]
    counters: list[dict[str, float]]
    at: float = field(default_factory=time.perf_counter)


class LockWaits:
    """Samples ``pg_locks``: the share of samples in which a writer waited for a ledger write
    lock (a partition's, ``PARTITION_WRITE_LOCKS``: a pg_advisory_xact_lock taken by a group
    commit for each partition it appends to), and the most sessions open on the database
    (every instance's writer, readers, ownership)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.samples = 0
        self.waiting = 0
        self.most_waiting = 0
        self.most_connections = 0  # sessions on the scenario's database, this sampler's aside
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LockWaits:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with psycopg.connect(self.uri, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND classid = %s AND objsubid = 2), "
                    "(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid())", (PARTITION_WRITE_LOCKS,)).fetchone()
                waiters = int(row[0]) if row else 0
                self.most_connections = max(self.most_connections, int(row[1]) if row else 0)
                self.samples += 1
                self.waiting += waiters > 0
                self.most_waiting = max(self.most_waiting, waiters)
                time.sleep(LOCK_SAMPLE_S)

    def figures(self) -> dict[str, Any]:
        return {"samples": self.samples,
                "share_with_a_writer_waiting": round(self.waiting / max(1, self.samples), 3),
                "most_writers_waiting": self.most_waiting,
                "most_connections": self.most_connections}


def fsync_ceiling(folder: Path) -> dict[str, Any]:
    """How many 4 KiB write + fsync pairs this disk does per second, one after another: the
    ceiling of a store that syncs every write on its own (JetStream with sync_interval: always)."""
    path = folder / "fsync-probe"
    count = 0
    with path.open("wb") as out:
        began = time.perf_counter()
        while time.perf_counter() - began < FSYNC_PROBE_S:
            out.write(os.urandom(FSYNC_PROBE_BYTES))
            out.flush()
            os.fsync(out.fileno())
            count += 1
        elapsed = time.perf_counter() - began
    path.unlink()
    return {"fsyncs_per_s": round(count / elapsed), "write_bytes": FSYNC_PROBE_BYTES}


# ----- one scenario --------------------------------------------------------------------------


@dataclass
class Cluster:
    """The running servers of one scenario."""

    urls: list[str]
    procs: list[Any]
    headers: dict[str, str]
    nats: NatsServer | None
    postgres: PostgresServer
    store_uri: str | None
    limits: list[CpuLimit] = field(default_factory=list)

    def costs(self) -> Costs:
        nats_pid = self.nats.proc.pid if self.nats is not None and self.nats.proc is not None else 0
        return Costs(
            instances=[tree_cpu_seconds(p.pid) for p in self.procs],  # the supervisor and its children
            nats=cpu_seconds(nats_pid) if nats_pid else 0.0,
            postgres=tree_cpu_seconds(self.postgres.postmaster_pid()),
            client=sum(os.times()[:2]),
            machine=machine_cpu_seconds(),
            counters=[counters(url) for url in self.urls],
        )


def config_text(scenario: Scenario, hook_port: int, nats: NatsServer | None) -> str:
    lines = ["session_completion_runtime:"]
    if nats is not None:
        lines += [f"  bus: {nats.url}",
                  f"  cluster: {{partitions: {PARTITIONS}, ownership_poll_ms: {OWNERSHIP_POLL_MS}}}"]
    if not scenario.destination:
        return "\n".join([*lines, "  routing:", "    destinations: []"]) + "\n"
    lines += ["  routing:", "    destinations:",
              f'      - {{name: hook, endpoint: "http://127.0.0.1:{hook_port}/", transform: billing_v1, '
              f"batch_size: {DESTINATION_BATCH}, batch_wait_ms: {DESTINATION_BATCH_WAIT_MS}}}"]
    return "\n".join(lines) + "\n"


def wait_for(check: Any, what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            if check():
                return
        time.sleep(POLL_S)
    raise RuntimeError(f"timed out waiting for {what}")


def balanced(urls: list[str], headers: dict[str, str]) -> bool:
    """Every partition owned, by exactly the scenario's instances, each with a fair share."""
    view = httpx.get(f"{urls[0]}/v1/cluster", headers=headers, timeout=5).json()
    shares = [len(i["partitions"]) for i in view["instances"]]
    return (len(shares) == len(urls) and sum(shares) == PARTITIONS
            and max(shares) - min(shares) <= 1)


@contextlib.contextmanager
def cluster(scenario: Scenario, folder: Path, postgres: PostgresServer, hook_port: int) -> Iterator[Cluster]:
    """Start a scenario's nats-server (if any) and instances; stop them afterwards."""
    folder.mkdir(parents=True)
    nats = NatsServer(folder / "nats", scenario.nats_sync).start() if scenario.bus else None
    uri = postgres.fresh_database() if scenario.store == "postgresql" else None
    where = ["--store", uri] if uri else ["--data", str(folder / "data-0")]
    key = create_key(where, role="platform")
    config = folder / "scr.yaml"
    config.write_text(config_text(scenario, hook_port, nats))
    ports = [free_port() for _ in range(scenario.instances)]
    procs = []
    limits = [CpuLimit(f"scr-bench-{uuid.uuid4().hex[:8]}-{index}", scenario.cpu_share)
              for index in range(scenario.instances)] if scenario.cpu_share else []
    try:
        for index, port in enumerate(ports):
            store = ["--store", uri] if uri else []
            procs.append(start(["-m", "scr", "serve", "--config", str(config), *store,
                                "--data", str(folder / f"data-{index}"), "--port", str(port),
                                "--log-level", "warning"], folder / f"serve-{index}.log",
                               before_exec=limits[index].join if limits else None))
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        for url in urls:
            wait_for(lambda url=url: httpx.get(f"{url}/readyz", timeout=2).status_code == 200,
                     f"{url} ready")
        if nats is not None:
            wait_for(lambda: balanced(urls, headers), "the partitions shared by every instance")
        yield Cluster(urls, procs, headers, nats, postgres, uri, limits)
    finally:
        for proc in procs:
            stop(proc)
        if nats is not None:
            nats.stop()
        for limit in limits:
            limit.close()


def tenant_events(count: int) -> list[dict[str, Any]]:
    """``count`` events with random ids, spread over ``TENANTS`` tenants (so over partitions)."""
    made = []
    for number in range(count):
        value = event(uuid.uuid4().hex)
        value["user"]["organization_id"] = f"org_{number % TENANTS:02d}"
        made.append(value)
    return made


def appended_at(store_uri: str, event_ids: list[str]) -> dict[str, float]:
    """When each event was appended: its ledger entry's time (the writer's clock at its group
    commit, UTC), as seconds since the epoch."""
    with psycopg.connect(store_uri) as conn:
        rows = conn.execute("SELECT event_id, ts FROM ledger WHERE event_id = ANY(%s)",
                            (event_ids,)).fetchall()
    return {event_id: datetime.strptime(ts, ENTRY_TIME_FORMAT).replace(tzinfo=UTC).timestamp()
            for event_id, ts in rows}


def appended_events(store_uri: str) -> int:
    with psycopg.connect(store_uri) as conn:
        row = conn.execute("SELECT count(*) FROM ledger WHERE kind = 'SESSION_COMPLETION'").fetchone()
    return int(row[0]) if row else 0


async def wait_appended(store_uri: str, total: int) -> float:
    """Wait until the ledger holds ``total`` events; when it did (perf_counter)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while await asyncio.to_thread(appended_events, store_uri) < total and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return time.perf_counter()


async def wait_delivered(receiver: Receiver, total: int) -> float:
    """Wait until the receiver holds ``total`` items; when the last one came (perf_counter)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while receiver.items < total and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return time.perf_counter()


def cost_figures(before: Costs, after: Costs, events: int) -> dict[str, Any]:
    """CPU per 1,000 events of each process, the cores kept busy, and group commits."""
    seconds = after.at - before.at
    per_k = 1000 / events
    instances = [a - b for a, b in zip(after.instances, before.instances, strict=True)]
    nats, postgres = after.nats - before.nats, after.postgres - before.postgres
    client = after.client - before.client
    commits = [a["scr_commit_groups_total"] - b["scr_commit_groups_total"]
               for a, b in zip(after.counters, before.counters, strict=True)]
    appended = [a["scr_events_accepted_total"] - b["scr_events_accepted_total"]
                for a, b in zip(after.counters, before.counters, strict=True)]
    total_commits = sum(commits)
    ours = sum(instances) + nats + postgres + client
    machine_busy = after.machine[0] - before.machine[0]
    return {
        "cpu_s_per_1000_events": {
            "per_instance": [round(c * per_k, 4) for c in instances],
            "instances_total": round(sum(instances) * per_k, 4),
            "nats": round(nats * per_k, 4), "postgres": round(postgres * per_k, 4),
            "client_and_receiver": round(client * per_k, 4),
        },
        "cores_busy": round(ours / seconds, 2),
        # whatever else ran on the machine meanwhile (other users' tests): it skews the figures
        "cores_busy_outside_benchmark": round(max(0.0, machine_busy - ours) / seconds, 2),
        "iowait_cores": round((after.machine[1] - before.machine[1]) / seconds, 2),
        "appended_per_instance": [int(a) for a in appended],
        "group_commits_per_instance": [int(c) for c in commits],
        "group_commits_per_s": round(total_commits / seconds),
        "events_per_group_commit": round(sum(appended) / total_commits, 1) if total_commits else None,
    }


async def throughput(
    setup: Cluster, receiver: Receiver | None, bodies: list[bytes], connections: int
) -> dict[str, Any]:
    """(a): batches round-robin; acknowledged events/s, and delivered events/s (appended
    events/s without a destination), with their cost."""
    total = len(bodies) * BATCH_EVENTS
    uri = setup.store_uri or ""  # without a destination (the scaling curve): PostgreSQL
    base = receiver.items if receiver is not None else await asyncio.to_thread(appended_events, uri)
    throttled_before = [limit.throttled() for limit in setup.limits]
    before = await asyncio.to_thread(setup.costs)
    waits = LockWaits(setup.store_uri) if setup.store_uri else None
    with waits or contextlib.nullcontext():
        began = time.perf_counter()
        sent = await post_all([f"{u}/v1/events" for u in setup.urls], bodies, setup.headers, connections)
        # a 503 (JetStream did not ack in time) may have stored part of its batch: wait for the
        # acknowledged events; whatever else arrives is counted too
        acknowledged = sent["statuses"].get(202, 0) * BATCH_EVENTS
        if receiver is not None:
            last = await wait_delivered(receiver, base + acknowledged)
        else:
            last = await wait_appended(uri, base + acknowledged)
    after = await asyncio.to_thread(setup.costs)
    result = {
        "events": total, "statuses": sent["statuses"], "acknowledged": acknowledged,
        "acknowledged_events_per_s": round(acknowledged / sent["seconds"]),
        "request_p50_ms": sent["request_p50_ms"], "request_p99_ms": sent["request_p99_ms"],
        **cost_figures(before, after, total),
    }
    if receiver is not None:
        delivered = receiver.items - base
        result |= {"delivered": delivered, "delivered_events_per_s": round(delivered / (last - began)),
                   "delivery_lag_after_last_ack_s": round(last - began - sent["seconds"], 2)}
    else:
        appended = await asyncio.to_thread(appended_events, uri) - base
        result |= {"appended": appended, "appended_events_per_s": round(appended / (last - began)),
                   "append_lag_after_last_ack_s": round(last - began - sent["seconds"], 2)}
    if waits is not None:
        result["write_lock"] = waits.figures()
    if setup.limits:  # whether the instances were what limited the rate: each near its share
        seconds = after.at - before.at
        result["cpu_limit"] = {
            "share_of_a_core": setup.limits[0].share,
            "cores_used_per_instance": [round((a - b) / seconds, 3)
                                        for a, b in zip(after.instances, before.instances, strict=True)],
            "periods_throttled_per_instance": [
                limit.throttled()["periods_throttled"] - was["periods_throttled"]
                for limit, was in zip(setup.limits, throttled_before, strict=True)],
        }
    return result


async def latency(setup: Cluster, receiver: Receiver) -> dict[str, Any]:
    """(b): single events at a fixed rate, round-robin; POST → 202 and capture → route."""
    count = int(LATENCY_RATE_PER_S * LATENCY_SECONDS)
    events = [(e["event_id"], msgspec.json.encode(e)) for e in tenant_events(count)]
    urls = [f"{u}/v1/events" for u in setup.urls]
    sent_at: dict[str, float] = {}
    ingest_ms: list[float] = []
    statuses: dict[int, int] = {}
    acknowledged: list[str] = []
    async with client_session(64) as client:
        began = time.perf_counter()

        async def one(index: int) -> None:
            event_id, body = events[index]
            await asyncio.sleep(max(0.0, began + index / LATENCY_RATE_PER_S - time.perf_counter()))
            sent_at[event_id] = time.monotonic()
            async with client.post(urls[index % len(urls)], data=body, headers=setup.headers) as answer:
                await answer.read()
            ingest_ms.append((time.monotonic() - sent_at[event_id]) * 1000)
            statuses[answer.status] = statuses.get(answer.status, 0) + 1
            if answer.status == 202:
                acknowledged.append(event_id)

        await asyncio.gather(*(one(i) for i in range(count)))
    # by id: the receiver's count also holds late arrivals of the throughput phase
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline and not all(i in receiver.arrivals for i in acknowledged):
        await asyncio.sleep(0.01)
    route_ms = [(receiver.arrivals[i] - sent) * 1000 for i, sent in sent_at.items() if i in receiver.arrivals]
    return {**await stages(setup, sent_at, receiver),
        "offered_per_s": LATENCY_RATE_PER_S, "events": count, "statuses": statuses,
        "ingest_p50_ms": round(percentile(ingest_ms, 0.5), 2),
        "ingest_p99_ms": round(percentile(ingest_ms, 0.99), 2),
        "capture_to_route_p50_ms": round(percentile(route_ms, 0.5), 2),
        "capture_to_route_p99_ms": round(percentile(route_ms, 0.99), 2),
        "capture_to_route_mean_ms": round(statistics.mean(route_ms), 2),
        "delivered": len(route_ms),
        "acknowledged_not_delivered": sum(1 for i in acknowledged if i not in receiver.arrivals),
    }


async def stages(setup: Cluster, sent_at: dict[str, float], receiver: Receiver) -> dict[str, Any]:
    """Where capture → route goes, split at the append: POST sent → the entry's time (edge,
    JetStream publish, the owner's fetch, up to its group commit) and that time → the event at
    the receiver (the commit, the ledger follow, the destination's batch wait and its POST).
    The entry's time is the writer's wall clock, read against this process's by one offset
    (one machine, one clock)."""
    if setup.store_uri is None:
        return {}
    wall = time.time() - time.monotonic()
    appended = await asyncio.to_thread(appended_at, setup.store_uri, list(sent_at))
    to_append = [(appended[i] - wall - sent) * 1000 for i, sent in sent_at.items() if i in appended]
    to_route = [(receiver.arrivals[i] + wall - appended[i]) * 1000
                for i in sent_at if i in appended and i in receiver.arrivals]
    if not to_append or not to_route:
        return {}
    return {"capture_to_append_p50_ms": round(percentile(to_append, 0.5), 2),
            "append_to_route_p50_ms": round(percentile(to_route, 0.5), 2)}


async def warm_up(setup: Cluster, receiver: Receiver | None) -> None:
    """One small batch through each instance, delivered (or appended), before anything is timed."""
    base = receiver.items if receiver is not None else await asyncio.to_thread(
        appended_events, setup.store_uri or "")
    async with aiohttp.ClientSession() as client:
        for url in setup.urls:
            body = msgspec.json.encode(tenant_events(TENANTS))
            async with client.post(f"{url}/v1/events", data=body, headers=setup.headers) as answer:
                await answer.read()
                if answer.status != 202:
                    raise RuntimeError(f"warm-up: {url} answered {answer.status}")
    if receiver is not None:
        await wait_delivered(receiver, base + TENANTS * len(setup.urls))
    else:
        await wait_appended(setup.store_uri or "", base + TENANTS * len(setup.urls))


async def run_scenario(
    scenario: Scenario, folder: Path, postgres: PostgresServer, bodies: list[bytes]
) -> dict[str, Any]:
    receiver = Receiver(timing=True, clock=time.monotonic)
    hook_port = free_port()
    hook = await asyncio.start_server(receiver.handle, "127.0.0.1", hook_port)
    try:
        context = cluster(scenario, folder / scenario.name, postgres, hook_port)
        setup = await asyncio.to_thread(context.__enter__)
        try:
            if not scenario.destination:  # the scaling curve: ingest and append only
                await warm_up(setup, None)
                return {"throughput": await throughput(setup, None, bodies, scenario.connections)}
            await warm_up(setup, receiver)
            result = {"throughput": await throughput(setup, receiver, bodies, scenario.connections)}
            await asyncio.sleep(SETTLE_S)  # the readers (usage) count the burst before latency is timed
            return {**result, "latency": await latency(setup, receiver)}
        finally:
            await asyncio.to_thread(context.__exit__, None, None, None)
    finally:
        hook.close()


# ----- the run and its ratios ---------------------------------------------------------------


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    def tp(name: str, key: str = "acknowledged_events_per_s") -> float:
        value: float = results[name]["throughput"][key]
        return value

    def p99(name: str) -> float:
        value: float = results[name]["latency"]["capture_to_route_p99_ms"]
        return value

    def compare(name: str, baseline: str) -> dict[str, float | None]:
        """Throughput (acknowledged, delivered) and capture→route p99 of one scenario over another."""
        return {
            "acknowledged_events_per_s": ratio(tp(name), tp(baseline)),
            "delivered_events_per_s": ratio(tp(name, "delivered_events_per_s"),
                                            tp(baseline, "delivered_events_per_s")),
            "capture_to_route_p99": ratio(p99(name), p99(baseline)),
        }

    one = "postgresql_bus_1"
    figures: dict[str, Any] = {}
    for n in INSTANCE_COUNTS[1:]:
        figures[f"instances_{n}_vs_1"] = compare(f"postgresql_bus_{n}", one)
    for bus in ("no_bus", "bus"):
        figures[f"postgresql_vs_sqlite_{bus}"] = compare(f"postgresql_{bus}_1", f"sqlite_{bus}_1")
    figures["instances_3_vs_1_bus_nosync"] = {
        "acknowledged_events_per_s": ratio(tp("postgresql_bus_nosync_3"), tp("postgresql_bus_nosync_1")),
        "delivered_events_per_s": ratio(tp("postgresql_bus_nosync_3", "delivered_events_per_s"),
                                        tp("postgresql_bus_nosync_1", "delivered_events_per_s")),
    }
    figures["bus_nosync_vs_bus_1"] = {
        "acknowledged_events_per_s": ratio(tp("postgresql_bus_nosync_1"), tp(one)),
    }
    fsyncs = results["disk"]["fsyncs_per_s"]
    for n in THROTTLED_COUNTS[1:]:  # the scaling curve (targets: 2 → 1.8×, 4 → 3.2×)
        name, alone = f"postgresql_bus_{n}_throttled", "postgresql_bus_1_throttled"
        figures[f"throttled_instances_{n}_vs_1"] = {
            "acknowledged_events_per_s": ratio(tp(name), tp(alone)),
            "appended_events_per_s": ratio(tp(name, "appended_events_per_s"),
                                           tp(alone, "appended_events_per_s")),
        }
    figures["bus_acknowledged_vs_disk_fsyncs_per_s"] = {
        f"instances_{n}": ratio(tp(f"postgresql_bus_{n}"), fsyncs) for n in INSTANCE_COUNTS
    }
    for store in ("postgresql", "sqlite"):
        figures[f"bus_vs_no_bus_{store}"] = compare(f"{store}_bus_1", f"{store}_no_bus_1")
    return figures


def main() -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="scr-bench-cluster-"))
    folder.chmod(0o755)  # as root, pgserver runs postgres as its own user
    postgres = PostgresServer(folder / "pgdata").start()
    began = time.perf_counter()
    try:
        print(f"preparing {BATCHES} batches of {BATCH_EVENTS} events over {TENANTS} tenants …", flush=True)
        bodies = [msgspec.json.encode(tenant_events(BATCH_EVENTS)) for _ in range(BATCHES)]
        results: dict[str, Any] = {
            "setup": {"cores": os.cpu_count(), "batches": BATCHES, "batch_events": BATCH_EVENTS,
                      "connections": CONNECTIONS, "throttled_share_of_a_core": THROTTLED_SHARE,
                      "tenants": TENANTS, "partitions": PARTITIONS,
                      "latency_offered_per_s": LATENCY_RATE_PER_S, "latency_seconds": LATENCY_SECONDS,
                      "destination": {"batch_size": DESTINATION_BATCH,
                                      "batch_wait_ms": DESTINATION_BATCH_WAIT_MS}}}
        results["disk"] = fsync_ceiling(folder)
        for scenario in [s for s in SCENARIOS if ONLY is None or s.name in ONLY.split(",")]:
            print(f"{scenario.name}: {scenario.instances} instance(s), {scenario.store}, "
                  f"{'bus' if scenario.bus else 'no bus'} …", flush=True)
            results[scenario.name] = asyncio.run(run_scenario(scenario, folder, postgres, bodies))
    finally:
        postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)
    results["ratios"] = ratios(results) if ONLY is None else {}  # ratios need every scenario
    results["run_seconds"] = round(time.perf_counter() - began, 1)
    return results
