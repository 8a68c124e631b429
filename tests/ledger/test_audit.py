"""``scr ledger audit``: trust on first use, then growth is demanded; rollback and fork are loud."""

from __future__ import annotations

import random
import sqlite3
import stat
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from ledger.conftest import Headers, LedgerApp, StartApp
from ledger.tamper import change_byte, restore, snapshot, snapshot_file
from scr.ledger.audit import AuditOutcome, AuditState, audit, load_state
from scr.ledger.sources import HttpSource
from support import ServerProcess, create_key, make_event, run_scr


def run_audit(app: LedgerApp, headers: Headers, state: AuditState | None, samples: int = 8) -> AuditOutcome:
    client = TestClient(app.client.app, headers=headers)  # the running app, with the auditor's key
    return audit(HttpSource(client), state, samples=samples, rng=random.Random(7))


@pytest.fixture
def audited(start_app: StartApp, data_dir: Path) -> tuple[LedgerApp, Headers, AuditState]:
    """A server with 201 entries of org_acme and an auditor that has seen its checkpoint."""
    app = start_app(data_dir)
    admin = app.key()
    app.post(admin, [f"evt_{i}" for i in range(200)])
    app.checkpoint(admin)
    auditor = app.key(role="auditor")  # entry 201, after the checkpoint
    outcome = run_audit(app, auditor, None)
    assert outcome.report.exit_code == 0, outcome.report
    assert outcome.new_state is not None
    return app, auditor, outcome.new_state


def test_the_first_run_trusts_and_spot_checks_the_newest_checkpoint(
    audited: tuple[LedgerApp, Headers, AuditState],
) -> None:
    app, auditor, state = audited
    assert state.checkpoint == app.client.get("/v1/ledger/checkpoint", headers=auditor).text
    assert state.verifier_key == app.client.get("/v1/ledger/public-key", headers=auditor).text.strip()


def test_a_later_run_demands_and_checks_consistency(audited: tuple[LedgerApp, Headers, AuditState]) -> None:
    app, auditor, state = audited
    admin = app.key()
    app.post(admin, [f"more_{i}" for i in range(40)])
    app.checkpoint(admin)
    outcome = run_audit(app, auditor, state, samples=300)
    assert outcome.report.exit_code == 0, outcome.report
    assert "checkpoint 243 extends the saved checkpoint 201" in outcome.report.notes
    assert outcome.report.entries == 243  # every entry fetched and proven


def rolled_back(app: LedgerApp, start_app: StartApp, copies: Path) -> LedgerApp:
    """Stop the server, put both databases back as they were in ``copies``, start it again."""
    app.stop()
    restore(copies / "scr.db", app.data)
    restore(copies / "checkpoints.db", app.data, "checkpoints.db")
    return start_app(app.data)


def audited_then_rolled_back(
    start_app: StartApp, data_dir: Path, tmp_path: Path
) -> tuple[LedgerApp, Headers, AuditState]:
    """An auditor saw a checkpoint of 101 entries; the server then went back to 51."""
    app = start_app(data_dir)
    admin = app.key()
    app.post(admin, [f"evt_{i}" for i in range(50)])
    app.checkpoint(admin)
    snapshot(data_dir, tmp_path / "old")
    snapshot_file(data_dir, "checkpoints.db", tmp_path / "old")
    app.post(admin, [f"later_{i}" for i in range(50)])
    app.checkpoint(admin)
    saved = run_audit(app, admin, None).new_state
    assert saved is not None and "\n101\n" in saved.checkpoint
    return rolled_back(app, start_app, tmp_path / "old"), admin, saved


def test_a_rollback_is_reported_with_both_checkpoints(
    start_app: StartApp, data_dir: Path, tmp_path: Path
) -> None:
    back, admin, saved = audited_then_rolled_back(start_app, data_dir, tmp_path)
    outcome = run_audit(back, admin, saved)
    assert outcome.report.exit_code == 1 and outcome.new_state is None
    (finding,) = outcome.report.findings
    assert finding.problem.startswith("ROLLBACK: the server's newest checkpoint has 51 entries, fewer than "
                                      "the 101 of the checkpoint saved earlier")
    served = back.client.get("/v1/ledger/checkpoint", headers=admin).text
    for note in (saved.checkpoint, served):  # both checkpoints, in full
        assert note.split("\n")[2] in finding.problem


def test_a_fork_is_reported_with_both_checkpoints(
    start_app: StartApp, data_dir: Path, tmp_path: Path
) -> None:
    back, admin, saved = audited_then_rolled_back(start_app, data_dir, tmp_path)
    back.post(admin, [f"other_{i}" for i in range(80)])  # a different history, longer than the saved one
    forked = back.checkpoint(admin)
    outcome = run_audit(back, admin, saved)
    assert outcome.report.exit_code == 1
    (finding,) = outcome.report.findings
    assert finding.problem.startswith("FORK: the server's log of 131 entries does not extend the checkpoint "
                                      "of 101 entries saved earlier")
    assert forked.split("\n")[2] in finding.problem and saved.checkpoint.split("\n")[2] in finding.problem


def test_a_checkpoint_signed_by_another_key_is_rejected(
    audited: tuple[LedgerApp, Headers, AuditState], start_app: StartApp
) -> None:
    app, auditor, state = audited
    app.stop()
    (app.data / "ledger-key.pem").unlink()  # the operator (or an intruder) swaps the signing key
    again = start_app(app.data)
    again.post(again.key(), ["evt_new"])
    again.checkpoint(auditor)
    outcome = run_audit(again, auditor, state)
    assert outcome.report.exit_code == 1
    problem = outcome.report.findings[0].problem
    assert "the server's checkpoint is rejected: note has no signature by key" in problem
    assert any("publishes another key" in note for note in outcome.report.notes)


def test_spot_checks_catch_an_entry_changed_on_the_server(
    audited: tuple[LedgerApp, Headers, AuditState],
) -> None:
    app, auditor, state = audited
    change_byte(app.data, "org_acme", 77, b"summary", b"summarY")
    outcome = run_audit(app, auditor, state, samples=1000)
    assert outcome.report.exit_code == 1 and outcome.new_state is None
    # Its own proof fails (and every other one: each passes through a hash above the change).
    failing = {f.index: str(f) for f in outcome.report.findings}
    assert failing[77].startswith("tenant org_acme, entry 77 (event evt_76): not in the checkpoint's tree")


def test_the_command_trusts_on_first_use_then_verifies(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ingest = create_key(data, "org_acme", "ingest")
    auditor = create_key(data, "org_acme", "auditor")
    server = ServerProcess(data).start()
    try:
        events = [make_event(f"evt_{i}") for i in range(30)]
        assert httpx.post(f"{server.url}/v1/events", json=events,
                          headers={"authorization": f"Bearer {ingest}"}).status_code == 202
        state = tmp_path / "auditor" / "state.json"
        state.parent.mkdir()
        first = run_scr("ledger", "audit", "--url", server.url, "--key", auditor, "--state", str(state))
        assert "trusted on first use" in first.stdout and stat.S_IMODE(state.stat().st_mode) == 0o600
        assert load_state(state) is not None
        second = run_scr("ledger", "audit", "--url", server.url, "--key", auditor, "--state", str(state))
        assert "verified" in second.stdout
        wrong = run_scr("ledger", "audit", "--url", server.url, "--key", "scr_nope_nope", "--state",
                        str(state), check=False)
        assert wrong.returncode == 2 and "401" in wrong.stderr
    finally:
        server.stop()
    with sqlite3.connect(data / "checkpoints.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0] >= 1
