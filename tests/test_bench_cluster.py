"""The cluster benchmark's own instruments (fast): CPU from /proc, the fsync probe, its ratios.

The benchmark itself takes minutes (``python -m bench bench.bench_cluster``); these keep what it
measures with and its scenario list in step, without starting a server.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench_cluster() -> ModuleType:
    # bench/ is a package at the repository's root, which is not on the tests' path
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("bench.bench_cluster")


def test_cpu_seconds_count_a_busy_child_and_nothing_for_a_gone_pid(bench_cluster: ModuleType) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.3: pass\ninput()"],
                             stdin=subprocess.PIPE)
    try:
        for _ in range(100):
            if bench_cluster.cpu_seconds(child.pid) >= 0.25:
                break
            time.sleep(0.05)
        own = bench_cluster.cpu_seconds(child.pid)
        assert own >= 0.25
        assert bench_cluster.tree_cpu_seconds(os.getpid()) >= own  # the child is in our tree
    finally:
        child.communicate(b"\n", timeout=10)
    assert bench_cluster.cpu_seconds(child.pid) == 0.0
    busy, iowait = bench_cluster.machine_cpu_seconds()
    assert busy > 0 and iowait >= 0


def test_the_fsync_probe_counts_synced_writes(
    bench_cluster: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_cluster, "FSYNC_PROBE_S", 0.05)
    probe = bench_cluster.fsync_ceiling(tmp_path)
    assert probe["fsyncs_per_s"] > 0 and not list(tmp_path.iterdir())


def test_every_ratio_has_its_scenarios(bench_cluster: ModuleType) -> None:
    results: dict[str, Any] = {"disk": {"fsyncs_per_s": 4000}}
    for number, scenario in enumerate(bench_cluster.SCENARIOS, start=1):
        results[scenario.name] = {
            "throughput": {"acknowledged_events_per_s": 1000 * number,
                           "delivered_events_per_s": 500 * number, "appended_events_per_s": 700 * number},
            "latency": {"capture_to_route_p99_ms": 10.0 * number},
        }
    names = [s.name for s in bench_cluster.SCENARIOS]
    assert len(set(names)) == len(names)
    ratios = bench_cluster.ratios(results)
    one = results["postgresql_bus_1"]["throughput"]["acknowledged_events_per_s"]
    three = results["postgresql_bus_3"]["throughput"]["acknowledged_events_per_s"]
    assert ratios["instances_3_vs_1"]["acknowledged_events_per_s"] == round(three / one, 3)
    assert ratios["bus_acknowledged_vs_disk_fsyncs_per_s"]["instances_1"] == round(one / 4000, 3)
    alone = results["postgresql_bus_1_throttled"]["throughput"]["acknowledged_events_per_s"]
    four = results["postgresql_bus_4_throttled"]["throughput"]["acknowledged_events_per_s"]
    assert ratios["throttled_instances_4_vs_1"]["acknowledged_events_per_s"] == round(four / alone, 3)
    assert bench_cluster.ratio(1, 0) is None


def test_a_cpu_limit_holds_a_busy_child_to_its_share() -> None:
    """Needs root, as the suite runs (and as the benchmark does): a child spinning for 1.5 s
    under a fifth of a core gets about a fifth of the time, and its group counts the periods
    it was held back."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.cpu_limit import CpuLimit

    limit = CpuLimit(f"scr-test-{os.getpid()}", 0.2)
    try:
        child = subprocess.Popen([sys.executable, "-c", "import time\nend = time.monotonic() + 1.5\n"
                                  "while time.monotonic() < end: pass"], preexec_fn=limit.join)
        _, _, usage = os.wait4(child.pid, 0)
        throttled = limit.throttled()
    finally:
        limit.close()
    cpu_s = usage.ru_utime + usage.ru_stime
    assert 0.15 < cpu_s < 0.5, cpu_s  # 0.3 s of the 1.5 (and its start, also limited)
    assert throttled["periods_throttled"] > 50, throttled
