"""The embedded store's dedup index and its log (scr.store.keylog): exact across restarts,
crashes that cut the log, rolled-back groups, other processes, and data folders of earlier
versions."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_commit import committer_for, submission
from typer.testing import CliRunner

from scr.cli import app
from scr.log.commit import Outcome, Submission
from scr.log.keys import RECORD, event_key
from scr.schema import canonical_bytes, decode_event
from scr.store.keylog import KEY_LOG_FILE
from scr.store.sqlite import SqliteStore

TENANT = "org_acme"
WRITTEN_BY_644AA85 = Path(__file__).resolve().parent.parent / "data" / "ledger-644aa85"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


def send(data: Path, *event_ids: str, tenant: str = TENANT) -> list[tuple[Outcome, int]]:
    """Open the data folder, append the events through a committer, close it again."""
    return commit(data, [submission(event_id, **{"user.organization_id": tenant}) for event_id in event_ids])


def commit(data: Path, subs: list[Submission]) -> list[tuple[Outcome, int]]:
    store = SqliteStore(data)
    committer = committer_for(store)
    try:
        return asyncio.run(committer.append_events(subs))
    finally:
        committer.close()
        store.close()


def sent_to_644aa85() -> dict[str, Submission]:
    """The fixture's events, as this version's edge makes them ready to commit."""
    subs = {}
    for value in json.loads((WRITTEN_BY_644AA85 / "events.json").read_text()):
        event = decode_event(json.dumps(value).encode(), now=datetime(2026, 11, 26, tzinfo=UTC))
        payload = canonical_bytes(event)
        subs[event.event_id] = Submission(event, payload, hashlib.blake2b(payload, digest_size=16).digest(),
                                          "key:test", "http")
    return subs


def outcomes(answers: list[tuple[Outcome, int]]) -> list[Outcome]:
    return [outcome for outcome, _ in answers]


def log_size(data: Path) -> int:
    return (data / KEY_LOG_FILE).stat().st_size


@pytest.fixture
def reader(data: Path) -> Iterator[SqliteStore]:
    """The store as another process opens it to read (no writer)."""
    store = SqliteStore(data)
    yield store
    store.close()


def test_a_restart_loads_the_log_and_dedup_stays_exact(data: Path) -> None:
    ids = [f"evt_{i}" for i in range(10)]
    assert outcomes(send(data, *ids)) == [Outcome.ACCEPTED] * 10
    assert log_size(data) == 10 * RECORD.size  # one record a key, nothing else
    assert outcomes(send(data, *ids, "evt_new")) == [Outcome.DUPLICATE] * 10 + [Outcome.ACCEPTED]
    assert log_size(data) == 11 * RECORD.size


def test_a_log_cut_by_a_crash_is_made_whole_from_the_ledger(data: Path) -> None:
    ids = [f"evt_{i}" for i in range(10)]
    send(data, *ids)
    with (data / KEY_LOG_FILE).open("r+b") as log:
        log.truncate(4 * RECORD.size + 7)  # the disk kept four records and part of a fifth
    assert outcomes(send(data, *ids)) == [Outcome.DUPLICATE] * 10
    assert log_size(data) == 10 * RECORD.size


def test_a_missing_log_is_rebuilt_from_the_ledger(data: Path) -> None:
    send(data, "evt_a", "evt_b")
    (data / KEY_LOG_FILE).unlink()
    assert outcomes(send(data, "evt_b", "evt_a")) == [Outcome.DUPLICATE] * 2
    assert log_size(data) == 2 * RECORD.size


def test_a_record_left_by_a_rolled_back_group_proves_nothing(data: Path) -> None:
    [(_, held)] = send(data, "evt_held")
    # a group that wrote its records and then failed to commit: evt_lost's key points at a
    # seq that another event holds
    with (data / KEY_LOG_FILE).open("ab") as log:
        log.write(RECORD.pack(event_key(TENANT, "evt_lost"), held))
    first = send(data, "evt_lost")
    assert outcomes(first) == [Outcome.ACCEPTED]
    assert outcomes(send(data, "evt_lost", "evt_held")) == [Outcome.DUPLICATE] * 2
    store = SqliteStore(data)
    try:  # filed as an ordinary key, not as a collision by its text
        assert store.connection().execute("SELECT count(*) FROM event_keys_overflow").fetchone() == (0,)
    finally:
        store.close()


def test_another_process_finds_what_the_writer_commits(data: Path, reader: SqliteStore) -> None:
    send(data, "evt_1")
    found = reader.find_event(TENANT, "evt_1")
    assert found is not None and found.event_id == "evt_1"
    assert reader.find_event(TENANT, "evt_2") is None
    send(data, "evt_2")  # after the reader read the log once: it reads on from there
    assert reader.find_event(TENANT, "evt_2") is not None
    assert reader.find_event("org_other", "evt_2") is None  # tenants stay apart


def test_an_event_whose_record_the_disk_lost_is_still_found(data: Path) -> None:
    send(data, "evt_1", "evt_2")
    with (data / KEY_LOG_FILE).open("r+b") as log:
        log.truncate(RECORD.size)  # evt_2's record is gone and no writer has opened since
    store = SqliteStore(data)
    try:
        found = store.find_event(TENANT, "evt_2")
        assert found is not None and found.event_id == "evt_2"
    finally:
        store.close()


def test_a_data_folder_written_by_644aa85_keeps_working(tmp_path: Path) -> None:
    """The fixture holds 80 events of two tenants (3 of each sent twice) and a signed
    checkpoint each, written by scr at 644aa85, before the key log existed and with a ledger
    row an event: the first store opened to write packs it (scr.store.packs)."""
    data = tmp_path / "data"
    shutil.copytree(WRITTEN_BY_644AA85, data)
    cli = CliRunner()
    refused = cli.invoke(app, ["ledger", "verify", "--data", str(data)])  # read-only: never migrates
    assert refused.exit_code != 0 and "written by an earlier version" in refused.output
    SqliteStore(data).close()
    with sqlite3.connect(data / "scr.db") as db:
        assert db.execute("SELECT 1 FROM sqlite_master WHERE name = 'ledger'").fetchone() is None
        assert [tuple(row) for row in db.execute("SELECT count(*), min(first_seq), max(last_seq) "
                                                 "FROM ledger_packs")] == [(2, 1, 82)]  # 64 + 18
    verified = cli.invoke(app, ["ledger", "verify", "--data", str(data)])
    assert verified.exit_code == 0, verified.output
    sent = sent_to_644aa85()
    old = [event_id for event_id in sent if event_id.startswith("evt_org_a_")]
    assert outcomes(commit(data, [sent[event_id] for event_id in old])) == [Outcome.DUPLICATE] * 40
    assert outcomes(send(data, "evt_org_b_000", "evt_org_b_new", tenant="org_b")) == [
        Outcome.CONFLICT, Outcome.ACCEPTED]  # the same id with another body is no duplicate
    assert log_size(data) == 81 * RECORD.size
    store = SqliteStore(data)
    try:
        found = store.find_event("org_b", "evt_org_b_039")
        assert found is not None and found.tenant == "org_b"
        assert sorted(event_id for event_id, _ in store.accepted_events("org_a")) == sorted(old)
    finally:
        store.close()
    for tenant in ("org_a", "org_b"):
        audited = cli.invoke(app, ["canon", "audit", "--tenant", tenant, "--data", str(data)])
        assert audited.exit_code == 0, audited.output
    verified = cli.invoke(app, ["ledger", "verify", "--data", str(data)])
    assert verified.exit_code == 0, verified.output
