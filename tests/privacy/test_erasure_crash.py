"""SIGKILL of the writer while it erases a subject: after the restart the subject is erased
wholly or not at all, and the ERASURE entry exists exactly when its keys are gone."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from serve.test_supervisor import WRITER, child

from privacy.test_encryption import USER, personal_event, sealed_config
from scr.config import parse_config
from scr.privacy.master import write_master_key
from scr.privacy.setup import open_subjects
from scr.store import open_store
from support import ServerProcess, create_key, run_scr, wait_for

pytestmark = pytest.mark.every_store

TENANT = "org_acme"
EVENTS, BATCH = 3000, 500
KILL_AFTER_S = (0.0, 0.03, 0.1)  # from the DELETE: before, while and after it runs


def erasure_state(data: Path, config: str, store_uri: str | None) -> tuple[bool, int]:
    """(the subject's keys are all destroyed, how many ERASURE entries the tenant has)."""
    store = open_store(data, store_uri)
    try:
        subjects = open_subjects(parse_config(config), store)
        assert subjects is not None
        keys = store.subject_keys(TENANT, subjects.subject_of(TENANT, USER))
        assert keys, "the subject has keys"
        erasures = store.tenant_entries_of_kinds(TENANT, ["ERASURE"], 0)
        return all(wrapped is None for wrapped in keys.values()), len(erasures)
    finally:
        store.close()


def delete_subject(http: httpx.Client, admin: str, answers: list[int]) -> None:
    try:
        answer = http.delete(f"/v1/subjects/{USER}", headers={"authorization": f"Bearer {admin}"})
        answers.append(answer.status_code)
    except httpx.HTTPError:
        answers.append(0)


def kill_mid_erasure(folder: Path, delay_s: float, store_uri: str | None) -> bool:
    """Erase with the writer killed ``delay_s`` after the DELETE; whether the first erasure
    had committed. Checks the invariant, then that erasing again completes."""
    data, key_file, config_file = folder / "data", folder / "master.key", folder / "scr.yaml"
    folder.mkdir()
    write_master_key(key_file)
    config = sealed_config(key_file)
    config_file.write_text(config)
    ingest = create_key(data, store=store_uri)
    admin = create_key(data, role="admin", store=store_uri)
    server = ServerProcess(data, config_file, store=store_uri).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for start in range(0, EVENTS, BATCH):
                batch = [personal_event(f"evt_{n}") for n in range(start, start + BATCH)]
                assert http.post("/v1/events", json=batch,
                                 headers={"authorization": f"Bearer {ingest}"}).status_code == 202
            writer = child(server, WRITER)["pid"]
            answers: list[int] = []
            eraser = threading.Thread(target=delete_subject, args=(http, admin, answers))
            eraser.start()
            time.sleep(delay_s)
            os.kill(writer, signal.SIGKILL)
            eraser.join(timeout=30)
            wait_for(lambda: child(server, WRITER)["pid"] not in (0, writer)
                     and child(server, WRITER)["state"] == "running", timeout_s=20, what="a new writer")
            gone, erasures = erasure_state(data, config, store_uri)
            assert erasures == (1 if gone else 0), (delay_s, gone, erasures)
            if answers == [202]:
                assert gone, "a 202 was answered for an erasure that did not commit"
            # asked again, it completes (or answers the same), and the ledger verifies
            again = http.delete(f"/v1/subjects/{USER}", headers={"authorization": f"Bearer {admin}"})
            assert again.status_code == 202 and again.json()["events"] == EVENTS, again.text
            assert erasure_state(data, config, store_uri) == (True, 1)
    finally:
        server.stop()
    where = ["--store", store_uri] if store_uri else ["--data", str(data)]
    verified = run_scr("ledger", "verify", *where, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return gone


@pytest.mark.slow
def test_a_writer_killed_mid_erasure_leaves_it_whole_or_undone(tmp_path: Path, store_uri: str | None) -> None:
    # one database per test on PostgreSQL: one attempt there
    delays = KILL_AFTER_S if store_uri is None else KILL_AFTER_S[1:2]
    outcomes = [kill_mid_erasure(tmp_path / f"attempt{n}", delay, store_uri)
                for n, delay in enumerate(delays)]
    print(f"\nerased before the restart: {outcomes}")
