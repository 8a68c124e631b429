"""Encryption at rest: personal fields sealed in the ledger, opened for reads and deliveries.

In-process app on both stores (``every_store``), and one real ``scr serve`` whose reader
process opens sealed events from the store for a real webhook receiver.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec
import psycopg
import pytest
from packed import ledger_table

from conftest import Client
from scr.config import parse_config
from scr.errors import ConfigError
from scr.privacy.master import write_master_key
from scr.server import create_app
from scr.store import open_store
from support import Receiver, ServerProcess, create_key, free_port, make_event, run_scr, wait_for

pytestmark = pytest.mark.every_store

USER = "alice.wonder@example.com"
MESSAGE = "Your refund for order 88123 is on its way, Alice."
IP = "203.0.113.77"
TAG = "vip-escalation-7731"
PLAINTEXTS = [USER, MESSAGE, IP, TAG]


def personal_event(event_id: str, user: str = USER) -> dict[str, object]:
    return make_event(event_id, **{
        "user.user_id": user, "outcome.final_message": MESSAGE, "metadata.source_ip": IP,
        "metadata.custom_tags": {"queue": TAG},
    })


def sealed_config(key_file: Path, destinations: str = "") -> str:
    routing = ("\n" + destinations) if destinations else " []"
    return ("session_completion_runtime:\n"
            f"  security:\n    master_key_file: {key_file}\n"
            f"  routing:\n    destinations:{routing}\n")


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "master.key"
    path.parent.mkdir()
    write_master_key(path)
    return path


def stored_entries(client: Client) -> list[bytes]:
    """Every ledger entry's stored bytes, read straight from the store."""
    if client.store_uri is None:
        import sqlite3
        with sqlite3.connect(client.data / "scr.db") as conn, ledger_table(conn):
            return [bytes(row[0]) for row in conn.execute("SELECT entry FROM ledger")]
    with psycopg.connect(client.store_uri) as conn:
        return [bytes(row[0]) for row in conn.execute("SELECT entry FROM ledger")]


def test_personal_fields_are_sealed_in_the_ledger_and_read_back_whole(
    serve: Callable[..., Client], key_file: Path
) -> None:
    client = serve(sealed_config(key_file))
    ingest, reader = client.key(), client.key(role="read")
    sent = personal_event("evt_sealed")
    assert client.post("/v1/events", json=sent, headers=ingest).status_code == 202
    answer = client.get("/v1/events/evt_sealed", headers=reader)
    assert answer.status_code == 200, answer.text
    event = answer.json()["event"]
    assert event["user"]["user_id"] == USER and event["outcome"]["final_message"] == MESSAGE
    assert event["metadata"]["source_ip"] == IP and event["metadata"]["custom_tags"] == {"queue": TAG}
    assert "erased" not in event
    session = client.get(f"/v1/sessions/{sent['session']['session_id']}", headers=reader)  # type: ignore[index]
    assert session.json()["events"][0]["event"]["user"]["user_id"] == USER
    entries = stored_entries(client)
    sealed = [json.loads(e) for e in entries if b"evt_sealed" in e]
    assert len(sealed) == 1 and sealed[0]["seal"]["v"] == 1
    assert sealed[0]["payload"]["user"]["user_id"].startswith("subject:")
    for entry in entries:
        for plaintext in PLAINTEXTS:
            assert plaintext.encode() not in entry, plaintext
    # the same event again is a duplicate, another body under its id a conflict
    again = client.post("/v1/events", json=[sent], headers=ingest).json()
    assert again["results"][0]["status"] == "duplicate", again
    other = client.post("/v1/events", json=[personal_event("evt_sealed", user="bob")], headers=ingest)
    assert other.json()["results"][0]["errors"][0]["code"] == "conflict", other.text


def test_the_ledger_with_sealed_entries_verifies(
    serve: Callable[..., Client], key_file: Path
) -> None:
    client = serve(sealed_config(key_file))
    ingest = client.key()
    batch = [personal_event(f"evt_{n}", user=f"user_{n % 3}") for n in range(20)]
    assert client.post("/v1/events", json=batch, headers=ingest).status_code == 202
    where = ["--store", client.store_uri] if client.store_uri else ["--data", str(client.data)]
    verified = run_scr("ledger", "verify", *where, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_tampered_ciphertext_is_reported_never_served(
    serve: Callable[..., Client], key_file: Path
) -> None:
    client = serve(sealed_config(key_file))
    ingest, reader = client.key(), client.key(role="read")
    assert client.post("/v1/events", json=[personal_event("evt_a"), personal_event("evt_b")],
                       headers=ingest).status_code == 202
    (victim,) = [e for e in stored_entries(client) if b'"evt_a"' in e]
    entry = json.loads(victim)
    raw = bytearray(base64.b64decode(entry["seal"]["fields"]["outcome.final_message"]))
    raw[15] ^= 0x01
    entry["seal"]["fields"]["outcome.final_message"] = base64.b64encode(bytes(raw)).decode()
    altered = msgspec.json.encode(entry, order="sorted")
    if client.store_uri is None:
        import sqlite3
        with sqlite3.connect(client.data / "scr.db") as conn, ledger_table(conn):
            conn.execute("UPDATE ledger SET entry = ? WHERE event_id = 'evt_a'", (altered,))
    else:
        with psycopg.connect(client.store_uri) as conn:
            conn.execute("UPDATE ledger SET entry = %s WHERE event_id = 'evt_a'", (altered,))
    answer = client.get("/v1/events/evt_a", headers=reader)
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "sealed_data_corrupt"
    assert "outcome.final_message" in answer.json()["error"]["message"]
    assert MESSAGE not in answer.text
    assert client.get("/v1/events/evt_b", headers=reader).status_code == 200  # still up


def test_a_wrong_or_missing_master_key_is_refused_before_anything_is_written(
    serve: Callable[..., Client], key_file: Path, data_dir: Path, store_uri: str | None, tmp_path: Path
) -> None:
    client = serve(sealed_config(key_file))
    assert client.post("/v1/events", json=personal_event("evt_1"), headers=client.key()).status_code == 202
    client.__exit__(None, None, None)
    before = stored_entries(client)
    other = tmp_path / "other.key"
    write_master_key(other)
    cases = {
        "another key": (sealed_config(other), "not the one this data was written with"),
        "no key file": (sealed_config(tmp_path / "gone.key"), "does not exist"),
        "no key at all": ("session_completion_runtime: {}\n", "configure its master key"),
    }
    for name, (config, message) in cases.items():
        with pytest.raises(ConfigError, match=message):
            create_app(parse_config(config), data_dir, store_uri)
        print(name, "refused")
    assert stored_entries(client) == before
    store = open_store(data_dir, store_uri)
    try:
        assert store.privacy_value("master_check") is not None
    finally:
        store.close()


@pytest.mark.slow
def test_scr_serve_delivers_sealed_events_opened_and_refuses_a_wrong_key(
    tmp_path: Path, key_file: Path, store_uri: str | None
) -> None:
    hook = Receiver()
    data = tmp_path / "data"
    config = tmp_path / "scr.yaml"
    config.write_text(sealed_config(key_file, f'      - {{name: hook, endpoint: "{hook.url}"}}'))
    key = create_key(data, store=store_uri)
    server = ServerProcess(data, config, store=store_uri).start()
    try:
        ingest = {"authorization": f"Bearer {key}"}
        answer = httpx.post(f"{server.url}/v1/events", json=[personal_event(f"evt_{n}") for n in range(5)],
                            headers=ingest, timeout=10)
        assert answer.status_code == 202
        wait_for(lambda: len(hook.events()) >= 5, timeout_s=20, what="5 deliveries")
        assert {item["user"]["user_id"] for item in hook.events()} == {USER}
    finally:
        server.stop()
        hook.close()
    other = tmp_path / "other.key"
    write_master_key(other)
    config.write_text(sealed_config(other))
    refused = run_scr("serve", "--data", str(data), "--config", str(config), "--port", str(free_port()),
                      *(["--store", store_uri] if store_uri else []), check=False)
    assert refused.returncode == 2
    assert "not the one this data was written with" in refused.stdout + refused.stderr
    assert other.read_text().strip() not in refused.stdout + refused.stderr


@pytest.mark.parametrize("encrypted", [True, False])
def test_a_destination_can_opt_out_of_personal_fields(
    serve: Callable[..., Client], key_file: Path, receivers: Callable[..., Receiver], encrypted: bool
) -> None:
    whole, withheld = receivers(), receivers()
    destinations = (f'      - {{name: whole, endpoint: "{whole.url}"}}\n'
                    f'      - {{name: withheld, endpoint: "{withheld.url}", personal_fields: false}}')
    config = (sealed_config(key_file, destinations) if encrypted
              else "session_completion_runtime:\n  routing:\n    destinations:\n" + destinations + "\n")
    client = serve(config)
    assert client.post("/v1/events", json=[personal_event("evt_1")], headers=client.key()).status_code == 202
    wait_for(lambda: whole.event_ids() == {"evt_1"} and withheld.event_ids() == {"evt_1"}, what="both")
    (full,), (bare,) = whole.events(), withheld.events()
    assert full["user"]["user_id"] == USER and full["outcome"]["final_message"] == MESSAGE
    text = withheld.received[0].body.decode()
    for plaintext in PLAINTEXTS:
        assert plaintext not in text, plaintext
    assert bare["usage"] == full["usage"] and bare["metadata"]["custom_tags"] == {"queue": ""}
    if encrypted:  # the subject's keyed hash, as the ledger names it
        assert bare["user"]["user_id"].startswith("subject:") and len(bare["user"]["user_id"]) == 40
    else:
        assert bare["user"]["user_id"] == "redacted"
