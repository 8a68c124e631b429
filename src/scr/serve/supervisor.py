"""The supervisor: starts an instance's processes, restarts one that dies, drains on SIGTERM.

It holds the listening sockets (one per edge, SO_REUSEPORT), so an edge that restarts takes
over the same socket and connections wait in its backlog meanwhile. A child that dies is
started again at once; one that keeps dying soon after its start is backed off (doubling up
to ``RESTART_BACKOFF_MAX_S``) and reported in the log and the status file, never restarted
in a tight loop. A child that fails its very first start (a store it cannot open, say) ends
``scr serve`` with its exit code: that is a start-up error, not a crash.

Children are forked from the supervisor, which has imported every module once: a child is
ready in a fraction of a second, and a restart does not wait for an interpreter to start.
While it supervises, the supervisor waits on a selector (signals through a wake-up pipe,
the children's readiness pipes): it never polls; only the drain looks every few ms whether
the children have ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import msgspec

from scr.serve.status import RUN_DIR_ENV, ProcessStatus, write_status

log = logging.getLogger("scr.serve")

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multi-process mode
READY_MESSAGE = b"ready\n"
FIRST_START_TIMEOUT_S = 120.0  # a child that is not ready by then fails the start
RESTART_BACKOFF_BASE_S = 0.5  # wait before the second quick restart; doubles after each
RESTART_BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 10.0  # a child that ran this long is not "crashing": its next restart is at once
KILL_WAIT_S = 5.0  # after SIGKILL, how long to wait for the kernel to reap
DRAIN_POLL_S = 0.02  # how often the drain looks whether a child has ended
LISTEN_BACKLOG = 2048  # connections the kernel queues for an edge while it (re)starts
PR_SET_PDEATHSIG = 1  # prctl option: the signal a child gets when its parent dies


class ChildArgs(msgspec.Struct, frozen=True):
    """What a child needs to start, handed over in its environment."""

    role: str  # "writer" | "edge" | "reader" | "usage"
    title: str
    config: str | None
    data: str
    store: str | None
    bus: str | None
    url: str
    listen_fd: int
    ready_fd: int
    log_level: str
    drain_timeout_s: float
    socket_dir: str  # 0700 folder of the readers' Unix sockets
    tls_cert: str | None = None  # `scr serve --tls-cert/--tls-key` (over the config's)
    tls_key: str | None = None


class Forked:
    """A child forked from the supervisor (the part of ``subprocess.Popen`` used here)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        """Its exit code; ``TimeoutError`` if it is still running after ``timeout`` seconds
        (only the drain waits like this: it looks every ``DRAIN_POLL_S``)."""
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise TimeoutError
            time.sleep(DRAIN_POLL_S)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@dataclass
class Child:
    """One supervised process and its restart history."""

    title: str
    role: str
    listener: socket.socket | None = None  # an edge's own listening socket (SO_REUSEPORT)
    proc: Forked | None = None
    ready_pipe: int = -1  # read end of the pipe the child writes READY_MESSAGE to
    state: str = "starting"
    started_at: float = 0.0
    restarts: int = 0
    quick_crashes: int = 0  # consecutive deaths within STABLE_AFTER_S of a start
    restart_at: float = 0.0  # monotonic time of the next start while backing off
    last_exit: str = ""
    ever_ready: bool = False

    def status(self) -> ProcessStatus:
        pid = self.proc.pid if self.proc is not None and self.proc.poll() is None else 0
        return ProcessStatus(self.title, pid, self.state, self.restarts, self.last_exit)


@dataclass
class Supervisor:
    """Runs ``children`` until SIGTERM or SIGINT, then drains them."""

    children: list[Child]
    run_dir: Path
    drain_timeout_s: float
    base_args: ChildArgs
    on_ready: list[str] = field(default_factory=list)  # printed once every child is ready
    _selector: selectors.DefaultSelector = field(default_factory=selectors.DefaultSelector)
    _stopping: bool = False

    def run(self) -> int:
        """Supervise until asked to stop; the exit code of ``scr serve``."""
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        self._selector.register(wake_read, selectors.EVENT_READ, None)
        old_wakeup = signal.set_wakeup_fd(wake_write)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, lambda *_: None)  # the wake-up fd carries the signal number
        try:
            code = self._first_start()
            if code is not None:
                self._drain()
                return code
            for line in self.on_ready:
                print(line, flush=True)
            self._supervise(wake_read)
            self._drain()
            return 0
        finally:
            signal.set_wakeup_fd(old_wakeup)
            os.close(wake_read)
            os.close(wake_write)
            shutil.rmtree(self.run_dir, ignore_errors=True)
            shutil.rmtree(self.base_args.socket_dir, ignore_errors=True)

    # ----- the loop ------------------------------------------------------------------------

    def _first_start(self) -> int | None:
        """Start the children one after the other, each once the one before is ready (the
        first, the writer, prepares the store); a child's exit code if one ends first."""
        deadline = time.monotonic() + FIRST_START_TIMEOUT_S
        for child in self.children:
            self._start(child)
            while not child.ever_ready:
                assert child.proc is not None
                ended = child.proc.poll()
                if ended is not None:
                    log.error("%s ended during start-up (%s)", child.title, _how(ended))
                    return ended or 1
                if self._stopping:
                    return 0
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error("%s was not ready within %.0f s", child.title, FIRST_START_TIMEOUT_S)
                    return 1
                self._wait(left)
        return None

    def _supervise(self, wake_read: int) -> None:
        while not self._stopping:
            now = time.monotonic()
            for child in self.children:
                if child.state == "backing_off" and now >= child.restart_at:
                    self._start(child)
            self._reap()
            due = [c.restart_at - now for c in self.children if c.state == "backing_off"]
            self._wait(max(0.0, min(due)) if due else None)

    def _wait(self, timeout_s: float | None) -> None:
        """Sleep until a signal, a readiness message or ``timeout_s``; handle what came."""
        for key, _ in self._selector.select(timeout_s):
            if key.data is None:
                signals = os.read(key.fd, 512)
                if signal.SIGTERM in signals or signal.SIGINT in signals:
                    self._stopping = True
            else:
                self._on_ready(key.data)
        self._reap()

    def _on_ready(self, child: Child) -> None:
        try:
            message = os.read(child.ready_pipe, len(READY_MESSAGE))
        except OSError:
            message = b""
        self._selector.unregister(child.ready_pipe)
        os.close(child.ready_pipe)
        child.ready_pipe = -1
        if message == READY_MESSAGE:
            child.state = "running"
            child.ever_ready = True
            self._publish()

    def _reap(self) -> None:
        for child in self.children:
            if child.proc is None or child.state in ("backing_off", "stopping"):
                continue
            code = child.proc.poll()
            if code is None:
                continue
            self._close_ready_pipe(child)
            child.last_exit = _how(code)
            _forget_metrics_of(child.proc.pid, self.run_dir)
            if self._stopping or not child.ever_ready:
                child.state = "stopping"
                continue
            lived_s = time.monotonic() - child.started_at
            child.quick_crashes = child.quick_crashes + 1 if lived_s < STABLE_AFTER_S else 1
            delay_s = 0.0
            if child.quick_crashes > 1:
                delay_s = min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_BASE_S * 2 ** (child.quick_crashes - 2))
            child.state, child.restart_at = "backing_off", time.monotonic() + delay_s
            log.warning("%s ended (%s) after %.1f s; starting it again in %.1f s (%d quick crashes)",
                        child.title, child.last_exit, lived_s, delay_s, child.quick_crashes)
            self._publish()

    # ----- children ------------------------------------------------------------------------

    def _start(self, child: Child) -> None:
        """Fork the child: it starts with every module the supervisor imported (a restart
        takes a fraction of a second, not an interpreter's start), then runs its role."""
        ready_read, ready_write = os.pipe()
        args = msgspec.structs.replace(
            self.base_args, role=child.role, title=child.title,
            listen_fd=child.listener.fileno() if child.listener is not None else -1,
            ready_fd=ready_write,
        )
        if child.proc is not None:
            child.restarts += 1
        pid = os.fork()
        if pid == 0:
            os.close(ready_read)
            self._become(args)
        os.close(ready_write)
        child.proc = Forked(pid)
        child.ready_pipe = ready_read
        self._selector.register(ready_read, selectors.EVENT_READ, child)
        child.state, child.started_at = "starting", time.monotonic()
        self._publish()

    def _become(self, args: ChildArgs) -> NoReturn:
        """In the forked child: leave the supervisor behind, run the role, and exit."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            _die_with_parent()
            os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the supervisor, which drains
            self._selector.close()
            for other in self.children:
                if other.ready_pipe >= 0:
                    os.close(other.ready_pipe)
                if other.listener is not None and other.listener.fileno() != args.listen_fd:
                    other.listener.close()  # each edge accepts on its own socket only
            os.environ[RUN_DIR_ENV] = str(self.run_dir)
            os.environ[METRICS_DIR_ENV] = str(self.run_dir / "metrics")
            from scr.serve.child import run_child

            code = run_child(args)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _close_ready_pipe(self, child: Child) -> None:
        if child.ready_pipe >= 0:
            self._selector.unregister(child.ready_pipe)
            os.close(child.ready_pipe)
            child.ready_pipe = -1

    def _drain(self) -> None:
        """SIGTERM every child; SIGKILL what is left after ``drain_timeout_s``."""
        live = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for child in self.children:
            child.state = "stopping"
        self._publish()
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.drain_timeout_s
        for proc in live:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                log.error("pid %d did not drain within %.0f s: killed", proc.pid, self.drain_timeout_s)
                proc.kill()
                with contextlib.suppress(TimeoutError):
                    proc.wait(timeout=KILL_WAIT_S)
        for child in self.children:
            self._close_ready_pipe(child)

    def _publish(self) -> None:
        write_status(self.run_dir, [child.status() for child in self.children])


def _how(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


def _die_with_parent() -> None:
    """In the child: a supervisor killed outright takes its children with it (a SIGKILL of
    ``scr serve`` stops the whole instance, as it did with one process)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _forget_metrics_of(pid: int, run_dir: Path) -> None:
    """Drop a dead child's live gauges; its counters stay, so totals never go back."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(run_dir / "metrics"))  # type: ignore[no-untyped-call]


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets listening on one address with SO_REUSEPORT, one per edge: the kernel
    spreads new connections over them (on a single shared socket one process took nearly
    every connection), and the supervisor keeps each open while its edge restarts, so
    connections wait in its backlog instead of being refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # bound without SO_REUSEPORT first: a port another server (another scr serve, too)
        # holds is an error, never a port silently shared with it
        probe.bind((host, port))
        port = probe.getsockname()[1]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            bound = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(bound)
            bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            bound.bind((host, port))
            bound.listen(LISTEN_BACKLOG)
    except OSError:
        for bound in sockets:
            bound.close()
        raise
    return sockets


def prepare_run_dir(data_dir: Path) -> Path:
    """A fresh run folder for this supervisor; those of supervisors no longer alive go."""
    runs = data_dir / "run"
    runs.mkdir(parents=True, exist_ok=True)
    for stale in runs.iterdir():
        if stale.name.isdigit() and not _alive(int(stale.name)):
            shutil.rmtree(stale, ignore_errors=True)
    run_dir = runs / str(os.getpid())
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "metrics").mkdir(parents=True)
    return run_dir


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
