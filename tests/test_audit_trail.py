"""The admin audit trail: keys, replay and enable are ledger entries naming the acting key, and
``GET /v1/audit`` lists them for admin and auditor keys of the tenant (on every store)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import config_text
from scr.log.commit import Committer, writing_alone
from scr.log.entry import Kind
from scr.security.audit import append_admin_action
from scr.security.auth import revoke_key
from scr.store import open_store
from scr.store.protocol import Transaction
from support import Receiver, ServerProcess, create_key, make_event, wait_for

pytestmark = pytest.mark.every_store

FAST = "backoff_base_ms: 20, backoff_max_ms: 100"


def key_id(key: str) -> str:
    """The public id of ``scr_<8 hex id>_<secret>`` (the secret may hold '_', the id never)."""
    return key.split("_", 2)[1]


def secret(key: str) -> str:
    return key.split("_", 2)[2]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


class Tenant:
    """Keys of every role for one tenant, made as ``scr keys create`` makes them."""

    def __init__(self, client: Any, tenant: str) -> None:
        self.name = tenant
        self.keys = {role: create_key(client.data, tenant, role, client.store_uri)
                     for role in ("ingest", "read", "admin", "auditor")}

    def audit(self, client: Any, role: str = "admin", **params: str) -> httpx.Response:
        answer: httpx.Response = client.get("/v1/audit", params=params, headers=bearer(self.keys[role]))
        return answer


def writer_of(client: Any) -> contextlib.AbstractContextManager[Committer]:
    """A committer on the client's store, as the CLI opens one beside a running server."""
    return writing_alone(open_store(client.data, client.store_uri))


def revoke(client: Any, key: str) -> None:
    """``scr keys revoke`` on the client's store."""
    with writer_of(client) as committer:
        revoke_key(committer, key_id(key))


def hook_config(url: str) -> str:
    return config_text(f'      - {{name: hook, endpoint: "{url}", transform: raw_v1, {FAST}}}')


def send(client: Any, key: str, *event_ids: str) -> None:
    answer = client.post("/v1/events", json=[make_event(e) for e in event_ids], headers=bearer(key))
    assert answer.status_code == 202, answer.text


def test_every_admin_action_is_an_entry_naming_the_acting_key(serve: Any, receivers: Any) -> None:
    hook: Receiver = receivers(script=[410])
    client = serve(hook_config(hook.url))
    acme = Tenant(client, "org_acme")
    send(client, acme.keys["ingest"], "evt_1")
    admin = acme.keys["admin"]
    wait_for(lambda: client.get("/v1/destinations", headers=bearer(admin))
             .json()["destinations"][0]["state"] == "disabled", what="disabled by the 410")
    assert client.post("/v1/destinations/hook/enable", headers=bearer(admin)).status_code == 200
    replay = {"destination": "hook", "event_ids": ["evt_1", "evt_unknown"]}
    assert client.post("/v1/deliveries/replay", json=replay, headers=bearer(admin)).json()["requeued"] == 1
    nothing = {"destination": "hook", "from": "2000-01-01T00:00:00Z", "to": "2000-01-02T00:00:00Z"}
    assert client.post("/v1/deliveries/replay", json=nothing, headers=bearer(admin)).json()["requeued"] == 0
    revoke(client, acme.keys["read"])

    answer = acme.audit(client)
    assert answer.status_code == 200
    entries = answer.json()["entries"]
    assert [e["kind"] for e in entries] == [
        *["KEY_CREATED"] * 4, "DESTINATION_ENABLED", "DELIVERIES_REPLAYED", "DELIVERIES_REPLAYED",
        "KEY_REVOKED",
    ]
    assert [e["index"] for e in entries] == sorted(e["index"] for e in entries)
    assert all(set(e) == {"index", "ts", "kind", "key_id", "details"} for e in entries)
    created = [e for e in entries if e["kind"] == "KEY_CREATED"]
    # the CLI holds no key: the operator acted; the details name the key made
    assert [(e["key_id"], e["details"]["key_id"], e["details"]["role"]) for e in created] == [
        (None, key_id(acme.keys[role]), role) for role in ("ingest", "read", "admin", "auditor")
    ]
    enabled, replayed, replayed_nothing, revoked = entries[4:]
    assert enabled["key_id"] == key_id(admin) and enabled["details"]["destination"] == "hook"
    assert enabled["details"]["was"] == "disabled"
    assert replayed["key_id"] == key_id(admin)
    assert replayed["details"] == {"destination": "hook", "requeued": 1, "event_id_count": 2,
                                   "from": None, "to": None, "status": None}
    assert replayed_nothing["details"]["requeued"] == 0
    assert replayed_nothing["details"]["from"] == "2000-01-01T00:00:00Z"
    assert revoked["key_id"] is None and revoked["details"] == {"key_id": key_id(acme.keys["read"])}
    # an auditor sees the same trail; no key's secret is in it, nor in any entry of the ledger
    assert acme.audit(client, "auditor").json() == answer.json()
    with writer_of(client) as committer:
        ledger = b"".join(e.entry for e in committer.store.tenant_entries_after("org_acme", 0))
    assert b"KEY_REVOKED" in ledger
    for key in acme.keys.values():
        assert secret(key) not in answer.text and secret(key).encode() not in ledger


def test_only_admin_and_auditor_keys_read_the_trail(serve: Any) -> None:
    client = serve()
    acme = Tenant(client, "org_acme")
    platform = create_key(client.data, "org_gateway", "platform", client.store_uri)
    for role in ("ingest", "read"):
        refused = acme.audit(client, role)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert client.get("/v1/audit", headers=bearer(platform)).status_code == 403
    assert client.get("/v1/audit").status_code == 401
    assert client.get("/v1/audit", headers=bearer("scr_00000000_nope")).status_code == 401
    assert acme.audit(client, "auditor").status_code == 200


def test_the_trail_is_the_callers_tenant_only(serve: Any) -> None:
    client = serve()
    acme, other = Tenant(client, "org_acme"), Tenant(client, "org_other")
    for tenant, stranger in ((acme, other), (other, acme)):
        answer = tenant.audit(client)
        named = {e["details"]["key_id"] for e in answer.json()["entries"]}
        assert named == {key_id(k) for k in tenant.keys.values()}
        assert stranger.name not in answer.text
        assert not {key_id(k) for k in stranger.keys.values()} & named


def test_from_and_to_bound_the_trail(serve: Any) -> None:
    client = serve()
    acme = Tenant(client, "org_acme")
    entries = acme.audit(client).json()["entries"]
    second, third = entries[1]["ts"], entries[2]["ts"]
    assert second < third  # entry times grow with the ledger
    window = acme.audit(client, **{"from": second, "to": third}).json()["entries"]
    assert window == [entries[1]]
    assert acme.audit(client, **{"from": third}).json()["entries"] == entries[2:]
    assert acme.audit(client, to=second).json()["entries"] == entries[:1]
    # another zone, the same instant
    assert acme.audit(client, **{"from": "2000-01-01T01:00:00+01:00"}).json()["entries"] == entries


@pytest.mark.parametrize(("name", "value"), [
    ("from", "yesterday"), ("to", "2026-12-01T00:00:00"), ("from", "2026-13-01T00:00:00Z"), ("to", ""),
])
def test_a_bad_time_is_400_naming_the_parameter(serve: Any, name: str, value: str) -> None:
    client = serve()
    acme = Tenant(client, "org_acme")
    answer = acme.audit(client, **{name: value})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "bad_request" and error["message"].startswith(f"{name} must be")
    assert [d["path"] for d in error["details"]] == [name]
    assert acme.audit(client).status_code == 200  # still up


def test_a_refused_admin_action_leaves_no_entry(serve: Any, receivers: Any) -> None:
    hook: Receiver = receivers()
    client = serve(hook_config(hook.url))
    acme = Tenant(client, "org_acme")
    before = acme.audit(client).json()["entries"]
    admin, reader = bearer(acme.keys["admin"]), bearer(acme.keys["read"])
    one = {"destination": "hook", "event_ids": ["e"]}
    refused = [
        client.post("/v1/deliveries/replay", json={**one, "destination": "nope"}, headers=admin),
        client.post("/v1/deliveries/replay", json={"destination": "hook"}, headers=admin),
        client.post("/v1/deliveries/replay", content=b"{not json", headers=admin),
        client.post("/v1/deliveries/replay", json={"destination": "hook", "from": "2000-01-01T00:00:00Z",
                                                   "status": "lost"}, headers=admin),
        client.post("/v1/deliveries/replay", json=one, headers=reader),
        client.post("/v1/destinations/nope/enable", headers=admin),
        client.post("/v1/destinations/hook/enable", headers=reader),
    ]
    assert [r.status_code for r in refused] == [404, 400, 400, 400, 403, 404, 403]
    assert acme.audit(client).json()["entries"] == before


def test_the_hook_commits_with_the_action_or_not_at_all(serve: Any) -> None:
    """``append_admin_action`` inside an action's write: a write that fails leaves no entry."""
    client = serve()
    acme = Tenant(client, "org_acme")
    before = acme.audit(client).json()["entries"]

    def failing(tx: Transaction) -> None:
        append_admin_action(committer, tx, "org_acme", Kind.ERASURE, {"erasure_id": "er_1"},
                            key_id="0badc0de")
        raise RuntimeError("the action failed after its entry was written")

    def succeeding(tx: Transaction) -> None:
        append_admin_action(committer, tx, "org_acme", Kind.ERASURE, {"erasure_id": "er_2"},
                            key_id="0badc0de", ref="er_2")

    with writer_of(client) as committer:
        with pytest.raises(RuntimeError, match="the action failed"):
            committer.run_sync(failing)
        assert acme.audit(client).json()["entries"] == before
        committer.run_sync(succeeding)
    (added,) = acme.audit(client).json()["entries"][len(before):]
    assert (added["kind"], added["key_id"]) == ("ERASURE", "0badc0de")
    assert added["details"] == {"erasure_id": "er_2"}


def test_replay_and_enable_in_reader_processes_are_ledgered(
    tmp_path: Path, store_uri: str | None, receivers: Any
) -> None:
    """Under ``scr serve`` the destinations run in a reader process: its replay and enable
    reach the ledger through the writer, in the same write as the action."""
    hook: Receiver = receivers()
    config = tmp_path / "scr.yaml"
    config.write_text(hook_config(hook.url))
    data = tmp_path / "data"
    ingest, admin = (create_key(data, role=role, store=store_uri) for role in ("ingest", "admin"))
    server = ServerProcess(data, config, store_uri).start()
    try:
        with httpx.Client(base_url=server.url, headers=bearer(admin)) as client:
            send(client, ingest, "evt_r")
            wait_for(lambda: "evt_r" in hook.event_ids(), what="the first delivery")
            replay = {"destination": "hook", "event_ids": ["evt_r"]}
            assert client.post("/v1/deliveries/replay", json=replay).json()["requeued"] == 1
            assert client.post("/v1/destinations/hook/enable").status_code == 200
            entries = client.get("/v1/audit").json()["entries"]
    finally:
        server.stop()
    assert [(e["kind"], e["key_id"]) for e in entries[2:]] == [
        ("DELIVERIES_REPLAYED", key_id(admin)), ("DESTINATION_ENABLED", key_id(admin)),
    ]
    assert entries[2]["details"]["requeued"] == 1
