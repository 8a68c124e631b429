"""The hot path with the native core on and off: byte-identical ledgers, trees and webhooks.

In one process, the same groups are committed through the native core and through the
Python reference (the bound functions swapped, the clock fixed): the ledger rows and the
stored Merkle tiles are equal byte for byte. Then a real ``scr serve`` ingests the same
events with the core on and with ``SCR_NATIVE=0``: every chain hash and leaf checks out
against the reference, the entries differ only in their commit times, and the webhooks carry
the same ids and signatures the reference verifies.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import msgspec
import pytest
from ledger.conftest import submission

from conftest import config_text, issue_key
from scr.ledger import upkeep
from scr.ledger.tiles import create_schema, open_database
from scr.ledger.upkeep import TreeKeeper
from scr.log import commit, entry, merkle
from scr.log.commit import Committer
from scr.route import signing
from scr.store.sqlite import DATABASE_FILE, SqliteStore
from support import Receiver, ServerProcess, make_event, run_scr, wait_for

FIXED_TS = "2026-12-05T10:00:00.000000Z"
TENANTS = ("org_acme", "org_b", "org_c")
GROUPS = 4
EVENTS_PER_GROUP = 300  # over a tile's width (256) per tenant by the end: tiles get written
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
BATCH_SIZE = 7
SERVED_EVENTS = 40
DELIVERY_TIMEOUT_S = 30.0

ChainHashes = Callable[[Sequence[bytes], Sequence[int], Sequence[bytes]], list[bytes]]
LeafHashes = Callable[[Sequence[bytes]], list[bytes]]
Rows = list[tuple[Any, ...]]


def committed_tables(
    folder: Path, monkeypatch: pytest.MonkeyPatch, chain_hashes: ChainHashes, leaf_hashes: LeafHashes
) -> tuple[Rows, Rows]:
    """The ledger rows and Merkle tiles that the same groups leave, hashed by these functions."""
    monkeypatch.setattr(commit, "utc_now", lambda: FIXED_TS)
    monkeypatch.setattr(commit, "chain_hashes", chain_hashes)
    monkeypatch.setattr(upkeep, "leaf_hashes", leaf_hashes)
    store = SqliteStore(folder)
    conn = open_database(store.path)
    create_schema(conn)
    conn.close()
    keeper = TreeKeeper()
    committer = Committer(store, buffer_size=10_000)
    committer.append_hooks.append(lambda tx, committed: keeper.append_hook(tx.conn, committed))
    committer.start()
    try:
        for group in range(GROUPS):
            batch = [submission(f"evt_{group}_{i}", TENANTS[i % len(TENANTS)])
                     for i in range(EVENTS_PER_GROUP)]
            batch.append(submission(f"evt_{group}_0", TENANTS[0]))  # a duplicate in the group
            asyncio.run(committer.append_events(batch))
    finally:
        committer.close()
        store.close()
    database = sqlite3.connect(folder / DATABASE_FILE)
    try:
        ledger = database.execute("SELECT * FROM ledger ORDER BY seq").fetchall()
        tiles = database.execute("SELECT * FROM ledger_tiles ORDER BY 1, 2, 3").fetchall()
    finally:
        database.close()
    return ledger, tiles


def test_the_writer_and_the_trees_write_the_same_bytes_either_way(
    core: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    native = committed_tables(tmp_path / "native", monkeypatch, core.chain_hashes, core.leaf_hashes)
    reference = committed_tables(
        tmp_path / "reference", monkeypatch, entry.chain_hashes, merkle.leaf_hashes
    )
    ledger, tiles = native
    assert len(ledger) == GROUPS * EVENTS_PER_GROUP
    assert tiles  # the trees stored full tiles, compared below
    assert native == reference


# ----- a real server, with the core on and off -------------------------------------------------


def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool) -> dict[str, Any]:
    """Run ``scr serve`` (the core on or off), ingest the same events, and keep what it wrote
    and delivered."""
    if native:
        monkeypatch.delenv("SCR_NATIVE", raising=False)
    else:
        monkeypatch.setenv("SCR_NATIVE", "0")
    folder = tmp_path / ("native" if native else "reference")
    data = folder / "data"
    one, batched = Receiver(), Receiver()
    config = folder / "scr.yaml"
    folder.mkdir()
    config.write_text(config_text(
        f'      - {{name: single, endpoint: "{one.url}", transform: raw_v1, secret: "{SECRET}"}}\n'
        f'      - {{name: batched, endpoint: "{batched.url}", transform: raw_v1, '
        f'secret: "{SECRET}", batch_size: {BATCH_SIZE}}}'
    ))
    key = issue_key(data, "org_acme", "platform")
    events = [make_event(f"evt_{i}", **{"user.organization_id": TENANTS[i % len(TENANTS)],
                                           "outcome.final_message": "Résumé ✓ " * i})
              for i in range(SERVED_EVENTS)]
    server = ServerProcess(data, config).start()
    try:
        response = httpx.post(f"{server.url}/v1/events", json=events,
                              headers={"authorization": f"Bearer {key}"}, timeout=30)
        assert response.status_code == 202, response.text
        for receiver in (one, batched):
            wait_for(lambda r=receiver: len(r.event_ids()) == SERVED_EVENTS,  # type: ignore[misc]
                     timeout_s=DELIVERY_TIMEOUT_S, what="every event delivered")
    finally:
        server.stop()
        one.close()
        batched.close()
    database = sqlite3.connect(data / DATABASE_FILE)
    try:
        ledger = database.execute(
            "SELECT tenant, tenant_seq, kind, entry, hash FROM ledger ORDER BY seq"
        ).fetchall()
    finally:
        database.close()
    log = "".join(path.read_text() for path in folder.glob("server-*.log"))
    return {"ledger": ledger, "single": one.received, "batched": batched.received, "log": log,
            "data": data}


def check_hashes(ledger: Rows) -> None:
    """Every chain hash is the reference's over the stored bytes."""
    heads: dict[str, bytes] = {}
    for tenant, _, _, stored, digest in ledger:
        assert digest == entry.chain_hash(heads.get(tenant, entry.GENESIS_HASH), stored)
        heads[tenant] = digest


def without_time_and_key(stored: bytes) -> dict[str, Any]:
    """An entry without what differs between two runs: its commit time and the acting key."""
    fields: dict[str, Any] = msgspec.json.decode(stored)
    for run_specific in ("ts", "actor"):
        fields.pop(run_specific)
    fields["provenance"].pop("author")
    return fields


def check_signatures(requests: list[Any]) -> None:
    key = signing.decode_secret(SECRET)
    for request in requests:
        assert signing.verify(key, request.headers["webhook-id"], request.headers["webhook-timestamp"],
                              request.body, request.headers["webhook-signature"])


def test_a_real_ingest_is_the_same_with_the_core_on_and_off(
    core: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on = served(tmp_path, monkeypatch, native=True)
    off = served(tmp_path, monkeypatch, native=False)
    assert "native core: on" in on["log"]
    assert "native core: off (pure Python)" in off["log"]
    for run in (on, off):
        check_hashes(run["ledger"])
        check_signatures(run["single"] + run["batched"])
    run_scr("ledger", "verify", "--data", str(on["data"]))  # the trees the native core hashed, too
    # the same entries, apart from when they were committed and by which key
    events_on = [(t, s, k, without_time_and_key(e)) for t, s, k, e, _ in on["ledger"] if k != "KEY_CREATED"]
    events_off = [(t, s, k, without_time_and_key(e)) for t, s, k, e, _ in off["ledger"] if k != "KEY_CREATED"]
    assert len(events_on) == SERVED_EVENTS
    assert events_on == events_off
    # per-event webhook ids derive from (destination, event id): the same in both runs
    def ids_by_event(requests: list[Any]) -> dict[str, str]:
        return {json.loads(r.body)["event_id"]: r.headers["webhook-id"] for r in requests}
    assert ids_by_event(on["single"]) == ids_by_event(off["single"])
    assert ids_by_event(on["single"]) == {
        event_id: signing.webhook_id("single", event_id) for event_id in ids_by_event(on["single"])
    }
    # a batch's id derives from its ledger positions, which the two runs share
    assert sorted(r.headers["webhook-id"] for r in on["batched"]) == sorted(
        r.headers["webhook-id"] for r in off["batched"]
    )
