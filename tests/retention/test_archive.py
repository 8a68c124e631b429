"""Archive tiers on the embedded store: entries past their hot days move into segments, and
every read, proof, replay and verification works across the tiers; segments past their
cold days are purged (ledgered), unless a legal hold stands in the way.

A real in-process app over a data folder and the real ``scr archive`` commands; time is
moved with ``--now`` (the archiver's injectable clock), never by sleeping.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import itertools
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ledger.conftest import LedgerApp, StartApp
from ledger.test_api import fetch_checkpoint
from packed import ledger_table
from typer.testing import CliRunner

from conftest import config_text
from scr.cli import app as cli
from scr.log.merkle import leaf_hash, verify_inclusion
from scr.store.sqlite import DATABASE_FILE
from support import Receiver, make_event, wait_for

FAST = "backoff_base_ms: 20, backoff_max_ms: 100"
EVENTS = 1_000
SOON = (datetime.now(UTC) + timedelta(days=31)).strftime("%Y-%m-%dT%H:%M:%SZ")  # past 30 hot days
LATER = (datetime.now(UTC) + timedelta(days=41)).strftime("%Y-%m-%dT%H:%M:%SZ")  # past 40 cold days
Headers = dict[str, str]


def retention(data: Path, hot_days: int = 30, cold_days: int = 40, extra: str = "") -> Path:
    path = data.parent / "retention.yaml"
    path.write_text("session_completion_runtime:\n  retention:\n"
                    f"    hot_days: {hot_days}\n    cold_days: {cold_days}\n"
                    f"    segment_entries: 256\n{extra}")
    return path


def scr(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def archive(data: Path, now: str, config: Path | None = None, *more: str) -> Any:
    result = scr("archive", "run", "--data", str(data), "--config", str(config or retention(data)),
                 "--now", now, *more)
    return result


def ledger_rows(data: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(data / DATABASE_FILE)
    try:
        with ledger_table(conn):
            return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def leaves(app: LedgerApp, headers: Headers, start: int, end: int) -> list[bytes]:
    found = []
    while start < end:
        page = app.client.get("/v1/ledger/entries", params={"start": start, "end": end},
                              headers=headers).json()["entries"]
        if not page:
            break
        found += [base64.b64decode(e["leaf"]) for e in page]
        start = page[-1]["index"] + 1
    return found


@pytest.fixture
def hook(receivers: Any) -> Receiver:
    receiver: Receiver = receivers()
    return receiver


@pytest.fixture
def acme(tmp_path: Path, start_app: StartApp, hook: Receiver) -> Iterator[tuple[LedgerApp, Headers]]:
    """1,000 events of org_acme in a data folder, in 4 batches, each signed (leaves 0..1000)."""
    # batched: a request an event made the delivery most of the fixture's time
    config = config_text(f'      - {{name: hook, endpoint: "{hook.url}", transform: raw_v1, batch_size: 250, '
                         f'{FAST}}}')
    config += "  ledger:\n    checkpoint_every_entries: 100\n    checkpoint_every_s: 86400\n"
    app = start_app(tmp_path / "data", config)
    headers = app.key()
    for batch in range(4):
        app.post(headers, [f"evt_{batch * 250 + i}" for i in range(250)])
    app.checkpoint(headers)
    wait_for(lambda: len(hook.event_ids()) >= EVENTS, what="every event delivered")
    yield app, headers


def test_entries_past_their_hot_days_move_into_segments_cut_at_checkpoints(
    acme: tuple[LedgerApp, Headers],
) -> None:
    app, headers = acme
    before = leaves(app, headers, 0, EVENTS + 1)
    answer = archive(app.data, SOON)
    assert answer.exit_code == 0, answer.output
    segments = ledger_rows(app.data, "SELECT first_leaf, last_leaf FROM archive_segments ORDER BY first_leaf")
    signed = {c["tree_size"] for c in app.client.get("/v1/ledger/checkpoints", params={"since": 0},
                                                     headers=headers).json()["checkpoints"]}
    assert segments == [(0, 250), (251, 500), (501, 750), (751, 1000)]
    assert segments[0][0] == 0 and segments[-1][1] == EVENTS  # every entry: 1,001 leaves
    assert all(last + 1 in signed for _, last in segments)  # each ends where a checkpoint does
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(segments))
    # the hot store keeps keys and hashes; the bytes of full tiles' events left it
    emptied = ledger_rows(app.data, "SELECT count(*) FROM ledger WHERE length(entry) = 0")[0][0]
    assert emptied == 3 * 256 - 1  # leaves 1..767 (leaf 0 is the key's creation, kept hot)
    files = list((app.data / "archive" / "org_acme").iterdir())
    assert {f.name.split(".", 1)[1] for f in files} == {"jsonl.gz", "manifest.json"}
    assert leaves(app, headers, 0, EVENTS + 1) == before  # the ledger API reads across tiers


def test_reads_dedup_proofs_and_replay_work_for_archived_events(
    acme: tuple[LedgerApp, Headers], hook: Receiver,
) -> None:
    app, headers = acme
    original = app.client.get("/v1/events/evt_5", headers=headers).json()
    assert archive(app.data, SOON).exit_code == 0
    assert ledger_rows(app.data, "SELECT length(entry) FROM ledger WHERE event_id = 'evt_5'") == [(0,)]
    assert app.client.get("/v1/events/evt_5", headers=headers).json() == original
    session = original["event"]["session"]["session_id"]
    assert app.client.get(f"/v1/sessions/{session}", headers=headers).status_code == 200
    again = app.client.post("/v1/events", json=[make_event("evt_5")], headers=headers).json()
    assert again["results"][0]["status"] == "duplicate"
    changed = make_event("evt_5", **{"usage.model": "another-model"})
    conflict = app.client.post("/v1/events", json=[changed], headers=headers).json()
    assert conflict["results"][0]["errors"][0]["code"] == "conflict"
    checkpoint = fetch_checkpoint(app, headers)
    proof = app.client.get("/v1/ledger/proof/inclusion", headers=headers,
                           params={"event_id": "evt_5", "tree_size": checkpoint.tree_size}).json()
    (leaf,) = leaves(app, headers, proof["leaf_index"], proof["leaf_index"] + 1)
    verify_inclusion(leaf_hash(leaf), proof["leaf_index"], checkpoint.tree_size,
                     [base64.b64decode(h) for h in proof["hashes"]], checkpoint.root_hash)
    delivered = len(hook.received)
    replay = {"destination": "hook", "event_ids": ["evt_5", "evt_6"]}
    assert app.client.post("/v1/deliveries/replay", json=replay, headers=headers).json()["requeued"] == 2
    wait_for(lambda: len(hook.received) > delivered, what="the archived events delivered again")
    assert "evt_5" in json.dumps([r.json() for r in hook.received[delivered:]])


def test_restore_writes_archived_entries_as_the_ledger_hashed_them(acme: tuple[LedgerApp, Headers]) -> None:
    app, headers = acme
    assert archive(app.data, SOON).exit_code == 0
    out = app.data.parent / "restored.jsonl"
    restored = scr("archive", "restore", "--data", str(app.data), "--tenant", "org_acme",
                   "--from", "245", "--to", "260", "--out", str(out))  # across two segments
    assert restored.exit_code == 0, restored.output
    assert out.read_bytes().splitlines() == leaves(app, headers, 245, 261)
    nobody = scr("archive", "restore", "--data", str(app.data), "--tenant", "org_nobody", "--out", str(out))
    assert nobody.exit_code == 0 and out.read_bytes() == b""


def test_verification_checks_hot_and_archived_entries_together(acme: tuple[LedgerApp, Headers]) -> None:
    app, _ = acme
    assert archive(app.data, SOON).exit_code == 0
    app.stop()
    verified = scr("ledger", "verify", "--data", str(app.data))
    assert verified.exit_code == 0, verified.output
    assert "archive segment(s) checked" in verified.output
    assert scr("archive", "verify", "--data", str(app.data)).exit_code == 0
    bundle = app.data.parent / "bundle.json"  # evidence of archived entries, from the data folder
    exported = scr("ledger", "export", str(bundle), "--tenant", "org_acme", "--data", str(app.data))
    assert exported.exit_code == 0, exported.output
    assert len(json.loads(bundle.read_text())["entries"]) == EVENTS + 1
    assert scr("ledger", "verify", "--bundle", str(bundle)).exit_code == 0
    # an archived entry that no longer hashes to the hot store's chain hash is found
    segment = sorted((app.data / "archive" / "org_acme").glob("*.jsonl.gz"))[0]
    manifest = segment.with_name(segment.name.replace(".jsonl.gz", ".manifest.json"))
    _rewrite_first_entry(app.data, segment, manifest)
    found = scr("ledger", "verify", "--data", str(app.data))
    assert found.exit_code == 1 and "chain hash" in found.output


def _rewrite_first_entry(data: Path, segment: Path, manifest: Path) -> None:
    """A forger's edit: change an archived entry and every digest that names the file (the
    manifest's, and the manifest's in the hot store): the hot store's chain hashes catch it."""
    text = gzip.decompress(segment.read_bytes()).replace(b'"evt_1"', b'"evt_X"', 1)
    segment.write_bytes(gzip.compress(text, mtime=0))
    described = json.loads(manifest.read_text())
    described["file_sha256"] = hashlib.sha256(segment.read_bytes()).hexdigest()
    described["file_bytes"] = segment.stat().st_size
    described["blocks"] = [[0, segment.stat().st_size, *described["blocks"][0][2:]]]
    manifest.write_text(json.dumps(described))
    conn = sqlite3.connect(data / DATABASE_FILE)
    with conn:
        conn.execute("UPDATE archive_segments SET manifest_sha256 = ? WHERE first_leaf = 0",
                     (hashlib.sha256(manifest.read_bytes()).digest(),))
    conn.close()


def test_purge_after_cold_days_is_ledgered_and_old_proofs_still_verify(
    acme: tuple[LedgerApp, Headers],
) -> None:
    app, headers = acme
    old = fetch_checkpoint(app, headers)
    assert archive(app.data, SOON).exit_code == 0
    purged = archive(app.data, LATER)
    assert purged.exit_code == 0, purged.output
    assert "768 rows purged" in purged.output  # every row below the tile still filling
    assert not list((app.data / "archive" / "org_acme").glob("*.jsonl.gz"))
    assert len(list((app.data / "archive" / "org_acme").glob("*.manifest.json"))) == 4  # kept
    assert app.client.get("/v1/events/evt_5", headers=headers).status_code == 404
    audit = app.client.get("/v1/audit", headers=headers).json()["entries"]
    purges = [e for e in audit if e["kind"] == "SEGMENT_PURGED"]
    assert [p["details"]["first_leaf"] for p in purges] == [0, 251, 501, 751]
    # the leaf hashes stay in the tiles: a purged leaf is still proven in the old checkpoint
    proof = app.client.get("/v1/ledger/proof/inclusion", headers=headers,
                           params={"index": 7, "tree_size": old.tree_size})
    assert proof.status_code == 200, proof.text
    assert ledger_rows(app.data, "SELECT count(*) FROM ledger WHERE tenant_seq < 768")[0][0] == 0
    # the rows of a tile still filling stay: their leaf hashes are read from them
    assert ledger_rows(app.data, "SELECT min(tenant_seq) FROM ledger WHERE tenant = 'org_acme'")[0][0] == 768
    app.stop()
    verified = scr("ledger", "verify", "--data", str(app.data))
    assert verified.exit_code == 0, verified.output
    assert scr("archive", "verify", "--data", str(app.data)).exit_code == 0


def test_a_tenant_hold_blocks_the_purge_until_released(acme: tuple[LedgerApp, Headers]) -> None:
    app, headers = acme
    assert archive(app.data, SOON).exit_code == 0
    hold = app.client.post("/v1/legal-holds", headers=headers,
                           json={"tenant": "org_acme", "reason": "case 2026-7"}).json()
    held = archive(app.data, LATER)
    assert held.exit_code == 0 and "0 rows purged" in held.output
    assert held.output.count(hold["id"]) == 4  # each due segment names the hold
    assert len(list((app.data / "archive" / "org_acme").glob("*.jsonl.gz"))) == 4
    assert app.client.get("/v1/events/evt_5", headers=headers).status_code == 200
    assert app.client.delete(f"/v1/legal-holds/{hold['id']}", headers=headers).status_code == 200
    assert "768 rows purged" in archive(app.data, LATER).output


def test_the_writer_refuses_a_purge_under_a_hold_placed_during_the_pass(
    acme: tuple[LedgerApp, Headers],
) -> None:
    """The archiver looks at the holds before a purge; the writer looks again in the purge's
    own transaction, so a hold placed in between is never purged through."""
    from scr.log.commit import Committer
    from scr.retention.holds import HELD
    from scr.serve.writes import PurgeSegment, apply
    from scr.store import open_store

    app, headers = acme
    assert archive(app.data, SOON).exit_code == 0
    store = open_store(app.data)
    (first, *_) = store.archive_segments("org_acme")
    assert app.client.post("/v1/legal-holds", headers=headers,
                           json={"tenant": "org_acme", "reason": "case 2026-8"}).status_code == 201
    committer = Committer(store, buffer_size=1)
    committer.start()
    try:
        op = PurgeSegment("org_acme", first.first_leaf, first.first_seq, first.last_seq, first.last_leaf + 1,
                          "2027-01-01T00:00:00Z", {"segment": first.name})
        assert committer.run_sync(lambda tx: apply(committer, tx, op)) == HELD
    finally:
        committer.close()
        store.close()
    assert app.client.get("/v1/events/evt_5", headers=headers).status_code == 200
    kinds = [e["kind"] for e in app.client.get("/v1/audit", headers=headers).json()["entries"]]
    assert "SEGMENT_PURGED" not in kinds


def test_each_tenant_keeps_its_own_hot_days(acme: tuple[LedgerApp, Headers]) -> None:
    app, _ = acme
    globex = app.key("org_globex")
    app.post(globex, [f"g_{i}" for i in range(300)], tenant="org_globex")
    app.checkpoint(globex)
    config = retention(app.data, extra="    tenants:\n      org_globex: {hot_days: 60, cold_days: 90}\n")
    assert archive(app.data, SOON, config).exit_code == 0
    tenants = {row[0] for row in ledger_rows(app.data, "SELECT tenant FROM archive_segments")}
    assert tenants == {"org_acme"}
    assert archive(app.data, (datetime.now(UTC) + timedelta(days=61)).isoformat(), config).exit_code == 0
    assert {row[0] for row in ledger_rows(app.data, "SELECT tenant FROM archive_segments")} == {
        "org_acme", "org_globex"}


def test_a_clock_set_back_never_archives_or_purges_early(
    tmp_path: Path, start_app: StartApp, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Entries written while the clock was set back 60 days look old, but they come after
    young ones: the archiver stops at the first young entry."""
    import scr.log.commit as commit

    app = start_app(tmp_path / "data")
    headers = app.key()
    app.post(headers, [f"now_{i}" for i in range(300)])
    real = commit.utc_now
    monkeypatch.setattr(commit, "utc_now", lambda: (datetime.now(UTC) - timedelta(days=60)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"))
    app.post(headers, [f"back_{i}" for i in range(300)])
    monkeypatch.setattr(commit, "utc_now", real)
    app.checkpoint(headers)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    answer = archive(app.data, tomorrow, retention(app.data, hot_days=30, cold_days=30))
    assert answer.exit_code == 0 and "archived 0 entries" in answer.output
    assert ledger_rows(app.data, "SELECT count(*) FROM archive_segments") == [(0,)]
    assert app.client.get("/v1/events/back_1", headers=headers).status_code == 200


@pytest.mark.parametrize("damage", ["flip a byte", "delete a segment", "swap manifests", "add a file"])
def test_verify_names_each_damaged_missing_swapped_or_extra_file(
    acme: tuple[LedgerApp, Headers], damage: str,
) -> None:
    app, _ = acme
    assert archive(app.data, SOON).exit_code == 0
    folder = app.data / "archive" / "org_acme"
    data_files = sorted(folder.glob("*.jsonl.gz"))
    manifests = sorted(folder.glob("*.manifest.json"))
    if damage == "flip a byte":
        raw = bytearray(data_files[1].read_bytes())
        raw[len(raw) // 2] ^= 0x01
        data_files[1].write_bytes(bytes(raw))
        expected = f"{data_files[1]} differs from its manifest"
    elif damage == "delete a segment":
        data_files[2].unlink()
        expected = f"({data_files[2]}) cannot be read"
    elif damage == "swap manifests":
        first, second = manifests[0].read_bytes(), manifests[1].read_bytes()
        manifests[0].write_bytes(second)
        manifests[1].write_bytes(first)
        expected = f"the manifest {manifests[0]} is not the one listed"
    else:
        (folder / "notes.txt").write_text("hello")
        expected = f"extra file {folder / 'notes.txt'}"
    answer = scr("archive", "verify", "--data", str(app.data))
    assert answer.exit_code == 1
    assert expected in answer.output.replace("\n", " ") or expected in answer.stderr.replace("\n", "")


def test_a_file_being_written_is_a_note_not_a_problem(acme: tuple[LedgerApp, Headers]) -> None:
    # a pass in progress (another instance's archiver) or one killed leaves a .tmp file, or a
    # whole segment's files not yet listed, past the tenant's listed end: never read, so verify
    # names them and still verifies (the archiver's next pass removes them)
    app, _ = acme
    assert archive(app.data, SOON).exit_code == 0
    (data_file,) = list((app.data / "archive").rglob("*.jsonl.gz"))[:1]
    unfinished = data_file.with_name("000000099000-000000099255.jsonl.gz.tmp")
    unfinished.write_bytes(b"half a segm")
    written = data_file.with_name("000000099000-000000099255.manifest.json")  # written, not yet listed
    written.write_bytes(b"{}")
    answer = scr("archive", "verify", "--data", str(app.data))
    assert answer.exit_code == 0, answer.output
    shown = answer.output.replace("\n", " ")
    assert f"unfinished write {unfinished}" in shown and f"unfinished write {written}" in shown
    # a segment's file inside the listed leaves, unlisted, is not a pass's: a problem
    inside = data_file.with_name("000000000000-000000000001.jsonl.gz")
    inside.write_bytes(b"x")
    assert scr("archive", "verify", "--data", str(app.data)).exit_code == 1


def test_bad_requests_to_the_cli_are_refused_clearly(acme: tuple[LedgerApp, Headers]) -> None:
    app, _ = acme
    assert "not an RFC 3339 time" in archive(app.data, "next tuesday").output
    bare = app.data.parent / "bare.yaml"
    bare.write_text("session_completion_runtime: {}\n")
    refused = archive(app.data, SOON, bare)
    assert refused.exit_code == 2 and "no `retention:` section" in refused.output
    wrong = retention(app.data, hot_days=30, cold_days=10)
    answer = archive(app.data, SOON, wrong)
    assert answer.exit_code == 2 and "cold_days (10) must be at least hot_days (30)" in answer.output
    assert ledger_rows(app.data, "SELECT count(*) FROM archive_segments") == [(0,)]
