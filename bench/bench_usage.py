"""Usage benchmark (usage issue): the aggregator's CPU per event, and ``GET /v1/usage``'s p99.

(a) A SQLite ledger of ``SCR_BENCH_USAGE_EVENTS`` events (1,000-event batches committed by the
in-process app: 200 users, 5 models, a session per event, timestamps advancing as at 20k
events/s) is counted by the usage reader in its rounds (``FETCH_ENTRIES``), as ``scr: usage``
does: CPU time per event of counting
(decode of the few fields, billing_v1's cost, the group's sums), of the session lookup, and
of the write (one upsert per distinct key and the cursor, in the writer's transaction; here
the in-process committer, so the write's CPU is on its thread and counted as wall time).

(b) ``GET /v1/usage`` for a month by day and model, through the real app (Starlette's test
client, in-process), over ``SCR_BENCH_USAGE_ROWS`` synthetic minute rows (and their quarter
hours, which this query reads) written straight into the store: p50 and p99 of
``SCR_BENCH_USAGE_QUERIES`` calls.

(c) What the aggregator costs ingest: the same 1,000-event batches (as in (a): 200 users, 5
models) sent to ``scr serve`` with three batched destinations, once with ``scr: usage``
paused (SIGSTOP: it takes no CPU) and once running, alternated ``SCR_BENCH_USAGE_PAIRS``
times; events/s each way, and how long after the last batch the aggregates hold every event
(``GET /v1/usage``'s totals), which shows whether the aggregator keeps up.
Runs in about a minute and a half on the 2-core machine.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psutil
from starlette.testclient import TestClient

from bench.ingest import TEMPLATE, percentile, post_all, scr_and_receivers
from scr.config import default_config
from scr.metrics import Metrics
from scr.route.price_file import live_prices
from scr.runtime import Runtime
from scr.security.auth import create_key
from scr.security.keys import Role
from scr.server import create_app
from scr.store.records import DurationRow, UsageRow
from scr.usage import aggregate
from scr.usage.reader import FETCH_ENTRIES, UsageReader

EVENTS = int(os.environ.get("SCR_BENCH_USAGE_EVENTS", "50000"))
# a million minute rows: ~10M events at the 0.1 row per event measured in (a)
ROWS = int(os.environ.get("SCR_BENCH_USAGE_ROWS", "1000000"))
QUERIES = int(os.environ.get("SCR_BENCH_USAGE_QUERIES", "50"))
INGEST_BATCHES = int(os.environ.get("SCR_BENCH_USAGE_BATCHES", "150"))
PAIRS = int(os.environ.get("SCR_BENCH_USAGE_PAIRS", "2"))
CATCH_UP_TIMEOUT_S = 120
BATCH_EVENTS = 1000
USERS = 200
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-pro", "gpt-5"]
MINUTES_PER_DAY = 1440
DAYS_PER_MONTH = 30
FIRST_EVENT_AT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
INGEST_PER_S = 20_000  # the events' timestamps advance as at this ingest rate
FIRST_MINUTE = int(datetime(2025, 11, 10, tzinfo=UTC).timestamp()) // 60  # a Monday


def batch(number: int, pick: random.Random) -> list[dict[str, Any]]:
    events = []
    for n in range(BATCH_EVENTS):
        event: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(TEMPLATE))
        event["event_id"] = f"evt_{number}_{n}"
        event["session"]["session_id"] = f"sess_{number}_{n}"
        event["user"]["user_id"] = f"user_{pick.randrange(USERS)}"
        event["usage"]["model"] = pick.choice(MODELS)
        at = FIRST_EVENT_AT + timedelta(seconds=(number * BATCH_EVENTS + n) / INGEST_PER_S)
        event["timestamp"] = at.isoformat().replace("+00:00", "Z")
        events.append(event)
    return events


def count_events(runtime: Runtime) -> dict[str, Any]:
    """(a): the usage reader over the whole ledger, timed by part."""
    store = runtime.store
    written: list[float] = []

    async def write(rows: list[UsageRow], after_seq: int, seq: int, alerts: list[dict[str, Any]],
                    durations: list[DurationRow], judged: int) -> bool:  # no budgets or anomalies here
        started = time.perf_counter()
        accepted = await runtime.committer.run(
            lambda tx: store.add_usage(tx, rows, after_seq, seq, durations), durable=False)
        written.append(time.perf_counter() - started)
        return accepted

    reader = UsageReader(store, live_prices(runtime.data_dir), write, Metrics())
    reader.load()
    prices = live_prices(runtime.data_dir).current()
    counting = sessions = 0.0
    rows_written = 0

    async def run() -> None:
        nonlocal counting, sessions, rows_written
        while True:
            entries = store.entries_after(reader.cursor, FETCH_ENTRIES)
            if not entries:
                return
            started = time.thread_time()
            group = aggregate.count_group(entries, prices)
            counted = time.thread_time()
            aggregate.count_sessions(group, entries[0].seq, store)
            rows, durations = group.rows(), group.duration_rows()
            sessions_done = time.thread_time()
            counting += counted - started
            sessions += sessions_done - counted
            rows_written += len(rows)
            assert await reader.write(rows, reader.cursor, entries[-1].seq, [], durations, 0)
            reader.cursor = entries[-1].seq

    asyncio.run(run())
    per_event = 1e6 / EVENTS
    return {
        "events": EVENTS,
        "rows_written": rows_written,
        "rows_per_event": round(rows_written / EVENTS, 3),
        "count_us_per_event": round(counting * per_event, 2),
        "sessions_us_per_event": round(sessions * per_event, 2),
        "write_wall_us_per_event": round(sum(written) * per_event, 2),
        "total_us_per_event": round((counting + sessions + sum(written)) * per_event, 2),
    }


def synthetic_rows(pick: random.Random) -> list[UsageRow]:
    """``ROWS`` minute rows of org_bench over 30 days (distinct keys), as the reader writes them."""
    rows = []
    for n in range(ROWS):
        minute = FIRST_MINUTE + n * DAYS_PER_MONTH * MINUTES_PER_DAY // ROWS
        tokens = pick.randrange(1, 10_000)
        rows.append(UsageRow(
            "org_bench", minute, MODELS[n % len(MODELS)], f"user_{n % USERS}", "chat", "success",
            "pro", "openai", 1, 1, tokens, 0, tokens, 0, 0, 0, 1000, 0, 0,
            f"0.{pick.randrange(10**10):010d}", "0.0075",
        ))
    return rows


def query_month(client: TestClient, key: str) -> dict[str, Any]:
    """(b): ``GET /v1/usage`` for the month by day and model, ``QUERIES`` times."""
    params = {"from": "2025-11-10T00:00:00Z", "to": "2025-12-10T00:00:00Z", "window": "day",
              "group_by": "model"}
    headers = {"authorization": f"Bearer {key}"}
    took: list[float] = []
    for _ in range(QUERIES):
        started = time.perf_counter()
        answer = client.get("/v1/usage", params=params, headers=headers)
        took.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text
    assert answer.json()["totals"]["events"] == ROWS
    return {"minute_rows": ROWS, "queries": QUERIES,
            "p50_ms": round(percentile(took, 0.5) * 1000, 1),
            "p99_ms": round(percentile(took, 0.99) * 1000, 1)}


def ingest_cost(pick: random.Random) -> dict[str, Any]:
    """(c): ingest's events/s with ``scr: usage`` paused and running, alternated."""
    bodies = [msgspec.json.encode(batch(number, pick)) for number in range(INGEST_BATCHES)]
    runs: dict[str, list[dict[str, Any]]] = {"usage_paused": [], "usage_running": []}
    with tempfile.TemporaryDirectory(prefix="scr-bench-usage-ingest-") as tmp:
        for pair in range(PAIRS):
            for mode in runs:
                folder = Path(tmp) / f"{mode}-{pair}"
                folder.mkdir()
                runs[mode].append(_ingest_once(bodies, folder, paused=mode == "usage_paused"))
    rates = {mode: [run["events_per_s"] for run in done] for mode, done in runs.items()}
    best = {mode: max(values) for mode, values in rates.items()}
    return {
        **runs,
        "events_per_s_range": {mode: [min(values), max(values)] for mode, values in rates.items()},
        "cost_of_usage_share": round(1 - best["usage_running"] / best["usage_paused"], 3),
    }


def _ingest_once(bodies: list[bytes], folder: Path, paused: bool) -> dict[str, Any]:
    with scr_and_receivers(folder, "usage", BATCH_EVENTS) as setup:
        usage = next(child for child in psutil.Process(setup.server_pid).children(recursive=True)
                     if "scr: usage" in " ".join(child.cmdline()))
        if paused:
            usage.suspend()
        try:
            sent = asyncio.run(post_all(f"{setup.url}/v1/events", bodies, setup.headers))
        finally:
            usage.resume()
        sent_at = time.perf_counter()
        _wait_counted(setup.url, setup.headers, len(bodies) * BATCH_EVENTS)
        return {"events_per_s": sent["events_per_s"],
                "aggregates_complete_after_s": round(time.perf_counter() - sent_at, 2)}


def _wait_counted(url: str, headers: dict[str, str], events: int) -> None:
    """Until ``GET /v1/usage`` counts every event sent (the batches' day)."""
    day = FIRST_EVENT_AT.replace(hour=0)
    params = {"from": day.isoformat().replace("+00:00", "Z"), "window": "day",
              "to": (day + timedelta(days=1)).isoformat().replace("+00:00", "Z")}
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    while time.monotonic() < deadline:
        answer = httpx.get(f"{url}/v1/usage", params=params, headers=headers, timeout=10)
        if answer.json()["totals"]["events"] >= events:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the usage aggregates did not count {events} events in {CATCH_UP_TIMEOUT_S} s")


def main() -> dict[str, Any]:
    pick = random.Random(16)
    with tempfile.TemporaryDirectory(prefix="scr-bench-usage-") as folder:
        data = Path(folder) / "data"
        app = create_app(default_config(), data)
        with TestClient(app) as client:
            runtime: Runtime = app.state.runtime
            key = create_key(runtime.committer, "org_bench", Role.ADMIN).key
            headers = {"authorization": f"Bearer {key}"}
            for number in range(EVENTS // BATCH_EVENTS):
                posted = client.post("/v1/events", json=batch(number, pick), headers=headers)
                assert posted.status_code == 202, posted.text
            aggregator = count_events(runtime)
            rows = synthetic_rows(pick)
            last = runtime.store.last_seq()
            asyncio.run(_write_rows(runtime, rows, last))
            query = query_month(client, key)
    return {"aggregator": aggregator, "get_usage_month_by_day_and_model": query,
            "ingest_with_usage": ingest_cost(pick)}


async def _write_rows(runtime: Runtime, rows: list[UsageRow], cursor: int) -> None:
    """The synthetic rows, in the reader's own write (its cursor stays where it is)."""
    for start in range(0, len(rows), 10_000):
        part = rows[start:start + 10_000]
        assert await runtime.committer.run(
            lambda tx, part=part: runtime.store.add_usage(tx, part, cursor, cursor))  # type: ignore[misc]


if __name__ == "__main__":
    print(msgspec.json.format(msgspec.json.encode(main()), indent=2).decode())
