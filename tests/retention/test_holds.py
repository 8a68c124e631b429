"""Legal holds: placed, listed and released by a tenant's admins, ledgered with the acting
key and never the user id; a hold on the tenant or on a user refuses that user's erasure.

In-process app on both stores (``every_store``), and one real ``scr serve`` (the edges pass
the holds' requests to the writer).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from jsonschema import Draft202012Validator
from packed import ledger_table
from privacy.test_encryption import USER, key_file, personal_event, sealed_config  # noqa: F401

from conftest import Client, StoreAt, config_text
from scr.openapi import document
from scr.store.migrations import MIGRATIONS
from support import ServerProcess, create_key

pytestmark = pytest.mark.every_store

OTHER = "bob.builder@example.com"
REASON = "Litigation 2026-114: preserve everything"
PLACED_FIELDS = {"id", "tenant", "user_id", "reason", "created_at"}
HOLD_KINDS = ("LEGAL_HOLD_PLACED", "LEGAL_HOLD_RELEASED")
(HOLDS_MIGRATION,) = [m.version for m in MIGRATIONS if "legal holds" in m.name]


def conforms(body: Any, schema: str) -> None:
    """``body`` is what /openapi.json says the answer is."""
    spec = document()
    Draft202012Validator({**spec["components"]["schemas"][schema],
                          "components": spec["components"]}).validate(body)


def key_id(headers: dict[str, str]) -> str:
    return headers["authorization"].removeprefix("Bearer scr_").split("_")[0]


def place(client: Client, admin: dict[str, str], user_id: str | None = None,
          tenant: str = "org_acme", reason: str = REASON) -> dict[str, Any]:
    body = {"tenant": tenant, "reason": reason} | ({"user_id": user_id} if user_id else {})
    placed = client.post("/v1/legal-holds", json=body, headers=admin)
    assert placed.status_code == 201, placed.text
    answer: dict[str, Any] = placed.json()
    return answer


def listed(client: Client, admin: dict[str, str], query: str = "") -> list[dict[str, Any]]:
    answer = client.get(f"/v1/legal-holds{query}", headers=admin)
    assert answer.status_code == 200, answer.text
    conforms(answer.json(), "LegalHolds")
    holds: list[dict[str, Any]] = answer.json()["holds"]
    return holds


def stored(client: Client, sql: str) -> list[tuple[Any, ...]]:
    """Rows straight from the store's files or database."""
    if client.store_uri is None:
        with sqlite3.connect(client.data / "scr.db") as conn, ledger_table(conn):
            return conn.execute(sql).fetchall()
    with psycopg.connect(client.store_uri) as conn:
        return conn.execute(sql).fetchall()


def hold_entries(client: Client) -> list[dict[str, Any]]:
    kinds = ", ".join(f"'{kind}'" for kind in HOLD_KINDS)
    rows = stored(client, f"SELECT entry FROM ledger WHERE kind IN ({kinds}) ORDER BY seq")
    return [json.loads(bytes(row[0])) for row in rows]


def test_a_hold_is_placed_listed_and_released(
    serve: Callable[..., Client], key_file: Path  # noqa: F811
) -> None:
    client = serve(sealed_config(key_file))
    admin = client.key(role="admin")
    on_tenant, on_user = place(client, admin), place(client, admin, USER)
    assert set(on_tenant) == set(on_user) == PLACED_FIELDS
    assert on_tenant["tenant"] == "org_acme" and on_tenant["user_id"] is None
    assert on_user["user_id"] == USER and on_user["reason"] == REASON
    assert on_tenant["id"] != on_user["id"]
    conforms(on_user, "LegalHoldView")
    assert listed(client, admin) == [on_tenant, on_user]  # oldest first
    released = client.delete(f"/v1/legal-holds/{on_user['id']}", headers=admin)
    assert released.status_code == 200, released.text
    conforms(released.json(), "LegalHoldView")
    assert released.json() == {**on_user, "user_id": None, "released_at": released.json()["released_at"]}
    assert released.json()["released_at"] >= on_user["created_at"]
    assert listed(client, admin) == [on_tenant]
    assert listed(client, admin, "?all=true") == [on_tenant, released.json()]
    assert listed(client, admin, "?all=false") == [on_tenant]
    # the user id is forgotten on release; the subject stays
    (row,) = stored(client, f"SELECT user_id, subject FROM legal_holds WHERE hold_id = '{on_user['id']}'")
    assert row[0] is None and len(row[1]) == 32
    for again in (on_user["id"], "hold_unknown"):
        gone = client.delete(f"/v1/legal-holds/{again}", headers=admin)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    odd = client.get("/v1/legal-holds?all=maybe", headers=admin)
    assert odd.status_code == 400 and odd.json()["error"]["details"][0]["path"] == "all"


BAD_BODIES = [
    (b'{"reason": "r"}', "$.tenant"),
    (b'{"tenant": 7, "reason": "r"}', "$.tenant"),
    (b'{"tenant": "org acme", "reason": "r"}', "$.tenant"),
    (b'{"tenant": "org_acme"}', "$.reason"),
    (b'{"tenant": "org_acme", "reason": ""}', "$.reason"),
    (json.dumps({"tenant": "org_acme", "reason": "r" * 1001}).encode(), "$.reason"),
    (b'{"tenant": "org_acme", "reason": "r", "user_id": ""}', "$.user_id"),
    (b'{"tenant": "org_acme", "reason": "r", "user_id": 12}', "$.user_id"),
    (json.dumps({"tenant": "org_acme", "reason": "r", "user_id": "u" * 257}).encode(), "$.user_id"),
    (b'{"tenant": "org_acme", "reason": "r", "until": "2030"}', "$.until"),
    (b'["org_acme"]', "$"),
    (b'{"tenant": "org_acme", "reason": ', "$"),
]


def test_every_bad_body_is_refused_naming_its_path_and_nothing_is_stored(
    serve: Callable[..., Client]
) -> None:
    client = serve(config_text())
    admin = client.key(role="admin")
    for body, path in BAD_BODIES:
        refused = client.post("/v1/legal-holds", content=body,
                              headers={**admin, "content-type": "application/json"})
        assert refused.status_code == 400, (body, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "bad_request" and error["details"][0]["path"] == path, (body, error)
    assert listed(client, admin, "?all=true") == []
    assert stored(client, "SELECT hold_id FROM legal_holds") == [] and hold_entries(client) == []
    # the bounds themselves are accepted
    assert place(client, admin, "u" * 256, reason="r" * 1000)["user_id"] == "u" * 256


def test_only_a_tenants_admins_see_and_change_its_holds(serve: Callable[..., Client]) -> None:
    client = serve(config_text())
    admin = client.key(role="admin")
    hold = place(client, admin, USER)
    for role in ("ingest", "read", "auditor"):
        key = client.key(role=role)
        answers = [client.post("/v1/legal-holds", json={"tenant": "org_acme", "reason": "r"}, headers=key),
                   client.get("/v1/legal-holds", headers=key),
                   client.delete(f"/v1/legal-holds/{hold['id']}", headers=key)]
        assert [a.status_code for a in answers] == [403] * 3, (role, [a.text for a in answers])
    other = client.key(tenant="org_other", role="admin")
    crossing = client.post("/v1/legal-holds", json={"tenant": "org_acme", "reason": "r"}, headers=other)
    assert crossing.status_code == 403 and crossing.json()["error"]["details"][0]["path"] == "$.tenant"
    assert listed(client, other) == [] and listed(client, other, "?all=true&tenant=org_acme") == []
    assert client.delete(f"/v1/legal-holds/{hold['id']}", headers=other).status_code == 404
    assert client.delete(f"/v1/legal-holds/{hold['id']}?tenant=org_acme", headers=other).status_code == 404
    assert listed(client, admin) == [hold]  # still active, and only its tenant's entries
    assert [e["tenant_id"] for e in hold_entries(client)] == ["org_acme"]


def refused_by(answer: httpx.Response) -> list[str]:
    """The hold ids an erasure was refused for."""
    assert answer.status_code == 409, answer.text
    details = answer.json()["error"]["details"]
    assert {d["path"] for d in details} == {"legal_hold"}
    return sorted(d["message"] for d in details)


def test_erasure_is_refused_under_a_hold_on_the_tenant_or_the_user_until_released(
    serve: Callable[..., Client], key_file: Path  # noqa: F811
) -> None:
    client = serve(sealed_config(key_file))
    admin = client.key(role="admin")
    events = [personal_event("evt_a"), personal_event("evt_b", user=OTHER),
              personal_event("evt_c", user="carol")]
    assert client.post("/v1/events", json=events, headers=client.key()).status_code == 202
    on_user = place(client, admin, USER)
    assert refused_by(client.delete(f"/v1/subjects/{USER}", headers=admin)) == [on_user["id"]]
    assert client.delete(f"/v1/subjects/{OTHER}", headers=admin).status_code == 202  # not held
    on_tenant = place(client, admin)
    assert refused_by(client.delete(f"/v1/subjects/{USER}", headers=admin)) == sorted(
        [on_user["id"], on_tenant["id"]])
    assert refused_by(client.delete("/v1/subjects/carol", headers=admin)) == [on_tenant["id"]]
    # another tenant's hold holds nothing here
    place(client, client.key(tenant="org_other", role="admin"), USER, tenant="org_other")
    for hold in (on_user, on_tenant):
        assert client.delete(f"/v1/legal-holds/{hold['id']}", headers=admin).status_code == 200
    assert client.delete(f"/v1/subjects/{USER}", headers=admin).status_code == 202
    assert client.delete("/v1/subjects/carol", headers=admin).status_code == 202


def test_holds_and_releases_are_audited_with_the_acting_key_and_never_the_user_id(
    serve: Callable[..., Client], key_file: Path  # noqa: F811
) -> None:
    client = serve(sealed_config(key_file))
    placer, releaser = client.key(role="admin"), client.key(role="admin")
    assert client.post("/v1/events", json=personal_event("evt_a"), headers=client.key()).status_code == 202
    hold = place(client, placer, USER)
    assert client.delete(f"/v1/legal-holds/{hold['id']}", headers=releaser).status_code == 200
    audit = client.get("/v1/audit", headers=client.key(role="auditor")).json()["entries"]
    placed, released = [e for e in audit if e["kind"] in HOLD_KINDS]
    assert (placed["kind"], released["kind"]) == HOLD_KINDS
    assert placed["key_id"] == placed["details"]["key_id"] == key_id(placer)
    assert released["key_id"] == released["details"]["key_id"] == key_id(releaser)
    for entry in (placed, released):
        assert entry["details"]["hold_id"] == hold["id"] and entry["details"]["reason"] == REASON
        assert entry["details"]["tenant"] == "org_acme" and len(entry["details"]["subject"]) == 32
    # nowhere in the ledger, nor in the hold's row once released
    ledger = b"".join(bytes(row[0]) for row in stored(client, "SELECT entry FROM ledger"))
    assert USER.encode() not in ledger and len(hold_entries(client)) == 2
    assert USER not in repr(stored(client, "SELECT * FROM legal_holds"))


def test_a_user_hold_without_encryption_blocks_erasure_once_a_master_key_is_configured(
    serve: Callable[..., Client], key_file: Path  # noqa: F811
) -> None:
    plain = serve(config_text())
    admin = plain.key(role="admin")
    hold = place(plain, admin, USER)
    (entry,) = hold_entries(plain)
    assert len(entry["payload"]["subject"]) == 32 and USER not in json.dumps(entry)
    plain.__exit__(None, None, None)
    sealed = serve(sealed_config(key_file))
    assert sealed.post("/v1/events", json=personal_event("evt_a"), headers=sealed.key()).status_code == 202
    assert refused_by(sealed.delete(f"/v1/subjects/{USER}", headers=admin)) == [hold["id"]]
    assert sealed.delete(f"/v1/legal-holds/{hold['id']}", headers=admin).status_code == 200
    assert sealed.delete(f"/v1/subjects/{USER}", headers=admin).status_code == 202


def test_holds_under_scr_serve(
    tmp_path: Path, store_uri: str | None, key_file: Path  # noqa: F811
) -> None:
    data, config = tmp_path / "data", tmp_path / "scr.yaml"
    config.write_text(sealed_config(key_file))
    admin = {"authorization": f"Bearer {create_key(data, role='admin', store=store_uri)}"}
    ingest = {"authorization": f"Bearer {create_key(data, store=store_uri)}"}
    server = ServerProcess(data, config, store=store_uri).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post("/v1/events", json=personal_event("evt_a"), headers=ingest).status_code == 202
            placed = http.post("/v1/legal-holds", json={"tenant": "org_acme", "user_id": USER,
                                                        "reason": REASON}, headers=admin)
            assert placed.status_code == 201, placed.text
            hold = placed.json()
            assert http.get("/v1/legal-holds", headers=admin).json()["holds"] == [hold]
            assert refused_by(http.delete(f"/v1/subjects/{USER}", headers=admin)) == [hold["id"]]
            assert http.delete(f"/v1/legal-holds/{hold['id']}", headers=admin).status_code == 200
            assert http.delete(f"/v1/subjects/{USER}", headers=admin).status_code == 202
            kinds = [e["kind"] for e in http.get("/v1/audit", headers=admin).json()["entries"]]
            assert [k for k in kinds if k in HOLD_KINDS] == list(HOLD_KINDS)
    finally:
        server.stop()


def test_a_store_made_before_holds_gets_their_table(store_at: StoreAt) -> None:
    """An older data folder or database (no ``legal_holds``) gets the table when opened."""
    store_at.open().close()
    if store_at.uri is None:
        with sqlite3.connect(store_at.data / "scr.db") as conn:
            conn.execute("DROP TABLE legal_holds")
    else:
        with psycopg.connect(store_at.uri) as conn:
            conn.execute("DROP TABLE legal_holds")
            conn.execute("DELETE FROM schema_migrations WHERE version = %s", (HOLDS_MIGRATION,))
    store = store_at.open()
    try:
        assert store.legal_holds("org_acme", active=False) == []
    finally:
        store.close()


def test_a_hold_placed_in_the_same_write_group_still_blocks_erasure(store_at: StoreAt) -> None:
    """Erasure checks the holds again inside its write: a hold committed a moment before, or
    earlier in the same group commit (not visible to other connections yet), counts."""
    from scr.log.commit import Committer
    from scr.privacy.erasure import refuse_held
    from scr.retention.holds import holds_on
    from scr.store.records import LegalHold

    store = store_at.open()
    committer = Committer(store, buffer_size=1)
    committer.start()
    hold = LegalHold("hold_fresh", "org_acme", None, None, "case 1", "2026-12-06T00:00:00Z", "k1")
    check = holds_on(store)

    def place_then_erase(tx: Any) -> list[str]:
        store.add_legal_hold(tx, hold)
        unseen = check("org_acme", "subject", None)  # another connection: not committed yet
        assert unseen == []
        return check("org_acme", "subject", tx)

    try:
        assert committer.run_sync(place_then_erase) == ["hold_fresh"]
        with pytest.raises(Exception, match="legal hold") as refused:
            committer.run_sync(lambda tx: refuse_held(check, "org_acme", "subject", tx))
        assert [d.message for d in refused.value.details] == ["hold_fresh"]  # type: ignore[attr-defined]
    finally:
        committer.close()
        store.close()
