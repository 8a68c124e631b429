"""Retention benchmark (retention issue): archiving's speed and cost, the archive's size, the
speed of ``scr archive verify``, and reading one archived event.

(a) A data folder of ``SCR_BENCH_RETENTION_EVENTS`` varied events (random ids, users, models,
token counts, statuses, messages) written through ``scr serve``, signed. Then, in this
process on one core: one archiver pass (every entry due), entries/s; the archive's bytes
against the hot store's (the database file, and the ledger rows' own bytes) for the same
events; ``verify_archive`` over every segment, entries/s, beside ``scr ledger verify``'s
rate over the same entries while they were all hot.
(b) ``GET /v1/events/{id}`` of 1,000 random events, p50/p99, while they are hot and again
once they are archived (a fresh server: no block is cached at first).
(c) Ingest with the archiver on (``hot_days: 0``, a pass every second: it archives while
ingest runs) and off, ``SCR_BENCH_RETENTION_BATCHES`` batches of 1,000 events, alternated
``SCR_BENCH_RETENTION_PAIRS`` times; and how long the archive took to cover every signed
entry after the last acknowledgement.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bench.ingest import (
    TEMPLATE,
    create_key,
    percentile,
    post_all,
    scr_and_receivers,
    start,
    stop,
    wait_ready,
)
from scr.testing.servers import free_port

EVENTS = int(os.environ.get("SCR_BENCH_RETENTION_EVENTS", "200000"))
BATCHES = int(os.environ.get("SCR_BENCH_RETENTION_BATCHES", "100"))
PAIRS = int(os.environ.get("SCR_BENCH_RETENTION_PAIRS", "2"))
READS = 1000
BATCH_EVENTS = 1000
RHYTHM = "  ledger:\n    checkpoint_every_entries: 10000\n    checkpoint_every_s: 1\n"
RETENTION = "  retention:\n    hot_days: 0\n    check_every_s: 1\n"
END_TIME = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # the template's session end
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-pro", "llama-3.3-70b"]
MESSAGES = ["Here is the summary you asked for.", "I could not find that order.",
            "The refund was issued to your card.", "Your meeting is moved to Thursday at 10.",
            "Sorry, the tool timed out; please try again."]


def varied(pick: random.Random, count: int) -> list[dict[str, Any]]:
    events = []
    for _ in range(count):
        event: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(TEMPLATE))
        event["event_id"] = uuid.UUID(int=pick.getrandbits(128)).hex
        event["session"]["session_id"] = f"s_{pick.getrandbits(48):012x}"
        duration = pick.randint(200, 600_000)
        started = END_TIME - timedelta(milliseconds=duration)
        event["session"].update(duration_ms=duration, start_time=started.isoformat().replace("+00:00", "Z"))
        event["user"]["user_id"] = f"user_{pick.randint(1, 5000)}"
        event["user"]["tier"] = pick.choice(["free", "pro", "enterprise"])
        tokens_in, tokens_out = pick.randint(10, 20_000), pick.randint(1, 4_000)
        event["usage"].update(input_tokens=tokens_in, output_tokens=tokens_out,
                              total_tokens=tokens_in + tokens_out, model=pick.choice(MODELS),
                              estimated_cost_usd=round((tokens_in + 4 * tokens_out) * 2.5e-6, 6))
        failed = pick.random() < 0.05
        event["outcome"] = {"status": "error" if failed else "success",
                            "final_message": pick.choice(MESSAGES),
                            "error_code": "tool_timeout" if failed else None}
        event["metadata"]["source_ip"] = f"203.0.{pick.randint(0, 255)}.{pick.randint(1, 254)}"
        events.append(event)
    return events


def serve(data: Path, folder: Path) -> tuple[Any, str]:
    port = free_port()
    config = folder / "plain.yaml"
    config.write_text("session_completion_runtime:\n  routing:\n    destinations: []\n" + RHYTHM)
    server = start(["-m", "scr", "serve", "--config", str(config), "--data", str(data), "--port", str(port),
                    "--log-level", "warning"], folder / "serve.log")
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    return server, url


def read_latency(url: str, headers: dict[str, str], ids: list[str]) -> dict[str, float]:
    took = []
    with httpx.Client(headers=headers, timeout=10) as client:
        for event_id in ids:
            started = time.perf_counter()
            answer = client.get(f"{url}/v1/events/{event_id}")
            took.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, answer.text
    return {"p50_ms": round(percentile(took, 0.5), 2), "p99_ms": round(percentile(took, 0.99), 2)}


def archive_now(data: Path) -> dict[str, Any]:
    from scr.config import RetentionConfig
    from scr.log.commit import Committer
    from scr.retention.archiver import Archiver
    from scr.retention.cli import open_checkpoints
    from scr.retention.writes import LocalArchiveWrites
    from scr.store import open_store

    store = open_store(data)
    committer = Committer(store, buffer_size=1)
    committer.start()
    try:
        writes = LocalArchiveWrites(committer)
        archiver = Archiver(store, RetentionConfig(hot_days=0), data / "archive", writes,
                            open_checkpoints(store, data))
        started, cpu = time.perf_counter(), time.process_time()
        report = asyncio.run(archiver.run(datetime.now(UTC)))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        committer.close()
        store.close()
    return {"entries": report.archived, "segments": report.segments, "rows_shrunk": report.stubbed,
            "seconds": round(wall, 2), "entries_per_s": round(report.archived / wall),
            "cpu_us_per_entry": round(cpu * 1e6 / max(report.archived, 1), 1)}


def rate(entries: int, seconds: float) -> dict[str, Any]:
    return {"entries": entries, "seconds": round(seconds, 2), "entries_per_s": round(entries / seconds)}


def ledger_bytes(data: Path) -> int:
    conn = sqlite3.connect(data / "scr.db")
    try:
        (total,) = conn.execute(  # the packs (scr.store.packs) and the tables written with them
            "SELECT (SELECT sum(length(entries) + length(sessions) + length(last_ts) + 16) FROM ledger_packs)"
            " + (SELECT coalesce(sum(length(tenant) + 32), 0) FROM ledger_runs)").fetchone()
        return int(total)
    finally:
        conn.close()


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def verify_rates(data: Path) -> dict[str, Any]:
    from scr.ledger.report import Report
    from scr.retention.cli import verifier_keys
    from scr.retention.verify import verify_archive
    from scr.store import open_store

    store = open_store(data)
    try:
        segments = store.archive_segments()
        report = Report()
        started = time.perf_counter()
        verify_archive(segments, None, verifier_keys(store, data), report)
        wall = time.perf_counter() - started
    finally:
        store.close()
    assert not report.findings, report.findings[:3]
    return rate(report.entries, wall)


def hot_verify_rate(data: Path) -> dict[str, Any]:
    from scr.ledger.verify import verify_data

    started = time.perf_counter()
    report = verify_data(data)
    wall = time.perf_counter() - started
    assert not report.findings, report.findings[:3]
    return rate(report.entries, wall)


def tiers(folder: Path, pick: random.Random) -> dict[str, Any]:
    data = folder / "tiers-data"
    key = create_key(data)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    batches = [varied(pick, BATCH_EVENTS) for _ in range(EVENTS // BATCH_EVENTS)]
    server, url = serve(data, folder)
    try:
        sent = asyncio.run(post_all(f"{url}/v1/events", [msgspec.json.encode(b) for b in batches], headers))
        assert set(sent["statuses"]) == {202}, sent["statuses"]
        assert httpx.post(f"{url}/v1/ledger/checkpoint", headers=headers, timeout=60).status_code == 200
        ids = [pick.choice(pick.choice(batches))["event_id"] for _ in range(READS)]
        hot_reads = read_latency(url, headers, ids)
    finally:
        stop(server)
    hot_file, hot_rows = (data / "scr.db").stat().st_size, ledger_bytes(data)
    hot_verify = hot_verify_rate(data)
    archived = archive_now(data)
    archive_size = folder_bytes(data / "archive")
    verify = verify_rates(data)
    server, url = serve(data, folder)
    try:
        archived_reads = read_latency(url, headers, ids)
    finally:
        stop(server)
    return {
        "events": EVENTS, "archiving_one_core": archived,
        "size": {"hot_database_file_bytes": hot_file, "hot_ledger_row_bytes": hot_rows,
                 "archive_bytes": archive_size, "archive_over_hot_file": round(archive_size / hot_file, 3),
                 "archive_over_hot_rows": round(archive_size / hot_rows, 3),
                 "ledger_row_bytes_after": ledger_bytes(data)},
        "verify": {"archive_verify": verify, "ledger_verify_all_hot": hot_verify},
        "read_by_id": {"hot": hot_reads, "archived_fresh_server": archived_reads},
    }


def ingest_once(bodies: list[bytes], folder: Path, archiving: bool) -> dict[str, Any]:
    extra = RHYTHM + (RETENTION if archiving else "")
    with scr_and_receivers(folder, "retention", BATCH_EVENTS, more_config=extra) as setup:
        sent = asyncio.run(post_all(f"{setup.url}/v1/events", bodies, setup.headers))
        result: dict[str, Any] = {"events_per_s": sent["events_per_s"]}
        if archiving:
            database = folder / "retention-data" / "scr.db"
            started, target = time.perf_counter(), len(bodies) * BATCH_EVENTS
            while time.perf_counter() - started < 120:
                conn = sqlite3.connect(database)
                (top,) = conn.execute("SELECT coalesce(max(last_leaf), 0) FROM archive_segments").fetchone()
                conn.close()
                if top >= target:
                    break
                time.sleep(0.2)
            result["archive_caught_up_after_s"] = round(time.perf_counter() - started, 2)
            result["archived_leaves"] = top + 1
        return result


def ingest_cost(pick: random.Random) -> dict[str, Any]:
    bodies = [msgspec.json.encode(varied(pick, BATCH_EVENTS)) for _ in range(BATCHES)]
    runs: dict[str, list[dict[str, Any]]] = {"archiver_off": [], "archiver_on": []}
    with tempfile.TemporaryDirectory(prefix="scr-bench-retention-") as tmp:
        for pair in range(PAIRS):
            for mode in runs:
                folder = Path(tmp) / f"{mode}-{pair}"
                folder.mkdir()
                runs[mode].append(ingest_once(bodies, folder, archiving=mode == "archiver_on"))
                time.sleep(1)
    rates = {mode: [run["events_per_s"] for run in done] for mode, done in runs.items()}
    best = {mode: max(values) for mode, values in rates.items()}
    return {**runs, "events_per_s_range": {mode: [min(v), max(v)] for mode, v in rates.items()},
            "on_over_off": round(best["archiver_on"] / best["archiver_off"], 3)}


def main() -> dict[str, Any]:
    pick = random.Random(18)
    with tempfile.TemporaryDirectory(prefix="scr-bench-retention-") as tmp:
        figures = tiers(Path(tmp), pick)
    return {**figures, "ingest": ingest_cost(pick)}
