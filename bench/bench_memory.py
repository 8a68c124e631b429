"""Memory of an instance under a minute and more of batch load (issue 12's RSS target).

1,000-event batches over 4 connections, with three batched webhook destinations, for
``SCR_BENCH_MEMORY_S`` seconds (default 150). After each round of 30 batches, the RSS of
every process of ``scr serve`` is read, by process title. Reported: the total and each
process's RSS at the end, the total at 60 s, and whether the last third of the run still grew;
and the total PSS at the end (the children are forked from the supervisor, so the sum of
their RSS counts the pages they share once per process; PSS counts each page once).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.ingest import BATCH_EVENTS, make_batches, post_all, scr_and_receivers

DURATION_S = float(os.environ.get("SCR_BENCH_MEMORY_S", "150"))
ROUND_BATCHES = 30
GROWTH_TOLERANCE = 1.02  # the last third "still grows" past 2 % over its start
MIB = 2**20


def rss_by_title(root: psutil.Process) -> dict[str, int]:
    """MiB of resident memory of ``root`` and its descendants, by process title."""
    sizes: dict[str, int] = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            title = " ".join(proc.cmdline()).strip()
            sizes[title] = sizes.get(title, 0) + round(proc.memory_info().rss / MIB)
        except psutil.NoSuchProcess:
            continue
    return sizes


def pss_total(root: psutil.Process) -> int:
    """MiB of proportional set size of ``root`` and its descendants (shared pages split)."""
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss
        except psutil.NoSuchProcess:
            continue
    return round(total / MIB)


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="scr-bench-memory-") as tmp, \
            scr_and_receivers(Path(tmp), "memory", BATCH_EVENTS) as setup:
        root = psutil.Process(setup.server_pid)
        samples: list[tuple[float, int, int]] = []  # (seconds, events/s, total MiB)
        last: dict[str, int] = {}

        async def run() -> int:
            began, sent = time.monotonic(), 0
            while time.monotonic() - began < DURATION_S:
                answer = await post_all(f"{setup.url}/v1/events", make_batches(ROUND_BATCHES),
                                        setup.headers)
                sent += answer["events"]
                last.update(rss_by_title(root))
                samples.append((time.monotonic() - began, answer["events_per_s"], sum(last.values())))
            return sent

        events = asyncio.run(run())
        pss = pss_total(root)
    third = samples[2 * len(samples) // 3:]
    at_60 = min(samples, key=lambda s: abs(s[0] - 60)) if samples[-1][0] >= 60 else None
    return {
        "seconds": round(samples[-1][0]), "events": events,
        "events_per_s_first_last": [samples[0][1], samples[-1][1]],
        "rss_total_mib_at_60_s": at_60[2] if at_60 is not None else None,
        "rss_total_mib_at_end": samples[-1][2],
        "rss_mib_by_process_at_end": last,
        "pss_total_mib_at_end": pss,
        "still_growing_in_last_third": third[-1][2] > third[0][2] * GROWTH_TOLERANCE,
    }
