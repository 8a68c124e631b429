"""The writer's commit path as the ledger grows (issue 13: "flat as the ledger grows to 10M
entries"): 1,000-event groups through ``Committer.append_events`` of a fresh embedded store,
with exactly what the writer process installs (the ledger's tree upkeep and checkpoints, the
session indexer woken after each commit) and events as the edges hand them over (records of
canonical bytes, never decoded), until the ledger holds ``SCR_BENCH_GROWTH_EVENTS`` entries.

Each window of ``WINDOW_EVENTS`` is prepared first, then committed: its events/s (wall) and
the process's CPU per event (every thread: the committer, the session indexer, the
checkpointer). The baseline is the first quarter of the windows, in the same run: the figures
are the medians of the last quarter over the first's (a window that holds a merge of the
session index's large runs costs more, so medians, beside the mean of every window, which
is what a merge costs amortized). Dedup is exact throughout (every key is new, so every
lookup misses, which is the common case and the one a growing index makes dearer). About 30 s
a million events here, and 1.6 GB of disk a million (the ledger's rows are most of it).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from bench.bench_ledger import CONFIG
from bench.ingest import event as bench_event
from scr.config import parse_config
from scr.ledger.service import LedgerService
from scr.log.commit import Submission
from scr.schema import canonical_bytes, decode_event
from scr.server import build_runtime

TOTAL_EVENTS = int(os.environ.get("SCR_BENCH_GROWTH_EVENTS", "10000000"))
WINDOW_EVENTS = 250_000
GROUP_EVENTS = 1000
TENANTS = 10
EVENTS_PER_SESSION = 4
_ID = "0" * 32  # the template's event id, replaced by each event's (same length)
_SESSION = "s_" + "0" * 12


def _template() -> bytes:
    """The canonical bytes of the benchmark's event, with an id and session id to replace."""
    value = bench_event(_ID)
    value["session"]["session_id"] = _SESSION
    return canonical_bytes(decode_event(msgspec.json.encode(value)))


def _group(template: bytes, first: int) -> list[Submission]:
    """1,000 new events as an edge hands them to the writer: canonical bytes, digest, fields."""
    made = []
    for index in range(first, first + GROUP_EVENTS):
        event_id = uuid.uuid4().hex
        session_id = f"s_{index // EVENTS_PER_SESSION:012d}"
        tenant = f"org_{index % TENANTS}"
        payload = template.replace(_ID.encode(), event_id.encode()).replace(
            _SESSION.encode(), session_id.encode()).replace(b'"org_bench"', f'"{tenant}"'.encode())
        made.append(Submission.undecoded(payload, hashlib.blake2b(payload, digest_size=16).digest(),
                                         "key:bench", "http", tenant, event_id, session_id, "gpt-4o"))
    return made


def _windows(folder: Path) -> list[dict[str, float]]:
    template = _template()
    assert b'"org_bench"' in template, "the template's tenant is replaced per event"
    runtime = build_runtime(parse_config(CONFIG), folder)
    ledger = LedgerService(runtime)  # the upkeep hooks and the checkpoint rhythm, as served
    index_sessions = runtime.store.index_sessions()
    runtime.committer.commit_hooks.append(lambda _committed: index_sessions())
    runtime.committer.keep_events = False  # as in the writer process: no entry is read back
    runtime.committer.start()
    windows = []

    async def commit(groups: list[list[Submission]]) -> None:
        for group in groups:
            await runtime.committer.append_events(group)

    try:
        for first in range(0, TOTAL_EVENTS, WINDOW_EVENTS):
            groups = [_group(template, first + offset) for offset in range(0, WINDOW_EVENTS, GROUP_EVENTS)]
            gc.collect()
            cpu, wall = time.process_time(), time.perf_counter()
            asyncio.run(commit(groups))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            windows.append({"ledger_entries": first + WINDOW_EVENTS, "events_per_s": WINDOW_EVENTS / wall,
                            "cpu_us_per_event": cpu / WINDOW_EVENTS * 1e6})
    finally:
        runtime.committer.close()
        ledger.checkpointer.join()
        runtime.store.close()
    return windows


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="scr-bench-growth-") as folder:
        windows = _windows(Path(folder))
    quarter = max(1, len(windows) // 4)
    first, last = windows[:quarter], windows[-quarter:]

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    seconds = sum(WINDOW_EVENTS / row["events_per_s"] for row in windows)
    cpu = [row["cpu_us_per_event"] for row in windows]
    return {
        "ledger_entries": windows[-1]["ledger_entries"],
        "window_events": WINDOW_EVENTS,
        "first_quarter_median": {"events_per_s": round(median(first, "events_per_s")),
                                 "cpu_us_per_event": round(median(first, "cpu_us_per_event"), 2)},
        "last_quarter_median": {"events_per_s": round(median(last, "events_per_s")),
                                "cpu_us_per_event": round(median(last, "cpu_us_per_event"), 2)},
        "last_over_first_events_per_s": round(
            median(last, "events_per_s") / median(first, "events_per_s"), 3),
        "last_over_first_cpu_per_event": round(
            median(last, "cpu_us_per_event") / median(first, "cpu_us_per_event"), 3),
        "whole_run": {"events_per_s": round(len(windows) * WINDOW_EVENTS / seconds),
                      "cpu_us_per_event_mean": round(statistics.mean(cpu), 2),
                      "cpu_us_per_event_max": round(max(cpu), 2)},
        "windows": [{key: round(value, 2) for key, value in row.items()} for row in windows],
    }
