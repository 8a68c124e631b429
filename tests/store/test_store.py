"""One storage suite, run against every store backend (SQLite and PostgreSQL), no copy.

Writes go through the committer, as the runtime writes: each backend must keep the same
promises about the ledger, dedup, cursors, deliveries, attempts, keys and tenants.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from test_commit import submission

from scr.log.commit import Committer, Outcome, utc_now
from scr.log.entry import GENESIS_HASH, Kind, chain_hash
from scr.security.auth import create_key
from scr.security.keys import Role, hash_key
from scr.store import Store, Transaction
from scr.store.records import AttemptRow, DeliveryRow, session_key

T = TypeVar("T")


@pytest.fixture
def committer(store: Store) -> Iterator[Committer]:
    started = Committer(store, buffer_size=10_000)
    started.start()
    yield started
    started.close()


def write(committer: Committer, change: Callable[[Transaction], T]) -> T:
    return committer.run_sync(change)


def append(committer: Committer, *event_ids: str, tenant: str = "org_acme") -> list[tuple[Outcome, int]]:
    subs = [submission(i, **{"user.organization_id": tenant}) for i in event_ids]
    return asyncio.run(committer.append_events(subs))


def delivery(seq: int, status: str = "retrying", destination: str = "billing", tenant: str = "org_acme",
             **changes: Any) -> DeliveryRow:
    fields: dict[str, Any] = {
        "destination": destination, "seq": seq, "tenant": tenant, "event_id": f"evt_{seq}",
        "session_key": session_key(tenant, "sess_0001"), "webhook_id": f"msg_{seq}", "status": status,
        "attempts": 1, "next_attempt_ms": 1000, "last_status": 503, "last_error": "busy",
        "updated_at": utc_now(),
    }
    return DeliveryRow(**{**fields, **changes})


def test_appends_are_read_back_in_order_with_their_chain(store: Store, committer: Committer) -> None:
    outcomes = append(committer, "evt_1", "evt_2", "evt_3")
    seqs = [seq for _, seq in outcomes]
    assert [o for o, _ in outcomes] == [Outcome.ACCEPTED] * 3 and seqs == sorted(seqs)
    assert store.last_seq() == seqs[-1]
    after = store.entries_after(seqs[0], 10)
    assert [e.seq for e in after] == seqs[1:]
    assert set(store.entries_by_seq(seqs)) == set(seqs)
    previous = GENESIS_HASH
    for index, entry in enumerate(store.tenant_entries("org_acme", 0, 10)):
        assert entry.tenant_seq == index and entry.hash == chain_hash(previous, entry.entry)
        previous = entry.hash
    assert [e.event_id for e in store.tenant_entries_after("org_acme", seqs[0])] == ["evt_2", "evt_3"]


def test_dedup_is_exact_and_a_changed_body_is_a_conflict(store: Store, committer: Committer) -> None:
    (first,) = append(committer, "evt_a")
    assert append(committer, "evt_a") == [(Outcome.DUPLICATE, first[1])]
    changed = asyncio.run(committer.append_events([submission("evt_a", **{"usage.model": "other"})]))
    assert changed == [(Outcome.CONFLICT, first[1])]
    # the same id in one batch: one entry, then its duplicate
    assert [o for o, _ in append(committer, "evt_b", "evt_b")] == [Outcome.ACCEPTED, Outcome.DUPLICATE]
    assert len(store.tenant_entries("org_acme", 0, 10)) == 2
    assert [e for e, _ in store.accepted_events("org_acme")].count("evt_a") == 1


def test_tenants_are_isolated(store: Store, committer: Committer) -> None:
    (mine,) = append(committer, "evt_same", tenant="org_a")
    (theirs,) = append(committer, "evt_same", tenant="org_b")  # the same id is another event
    assert mine[0] is theirs[0] is Outcome.ACCEPTED and mine[1] != theirs[1]
    found = store.find_event("org_a", "evt_same")
    assert found is not None and found.tenant == "org_a" and found.seq == mine[1]
    assert store.find_event("org_c", "evt_same") is None
    assert [e.tenant_seq for e in store.tenant_entries("org_b", 0, 10)] == [0]
    assert sorted(store.tenants()) == ["org_a", "org_b"]
    assert store.session_entries("org_c", "sess_0001") == []
    assert [e.seq for e in store.session_entries("org_a", "sess_0001")] == [mine[1]]


def test_chain_heads_are_each_tenants_count_and_newest_hash(store: Store, committer: Committer) -> None:
    assert write(committer, store.chain_heads) == {}
    counts = {"org_a": 3, "org_b": 1, "org_c": 2}
    for tenant, count in counts.items():
        append(committer, *(f"evt_{tenant}_{i}" for i in range(count)), tenant=tenant)
    append(committer, "evt_a_late", tenant="org_a")  # org_a again, after the others
    heads = write(committer, store.chain_heads)
    assert {tenant: n for tenant, (n, _) in heads.items()} == {**counts, "org_a": 4}
    for tenant, (count, newest) in heads.items():
        assert newest == store.tenant_entries(tenant, 0, 10)[-1].hash and count == len(
            store.tenant_entries(tenant, 0, 10))


def test_entry_times_find_seqs(store: Store, committer: Committer) -> None:
    (first,) = append(committer, "evt_1")
    boundary = utc_now()
    (second,) = append(committer, "evt_2")
    assert store.seq_at_time(boundary) == first[1]
    stamp = store.entry_time(second[1])
    assert stamp is not None and store.entry_time(second[1] + 1) is None


def test_other_entries_are_read_by_kind(store: Store, committer: Committer) -> None:
    append(committer, "evt_1")
    entry = write(committer, lambda tx: committer.append_entry(
        tx, "org_acme", Kind.OBSERVATION, {"action": "deploy"}, actor="t", source="t", ref="r"))
    (found,) = store.tenant_entries_of_kinds("org_acme", [Kind.OBSERVATION.value], 0)
    assert found.seq == entry.seq and found.event_id is None
    assert store.tenant_entries_of_kinds("org_acme", [Kind.OBSERVATION.value], entry.seq) == []


def test_cursors_only_move_forward(store: Store, committer: Committer) -> None:
    assert store.cursor("billing") is None
    write(committer, lambda tx: store.set_cursor(tx, "billing", 5))
    write(committer, lambda tx: store.set_cursor(tx, "billing", 3))  # a late write never rewinds
    assert store.cursor("billing") == 5 and store.cursor("analytics") is None


def test_destination_state_is_kept(store: Store, committer: Committer) -> None:
    assert store.destination_state("billing") == ("active", "")
    write(committer, lambda tx: store.set_destination_state(tx, "billing", "disabled", "410 Gone", utc_now()))
    assert store.destination_state("billing") == ("disabled", "410 Gone")


def test_deliveries_are_upserted_listed_and_made_due(store: Store, committer: Committer) -> None:
    write(committer, lambda tx: store.upsert_deliveries(tx, [
        delivery(1), delivery(2, "dead"), delivery(3, tenant="org_other"), delivery(1, destination="crm"),
    ]))
    write(committer, lambda tx: store.upsert_deliveries(tx, [delivery(1, attempts=2, last_error="again")]))
    (row,) = store.delivery_rows_for("billing", [1]).values()
    assert (row.attempts, row.last_error, row.webhook_id) == (2, "again", "msg_1")
    assert [r.seq for r in store.open_deliveries("billing", 10)] == [1, 3]
    assert [r.seq for r in store.list_deliveries("org_acme", "billing", None, 10)] == [2, 1]
    assert [r.seq for r in store.list_deliveries(None, None, "dead", 10)] == [2]
    assert store.list_deliveries("org_nobody", None, None, 10) == []
    assert write(committer, lambda tx: store.make_due(tx, "billing", 42)) == 2
    assert {r.next_attempt_ms for r in store.open_deliveries("billing", 10)} == {42}


def test_attempts_are_logged_newest_first(store: Store, committer: Committer) -> None:
    rows = [AttemptRow("billing", "msg_1", [1, 2], 1, 503, "busy", 12.5, "try later", utc_now()),
            AttemptRow("billing", "msg_1", [1, 2], 2, 200, "", 3.0, "ok", utc_now()),
            AttemptRow("crm", "msg_9", [9], 1, None, "connection refused", 1.0, "", utc_now())]
    write(committer, lambda tx: store.insert_attempts(tx, rows))
    assert store.recent_attempts("billing", 10) == rows[1::-1]
    assert store.recent_attempts(None, 1) == rows[2:]


def test_keys_are_found_by_their_hash_only(store: Store, committer: Committer) -> None:
    grant = create_key(committer, "org_acme", Role.ADMIN, "ops")
    record = store.find_key(hash_key(grant.key))
    assert record is not None
    assert (record.key_id, record.tenant, record.role) == (grant.key_id, "org_acme", "admin")
    assert record.revoked_at is None
    assert store.find_key(hash_key(grant.key + "x")) is None
    (created,) = store.tenant_entries_of_kinds("org_acme", [Kind.KEY_CREATED.value], 0)
    assert grant.key.encode() not in created.entry  # the ledger names the key, never holds it


def test_a_duplicate_key_id_fails_only_its_write(store: Store, committer: Committer) -> None:
    write(committer, lambda tx: store.insert_key(tx, b"h" * 32, "k1", "org_acme", "read", "", utc_now()))
    with pytest.raises(Exception, match=r"(?i)unique"):
        write(committer, lambda tx: store.insert_key(tx, b"g" * 32, "k1", "org_acme", "read", "", utc_now()))
    assert committer.healthy
    assert store.find_key(b"g" * 32) is None and store.find_key(b"h" * 32) is not None


def test_a_publishable_keys_origins_are_kept(store: Store, committer: Committer) -> None:
    grant = create_key(committer, "org_acme", Role.PUBLISHABLE, "site", ["https://shop.example"])
    assert store.find_key_origins(grant.key_id) == frozenset({"https://shop.example"})
    other = create_key(committer, "org_acme", Role.INGEST)
    assert store.find_key_origins(other.key_id) == frozenset()
