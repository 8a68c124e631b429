"""The usage process under ``scr serve``: woken after each commit, exact after a SIGKILL."""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
from serve.test_supervisor import USAGE, Stream, child, kill_and_see_it_restart

from conftest import StoreAt
from scr.usage.durations import bucket_of
from scr.usage.windows import utc_minute
from support import ServerProcess, create_key, wait_for
from usage import recount as reference

COUNTED_WITHIN_S = 60.0
MAX_NICENESS = 19
MONTH = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "window": "day",
         "group_by": "model,user_id"}


def usage_of(server: ServerProcess, key: str) -> Any:
    answer = httpx.get(f"{server.url}/v1/usage", params=MONTH, headers={"authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def gauge(server: ServerProcess, name: str) -> str:
    lines = httpx.get(f"{server.url}/metrics").text.splitlines()
    return next((line.rsplit(" ", 1)[1] for line in lines if line.startswith(name)), "nan")


def test_sigkill_of_the_usage_process_mid_stream_counts_every_event_once(
    tmp_path: Any, store_at: StoreAt
) -> None:
    data, uri = store_at.data, store_at.uri
    key = create_key(data, store=uri)
    reader = create_key(data, role="read", store=uri)
    server = ServerProcess(data, store=uri).start()
    load = Stream(server, key)
    try:
        assert child(server, USAGE)["state"] == "running"
        assert server.proc is not None  # it gives way to ingest: nice 10 below its supervisor
        niceness = os.getpriority(os.PRIO_PROCESS, child(server, USAGE)["pid"])
        assert niceness == min(MAX_NICENESS, os.getpriority(os.PRIO_PROCESS, server.proc.pid) + 10)
        wait_for(lambda: usage_of(server, reader)["totals"]["events"] >= 1000, timeout_s=30,
                 what="usage counted under way")
        kill_and_see_it_restart(server, USAGE)
        wait_for(lambda: child(server, USAGE)["state"] == "running", timeout_s=20, what="ready again")
        counted = usage_of(server, reader)["totals"]["events"]
        wait_for(lambda: usage_of(server, reader)["totals"]["events"] >= counted + 1000,
                 timeout_s=30, what="counting after the restart, mid-stream")
        acknowledged = load.stop()
        wait_for(lambda: usage_of(server, reader)["totals"]["events"] >= len(acknowledged),
                 timeout_s=COUNTED_WITHIN_S, what="every acknowledged event counted")
        answer = usage_of(server, reader)
        assert child(server, USAGE)["restarts"] == 1
        assert child(server, USAGE)["last_exit"] == "killed by SIGKILL"
        # the gauge follows the write the API already sees
        wait_for(lambda: float(gauge(server, 'scr_usage_tokens{model="gpt-4o",tenant="org_acme"}'))
                 == answer["totals"]["total_tokens"], what="the tokens gauge at the counted total")
    finally:
        load.stop()
        server.stop()
    assert answer["totals"]["events"] == len(acknowledged)
    store = store_at.open()
    try:
        expected = reference.recount(store, data, "org_acme", "day", "UTC", ["model", "user_id"])
        start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
        by_user = reference.recount_users(store, data, "org_acme", start, end)
        histograms = Counter({(user_id, bucket): sessions for user_id, bucket, sessions
                              in store.usage_durations("org_acme", utc_minute(start), utc_minute(end))})
    finally:
        store.close()
    assert reference.as_compared(answer, ["model", "user_id"]) == expected
    # each session's duration in its user's histogram once, across the kill
    assert histograms == Counter((user_id, bucket_of(duration)) for user_id, counted in by_user.items()
                                 for duration in counted["durations"])
