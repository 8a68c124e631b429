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
from rich.console import Console
from typer.testing import CliRunner

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


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data folder whose ledger already holds the demo's canon refs."""
    folder = tmp_path / "data"
    ledger = open_ledger(folder)
    try:
        canon_with(*DEMO_REFS, ledger=ledger)
    finally:
        ledger.close()
    return folder


def test_commands_work_on_the_ledger_in_the_data_folder(data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(demo_request()))
    decided = runner.invoke(app, ["decide", str(request_file), "--tenant", TENANT,
                                  "--data", str(data)])
    assert decided.exit_code == 0, decided.output
    assert json.loads(decided.output)["selected_candidate"] == "rollback"
    listed = runner.invoke(app, ["items", "--tenant", TENANT, "--json", "--data", str(data)])
    assert listed.exit_code == 0
    assert "CANON_042" in listed.output
    audited = runner.invoke(app, ["audit", "--data", str(data)])
    assert audited.exit_code == 0, audited.output
    assert "passed" in audited.output


def test_refusals_and_errors_have_their_exit_codes(data: Path) -> None:
    ledger = open_ledger(data)
    try:
        canon_with(ledger=ledger).add_item(item("X", source="chat"))
    finally:
        ledger.close()
    runner = CliRunner()
    where = ["--tenant", TENANT, "--data", str(data)]
    refused = runner.invoke(app, ["promote", "X", *where])
    assert refused.exit_code == 1
    unknown = runner.invoke(app, ["promote", "NOPE", *where])
    assert unknown.exit_code == 2
    assert "no canon item" in unknown.output
    bad_level = runner.invoke(app, ["promote", "X", *where, "--to", "TOP"])
    assert bad_level.exit_code == 2


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
    with sqlite3.connect(data / "scr.db") as db:  # the entry disappears; its dedup key stays
        db.execute("DELETE FROM ledger WHERE seq = ?", (seq,))
    assert runner.invoke(app, ["audit", "--tenant", TENANT, "--data", str(data)]).exit_code == 1
