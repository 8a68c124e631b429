"""``scr serve`` as a supervisor: titled processes, restarts, back-off, drain, one set of metrics."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from test_crash import stream

from conftest import StoreAt
from scr.serve.status import STATUS_FILE
from scr.store import open_store
from support import ServerProcess, create_key, run_scr, wait_for

RESTART_WITHIN_S = 1.0  # the bound from a child's end to the new process
DYING_WITHIN_S = 60.0
EDGE = "scr: edge 0"
WRITER = "scr: writer"
EDGES = [f"scr: edge {n}" for n in range(os.cpu_count() or 1)]  # server.workers' default
USAGE = "scr: usage"


def processes(server: ServerProcess) -> list[dict[str, Any]]:
    """The supervisor's status file: what it last said of each child."""
    assert server.proc is not None
    path = server.data / "run" / str(server.proc.pid) / STATUS_FILE
    answer: list[dict[str, Any]] = msgspec.json.decode(path.read_bytes())
    return answer


def child(server: ServerProcess, title: str) -> dict[str, Any]:
    return next(p for p in processes(server) if p["title"] == title)


def title_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


def counter(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not in /metrics")


class Stream:
    """Batches posted on a thread of their own until ``stop``; the ids acknowledged so far."""

    def __init__(self, server: ServerProcess, key: str) -> None:
        self.acknowledged: list[str] = []
        self._stop = threading.Event()
        self._sender = threading.Thread(target=stream, args=(server.url, key, self.acknowledged, self._stop))
        self._sender.start()

    def stop(self) -> list[str]:
        self._stop.set()
        self._sender.join(timeout=30)
        assert not self._sender.is_alive(), "the stream did not stop"
        return self.acknowledged


def kill_and_see_it_restart(server: ServerProcess, title: str) -> None:
    """SIGKILL the child; a new one is started within ``RESTART_WITHIN_S`` of its end."""
    victim = child(server, title)["pid"]
    os.kill(victim, signal.SIGKILL)
    # the kernel ends a killed process when its threads next run: a reader's, niced and
    # partly SCHED_IDLE, can take seconds to on a busy machine (the suite's workers)
    wait_for(lambda: ended(victim), timeout_s=DYING_WITHIN_S, what=f"{title} ended")
    ended_at = time.monotonic()
    wait_for(lambda: child(server, title)["pid"] not in (0, victim), timeout_s=RESTART_WITHIN_S,
             what=f"{title} started again")
    assert time.monotonic() - ended_at <= RESTART_WITHIN_S


def ended(pid: int) -> bool:
    """Whether the process has exited: gone, or every thread of it a zombie (its parent is
    told only once the last thread has ended)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return True
    for task in tasks:
        # a thread that ended meanwhile: its folder gone, or its stat unreadable (ESRCH)
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return False
    return True


def assert_in_the_ledger(server: ServerProcess, event_ids: list[str], uri: str | None) -> None:
    """Every one of ``event_ids`` is in org_acme's ledger (one read of the store), and a spread
    of them is read back through the API (a request each: a stream acknowledges tens of
    thousands, and asking for each took most of a test's minute)."""
    store = open_store(server.data, uri)
    try:
        stored = {entry.event_id for entry in store.tenant_entries("org_acme", 0, 2**62)}
    finally:
        store.close()
    missing = set(event_ids) - stored
    assert not missing, f"{len(missing)} acknowledged events are not in the ledger: {sorted(missing)[:5]}"
    reader = create_key(server.data, role="read", store=uri)
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {reader}"}) as client:
        for event_id in event_ids[:: max(1, len(event_ids) // 200)] + event_ids[-50:]:
            assert client.get(f"/v1/events/{event_id}").status_code == 200, event_id


def test_every_process_has_its_title(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        assert server.proc is not None
        assert title_of(server.proc.pid) == "scr: supervisor"
        for title in [WRITER, *EDGES, USAGE]:
            process = child(server, title)
            assert process["state"] == "running"
            assert title_of(process["pid"]) == title
        health = httpx.get(f"{server.url}/healthz").json()
        assert [p["title"] for p in health["processes"]] == [WRITER, *EDGES, USAGE]
    finally:
        server.stop()


@pytest.mark.slow
def test_sigkill_of_the_edge_mid_stream_loses_nothing(tmp_path: Path, store_at: StoreAt) -> None:
    """The edge dies under load: it is started again within 1 s, every acknowledged event is
    in the ledger, and the accepted counter does not go back."""
    data, uri = store_at.data, store_at.uri
    key = create_key(data, store=uri)
    server = ServerProcess(data, store=uri).start()
    load = Stream(server, key)
    try:
        wait_for(lambda: len(load.acknowledged) >= 1000, timeout_s=30, what="a stream under way")
        before = counter(server.url, "scr_events_accepted_total")
        kill_and_see_it_restart(server, EDGE)
        wait_for(lambda: child(server, EDGE)["state"] == "running", timeout_s=20, what="ready again")
        acknowledged = load.stop()
        assert child(server, EDGE)["restarts"] == 1
        assert child(server, EDGE)["last_exit"] == "killed by SIGKILL"
        assert counter(server.url, "scr_events_accepted_total") >= before
        assert acknowledged
        assert_in_the_ledger(server, acknowledged, uri)
    finally:
        load.stop()
        server.stop()


def test_a_child_that_keeps_crashing_is_backed_off(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        killed: list[int] = []
        for _ in range(3):  # each death soon after the last start counts as a quick crash
            wait_for(lambda: child(server, EDGE)["state"] == "running"
                     and child(server, EDGE)["pid"] not in killed, timeout_s=20, what="a new edge running")
            killed.append(child(server, EDGE)["pid"])
            os.kill(killed[-1], signal.SIGKILL)
        wait_for(lambda: child(server, EDGE)["restarts"] == len(killed) - 1
                 and child(server, EDGE)["state"] == "backing_off", timeout_s=5, what="backing off")
        backing_off_at = time.monotonic()
        wait_for(lambda: child(server, EDGE)["restarts"] == len(killed), timeout_s=10, what="restarted")
        # the third quick crash waits twice the base back-off (1 s) before its start
        assert time.monotonic() - backing_off_at >= 0.9
        wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code == 200, timeout_s=20,
                 what="ready after the back-off")
        assert counter(server.url, 'scr_process_restarts_total{process="scr: edge 0"}') == len(killed)
    finally:
        server.stop()


@pytest.mark.slow
def test_sigterm_mid_stream_drains_and_loses_nothing(tmp_path: Path, store_at: StoreAt) -> None:
    data, uri = store_at.data, store_at.uri
    config = tmp_path / "scr.yaml"
    drain_timeout_s = 5
    config.write_text(f"session_completion_runtime:\n  server: {{drain_timeout_s: {drain_timeout_s}}}\n")
    key = create_key(data, store=uri)
    server = ServerProcess(data, config, uri).start()
    load = Stream(server, key)
    try:
        wait_for(lambda: len(load.acknowledged) >= 1000, timeout_s=30, what="a stream under way")
        assert server.proc is not None
        children = [p["pid"] for p in processes(server)]
        server.proc.send_signal(signal.SIGTERM)
        asked_at = time.monotonic()
        assert server.proc.wait(timeout=drain_timeout_s + 5) == 0
        assert time.monotonic() - asked_at <= drain_timeout_s + 1
        assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], "a child outlived it"
    finally:
        acknowledged = load.stop()
        server.stop()
    server = ServerProcess(data, store=uri).start()
    try:
        assert_in_the_ledger(server, acknowledged, uri)
    finally:
        server.stop()


def test_sigkill_of_the_supervisor_takes_its_children(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    edge = child(server, EDGE)["pid"]
    server.kill()
    wait_for(lambda: not Path(f"/proc/{edge}").exists(), timeout_s=5, what="the edge gone")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/healthz", timeout=2)


def test_a_start_up_error_ends_serve_without_restarts(tmp_path: Path) -> None:
    """A store that cannot be opened is a start-up error (exit 2), not a crash to retry."""
    done = run_scr("serve", "--data", str(tmp_path / "data"), "--port", "0",
                   "--store", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2", check=False)
    assert done.returncode == 2
    assert "cannot open the store" in done.stderr
    assert "starting it again" not in done.stderr

