"""``scr canon`` commands: the command functions on a real in-memory ledger, and the Typer
wiring over the durable ledger of a data folder (SQLite, through the committer)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from canon_support import DEMO_REFS, TENANT, canon_with, completion, demo_request, item
from packed import ledger_table
from rich.console import Console
from typer.testing import CliRunner

from conftest import StoreAt
from scr.canon import MemoryLedger
from scr.canon.cli import app, run_audit, run_decide, run_promote, show_items
from scr.canon.store_ledger import open_ledger
from scr.errors import BadRequest
from scr.log.commit import Submission
from scr.schema import canonical_bytes, decode_event
from support import make_event


def _console() -> Console:
    return Console(record=True, width=200)


def test_show_items_lists_the_canon_as_a_table_or_json() -> None:
    canon = canon_with(*DEMO_REFS)
    out = _console()
    show_items(canon, out)
    text = out.export_text()
    assert "CANON_001" in text and "INV_PROMOTION_GATE" in text
    out = _console()
    show_items(canon, out, kind="DEFINITION", as_json=True)
    listed = json.loads(out.export_text())["items"]
    assert [i["id"] for i in listed] == ["CANON_001", "CANON_042"]


def test_run_decide_reads_a_request_file_and_prints_the_decision(tmp_path: Path) -> None:
    canon = canon_with(*DEMO_REFS)
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(demo_request()))
    out = _console()
    decision = run_decide(canon, request_file, out)
    assert decision.selected_candidate == "rollback"
    assert json.loads(out.export_text())["entry_id"] == decision.entry_id


def test_run_decide_refuses_unreadable_and_invalid_files(tmp_path: Path) -> None:
    canon = canon_with(*DEMO_REFS)
    with pytest.raises(BadRequest):
        run_decide(canon, tmp_path / "missing.json", _console())
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(BadRequest):
        run_decide(canon, broken, _console())
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"goal": "g", "candidates": []}))
    with pytest.raises(BadRequest):
        run_decide(canon, invalid, _console())


def test_run_promote_prints_the_result_and_ledgers_it() -> None:
    ledger = MemoryLedger()
    canon = canon_with(ledger=ledger)
    canon.add_item(item("X", source="chat"))
    out = _console()
    result = run_promote(canon, "X", out)
    assert not result.approved
    assert json.loads(out.export_text())["tests"]["resistance"]["passed"] is False
    assert [e.id for e in ledger.read(TENANT, ["PROMOTION"])] == [result.entry_id]


def test_run_audit_covers_every_tenant_and_names_breaches() -> None:
    ledger = MemoryLedger()
    canon_with(*DEMO_REFS, ledger=ledger).decide(demo_request())
    canon_with(ledger=ledger, tenant="org_b")
    ledger.accept(completion("evt_1", tenant="org_b"))
    ledger.accepted[("org_b", "evt_gone")] = 12345
    out = _console()
    reports = run_audit(ledger, ledger.tenants(), out)
    assert [(r.tenant, r.passed) for r in reports] == [("org_b", False), (TENANT, True)]
    text = out.export_text()
    assert "evt_gone" in text and "FAILED" in text


def seeded(at: StoreAt) -> StoreAt:
    """A store whose ledger already holds the demo's canon refs."""
    ledger = open_ledger(at.data, at.uri)
    try:
        canon_with(*DEMO_REFS, ledger=ledger)
    finally:
        ledger.close()
    return at


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data folder whose ledger already holds the demo's canon refs."""
    return seeded(StoreAt("sqlite", tmp_path / "data")).data


def where(at: StoreAt) -> list[str]:
    return ["--store", at.uri] if at.uri else ["--data", str(at.data)]


def test_commands_work_on_the_ledger_of_either_store(store_at: StoreAt, tmp_path: Path) -> None:
    at = seeded(store_at)
    runner = CliRunner()
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(demo_request()))
    decided = runner.invoke(app, ["decide", str(request_file), "--tenant", TENANT, *where(at)])
    assert decided.exit_code == 0, decided.output
    assert json.loads(decided.output)["selected_candidate"] == "rollback"
    listed = runner.invoke(app, ["items", "--tenant", TENANT, "--json", *where(at)])
    assert listed.exit_code == 0
    assert "CANON_042" in listed.output
    audited = runner.invoke(app, ["audit", *where(at)])
    assert audited.exit_code == 0, audited.output
    assert "passed" in audited.output
    ledger = open_ledger(at.data, at.uri)  # the decision is in the store's ledger
    try:
        decisions = list(ledger.read(TENANT, ["DECIDE"]))
    finally:
        ledger.close()
    assert [d.id for d in decisions] == [json.loads(decided.output)["entry_id"]]


def test_refusals_and_errors_have_their_exit_codes(store_at: StoreAt) -> None:
    at = seeded(store_at)
    ledger = open_ledger(at.data, at.uri)
    try:
        canon_with(ledger=ledger).add_item(item("X", source="chat"))
    finally:
        ledger.close()
    runner = CliRunner()
    where_ = ["--tenant", TENANT, *where(at)]
    refused = runner.invoke(app, ["promote", "X", *where_])
    assert refused.exit_code == 1
    unknown = runner.invoke(app, ["promote", "NOPE", *where_])
    assert unknown.exit_code == 2
    assert "no canon item" in unknown.output
    bad_level = runner.invoke(app, ["promote", "X", *where_, "--to", "TOP"])
    assert bad_level.exit_code == 2
    not_a_store = runner.invoke(app, ["audit", "--store", "mysql://db/scr"])
    assert not_a_store.exit_code == 2 and "postgresql://" in not_a_store.output


def test_audit_finds_an_accepted_event_missing_from_the_ledger(data: Path) -> None:
    ledger = open_ledger(data)
    try:
        event = decode_event(json.dumps(make_event("evt_lost", **{"user.organization_id": TENANT}))
                             .encode())
        payload = canonical_bytes(event)
        submission = Submission(event, payload, hashlib.blake2b(payload, digest_size=16).digest(),
                                "key:test", "http")
        [(_, seq)] = asyncio.run(ledger.committer.append_events([submission]))
    finally:
        ledger.close()
    runner = CliRunner()
    assert runner.invoke(app, ["audit", "--tenant", TENANT, "--data", str(data)]).exit_code == 0
    # the entry disappears; its dedup key stays
    with sqlite3.connect(data / "scr.db") as db, ledger_table(db):
        db.execute("DELETE FROM ledger WHERE seq = ?", (seq,))
    assert runner.invoke(app, ["audit", "--tenant", TENANT, "--data", str(data)]).exit_code == 1
