"""A process tree limited to a share of one core: how the cluster benchmark stands in for one
machine per instance on a 2-core box (the cluster-parity issue, item 5).

Linux's CFS bandwidth control, as root: cgroup v1's ``cpu`` controller (``cpu.cfs_quota_us``
over ``cpu.cfs_period_us``, where this machine mounts it) or cgroup v2's ``cpu.max``. A process
joins the group before it execs (``join``, a ``preexec_fn``), so every child it forks is in it
too. The period is short (10 ms) so a throttled instance stalls in small steps, as a slower
core would, instead of running a full 100 ms period's quota and then nothing.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

V1_CPU = Path("/sys/fs/cgroup/cpu")
V2_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 10_000


class CpuLimitUnavailable(RuntimeError):
    """This machine (or user) cannot limit a process tree's CPU: no writable cpu controller."""


def _controller() -> tuple[Path, bool]:
    """Where to create groups, and whether it is cgroup v2."""
    if (V1_CPU / "cpu.cfs_quota_us").exists():
        return V1_CPU, False
    controllers = V2_ROOT / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return V2_ROOT, True
    raise CpuLimitUnavailable("no cgroup cpu controller is mounted (v1 /sys/fs/cgroup/cpu, or v2 with cpu)")


@dataclass
class CpuLimit:
    """One cgroup holding at most ``share`` of a core; ``close`` removes it once it is empty."""

    name: str
    share: float

    def __post_init__(self) -> None:
        if not 0 < self.share <= 64:
            raise ValueError("share is a fraction of one core, above 0")
        root, self._v2 = _controller()
        self.path = root / self.name
        quota = max(1000, round(self.share * PERIOD_US))
        try:
            self.path.mkdir(exist_ok=True)
            if self._v2:
                (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            else:
                (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        except OSError as error:
            raise CpuLimitUnavailable(f"cannot set up {self.path} (root needed): {error}") from None

    def join(self) -> None:
        """Move the calling process into the group (call it in the child, before exec)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def throttled(self) -> dict[str, float]:
        """How often the group hit its quota, and for how long in all (seconds)."""
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        if self._v2:
            return {"periods_throttled": int(stat["nr_throttled"]),
                    "throttled_s": int(stat["throttled_usec"]) / 1e6}
        return {"periods_throttled": int(stat["nr_throttled"]),
                "throttled_s": int(stat["throttled_time"]) / 1e9}

    def close(self) -> None:
        """Remove the group (its processes must be gone)."""
        with contextlib.suppress(OSError):  # a process lingers: the group stays until it is gone
            self.path.rmdir()
