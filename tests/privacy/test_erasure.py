"""Erasure: a subject's keys destroyed in the transaction that appends its ERASURE entry; its
events read back erased, the ledger still verifies, no file keeps the key."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from jsonschema import Draft202012Validator
from packed import ledger_table

from conftest import Client, config_text
from privacy.test_encryption import MESSAGE, USER, key_file, personal_event, sealed_config  # noqa: F401
from scr.errors import Conflict
from scr.privacy.erasure import refuse_held
from support import Receiver, run_scr, wait_for

pytestmark = pytest.mark.every_store

OTHER = "bob.builder@example.com"


def erasure_entries(client: Client) -> list[dict[str, object]]:
    sql = "SELECT entry FROM ledger WHERE kind = 'ERASURE'"
    if client.store_uri is None:
        with sqlite3.connect(client.data / "scr.db") as conn, ledger_table(conn):
            return [json.loads(bytes(row[0])) for row in conn.execute(sql)]
    with psycopg.connect(client.store_uri) as conn:
        return [json.loads(bytes(row[0])) for row in conn.execute(sql)]


def verify(client: Client) -> None:
    where = ["--store", client.store_uri] if client.store_uri else ["--data", str(client.data)]
    verified = run_scr("ledger", "verify", *where, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_an_erased_subject_reads_back_erased_and_the_ledger_still_verifies(
    serve: Callable[..., Client], key_file: Path  # noqa: F811
) -> None:
    client = serve(sealed_config(key_file))
    ingest, reader, admin = client.key(), client.key(role="read"), client.key(role="admin")
    events = [personal_event(f"evt_a{n}") for n in range(3)] + [personal_event("evt_b", user=OTHER)]
    assert client.post("/v1/events", json=events, headers=ingest).status_code == 202
    erased = client.delete(f"/v1/subjects/{USER}", headers=admin)
    assert erased.status_code == 202, erased.text
    body = erased.json()
    assert set(body) == {"erasure_id", "events"} and body["events"] == 3
    for n in range(3):
        event = client.get(f"/v1/events/evt_a{n}", headers=reader).json()["event"]
        assert event["erased"] is True and event["user"]["user_id"] is None
        assert event["outcome"]["final_message"] is None and event["metadata"]["source_ip"] is None
        assert event["metadata"]["custom_tags"] == {"queue": None}
        assert event["usage"]["input_tokens"] == events[0]["usage"]["input_tokens"]  # type: ignore[index]
    kept = client.get("/v1/events/evt_b", headers=reader).json()["event"]
    assert kept["user"]["user_id"] == OTHER and kept["outcome"]["final_message"] == MESSAGE
    # idempotent: the same answer again
    assert client.delete(f"/v1/subjects/{USER}", headers=admin).json() == body
    (entry,) = erasure_entries(client)
    payload = entry["payload"]
    assert payload["erasure_id"] == body["erasure_id"] and len(payload["leaves"]) == 3  # type: ignore[index]
    assert payload["key_id"] and USER not in json.dumps(entry)  # type: ignore[index]
    audit = client.get("/v1/audit", headers=admin).json()["entries"]
    (listed,) = [e for e in audit if e["kind"] == "ERASURE"]
    assert listed["key_id"] == payload["key_id"] and listed["details"]["leaves"] == payload["leaves"]  # type: ignore[index]
    verify(client)
    # the same user later: a new key, readable, and erased again by a new erasure
    assert client.post("/v1/events", json=personal_event("evt_a9"), headers=ingest).status_code == 202
    assert client.get("/v1/events/evt_a9", headers=reader).json()["event"]["user"]["user_id"] == USER
    again = client.delete(f"/v1/subjects/{USER}", headers=admin).json()
    assert again["events"] == 1 and again["erasure_id"] != body["erasure_id"]
    assert client.get("/v1/events/evt_a9", headers=reader).json()["event"]["erased"] is True
    verify(client)


def test_erasure_is_refused_clearly(
    serve: Callable[..., Client], key_file: Path  # noqa: F811
) -> None:
    client = serve(sealed_config(key_file))
    assert client.post("/v1/events", json=personal_event("evt_1"), headers=client.key()).status_code == 202
    for role in ("ingest", "read", "auditor"):
        refused = client.delete(f"/v1/subjects/{USER}", headers=client.key(role=role))
        assert refused.status_code == 403, (role, refused.text)
    admin = client.key(role="admin")
    unknown = client.delete("/v1/subjects/nobody@example.com", headers=admin)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert client.delete("/v1/subjects/" + "x" * 257, headers=admin).status_code == 400
    # another tenant's admin cannot reach this tenant's subject
    other_admin = client.key(tenant="org_other", role="admin")
    assert client.delete(f"/v1/subjects/{USER}", headers=other_admin).status_code == 404
    event = client.get("/v1/events/evt_1", headers=client.key(role="read")).json()["event"]
    assert event["user"]["user_id"] == USER


def test_erasure_without_encryption_is_a_conflict(serve: Callable[..., Client]) -> None:
    client = serve(config_text())
    assert client.post("/v1/events", json=personal_event("evt_1"), headers=client.key()).status_code == 202
    refused = client.delete(f"/v1/subjects/{USER}", headers=client.key(role="admin"))
    assert refused.status_code == 409 and "master key" in refused.json()["error"]["message"]


def test_a_replay_after_erasure_delivers_no_personal_field(
    serve: Callable[..., Client], key_file: Path, receivers: Callable[..., Receiver]  # noqa: F811
) -> None:
    hook = receivers()
    client = serve(sealed_config(key_file, f'      - {{name: hook, endpoint: "{hook.url}"}}'))
    admin = client.key(role="admin")
    assert client.post("/v1/events", json=personal_event("evt_1"), headers=client.key()).status_code == 202
    wait_for(lambda: hook.event_ids() == {"evt_1"}, what="the first delivery")
    assert client.delete(f"/v1/subjects/{USER}", headers=admin).status_code == 202
    replayed = client.post("/v1/deliveries/replay", headers=admin,
                           json={"destination": "hook", "event_ids": ["evt_1"]})
    assert replayed.status_code == 200 and replayed.json()["requeued"] == 1
    wait_for(lambda: len(hook.received) >= 2, what="the replay")
    again = hook.received[-1].body.decode()
    assert USER not in again and MESSAGE not in again
    assert json.loads(again)["user"]["user_id"].startswith("subject:")


def test_a_legal_hold_refuses_the_erasure_naming_the_hold() -> None:
    """The hook the retention issue's holds plug into (``scr.privacy.erasure.HoldsOn``)."""
    with pytest.raises(Conflict) as refused:
        refuse_held(lambda tenant, subject, tx=None: ["hold_7"] if subject == "ab12" else [],
                    "org_acme", "ab12")
    assert refused.value.status == 409
    assert [(d.path, d.message) for d in refused.value.details] == [("legal_hold", "hold_7")]
    refuse_held(lambda tenant, subject, tx=None: [], "org_acme", "ab12")  # no hold: no refusal


def test_an_erased_event_is_answered_as_the_openapi_document_says(
    serve: Callable[..., Client], key_file: Path  # noqa: F811
) -> None:
    client = serve(sealed_config(key_file))
    reader = client.key(role="read")
    assert client.post("/v1/events", json=[personal_event("evt_1")], headers=client.key()).status_code == 202
    document = client.get("/openapi.json").json()
    stored = Draft202012Validator({"$ref": "#/components/schemas/StoredEvent", **document})
    stored.validate(client.get("/v1/events/evt_1", headers=reader).json())
    assert client.delete(f"/v1/subjects/{USER}", headers=client.key(role="admin")).status_code == 202
    erased = client.get("/v1/events/evt_1", headers=reader).json()
    assert erased["event"]["erased"] is True
    stored.validate(erased)
