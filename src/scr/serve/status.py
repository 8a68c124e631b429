"""The status of an instance's processes, as the supervisor last wrote it.

The supervisor replaces one small JSON file in its run folder on every change; the HTTP
child reads it to answer ``/readyz``, ``/healthz`` and ``/metrics`` for the whole set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

STATUS_FILE = "processes.json"
RUN_DIR_ENV = "SCR_RUN_DIR"  # set by the supervisor for its children


class ProcessStatus(msgspec.Struct, frozen=True):
    """One child as the supervisor sees it."""

    title: str
    pid: int  # 0 while it is not running
    state: str  # "starting" | "running" | "backing_off" | "stopping"
    restarts: int  # starts after the first, over the supervisor's life
    last_exit: str  # how it last ended ("" if it never did)


_encode = msgspec.json.encode
_decode = msgspec.json.Decoder(list[ProcessStatus]).decode


def write_status(run_dir: Path, processes: list[ProcessStatus]) -> None:
    """Replace the status file atomically: a reader sees the old or the new one, never half."""
    path = run_dir / STATUS_FILE
    partial = path.with_suffix(".partial")
    partial.write_bytes(_encode(processes))
    os.replace(partial, path)


def read_status() -> list[ProcessStatus] | None:
    """The supervisor's view of the set; None when this process runs without a supervisor."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not run_dir:
        return None
    try:
        return _decode((Path(run_dir) / STATUS_FILE).read_bytes())
    except (OSError, msgspec.DecodeError):
        return []


def not_running(processes: list[ProcessStatus]) -> list[str]:
    """What keeps the set from being ready: each child not running, with why."""
    return [
        f"{p.title} is {p.state.replace('_', ' ')}" + (f" (last: {p.last_exit})" if p.last_exit else "")
        for p in processes if p.state != "running"
    ]


class ProcessesCollector(Collector):
    """The supervisor's children: up or not, and how often each was started again."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("scr_process_up", "1 while the process runs and is ready", labels=["process"])
        restarts = CounterMetricFamily(
            "scr_process_restarts", "Starts of the process after its first", labels=["process"]
        )
        for child in read_status() or []:
            up.add_metric([child.title], 1.0 if child.state == "running" else 0.0)
            restarts.add_metric([child.title], child.restarts)
        yield up
        yield restarts
