"""File destination benchmark (issue 14): the example config's three files against a plain
append + fsync ceiling, same run, same lines.

(a) live: ``scr serve`` with ``examples/scr.yaml`` takes 1,000-event batches over 4
    connections; how long after the last ``202`` every file holds every event;
(b) backlog: the same ledger served again with the three destinations renamed (new to the
    data folder, so they start at the beginning of the ledger, as after an outage) and writing
    to fresh files: lines written per second, from the first line in any file to the last
    line in every file;
(c) ceiling: the lines scr wrote in (b), appended by a minimal loop in 1,000-line writes with
    one fsync each, as a file destination does: lines per second.

The ratio is (b) over (c): how much of what the disk allows a file destination delivers. With
one fsync per chunk the disk is no longer the limit; the gap is per-event Python work (each
destination decoding stored entries, the transforms), which DESIGN.md moves to the native core.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.ingest import (
    BATCH_EVENTS,
    ROOT,
    create_key,
    free_port,
    make_batches,
    post_all,
    start,
    stop,
    wait_ready,
)

BATCHES = int(os.environ.get("SCR_BENCH_FILE_BATCHES", "100"))
DESTINATIONS = ("billing", "analytics", "compliance")  # the example config's file destinations
DELIVERY_TIMEOUT_S = 300
POLL_S = 0.01


def lines_in(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as file:
        return sum(block.count(b"\n") for block in iter(lambda: file.read(1 << 20), b""))


def files_of(data: Path, folder: str = "deliveries") -> list[Path]:
    return [data / folder / f"{name}.jsonl" for name in DESTINATIONS]


def renamed(config: Path, target: Path) -> Path:
    """The example config with its file destinations renamed and writing under ``backlog/``."""
    text = config.read_text()
    for name in DESTINATIONS:
        for old, new in ((rf"- name: {name}\b", f"- name: {name}_backlog"),
                         (rf"path: deliveries/{name}\.jsonl", f"path: backlog/{name}.jsonl")):
            text, count = re.subn(old, new, text)
            if count != 1:
                raise RuntimeError(f"examples/scr.yaml changed: not one match of `{old}`")
    target.write_text(text)
    return target


def wait_for_lines(files: list[Path], events: int) -> tuple[float, float]:
    """Poll until every file has ``events`` lines; (first line seen, all complete) as
    ``perf_counter`` times."""
    first = None
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while time.monotonic() < deadline:
        sizes = [path.stat().st_size if path.exists() else 0 for path in files]
        now = time.perf_counter()
        if first is None and any(sizes):
            first = now
        if first is not None and min(lines_in(path) for path in files) >= events:
            return first, now
        time.sleep(POLL_S)
    raise RuntimeError(f"the files did not reach {events} lines in {DELIVERY_TIMEOUT_S} s")


def serve(config: Path, data: Path, folder: Path) -> tuple[Any, str]:
    port = free_port()
    server = start(["-m", "scr", "serve", "--config", str(config), "--data", str(data),
                    "--port", str(port), "--log-level", "warning"], folder / "serve.log")
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/v1/events")
    return server, url


def live(bodies: list[bytes], config: Path, data: Path, folder: Path) -> dict[str, Any]:
    """(a): ingest with the three files delivering; the delay after the last 202."""
    key = create_key(data)
    events = len(bodies) * BATCH_EVENTS
    server, url = serve(config, data, folder)
    try:
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        result = asyncio.run(post_all(f"{url}/v1/events", bodies, headers))
        sent = time.perf_counter()
        _, done = wait_for_lines(files_of(data), events)
    finally:
        stop(server)
    result["all_files_complete_after_last_202_s"] = round(max(0.0, done - sent), 2)
    return result


def backlog(config: Path, data: Path, folder: Path, events: int) -> dict[str, Any]:
    """(b): the same ledger, new destinations: they drain it from the beginning."""
    server, _ = serve(renamed(config, folder / "backlog.yaml"), data, folder)
    try:
        first, done = wait_for_lines(files_of(data, "backlog"), events)
    finally:
        stop(server)
    seconds = done - first
    lines = events * len(DESTINATIONS)
    return {"events": events, "files": len(DESTINATIONS), "seconds": round(seconds, 3),
            "events_per_s_per_file": round(events / seconds),
            "lines_per_s": round(lines / seconds)}


def ceiling(files: list[Path], folder: Path) -> dict[str, Any]:
    """(c): the same lines, 1,000 per write, one fsync per write, nothing else."""
    chunks = []
    for path in files:
        lines = path.read_bytes().splitlines(keepends=True)
        chunks += [b"".join(lines[i : i + BATCH_EVENTS]) for i in range(0, len(lines), BATCH_EVENTS)]
    lines_total = sum(lines_in(path) for path in files)
    target = folder / "ceiling.jsonl"
    began = time.perf_counter()
    with target.open("ab") as out:
        for chunk in chunks:
            out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    seconds = time.perf_counter() - began
    return {"lines": lines_total, "writes": len(chunks), "seconds": round(seconds, 3),
            "lines_per_s": round(lines_total / seconds)}


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="scr-bench-files-") as tmp:
        folder = Path(tmp)
        config = folder / "scr.yaml"
        shutil.copy(ROOT / "examples" / "scr.yaml", config)
        print(f"preparing {BATCHES} batches of {BATCH_EVENTS} events …", flush=True)
        bodies = make_batches(BATCHES)
        events = len(bodies) * BATCH_EVENTS
        results: dict[str, Any] = {}
        print("live: ingest with the example config's three file destinations …", flush=True)
        results["live"] = live(bodies, config, folder / "data", folder)
        print("backlog: the three destinations drain the same ledger into fresh files …", flush=True)
        results["backlog"] = backlog(config, folder / "data", folder, events)
        print("ceiling: the same lines, appended and fsynced 1,000 at a time …", flush=True)
        results["append_fsync_ceiling"] = ceiling(files_of(folder / "data", "backlog"), folder)
    results["ratios"] = {
        "backlog_vs_append_fsync_ceiling": round(
            results["backlog"]["lines_per_s"] / results["append_fsync_ceiling"]["lines_per_s"], 3),
    }
    return results
