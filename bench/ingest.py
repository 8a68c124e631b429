"""Ingest benchmark (issue 2), one run on this machine, every figure against same-run ceilings.

(a) durable ingest: 1,000-event batches over several connections to ``scr serve`` while three
    destinations (local receivers, batched) keep up;
(b) single events offered at 1,000/s: ingest latency and capture → first delivery attempt;
(c) ceilings from the same run: the same server stack decoding the same batches without
    storing them, and the same rows inserted straight into SQLite by a minimal script.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import httpx
import msgspec

from scr.log.entry import LedgerEntry, Provenance, chain_hash, entry_bytes
from scr.schema import canonical_bytes, decode_event
from scr.store import packs
from scr.store.sqlite import SCHEMA, session_key
from scr.testing.servers import free_port

BATCH_EVENTS = 1000
BATCHES = int(os.environ.get("SCR_BENCH_BATCHES", "200"))
CONNECTIONS = 4
LATENCY_RATE_PER_S = 1000
LATENCY_SECONDS = 5
SERVER_START_TIMEOUT_S = 30
DRAIN_TIMEOUT_S = 120
ROOT = Path(__file__).resolve().parent.parent

TEMPLATE = {
    "event_type": "session.completed",
    "event_id": "",
    "timestamp": "2026-11-25T10:00:05Z",
    "session": {"session_id": "", "session_type": "chat", "start_time": "2026-11-25T09:58:00Z",
                "end_time": "2026-11-25T10:00:00Z", "duration_ms": 120000},
    "user": {"user_id": "user_42", "organization_id": "org_bench", "tier": "pro"},
    "usage": {"input_tokens": 1200, "output_tokens": 300, "total_tokens": 1500,
              "model": "gpt-4o", "estimated_cost_usd": 0.0075, "provider": "openai"},
    "outcome": {"status": "success", "final_message": "Here is the summary you asked for.",
                "error_code": None},
    "metadata": {"client_version": "web-2.3.1", "source_ip": "203.0.113.77",
                 "custom_tags": {"feature": "summarize", "region": "eu"}},
}


def event(event_id: str) -> dict[str, Any]:
    value = msgspec.json.decode(msgspec.json.encode(TEMPLATE))
    value["event_id"] = event_id
    value["session"]["session_id"] = "s_" + event_id[:12]
    return value


def make_batches(count: int, size: int = BATCH_EVENTS) -> list[bytes]:
    """Bodies of ``size`` events with random (UUID) ids, as real clients send them."""
    return [msgspec.json.encode([event(uuid.uuid4().hex) for _ in range(size)])
            for _ in range(count)]


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            httpx.post(url, content=b"", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def wait_until_ready(url: str) -> None:
    """Until ``/readyz`` answers 200 (under the supervisor: every process is running)."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


def start(
    args: list[str], log: Path, env: dict[str, str] | None = None,
    before_exec: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """``python args`` logging to ``log``; ``env`` adds to the environment (a baseline's
    PYTHONPATH, say); ``before_exec`` runs in the child first (joining a CPU limit, say)."""
    out = log.open("ab")
    return subprocess.Popen([sys.executable, *args], stdout=out, stderr=out, cwd=ROOT,
                            env={**os.environ, **(env or {})}, preexec_fn=before_exec)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def client_session(connections: int) -> aiohttp.ClientSession:
    """The load generator's client: aiohttp, because httpx's async client cannot offer even
    1,000 requests/s on this machine (it measured ~630/s), which would time the client."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=120),
    )


async def post_all(
    url: str | list[str], bodies: list[bytes], headers: dict[str, str], connections: int = CONNECTIONS,
    events_per_body: int = BATCH_EVENTS,
) -> dict[str, Any]:
    """Send every body over ``connections`` connections; events/s of acknowledged events.

    With several URLs (instances of a cluster), body ``i`` goes to ``url[i % len(url)]``.
    """
    urls = [url] if isinstance(url, str) else url
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for index, body in enumerate(bodies):
        queue.put_nowait((urls[index % len(urls)], body))
    statuses: dict[int, int] = {}
    latencies: list[float] = []

    async def worker(client: aiohttp.ClientSession) -> None:
        while not queue.empty():
            target, body = queue.get_nowait()
            started = time.perf_counter()
            async with client.post(target, data=body, headers=headers) as response:
                await response.read()
            latencies.append(time.perf_counter() - started)
            statuses[response.status] = statuses.get(response.status, 0) + 1

    async with client_session(connections) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(connections)))
        elapsed = time.perf_counter() - began
    events = len(bodies) * events_per_body
    return {"events": events, "seconds": round(elapsed, 3),
            "events_per_s": round(events / elapsed), "statuses": statuses,
            "request_p50_ms": round(statistics.median(latencies) * 1000, 2),
            "request_p99_ms": round(percentile(latencies, 0.99) * 1000, 2)}


def sqlite_ceiling(bodies: list[bytes], folder: Path) -> dict[str, Any]:
    """The same rows, appended straight into SQLite as the writer appends them (its packs,
    ``scr.store.packs``, with the same schema), 1,000 a transaction. The dedup keys are left
    out: the store appends them to a log file beside the database (``scr.store.keylog``)."""
    db = sqlite3.connect(folder / "ceiling.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.executescript(SCHEMA)
    db.executescript(packs.SCHEMA)
    batches = []
    seq, previous = 0, bytes(32)
    for body in bodies:
        rows: list[packs.Row] = []
        for raw in msgspec.json.decode(body, type=list[msgspec.Raw]):
            ev = decode_event(bytes(raw))
            payload = canonical_bytes(ev)
            seq += 1
            stored = entry_bytes(LedgerEntry(seq, "2026-11-25T10:00:05.000000Z", "key:x",
                                             "org_bench", "SESSION_COMPLETION", msgspec.Raw(payload),
                                             Provenance("http", ev.event_id, "key:x")))
            previous = chain_hash(previous, stored)
            rows.append((seq, "org_bench", seq, "SESSION_COMPLETION", "2026-11-25T10:00:05.000000Z",
                         ev.event_id, stored, previous, session_key("org_bench", ev.session.session_id),
                         hashlib.blake2b(payload, digest_size=16).digest()))
        batches.append(rows)
    began = time.perf_counter()
    for rows in batches:
        db.execute("BEGIN IMMEDIATE")
        packs.insert(db, rows)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - began
    db.close()
    events = len(bodies) * BATCH_EVENTS
    return {"events": events, "seconds": round(elapsed, 3), "events_per_s": round(events / elapsed)}


def receiver_items(port: int) -> int:
    count: int = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).json()["items"]
    return count


def config_for(ports: list[int], batch_size: int) -> str:
    lines = ["session_completion_runtime:", "  routing:", "    destinations:"]
    for name, port in zip(("billing", "analytics", "compliance"), ports, strict=True):
        transform = {"billing": "billing_v1", "analytics": "analytics_v2",
                     "compliance": "audit_v1"}[name]
        lines.append(f'      - {{name: {name}, endpoint: "http://127.0.0.1:{port}/", '
                     f"transform: {transform}, batch_size: {batch_size}, batch_wait_ms: 20}}")
    return "\n".join(lines) + "\n"


def create_key(data: Path, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "scr", "keys", "create", "--data", str(data), "--tenant",
         "org_bench", "--role", "admin"], capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, **(env or {})})
    return out.stdout.strip().splitlines()[-1]


@dataclass
class Setup:
    """A running ``scr serve`` with three local receivers as its destinations."""

    url: str
    headers: dict[str, str]
    ports: list[int]
    timing: list[Path]
    server_pid: int


@contextlib.contextmanager
def scr_and_receivers(
    folder: Path, name: str, batch_size: int, timing: bool = False,
    server_env: dict[str, str] | None = None, more_config: str = "",
) -> Iterator[Setup]:
    """Start three receivers and ``scr serve`` routing to them (``more_config``: sections
    added under ``session_completion_runtime``); stop them all afterwards."""
    ports = [free_port() for _ in range(3)]
    timing_files = [folder / f"arrivals-{p}.json" for p in ports] if timing else []
    timing_args = [["--timing", str(t)] for t in timing_files] or [[] for _ in ports]
    receivers = [start(["-m", "bench.receiver", str(p), *extra], folder / "recv.log")
                 for p, extra in zip(ports, timing_args, strict=True)]
    config = folder / f"{name}.yaml"
    config.write_text(config_for(ports, batch_size) + more_config)
    data = folder / f"{name}-data"
    key = create_key(data, server_env)
    port = free_port()
    server = start(["-m", "scr", "serve", "--config", str(config), "--data", str(data),
                    "--port", str(port), "--log-level", "warning"], folder / "serve.log", server_env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url)  # every process of the instance, not only the first to answer
        for p in ports:
            wait_ready(f"http://127.0.0.1:{p}/")
        yield Setup(url, {"authorization": f"Bearer {key}", "content-type": "application/json"},
                    ports, timing_files, server.pid)
    finally:
        stop(server)
        for receiver in receivers:
            stop(receiver)


def durable_ingest(bodies: list[bytes], folder: Path, server_env: dict[str, str] | None = None,
                   on_setup: Callable[[Setup], None] | None = None) -> dict[str, Any]:
    """(a): scr serve with three batched destinations; throughput and destination lag.
    ``on_setup`` sees the running setup first (to watch its processes, say)."""
    with scr_and_receivers(folder, "ingest", BATCH_EVENTS, server_env=server_env) as setup:
        if on_setup is not None:
            on_setup(setup)
        url, headers, ports = setup.url, setup.headers, setup.ports
        lag_samples: list[int] = []

        async def run() -> dict[str, Any]:
            async def sample_lag() -> None:
                async with httpx.AsyncClient(timeout=5) as client:
                    while True:
                        await asyncio.sleep(0.5)
                        answer = await client.get(f"{url}/v1/destinations", headers=headers)
                        lag_samples.append(max(d["lag"] for d in answer.json()["destinations"]))

            sampler = asyncio.create_task(sample_lag())
            result = await post_all(f"{url}/v1/events", bodies, headers)
            sampler.cancel()
            return result

        result = asyncio.run(run())
        sent_done = time.perf_counter()
        total = len(bodies) * BATCH_EVENTS
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline and min(receiver_items(p) for p in ports) < total:
            time.sleep(0.1)
        drain_s = time.perf_counter() - sent_done
        result["drain_after_send_s"] = round(drain_s, 2)
        # the rate at which events are both committed and delivered to all three
        result["end_to_end_events_per_s"] = round(total / (result["seconds"] + drain_s))
        result["delivered_per_destination"] = [receiver_items(p) for p in ports]
        result["lag_samples"] = lag_samples
        third = max(1, len(lag_samples) // 3)
        result["lag_growing"] = bool(
            lag_samples and statistics.mean(lag_samples[-third:]) > 2 * statistics.mean(
                lag_samples[:third]) + 5 * BATCH_EVENTS
        )
        return result


def decode_ceiling(bodies: list[bytes], folder: Path) -> dict[str, Any]:
    port = free_port()
    server = start(["-m", "bench.decode_only", str(port)], folder / "decode.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1/events")
        return asyncio.run(post_all(f"http://127.0.0.1:{port}/v1/events", bodies,
                                    {"content-type": "application/json"}))
    finally:
        stop(server)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Offered(NamedTuple):
    """What the client saw of single events offered at a rate."""

    sent_at: dict[str, float]  # event id: when it was sent (Unix time)
    ingest_ms: list[float]  # each request's answer time
    seconds: float  # from the first send to the last answer


def offer_singles(url: str, headers: dict[str, str], rate_per_s: int, expect: int = 202) -> Offered:
    """``rate_per_s`` single events a second for ``LATENCY_SECONDS`` (after one to warm up),
    each answered ``expect``."""
    total = rate_per_s * LATENCY_SECONDS
    bodies = [(event_id, msgspec.json.encode(event(event_id))) for event_id in
              (uuid.uuid4().hex for _ in range(total))]
    sent_at: dict[str, float] = {}
    ingest_ms: list[float] = []

    async def run() -> float:
        async with client_session(64) as client:
            async with client.post(url, data=bodies[0][1], headers=headers) as warm_up:
                await warm_up.read()
            began = time.perf_counter()

            async def one(index: int) -> None:
                event_id, body = bodies[index]
                await asyncio.sleep(max(0.0, began + index / rate_per_s - time.perf_counter()))
                sent_at[event_id] = time.time()
                started = time.perf_counter()
                async with client.post(url, data=body, headers=headers) as response:
                    await response.read()
                ingest_ms.append((time.perf_counter() - started) * 1000)
                assert response.status == expect

            await asyncio.gather(*(one(i) for i in range(1, total)))
            return time.perf_counter() - began

    return Offered(sent_at, ingest_ms, asyncio.run(run()))


def answered(offered: Offered, rate_per_s: int) -> dict[str, Any]:
    return {
        "offered_per_s": rate_per_s, "events": len(offered.ingest_ms),
        "answered_per_s": round(len(offered.ingest_ms) / offered.seconds),
        "ingest_p50_ms": round(percentile(offered.ingest_ms, 0.5), 2),
        "ingest_p99_ms": round(percentile(offered.ingest_ms, 0.99), 2),
    }


def latency(folder: Path, server_env: dict[str, str] | None = None, rate_per_s: int = LATENCY_RATE_PER_S,
            on_setup: Callable[[Setup], None] | None = None, delivery_batch: int = 1) -> dict[str, Any]:
    """(b): single events at ``rate_per_s`` (1,000/s) for ``LATENCY_SECONDS``, delivered one
    by one (``delivery_batch`` events a webhook at most); ingest latency, capture → first
    delivery attempt, and the rate the server kept up with. ``on_setup`` sees the running
    setup first."""
    with scr_and_receivers(folder, "latency", delivery_batch, timing=True, server_env=server_env) as setup:
        if on_setup is not None:
            on_setup(setup)
        offered = offer_singles(f"{setup.url}/v1/events", setup.headers, rate_per_s)
        time.sleep(2)  # the last deliveries land before the receivers write their timings
    route_ms: list[float] = []
    for path in setup.timing:
        arrivals = msgspec.json.decode(path.read_bytes())
        route_ms += [(arrivals[i] - offered.sent_at[i]) * 1000 for i in offered.sent_at if i in arrivals]
    return {
        **answered(offered, rate_per_s), "delivery_batch": delivery_batch,
        "capture_to_first_attempt_p50_ms": round(percentile(route_ms, 0.5), 2),
        "capture_to_first_attempt_p99_ms": round(percentile(route_ms, 0.99), 2),
        "deliveries_timed": len(route_ms),
    }


def singles_ceiling(folder: Path, rate_per_s: int) -> dict[str, Any]:
    """The same client offering single events to the decode-only server (no commit, no
    destinations): what this machine's client and HTTP stack can take at that rate."""
    port = free_port()
    server = start(["-m", "bench.decode_only", str(port)], folder / "decode.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1/events")
        offered = offer_singles(f"http://127.0.0.1:{port}/v1/events", {"content-type": "application/json"},
                                rate_per_s)
    finally:
        stop(server)
    return answered(offered, rate_per_s)


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="scr-bench-") as tmp:
        folder = Path(tmp)
        print(f"preparing {BATCHES} batches of {BATCH_EVENTS} events …", flush=True)
        bodies = make_batches(BATCHES)
        results: dict[str, Any] = {}
        print("ceiling: SQLite insert of the same rows …", flush=True)
        results["sqlite_ceiling"] = sqlite_ceiling(bodies, folder)
        print("ceiling: decode-only server …", flush=True)
        results["decode_ceiling"] = decode_ceiling(bodies, folder)
        print("durable ingest with 3 destinations …", flush=True)
        results["durable_ingest"] = durable_ingest(bodies, folder)
        print("single-event latency at 1,000/s …", flush=True)
        results["latency"] = latency(folder)
    ingest = results["durable_ingest"]["events_per_s"]
    results["ratios"] = {
        "ingest_vs_decode_ceiling": round(ingest / results["decode_ceiling"]["events_per_s"], 3),
        "ingest_vs_sqlite_ceiling": round(ingest / results["sqlite_ceiling"]["events_per_s"], 3),
    }
    return results
