"""The hot path with the native core on and off: byte-identical ledgers, trees and webhooks.

In one process, the same groups are committed through the native core and through the
Python reference (the bound functions swapped, the clock fixed): the ledger rows and the
stored Merkle tiles are equal byte for byte. Then a real ``scr serve`` ingests the same
events with the core on and with ``SCR_NATIVE=0``: every chain hash and leaf checks out
against the reference, the entries differ only in their commit times, the webhooks carry
the same ids and signatures the reference verifies, and every built-in transform's
destination receives the same bytes (an ``audit_v1`` entry hash aside: it covers the commit
time).
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
from packed import ledger_table

from conftest import config_text
from scr.ledger import upkeep
from scr.ledger.tiles import create_schema, open_database
from scr.ledger.upkeep import TreeKeeper
from scr.log import commit, entry, merkle
from scr.log.commit import Committer
from scr.route import signing
from scr.route.transforms import BUILTIN_TRANSFORMS
from scr.store.sqlite import DATABASE_FILE, SqliteStore
from support import Receiver, ServerProcess, create_key, make_event, run_scr, wait_for

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
        with ledger_table(database):
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

# Every built-in transform, delivered one event per request and in batches.
DESTINATIONS = [f"{transform}{suffix}" for transform in BUILTIN_TRANSFORMS for suffix in ("", "_batched")]
# What varies the transforms' work: offsets and fractions, addresses of every kind, priced,
# snapshot, unknown and non-ASCII models.
TIMESTAMPS = ("2026-11-25T10:00:05Z", "2026-11-25T11:30:05.250+01:30", "2026-11-25T04:00:05.000001-06:00")
ADDRESSES = ("203.0.113.77", "2001:db8:85a3::8a2e:370:7334", "::ffff:198.51.100.9", "2002:c633:6409::1")
MODELS = ("gpt-4o", "GPT-4o-2024-08-06", "house-llm", "gpt-4o-ünï")


def served(folder: Path) -> dict[str, Any]:
    """Run ``scr serve`` (the core on or off, as ``SCR_NATIVE`` says), ingest the same events,
    and keep what it wrote and delivered."""
    data = folder / "data"
    receivers = {name: Receiver() for name in DESTINATIONS}
    config = folder / "scr.yaml"
    folder.mkdir()
    config.write_text(config_text("\n".join(
        f'      - {{name: {name}, endpoint: "{receiver.url}", secret: "{SECRET}", '
        f'transform: {name.removesuffix("_batched")}'
        + (f", batch_size: {BATCH_SIZE}}}" if name.endswith("_batched") else "}")
        for name, receiver in receivers.items()
    )))
    key = create_key(data, "org_acme", "platform")
    events = [make_event(f"evt_{i}", **{"user.organization_id": TENANTS[i % len(TENANTS)],
                                           "outcome.final_message": "Résumé ✓ " * i,
                                           "timestamp": TIMESTAMPS[i % len(TIMESTAMPS)],
                                           "metadata.source_ip": ADDRESSES[i % len(ADDRESSES)],
                                           "usage.model": MODELS[i % len(MODELS)]})
              for i in range(SERVED_EVENTS)]
    server = ServerProcess(data, config).start()
    try:
        response = httpx.post(f"{server.url}/v1/events", json=events,
                              headers={"authorization": f"Bearer {key}"}, timeout=30)
        assert response.status_code == 202, response.text
        for receiver in receivers.values():
            wait_for(lambda r=receiver: len(r.event_ids()) == SERVED_EVENTS,  # type: ignore[misc]
                     timeout_s=DELIVERY_TIMEOUT_S, what="every event delivered")
    finally:
        server.stop()
        for receiver in receivers.values():
            receiver.close()
    database = sqlite3.connect(data / DATABASE_FILE)
    try:
        with ledger_table(database):
            ledger = database.execute(
                "SELECT tenant, tenant_seq, kind, entry, hash FROM ledger ORDER BY seq"
            ).fetchall()
    finally:
        database.close()
    log = "".join(path.read_text() for path in folder.glob("server-*.log"))
    return {"ledger": ledger, "received": {name: r.received for name, r in receivers.items()},
            "log": log, "data": data}


@pytest.fixture(scope="module")
def runs(core: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[bool, dict[str, Any]]:
    """The same ingest served with the core on (True) and off (False)."""
    folder = tmp_path_factory.mktemp("served")
    runs = {}
    for native in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            if native:
                patch.delenv("SCR_NATIVE", raising=False)
            else:
                patch.setenv("SCR_NATIVE", "0")
            runs[native] = served(folder / ("native" if native else "reference"))
    return runs


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


def test_a_real_ingest_is_the_same_with_the_core_on_and_off(runs: dict[bool, dict[str, Any]]) -> None:
    on, off = runs[True], runs[False]
    assert "native core: on" in on["log"]
    assert "native core: off (pure Python)" in off["log"]
    for run in (on, off):
        check_hashes(run["ledger"])
        check_signatures([request for requests in run["received"].values() for request in requests])
    run_scr("ledger", "verify", "--data", str(on["data"]))  # the trees the native core hashed, too
    # the same entries, apart from when they were committed and by which key
    events_on = [(t, s, k, without_time_and_key(e)) for t, s, k, e, _ in on["ledger"] if k != "KEY_CREATED"]
    events_off = [(t, s, k, without_time_and_key(e)) for t, s, k, e, _ in off["ledger"] if k != "KEY_CREATED"]
    assert len(events_on) == SERVED_EVENTS
    assert events_on == events_off
    # per-event webhook ids derive from (destination, event id): the same in both runs
    def ids_by_event(requests: list[Any]) -> dict[str, str]:
        return {json.loads(r.body)["event_id"]: r.headers["webhook-id"] for r in requests}
    single_on, single_off = on["received"]["raw_v1"], off["received"]["raw_v1"]
    assert ids_by_event(single_on) == ids_by_event(single_off)
    assert ids_by_event(single_on) == {
        event_id: signing.webhook_id("raw_v1", event_id) for event_id in ids_by_event(single_on)
    }
    # a batch's id derives from its ledger positions, which the two runs share
    assert sorted(r.headers["webhook-id"] for r in on["received"]["raw_v1_batched"]) == sorted(
        r.headers["webhook-id"] for r in off["received"]["raw_v1_batched"]
    )


def delivered_outputs(run: dict[str, Any], destination: str) -> list[bytes]:
    """Each output a destination received (a batch's items as they were written), in ledger
    order, with an ``audit_v1`` entry hash (the commit time is in it) checked against the
    run's ledger and taken out."""
    outputs = []
    for request in run["received"][destination]:
        if destination.endswith("_batched"):
            outputs += [bytes(item) for item in msgspec.json.decode(request.body, type=list[msgspec.Raw])]
        else:
            outputs.append(request.body)
    if destination.startswith("audit_v1"):
        hashes = {digest.hex() for *_, digest in run["ledger"]}
        for index, output in enumerate(outputs):
            entry_hash = msgspec.json.decode(output)["entry_hash"]
            assert entry_hash in hashes
            outputs[index] = output.replace(entry_hash.encode(), b"")
    return sorted(outputs, key=lambda output: msgspec.json.decode(output)["event_id"])


@pytest.mark.parametrize("destination", DESTINATIONS)
def test_destinations_receive_the_same_bytes_with_the_core_on_and_off(
    runs: dict[bool, dict[str, Any]], destination: str
) -> None:
    on, off = (delivered_outputs(runs[native], destination) for native in (True, False))
    assert len(on) == SERVED_EVENTS
    assert on == off
