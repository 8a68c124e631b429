"""``scr ledger verify --data``: each kind of tampering is caught and named where it is."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import psycopg
import pytest

from conftest import config_text
from ledger.conftest import LedgerApp
from ledger.tamper import (
    change_byte,
    delete_entry,
    entry_row,
    rechain,
    restore,
    snapshot,
    swap_entries,
    truncate,
)
from scr.ledger import verify as verify_module
from scr.ledger.report import Report
from scr.ledger.verify import verify_data
from scr.log.checkpoint import Checkpoint, Signer
from support import run_scr


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A stopped server's data folder: org_acme 301 entries (checkpoints 101, 301), org_beta 51
    (checkpoint 51); and a copy of its ledger from when org_acme had 101 entries."""
    data = tmp_path_factory.mktemp("ledger") / "data"
    app = LedgerApp(data, config_text())
    try:
        acme = app.key("org_acme")
        app.post(acme, [f"evt_{i}" for i in range(100)])
        app.checkpoint(acme)
        old = snapshot(data, tmp_path_factory.mktemp("old"))
        beta = app.key("org_beta")
        app.post(beta, [f"beta_{i}" for i in range(50)], tenant="org_beta")
        app.checkpoint(beta)
        app.post(acme, [f"evt_{i}" for i in range(100, 300)])
        app.checkpoint(acme)
    finally:
        app.stop()
    return data, old


@pytest.fixture
def data(pristine: tuple[Path, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(pristine[0], copy)
    return copy


def first(report: Report) -> str:
    assert report.exit_code == 1, report
    return str(report.findings[0])


def test_an_untouched_folder_verifies(data: Path) -> None:
    report = verify_data(data)
    assert report.exit_code == 0, [str(f) for f in report.findings]
    assert (report.entries, report.checkpoints) == (352, 3)


def test_a_changed_byte_names_its_entry(data: Path) -> None:
    change_byte(data, "org_acme", 57, b"summary", b"summarY")
    assert first(verify_data(data)) == (
        "tenant org_acme, entry 57 (event evt_56, seq 58): its stored bytes do not hash to its "
        "stored chain hash (the entry or its hash was changed)"
    )


def test_a_change_hidden_from_the_chain_is_caught_by_the_tree(data: Path) -> None:
    change_byte(data, "org_acme", 150, b"summary", b"summarY")
    rechain(data, "org_acme")
    report = verify_data(data)
    messages = [str(f) for f in report.findings]
    named = "tenant org_acme, entry 150 (event evt_149"
    assert any(m.startswith(named) and "leaf hash" in m for m in messages)
    assert any("checkpoint 301" in m and "do not have the root" in m for m in messages)
    assert not any("checkpoint 101" in m for m in messages)  # entries before 101 are intact


def test_a_change_with_chain_and_tree_recomputed_is_caught_by_the_checkpoints(data: Path) -> None:
    change_byte(data, "org_acme", 40, b"summary", b"summarY")
    rechain(data, "org_acme")
    with sqlite3.connect(data / "scr.db") as conn:  # drop the tree: the server rebuilds it
        conn.execute("DELETE FROM ledger_tiles")
        conn.execute("UPDATE ledger_tree_state SET covered_seq = 0")
    LedgerApp(data, config_text()).stop()
    messages = [str(f) for f in verify_data(data).findings]
    assert messages[0].startswith("tenant org_acme, entry 0 (seq 1): the ledger's first 101 entries do not "
                                  "have the root signed in checkpoint 101")


def test_a_deleted_entry_is_named_missing(data: Path) -> None:
    delete_entry(data, "org_acme", 200)
    messages = [str(f) for f in verify_data(data).findings]
    assert any(m.startswith("tenant org_acme, entry 200: entry 200 is missing") for m in messages)


def test_two_swapped_entries_are_named(data: Path) -> None:
    swap_entries(data, "org_beta", 10, 11)
    messages = [str(f) for f in verify_data(data).findings]
    assert messages[0].startswith("tenant org_beta, entry 10 (event beta_10")
    assert any(m.startswith("tenant org_beta, entry 11 (event beta_9") for m in messages)


def test_a_truncated_log_is_caught_against_the_newest_checkpoint(data: Path) -> None:
    truncate(data, "org_acme", keep=250, cover_tracks=True)
    assert first(verify_data(data)) == (
        "tenant org_acme, entry 250: checkpoint 301 (issued " + issued(data, "org_acme", 301)
        + ") covers 301 entries but the ledger holds 250: entries 250..300 were removed (truncated or "
        "rolled back to an older copy)"
    )


def issued(data: Path, tenant: str, size: int) -> str:
    with sqlite3.connect(data / "checkpoints.db") as conn:
        row = conn.execute(
            "SELECT issued_at FROM checkpoints WHERE tenant = ? AND tree_size = ?", (tenant, size)
        ).fetchone()
    return str(row[0])


def test_a_ledger_rolled_back_to_an_older_copy_is_caught(pristine: tuple[Path, Path], data: Path) -> None:
    restore(pristine[1], data)
    messages = [str(f) for f in verify_data(data).findings]
    assert any(m.startswith("tenant org_acme, entry 101") and "checkpoint 301" in m for m in messages)
    assert any(m.startswith("tenant org_beta, entry 0") and "checkpoint 51" in m for m in messages)


def test_a_checkpoint_signed_by_another_key_is_rejected(data: Path) -> None:
    intruder = Signer.load_or_create(data.parent / "intruder.pem", "scr")
    with sqlite3.connect(data / "checkpoints.db") as conn:
        size, root = conn.execute(
            "SELECT tree_size, root_hash FROM checkpoints WHERE tenant = 'org_beta'"
        ).fetchone()
        forged = intruder.sign(Checkpoint("scr/org_beta", size, bytes(root)))
        conn.execute("UPDATE checkpoints SET note = ? WHERE tenant = 'org_beta'", (forged,))
    rejected = first(verify_data(data))
    assert rejected.startswith("tenant org_beta: checkpoint 51 (issued")
    assert "no signature by key scr+" in rejected
    # Pinning the intruder's key instead: the genuine checkpoints are the rejected ones.
    pinned = verify_data(data, intruder.verifier_key())
    assert [(f.tenant, "rejected" in f.problem) for f in pinned.findings] == [("org_acme", True)] * 2


def test_parallel_verification_joins_its_ranges_exactly(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_module, "PARALLEL_MIN_ENTRIES", 0)
    monkeypatch.setattr(verify_module, "CHUNK_ENTRIES", 37)  # seams inside runs and tiles
    assert verify_data(data).exit_code == 0
    seq, _, _ = entry_row(data, "org_acme", 134)
    assert seq == 186 and seq % 37 == 1  # the first entry of a range: checked across the seam
    change_byte(data, "org_acme", 134, b"summary", b"summarY")
    assert first(verify_data(data)).startswith("tenant org_acme, entry 134 (event evt_133, seq 186)")


def test_the_command_exits_0_1_or_2(data: Path, tmp_path: Path) -> None:
    clean = run_scr("ledger", "verify", "--data", str(data))
    assert "verified" in clean.stdout and "352 entries" in clean.stdout
    delete_entry(data, "org_acme", 5)
    tampered = run_scr("ledger", "verify", "--data", str(data), check=False)
    assert tampered.returncode == 1
    assert "TAMPERING FOUND" in tampered.stderr and "entry 5 is missing" in tampered.stderr
    missing = run_scr("ledger", "verify", "--data", str(tmp_path / "nowhere"), check=False)
    assert missing.returncode == 2 and "no ledger database" in missing.stderr


# ----- a PostgreSQL store (scr ledger verify --store): the same checks on the shared tables -----


@pytest.fixture
def pg_ledger(postgres_uri: str, tmp_path: Path) -> str:
    """A stopped app's PostgreSQL store: org_acme 301 entries, checkpoints at 101, 201 and 301."""
    app = LedgerApp(tmp_path / "data", config_text() + "  ledger:\n    checkpoint_every_entries: 100\n",
                    postgres_uri)
    try:
        acme = app.key("org_acme")
        for batch in range(3):
            app.post(acme, [f"evt_{batch}_{i}" for i in range(100)])
            app.checkpoint(acme)
    finally:
        app.stop()
    return postgres_uri


def verify_store(uri: str, *more: str) -> tuple[int, str, str]:
    answer = run_scr("ledger", "verify", "--store", uri, *more, check=False)
    return answer.returncode, answer.stdout, answer.stderr


def test_a_postgresql_store_verifies_its_chains_trees_and_checkpoints(pg_ledger: str) -> None:
    code, out, err = verify_store(pg_ledger)
    assert code == 0, out + err
    assert "301 entries, 3 checkpoint(s)" in out


def test_a_changed_tile_in_postgresql_is_named(pg_ledger: str) -> None:
    with psycopg.connect(pg_ledger) as conn:
        flipped = conn.execute(
            "UPDATE ledger_tiles SET hashes = set_byte(hashes, 40, get_byte(hashes, 40) # 1) "
            "WHERE tenant = 'org_acme' AND level = 0 AND idx = 0"
        ).rowcount
    assert flipped == 1
    code, _, err = verify_store(pg_ledger)
    assert code == 1 and "tenant org_acme, entry 1" in err and "differs from the stored tree's" in err, err


def test_a_truncated_postgresql_ledger_is_caught_against_its_checkpoints(pg_ledger: str) -> None:
    with psycopg.connect(pg_ledger) as conn:
        deleted = conn.execute("DELETE FROM ledger WHERE tenant = 'org_acme' AND tenant_seq >= 250").rowcount
    assert deleted == 51
    code, _, err = verify_store(pg_ledger)
    assert code == 1 and "covers 301 entries but the ledger holds 250" in err, err


def test_postgresql_checkpoints_under_another_key_are_rejected(pg_ledger: str, tmp_path: Path) -> None:
    other = Signer.load_or_create(tmp_path / "other.pem", "scr").verifier_key()
    code, _, err = verify_store(pg_ledger, "--verifier-key", other)
    assert code == 1 and "is rejected" in err, err
