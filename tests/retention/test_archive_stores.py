"""The same retention on both stores: archive, read across tiers, dedup, purge and verify.

PostgreSQL keeps no Merkle tiles or checkpoints yet (the cluster parity issue), so its
segments are cut at ``segment_entries`` with no checkpoint in their manifests; everything
else is the same.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import Client, config_text
from scr.cli import app as cli
from scr.store import open_store
from support import make_event

pytestmark = pytest.mark.every_store

SOON = (datetime.now(UTC) + timedelta(days=31)).isoformat()
LATER = (datetime.now(UTC) + timedelta(days=41)).isoformat()


def scr(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def where(client: Client) -> list[str]:
    return ["--data", str(client.data), *(["--store", client.store_uri] if client.store_uri else [])]


def archive(client: Client, now: str) -> Any:
    conf = client.data.parent / "retention.yaml"
    conf.write_text("session_completion_runtime:\n  retention:\n    hot_days: 30\n    cold_days: 40\n"
                    "    segment_entries: 256\n")
    return scr("archive", "run", *where(client), "--config", str(conf), "--now", now)


def verified(client: Client) -> None:
    ledger = (["--store", client.store_uri] if client.store_uri else ["--data", str(client.data)])
    checked = scr("ledger", "verify", *ledger)
    assert checked.exit_code == 0, checked.output
    assert scr("archive", "verify", *where(client)).exit_code == 0


def test_archive_read_dedup_purge_and_verify_on_each_store(serve: Callable[..., Client]) -> None:
    client = serve(config_text() + "  ledger:\n    checkpoint_every_entries: 100\n")
    admin = client.key("org_acme", "admin")
    for batch in range(3):
        events = [make_event(f"evt_{batch * 200 + i}") for i in range(200)]
        assert client.post("/v1/events", json=events, headers=admin).status_code == 202
    if client.store_uri is None:  # the embedded store cuts segments at signed checkpoints
        assert client.post("/v1/ledger/checkpoint", headers=admin).status_code == 200
    original = client.get("/v1/events/evt_5", headers=admin).json()
    answer = archive(client, SOON)
    assert answer.exit_code == 0, answer.output
    store = open_store(client.data, client.store_uri)
    try:
        segments = store.archive_segments("org_acme")
        assert segments and segments[0].first_leaf == 0 and segments[-1].last_leaf >= 500
        assert any(s.stubbed_to > s.first_leaf for s in segments)  # the hot store shrank
    finally:
        store.close()
    assert client.get("/v1/events/evt_5", headers=admin).json() == original
    again = client.post("/v1/events", json=[make_event("evt_5")], headers=admin).json()
    assert again["results"][0]["status"] == "duplicate"
    verified(client)

    purged = archive(client, LATER)
    assert purged.exit_code == 0 and " 0 rows purged" not in purged.output, purged.output
    assert client.get("/v1/events/evt_5", headers=admin).status_code == 404
    kinds = [e["kind"] for e in client.get("/v1/audit", headers=admin).json()["entries"]]
    assert "SEGMENT_PURGED" in kinds
    # the chain goes on from the kept head: a new event is appended and everything verifies
    assert client.post("/v1/events", json=[make_event("evt_new")], headers=admin).status_code == 202
    store = open_store(client.data, client.store_uri)
    try:  # dedup holds while the ledger keeps an event: a purged event's key goes with it
        held = {event_id for event_id, _ in store.accepted_events("org_acme")}
        assert "evt_5" not in held and "evt_new" in held
        assert not [event_id for event_id in held if event_id.startswith("dedup key")]
    finally:
        store.close()
    verified(client)


def test_archive_and_purge_leave_other_tenants_alone(serve: Callable[..., Client], tmp_path: Path) -> None:
    client = serve(config_text() + "  ledger:\n    checkpoint_every_entries: 100\n")
    acme, globex = client.key("org_acme", "admin"), client.key("org_globex", "admin")
    for headers, tenant in ((acme, "org_acme"), (globex, "org_globex")):
        events = [make_event(f"{tenant}_{i}", **{"user.organization_id": tenant}) for i in range(300)]
        assert client.post("/v1/events", json=events, headers=headers).status_code == 202
    if client.store_uri is None:
        assert client.post("/v1/ledger/checkpoint", headers=acme).status_code == 200
        assert client.post("/v1/ledger/checkpoint", headers=globex).status_code == 200
    hold = client.post("/v1/legal-holds", json={"tenant": "org_globex", "reason": "case 9"}, headers=globex)
    assert hold.status_code == 201
    assert archive(client, SOON).exit_code == 0
    answer = archive(client, LATER)
    assert answer.exit_code == 0 and hold.json()["id"] in answer.output
    assert client.get("/v1/events/org_acme_3", headers=acme).status_code == 404  # purged
    assert client.get("/v1/events/org_globex_3", headers=globex).status_code == 200  # held
    assert client.get("/v1/events/org_globex_3", headers=acme).status_code == 404  # not acme's
    verified(client)
