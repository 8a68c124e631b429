"""The /v1/ledger API against a real app: checkpoints, entries, proofs, rhythm and bad input.

The tests marked ``every_store`` run on SQLite and on PostgreSQL (the cluster's store).
"""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from ledger.conftest import Headers, LedgerApp, StartApp, quick_rhythm
from ledger.tamper import restore, snapshot
from scr.log.checkpoint import Checkpoint, Signer, VerifierKey, key_id_for, verify_note
from scr.log.merkle import leaf_hash, verify_consistency, verify_inclusion
from support import wait_for


def b64(values: list[str]) -> list[bytes]:
    return [base64.b64decode(v) for v in values]


def fetch_checkpoint(app: LedgerApp, headers: Headers) -> Checkpoint:
    key = app.client.get("/v1/ledger/public-key", headers=headers).text.strip()
    note = app.client.get("/v1/ledger/checkpoint", headers=headers).text
    return verify_note(note, key)


@pytest.fixture
def acme(start_app: StartApp, data_dir: Path) -> tuple[LedgerApp, Headers]:
    app = start_app(data_dir)
    headers = app.key()  # entry 0 of org_acme: KEY_CREATED
    app.post(headers, [f"evt_{i}" for i in range(300)])
    return app, headers


@pytest.mark.every_store
def test_checkpoint_is_a_signed_note_over_every_entry(acme: tuple[LedgerApp, Headers]) -> None:
    app, headers = acme
    answer = app.client.get("/v1/ledger/checkpoint", headers=headers)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    key = app.client.get("/v1/ledger/public-key", headers=headers).text
    checkpoint = verify_note(answer.content, key.strip(), origin="scr/org_acme")
    assert checkpoint.tree_size == 301
    # Byte for byte the C2SP layout: origin, size, root, blank line, one signature line.
    lines = answer.text.split("\n")
    assert lines[:2] == ["scr/org_acme", "301"] and lines[3] == "" and lines[4].startswith("— scr ")
    assert app.client.get("/v1/ledger/checkpoint", headers=headers).content == answer.content


def test_public_key_is_a_c2sp_verifier_key_of_a_private_0600_key_file(
    acme: tuple[LedgerApp, Headers], data_dir: Path
) -> None:
    app, headers = acme
    text = app.client.get("/v1/ledger/public-key", headers=headers).text
    key = VerifierKey.parse(text)
    assert text.startswith(f"scr+{key.key_id.hex()}+") and key.key_id == key_id_for("scr", key.public_key)
    pem = data_dir / "ledger-key.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert Signer.load_or_create(pem, "scr").public_key == key.public_key


@pytest.mark.every_store
def test_an_inclusion_proof_fetched_over_http_verifies_with_the_pure_verifier(
    acme: tuple[LedgerApp, Headers],
) -> None:
    app, headers = acme
    checkpoint = fetch_checkpoint(app, headers)
    proof = app.client.get(
        "/v1/ledger/proof/inclusion", params={"event_id": "evt_123", "tree_size": checkpoint.tree_size},
        headers=headers,
    ).json()
    assert (proof["leaf_index"], proof["event_id"], proof["tree_size"]) == (124, "evt_123", 301)
    (entry,) = app.client.get(
        "/v1/ledger/entries", params={"start": 124, "end": 125}, headers=headers
    ).json()["entries"]
    assert entry["index"] == 124 and entry["event_id"] == "evt_123"
    leaf = base64.b64decode(entry["leaf"])
    verify_inclusion(leaf_hash(leaf), 124, 301, b64(proof["hashes"]), checkpoint.root_hash)
    stored = app.client.get("/v1/events/evt_123", headers=headers).json()
    assert stored["event"]["event_id"] == "evt_123" and b'"ref":"evt_123"' in leaf
    # An entry without an event id (the key's creation) is proven by its index.
    by_index = app.client.get(
        "/v1/ledger/proof/inclusion", params={"index": 0, "tree_size": 301}, headers=headers
    ).json()
    (first,) = app.client.get("/v1/ledger/entries", params={"start": 0, "end": 1}, headers=headers).json()[
        "entries"
    ]
    assert first["event_id"] is None and by_index["event_id"] is None
    verify_inclusion(leaf_hash(base64.b64decode(first["leaf"])), 0, 301, b64(by_index["hashes"]),
                     checkpoint.root_hash)


@pytest.mark.every_store
def test_a_later_checkpoint_is_proven_consistent_with_an_earlier_one(
    acme: tuple[LedgerApp, Headers],
) -> None:
    app, headers = acme
    old = fetch_checkpoint(app, headers)
    app.post(headers, [f"more_{i}" for i in range(50)])
    new = verify_note(app.checkpoint(headers), old_key(app, headers))
    assert new.tree_size == 351
    proof = app.client.get(
        "/v1/ledger/proof/consistency", params={"first": 301, "second": 351}, headers=headers
    ).json()
    assert (proof["first"], proof["second"]) == (301, 351)
    verify_consistency(301, 351, old.root_hash, new.root_hash, b64(proof["hashes"]))
    listed = app.client.get("/v1/ledger/checkpoints", params={"since": 301}, headers=headers).json()
    assert [c["tree_size"] for c in listed["checkpoints"]] == [301, 351]
    assert verify_note(listed["checkpoints"][1]["checkpoint"], old_key(app, headers)) == new
    later = app.client.get("/v1/ledger/checkpoints", params={"since": 302}, headers=headers).json()
    assert [c["tree_size"] for c in later["checkpoints"]] == [351]


def old_key(app: LedgerApp, headers: Headers) -> str:
    return app.client.get("/v1/ledger/public-key", headers=headers).text.strip()


@pytest.mark.every_store
def test_entries_are_end_exclusive_and_at_most_1000(start_app: StartApp, data_dir: Path) -> None:
    app = start_app(data_dir)
    headers = app.key()
    app.post(headers, [f"evt_{i}" for i in range(1200)])
    page = app.client.get("/v1/ledger/entries", params={"start": 10, "end": 13}, headers=headers).json()
    assert [e["index"] for e in page["entries"]] == [10, 11, 12]
    big = app.client.get("/v1/ledger/entries", params={"start": 0, "end": 5000}, headers=headers).json()
    assert len(big["entries"]) == 1000 and big["entries"][-1]["index"] == 999
    tail = app.client.get("/v1/ledger/entries", params={"start": 1195, "end": 1300}, headers=headers)
    assert [e["index"] for e in tail.json()["entries"]] == list(range(1195, 1201))
    assert app.client.get("/v1/ledger/entries", params={"start": 5000, "end": 5001},
                          headers=headers).json() == {"entries": []}


@pytest.mark.parametrize(
    ("path", "params", "status", "detail"),
    [
        ("/v1/ledger/proof/inclusion", {"event_id": "evt_nope", "tree_size": 10}, 404, None),
        ("/v1/ledger/proof/inclusion", {"event_id": "evt_1", "tree_size": 302}, 400, None),
        ("/v1/ledger/proof/inclusion", {"event_id": "evt_250", "tree_size": 100}, 400, None),
        ("/v1/ledger/proof/inclusion", {"index": 5000, "tree_size": 301}, 404, None),
        ("/v1/ledger/proof/inclusion", {"event_id": "evt_1"}, 400, "tree_size"),
        ("/v1/ledger/proof/inclusion", {"event_id": "evt_1", "tree_size": "-1"}, 400, "tree_size"),
        ("/v1/ledger/proof/inclusion", {"event_id": "evt_1", "tree_size": "1e3"}, 400, "tree_size"),
        ("/v1/ledger/proof/inclusion", {"tree_size": 10}, 400, "event_id"),
        ("/v1/ledger/proof/inclusion", {"event_id": "evt_1", "index": 2, "tree_size": 10}, 400, "event_id"),
        ("/v1/ledger/proof/consistency", {"first": 10, "second": 302}, 400, None),
        ("/v1/ledger/proof/consistency", {"first": 20, "second": 10}, 400, None),
        ("/v1/ledger/proof/consistency", {"first": "ten", "second": 20}, 400, "first"),
        ("/v1/ledger/proof/consistency", {"first": "007", "second": 20}, 400, "first"),
        ("/v1/ledger/entries", {"start": 5}, 400, "end"),
        ("/v1/ledger/entries", {"start": 5, "end": 2}, 400, "end"),
        ("/v1/ledger/checkpoints", {"since": "x"}, 400, "since"),
    ],
)
@pytest.mark.every_store
def test_bad_requests_get_clear_4xx_answers(
    acme: tuple[LedgerApp, Headers], path: str, params: dict[str, object], status: int, detail: str | None
) -> None:
    app, headers = acme
    answer = app.client.get(path, params=params, headers=headers)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["message"]
    if detail is not None:
        assert detail in [d["path"] for d in error["details"]]


@pytest.mark.every_store
def test_ledger_reads_are_tenant_scoped_and_need_the_ledger_permission(
    acme: tuple[LedgerApp, Headers],
) -> None:
    app, _ = acme
    other = app.key("org_other", "read")
    app.post(app.key("org_other", "ingest"), ["theirs_1"], tenant="org_other")
    assert app.client.get("/v1/ledger/proof/inclusion", params={"event_id": "evt_1", "tree_size": 3},
                          headers=other).status_code == 404  # acme's event is not revealed
    assert fetch_checkpoint(app, other).origin == "scr/org_other"
    auditor = app.key("org_acme", "auditor")
    assert fetch_checkpoint(app, auditor).origin == "scr/org_acme"
    assert app.client.get("/v1/events/evt_1", headers=auditor).status_code == 403  # no event contents
    ingest = app.key("org_acme", "ingest")
    assert app.client.get("/v1/ledger/checkpoint", headers=ingest).status_code == 403
    assert app.client.get("/v1/ledger/checkpoint").status_code == 401


@pytest.mark.every_store
def test_checkpoints_follow_the_configured_rhythm(start_app: StartApp, data_dir: Path) -> None:
    app = start_app(data_dir, quick_rhythm(every_entries=100))
    headers = app.key()
    app.post(headers, [f"evt_{i}" for i in range(99)])  # 100 entries with the key's
    listed = wait_for(
        lambda: app.client.get("/v1/ledger/checkpoints", headers=headers).json()["checkpoints"],
        what="a checkpoint after 100 entries",
    )
    assert listed[0]["tree_size"] == 100


@pytest.mark.every_store
def test_checkpoints_are_issued_every_few_seconds_without_traffic(
    start_app: StartApp, data_dir: Path
) -> None:
    app = start_app(data_dir, quick_rhythm(every_s=0.2))
    headers = app.key()
    app.post(headers, ["evt_1", "evt_2"])
    listed = wait_for(
        lambda: [c for c in app.client.get("/v1/ledger/checkpoints", headers=headers).json()["checkpoints"]
                 if c["tree_size"] == 3],
        what="the timer's checkpoint",
    )
    assert listed


def test_a_checkpoint_is_never_signed_over_a_rolled_back_ledger(
    start_app: StartApp, data_dir: Path, tmp_path: Path
) -> None:
    app = start_app(data_dir)
    headers = app.key()
    app.post(headers, [f"evt_{i}" for i in range(10)])
    old = snapshot(data_dir, tmp_path / "old")
    app.post(headers, [f"later_{i}" for i in range(10)])
    app.checkpoint(headers)  # 21 entries signed
    app.stop()
    restore(old, data_dir)  # the operator puts an older ledger back; checkpoints.db stays
    again = start_app(data_dir)
    again.post(headers, [f"fork_{i}" for i in range(20)])  # grows past 21, differently
    refused = again.client.post("/v1/ledger/checkpoint", headers=headers)
    assert refused.status_code == 503
    assert "rewritten or rolled back" in refused.json()["error"]["message"]
    newest = again.client.get("/v1/ledger/checkpoint", headers=headers).text
    assert newest.split("\n")[1] == "21"  # still the last honest one
