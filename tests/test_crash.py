"""SIGKILL during a stream of batches, then restart: nothing acknowledged is lost."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import StoreAt
from scr.log.entry import GENESIS_HASH, chain_hash
from support import Receiver, ServerProcess, create_key, make_event, post_acknowledged, wait_for

STREAM_BATCH_EVENTS = 200
KILL_AFTER_S = 1.5


def stream(url: str, key: str, acknowledged: list[str], stop: threading.Event) -> None:
    """Post batches until the server dies; remember every event id it acknowledged."""
    batch_number = 0
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            batch = [make_event(f"evt_{batch_number}_{i}") for i in range(STREAM_BATCH_EVENTS)]
            batch_number += 1
            if not post_acknowledged(client, url, key, batch, acknowledged):
                return  # the server was killed mid-request


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_event(tmp_path: Path, store_at: StoreAt) -> None:
    """On each store: ``scr serve`` on the data folder's SQLite, or ``--store postgresql://…``."""
    hook = Receiver()
    data, uri = store_at.data, store_at.uri
    config = tmp_path / "scr.yaml"
    config.write_text(
        "session_completion_runtime:\n  routing:\n    destinations:\n"
        f'      - {{name: hook, endpoint: "{hook.url}", batch_size: 500, batch_wait_ms: 20}}\n'
        "      - {name: archive, type: file, path: archive.jsonl, transform: audit_v1}\n"
    )
    key = create_key(data, store=uri)
    server = ServerProcess(data, config, uri).start()
    acknowledged: list[str] = []
    stop = threading.Event()
    sender = threading.Thread(target=stream, args=(server.url, key, acknowledged, stop))
    try:
        sender.start()
        wait_for(lambda: len(acknowledged) >= 2000, timeout_s=30, what="a stream under way")
        time.sleep(KILL_AFTER_S)
        server.kill()
        stop.set()
        sender.join(timeout=20)
        assert acknowledged, "the stream acknowledged nothing before the kill"

        server = ServerProcess(data, config, uri).start()
        reader = create_key(data, role="read", store=uri)
        with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {reader}"}) as c:
            for event_id in acknowledged[:: max(1, len(acknowledged) // 200)] + acknowledged[-50:]:
                assert c.get(f"/v1/events/{event_id}").status_code == 200, event_id

        wanted = set(acknowledged)

        def delivered_everywhere() -> bool:
            at_hook = hook.event_ids()
            archive = data / "archive.jsonl"
            at_archive = set()
            if archive.exists():
                # only whole lines: the sink may be mid-append
                whole = archive.read_text().split("\n")[:-1]
                at_archive = {json.loads(line)["event_id"] for line in whole}
            return wanted <= at_hook and wanted <= at_archive

        wait_for(delivered_everywhere, timeout_s=60, what="every acknowledged event delivered")
        store = store_at.open()
        previous = GENESIS_HASH
        entries = store.tenant_entries("org_acme", 0, 10**9)
        assert [e.tenant_seq for e in entries] == list(range(len(entries)))
        for entry in entries:
            previous = chain_hash(previous, entry.entry)
            assert previous == entry.hash, f"chain broken at tenant_seq {entry.tenant_seq}"
        store.close()
    finally:
        stop.set()
        server.stop()
        hook.close()
