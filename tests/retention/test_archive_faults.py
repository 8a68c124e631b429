"""The archiver under faults: SIGKILL mid-segment, a full disk, and its own process under
``scr serve`` (killed too). After each, nothing is half listed, no hot row lost its bytes
before its segment was durable, and the next pass finishes the work.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from ledger.conftest import LedgerApp, StartApp
from packed import ledger_rows
from serve.test_supervisor import child, kill_and_see_it_restart

from scr.store.sqlite import DATABASE_FILE
from support import SCR, ServerProcess, create_key, make_event, wait_for

SOON = (datetime.now(UTC) + timedelta(days=31)).strftime("%Y-%m-%dT%H:%M:%SZ")
KILL_AFTER_LISTING_S = (0.0, 0.005, 0.015)  # a segment of 1,000 entries takes ~40 ms: between and mid-segment
SEGMENTS_PER_RUN = 3  # of the 20: each killed run lists about this many more


def rows(data: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(data / DATABASE_FILE)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def config(folder: Path, segment_entries: int = 256) -> Path:
    path = folder / "retention.yaml"
    path.write_text("session_completion_runtime:\n  retention:\n    hot_days: 30\n    cold_days: 60\n"
                    f"    segment_entries: {segment_entries}\n")
    return path


def archive_run(data: Path, conf: Path, *more: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*SCR, "archive", "run", "--data", str(data), "--config", str(conf),
                             "--now", SOON, *more], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def assert_consistent(data: Path) -> None:
    """Every listed segment verifies, and every row without its bytes lies in one."""
    answer = subprocess.run([*SCR, "archive", "verify", "--data", str(data)], capture_output=True, text=True)
    extra = [line for line in answer.stderr.splitlines() if "extra file" in line]
    problems = [line for line in answer.stderr.splitlines()
                if line.strip() and "extra file" not in line and "ARCHIVE PROBLEMS" not in line]
    assert not problems, answer.stderr
    assert all(".tmp" in line or "-0" in line for line in extra)  # unlisted leftovers only
    orphans = ledger_rows(data / DATABASE_FILE,
                          "SELECT count(*) FROM ledger l WHERE length(l.entry) = 0 AND NOT EXISTS ("
                          "SELECT 1 FROM archive_segments s WHERE s.tenant = l.tenant "
                          "AND l.tenant_seq BETWEEN s.first_leaf AND s.last_leaf)")
    assert orphans == [(0,)]


def signed_every(start_app: StartApp, folder: Path, entries: int) -> LedgerApp:
    """An app over ``folder/data`` that signs a checkpoint every ``entries`` entries."""
    return start_app(folder / "data", "session_completion_runtime:\n  routing:\n    destinations: []\n"
                     f"  ledger:\n    checkpoint_every_entries: {entries}\n    checkpoint_every_s: 86400\n")


@pytest.fixture
def big(tmp_path: Path, start_app: StartApp) -> Path:
    """20,000 events, signed every 1,000."""
    app = signed_every(start_app, tmp_path, 1_000)
    headers = app.key()
    for batch in range(20):
        app.post(headers, [f"evt_{batch}_{i}" for i in range(1_000)])
    app.checkpoint(headers)
    app.stop()
    return app.data


def listed_segments(data: Path) -> int:
    return int(rows(data, "SELECT count(*) FROM archive_segments")[0][0])


def kill_after_listing(run: subprocess.Popen[bytes], data: Path, target: int, extra_s: float) -> bool:
    """SIGKILL ``run`` ``extra_s`` after it has listed ``target`` segments; False if it ended first.

    The kill is timed by the archiver's progress, not by a clock: a loaded machine starts a run
    in anything from 0.5 s to several, and a fixed delay can land before every listing.
    """
    deadline = time.monotonic() + 60
    while listed_segments(data) < target and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(extra_s)
    run.send_signal(signal.SIGKILL)
    return run.wait(timeout=10) == -signal.SIGKILL


@pytest.mark.slow
def test_sigkill_mid_segment_never_lists_half_a_segment_nor_loses_a_row(big: Path) -> None:
    conf = config(big.parent, segment_entries=1_000)
    listed, killed = [(True, 0)], True
    while killed:  # each run is killed just after (or within) a later segment, until one finishes first
        extra_s = KILL_AFTER_LISTING_S[len(listed) % len(KILL_AFTER_LISTING_S)]
        killed = kill_after_listing(archive_run(big, conf), big, listed[-1][1] + SEGMENTS_PER_RUN, extra_s)
        assert_consistent(big)
        listed.append((killed, listed_segments(big)))
    assert any(killed and 0 < count < 20 for killed, count in listed), listed  # killed mid-pass
    finished = archive_run(big, conf)
    output = finished.communicate(timeout=120)[0].decode()
    assert finished.returncode == 0, output
    assert rows(big, "SELECT max(last_leaf) FROM archive_segments") == [(20_000,)]
    assert not list((big / "archive").rglob("*.tmp"))
    verified = subprocess.run([*SCR, "ledger", "verify", "--data", str(big)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr + verified.stdout
    assert subprocess.run([*SCR, "archive", "verify", "--data", str(big)]).returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 KiB file system (tmpfs, mounted as root, as the suite runs), unmounted after."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"a full disk needs a small tmpfs, which needs root: {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_stops_archiving_with_an_error_and_loses_nothing(
    tmp_path: Path, start_app: StartApp, small_disk: Path,
) -> None:
    app = signed_every(start_app, tmp_path, 250)
    headers = app.key()
    for batch in range(8):
        app.post(headers, [f"evt_{batch}_{i}_{'x' * 40}" for i in range(250)])
    app.checkpoint(headers)
    before = app.client.get("/v1/events/evt_0_3_" + "x" * 40, headers=headers).json()
    conf = config(tmp_path)
    full = archive_run(app.data, conf, "--archive-dir", str(small_disk))
    output = full.communicate(timeout=60)[0].decode()
    assert full.returncode == 2 and "No space left on device" in output, output
    assert_consistent(app.data)
    assert app.client.get("/v1/events/evt_0_3_" + "x" * 40, headers=headers).json() == before
    subprocess.run(["mount", "-o", "remount,size=10m", str(small_disk)], check=True)
    again = archive_run(app.data, conf, "--archive-dir", str(small_disk))
    assert again.wait(timeout=60) == 0
    assert rows(app.data, "SELECT max(last_leaf) FROM archive_segments") == [(2_000,)]
    assert app.client.get("/v1/events/evt_0_3_" + "x" * 40, headers=headers).json() == before
    app.stop()
    assert subprocess.run([*SCR, "archive", "verify", "--data", str(app.data)]).returncode == 0


def test_scr_serve_runs_the_archiver_in_its_own_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    conf = tmp_path / "scr.yaml"
    conf.write_text("session_completion_runtime:\n  routing:\n    destinations: []\n"
                    "  ledger:\n    checkpoint_every_entries: 100\n    checkpoint_every_s: 1\n"
                    "  retention:\n    hot_days: 0\n    check_every_s: 1\n    segment_entries: 256\n")
    server = ServerProcess(data, conf).start()
    try:
        key = create_key(data, "org_acme", "admin")
        headers = {"authorization": f"Bearer {key}"}
        events = [make_event(f"evt_{i}") for i in range(600)]
        assert httpx.post(f"{server.url}/v1/events", json=events, headers=headers).status_code == 202
        assert child(server, "scr: archive")["pid"]
        wait_for(lambda: rows(data, "SELECT count(*) FROM archive_segments")[0][0] > 0, timeout_s=30,
                 what="a segment archived by the server's own archiver")
        kill_and_see_it_restart(server, "scr: archive")
        more = [make_event(f"more_{i}") for i in range(300)]
        assert httpx.post(f"{server.url}/v1/events", json=more, headers=headers).status_code == 202
        wait_for(lambda: rows(data, "SELECT max(last_leaf) FROM archive_segments")[0][0] >= 600,
                 timeout_s=30, what="the restarted archiver archiving the new entries")
        answer = httpx.get(f"{server.url}/v1/events/evt_3", headers=headers)
        assert answer.status_code == 200 and answer.json()["event"]["event_id"] == "evt_3"
        listed = subprocess.run([*SCR, "archive", "list", "--data", str(data)],
                                capture_output=True, text=True)
        assert listed.stdout.startswith("archiver: active"), listed.stdout
    finally:
        server.stop()
    assert subprocess.run([*SCR, "ledger", "verify", "--data", str(data)]).returncode == 0
