"""The process model (issue 12) against its starting commit, side by side in one run.

The same load goes to ``scr serve`` of this tree and of the baseline commit (checked out with
``git worktree`` into a temporary folder, run with its ``src`` first on PYTHONPATH, and its own
native core built when it has one):

(a) 1,000-event batches over 4 connections with 3 batched destinations: events/s, how many
    cores the server's processes kept busy, their RSS together, and whether the destinations
    kept up;
(b) single events at 1,000/s with 3 per-event webhooks: ingest p99, capture → first
    delivery attempt p99, and the CPU every process spent per event;
(c) single events offered at 5,000/s (``SCR_BENCH_FAST_SINGLE_RATE``), the 3 destinations
    batched (up to 1,000 events a webhook, so the run measures ingest, not 15,000 webhooks a
    second): the rate answered, the ingest p99 and the CPU per event; beside it, the same
    client against the decode-only server (what this machine's client and HTTP stack take).

This tree also runs (a) and (b) with ``SCR_NATIVE=0``: its pure-Python reference beside the
native core, in the same run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.ingest import (
    BATCH_EVENTS,
    LATENCY_RATE_PER_S,
    ROOT,
    Setup,
    durable_ingest,
    latency,
    make_batches,
    singles_ceiling,
)

BASELINE_COMMIT = os.environ.get("SCR_BENCH_BASELINE", "644aa85")
BATCHES = int(os.environ.get("SCR_BENCH_PROCESS_BATCHES", "150"))
FAST_SINGLE_RATE = int(os.environ.get("SCR_BENCH_FAST_SINGLE_RATE", "5000"))
SAMPLE_EVERY_S = 0.5
PURE_PYTHON = {"SCR_NATIVE": "0"}


class TreeWatch:
    """CPU seconds (since each process was first sampled) and RSS of a process and all its
    descendants, sampled while a run lasts."""

    def __init__(self) -> None:
        self.root: psutil.Process | None = None
        self.cpu_s: dict[int, float] = {}
        self.cpu_at_start: dict[int, float] = {}
        self.titles: dict[int, str] = {}
        self.rss_peak = 0
        self.rss_last = 0
        self.started = 0.0
        self.stopped = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, setup: Setup) -> None:
        self.root = psutil.Process(setup.server_pid)
        self.started = time.perf_counter()
        self._thread.start()

    def _tree(self) -> list[psutil.Process]:
        assert self.root is not None
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = 0
            for proc in self._tree():
                try:
                    times = proc.cpu_times()
                    # from the first sample on: a process's start-up (imports) is not the load's
                    self.cpu_at_start.setdefault(proc.pid, times.user + times.system)
                    self.cpu_s[proc.pid] = times.user + times.system - self.cpu_at_start[proc.pid]
                    if proc.pid not in self.titles:
                        self.titles[proc.pid] = " ".join(proc.cmdline()).strip() or proc.name()
                    rss += proc.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            self.rss_last = rss
            self.rss_peak = max(self.rss_peak, rss)
            self._stop.wait(SAMPLE_EVERY_S)

    def finish(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        elapsed = time.perf_counter() - self.started
        by_title: dict[str, float] = {}
        for pid, seconds in self.cpu_s.items():
            title = self.titles.get(pid, str(pid))
            title = title if title.startswith("scr:") else "scr serve (one process)"
            by_title[title] = by_title.get(title, 0.0) + seconds
        return {
            "cpu_s": round(sum(self.cpu_s.values()), 2),
            "cores_busy": round(sum(self.cpu_s.values()) / elapsed, 2),
            "cores_busy_by_process": {t: round(c / elapsed, 2) for t, c in sorted(by_title.items())},
            "processes": len(self.cpu_s),
            "rss_peak_mib": round(self.rss_peak / 2**20),
            "rss_last_mib": round(self.rss_last / 2**20),
        }


def batch_run(bodies: list[bytes], folder: Path, env: dict[str, str] | None) -> dict[str, Any]:
    folder.mkdir()
    tree = TreeWatch()
    result = durable_ingest(bodies, folder, env, on_setup=tree.watch)
    result.pop("lag_samples", None)
    return {**result, **tree.finish()}


def single_run(
    folder: Path, env: dict[str, str] | None, rate_per_s: int = LATENCY_RATE_PER_S, delivery_batch: int = 1
) -> dict[str, Any]:
    """Single events at ``rate_per_s``, with the CPU all of the server's processes spent on
    each (from the moment it was ready to the last delivery)."""
    folder.mkdir()
    tree = TreeWatch()
    result = latency(folder, env, rate_per_s, on_setup=tree.watch, delivery_batch=delivery_batch)
    watched = tree.finish()
    result["cpu_us_per_event"] = round(watched["cpu_s"] / result["events"] * 1e6, 1)
    result["cores_busy"] = watched["cores_busy"]
    result["cores_busy_by_process"] = watched["cores_busy_by_process"]
    return result


def build_native_core(tree: Path) -> None:
    """A baseline that has a native core runs with it, built from its own sources (a baseline
    from before the core, or a machine without cargo, runs its pure Python)."""
    crate = tree / "native"
    if not (crate / "Cargo.toml").exists() or shutil.which("cargo") is None:
        return
    print(f"building {BASELINE_COMMIT}'s native core …", flush=True)
    subprocess.run(["cargo", "build", "--release", "--features", "python", "--quiet"], cwd=crate, check=True)
    shutil.copy(crate / "target" / "release" / "lib_core.so", tree / "src" / "scr" / "_core.abi3.so")


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="scr-bench-processes-") as tmp:
        folder = Path(tmp)
        baseline_tree = folder / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(baseline_tree), BASELINE_COMMIT],
                       cwd=ROOT, check=True, capture_output=True)
        build_native_core(baseline_tree)
        baseline_env = {"PYTHONPATH": str(baseline_tree / "src")}
        try:
            bodies = make_batches(BATCHES)
            results: dict[str, Any] = {"baseline_commit": BASELINE_COMMIT}
            print(f"batches, baseline {BASELINE_COMMIT} …", flush=True)
            results["batch_baseline"] = batch_run(bodies, folder / "b-base", baseline_env)
            print("batches, this tree …", flush=True)
            results["batch"] = batch_run(bodies, folder / "b-now", None)
            print("batches, this tree in pure Python …", flush=True)
            results["batch_python"] = batch_run(bodies, folder / "b-python", PURE_PYTHON)
            print(f"single events, baseline {BASELINE_COMMIT} …", flush=True)
            results["single_baseline"] = single_run(folder / "l-base", baseline_env)
            print("single events, this tree …", flush=True)
            results["single"] = single_run(folder / "l-now", None)
            print("single events, this tree in pure Python …", flush=True)
            results["single_python"] = single_run(folder / "l-python", PURE_PYTHON)
            print(f"single events at {FAST_SINGLE_RATE}/s, baseline {BASELINE_COMMIT} …", flush=True)
            results["fast_single_baseline"] = single_run(
                folder / "f-base", baseline_env, FAST_SINGLE_RATE, BATCH_EVENTS)
            print(f"single events at {FAST_SINGLE_RATE}/s, this tree …", flush=True)
            results["fast_single"] = single_run(folder / "f-now", None, FAST_SINGLE_RATE, BATCH_EVENTS)
            print(f"single events at {FAST_SINGLE_RATE}/s, the decode-only ceiling …", flush=True)
            (folder / "f-ceiling").mkdir()
            results["fast_single_ceiling"] = singles_ceiling(folder / "f-ceiling", FAST_SINGLE_RATE)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline_tree)],
                           cwd=ROOT, capture_output=True)
    results["ratios"] = {
        "batch_events_per_s_vs_baseline": round(
            results["batch"]["events_per_s"] / results["batch_baseline"]["events_per_s"], 2),
        "end_to_end_vs_baseline": round(
            results["batch"]["end_to_end_events_per_s"]
            / results["batch_baseline"]["end_to_end_events_per_s"], 2),
        "batch_events_per_s_vs_pure_python": round(
            results["batch"]["events_per_s"] / results["batch_python"]["events_per_s"], 2),
        **{f"{run}_cpu_per_event_baseline_over_now": round(
            results[f"{run}_baseline"]["cpu_us_per_event"] / results[run]["cpu_us_per_event"], 2)
           for run in ("single", "fast_single")},
        "batch_cpu_us_per_event": {
            run: round(results[run]["cpu_s"] / (BATCHES * BATCH_EVENTS) * 1e6, 1)
            for run in ("batch_baseline", "batch", "batch_python")},
    }
    return results
