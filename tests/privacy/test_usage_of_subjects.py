"""Usage with encryption on: kept by subject (never the user id), shown by user id, and by
``erased:<hash prefix>`` once the subject is erased."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest
from usage.test_usage_process import MONTH

from privacy.test_encryption import USER, personal_event, sealed_config
from scr.privacy.master import write_master_key
from support import ServerProcess, create_key, wait_for

OTHER = "bob.builder@example.com"


def by_user(server: ServerProcess, key: str) -> dict[str, int]:
    answer = httpx.get(f"{server.url}/v1/usage", params={**MONTH, "group_by": "user_id"},
                       headers={"authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    counted: dict[str, int] = {}
    for row in answer.json()["rows"]:
        counted[row["user_id"]] = counted.get(row["user_id"], 0) + row["events"]
    return counted


@pytest.mark.slow
def test_usage_names_users_and_counts_erased_ones_under_their_hash(tmp_path: Path) -> None:
    data, key_file, config = tmp_path / "data", tmp_path / "master.key", tmp_path / "scr.yaml"
    write_master_key(key_file)
    config.write_text(sealed_config(key_file))
    ingest, admin = create_key(data), create_key(data, role="admin")
    server = ServerProcess(data, config).start()
    try:
        events = [personal_event(f"evt_a{n}") for n in range(3)] + [personal_event("evt_b", user=OTHER)]
        assert httpx.post(f"{server.url}/v1/events", json=events,
                          headers={"authorization": f"Bearer {ingest}"}).status_code == 202
        wait_for(lambda: by_user(server, admin) == {USER: 3, OTHER: 1}, timeout_s=30, what="usage by user")
        with sqlite3.connect(data / "scr.db") as conn:
            kept = {row[0] for row in conn.execute("SELECT DISTINCT user_id FROM usage_minutes")}
        assert all(name.startswith("subject:") for name in kept), kept  # no user id in the store
        erased = httpx.delete(f"{server.url}/v1/subjects/{USER}",
                              headers={"authorization": f"Bearer {admin}"})
        assert erased.status_code == 202
        after = by_user(server, admin)
        assert after[OTHER] == 1 and USER not in after
        (name,) = [n for n in after if n.startswith("erased:")]
        assert after[name] == 3 and len(name) == len("erased:") + 12
    finally:
        server.stop()
