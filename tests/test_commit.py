"""The committer: group commit, exact dedup, the per-tenant chain, and failures."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scr.errors import Unavailable
from scr.log.commit import Committed, Committer, Outcome, RecentKeys, Submission, key_hash
from scr.log.entry import GENESIS_HASH, Kind, chain_hash
from scr.log.keys import event_key
from scr.schema import canonical_bytes, decode_event
from scr.store.protocol import Store, Transaction
from scr.store.records import Hit
from scr.store.sqlite import WAL_CHECKPOINT_S, SqliteStore
from support import make_event


def submission(event_id: str, **changes: object) -> Submission:
    event = decode_event(json.dumps(make_event(event_id, **changes)).encode())
    payload = canonical_bytes(event)
    return Submission(event, payload, hashlib.blake2b(payload, digest_size=16).digest(),
                      "key:test", "http")


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "data")
    yield opened
    opened.close()


def committer_for(store: Store, window_s: float = 0.0) -> Committer:
    committer = Committer(store, buffer_size=10_000, dedup_window_s=window_s)
    committer.start()
    return committer


def test_concurrent_requests_share_transactions(store: Store) -> None:
    committer = committer_for(store)

    async def burst() -> list[list[tuple[Outcome, int]]]:
        return list(await asyncio.gather(
            *(committer.append_events([submission(f"evt_{i}")]) for i in range(200))
        ))

    try:
        outcomes = asyncio.run(burst())
    finally:
        committer.close()
    assert all(o[0][0] is Outcome.ACCEPTED for o in outcomes)
    assert sorted(o[0][1] for o in outcomes) == list(range(1, 201))
    assert committer.groups < 200  # requests queued behind a commit joined the next group
    assert store.last_seq() == 200


@pytest.mark.parametrize("window_s", [0.0, 300.0])
def test_dedup_is_exact_with_or_without_the_front_window(store: Store, window_s: float) -> None:
    committer = committer_for(store, window_s)
    try:
        first = asyncio.run(committer.append_events([submission("evt_a")]))
        again = asyncio.run(committer.append_events([submission("evt_a")]))
        other = asyncio.run(committer.append_events([submission("evt_a", **{"usage.model": "x"})]))
    finally:
        committer.close()
    assert first[0][0] is Outcome.ACCEPTED
    assert again[0] == (Outcome.DUPLICATE, first[0][1])
    assert other[0] == (Outcome.CONFLICT, first[0][1])
    restarted = committer_for(store, window_s)
    try:
        after = asyncio.run(restarted.append_events([submission("evt_a")]))
    finally:
        restarted.close()
    assert after[0] == (Outcome.DUPLICATE, first[0][1])


def test_recent_keys_answer_their_hits_and_leave_by_group_at_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RecentKeys, "MAX_KEYS", 4)
    recent = RecentKeys(window_s=300)
    recent.add([(key_hash(("org_a", "evt_1")), Hit(1, b"d1" * 8)),
                (key_hash(("org_a", "evt_2")), Hit(2, b"d2" * 8))])
    assert recent.get(key_hash(("org_a", "evt_1"))) == Hit(1, b"d1" * 8)
    assert recent.get(key_hash(("org_b", "evt_1"))) is None  # another tenant's event of the same id
    assert recent.get(key_hash(("org_a", "evt_"))) is None
    recent.add([(key_hash(("org_a", f"evt_{n}")), Hit(n, b"dd" * 8)) for n in (3, 4, 5)])
    # five keys, over the cap of four: the oldest group (two keys) leaves whole
    assert len(recent) == 3
    assert recent.get(key_hash(("org_a", "evt_1"))) is None
    assert recent.get(key_hash(("org_a", "evt_2"))) is None
    assert recent.get(key_hash(("org_a", "evt_5"))) == Hit(5, b"dd" * 8)
    # a tenant and event id that run into each other are still two keys
    recent.add([(key_hash(("org_a1", "x")), Hit(9, b"x" * 16))])
    assert recent.get(key_hash(("org_a", "1x"))) is None


def test_a_64_bit_key_collision_keeps_dedup_exact(sqlite_store: SqliteStore) -> None:
    store = sqlite_store
    committer = committer_for(store)
    try:
        asyncio.run(committer.append_events([submission("evt_holder")]))
        # Simulate another event whose dedup key collides with evt_holder's (seq 1).
        store.keys.index.insert([event_key("org_acme", "evt_twin")], [1])
        accepted = asyncio.run(committer.append_events([submission("evt_twin")]))
        duplicate = asyncio.run(committer.append_events([submission("evt_twin")]))
    finally:
        committer.close()
    assert accepted[0][0] is Outcome.ACCEPTED and accepted[0][1] == 2
    assert duplicate[0] == (Outcome.DUPLICATE, 2)
    assert store.find_event("org_acme", "evt_twin") is not None
    assert store.find_event("org_acme", "evt_holder") is not None


def test_each_tenant_has_its_own_unbroken_chain(store: Store) -> None:
    committer = committer_for(store)
    subs = [submission(f"evt_{i}", **{"user.organization_id": f"org_{i % 3}"}) for i in range(30)]
    try:
        asyncio.run(committer.append_events(subs))
    finally:
        committer.close()
    for tenant in ("org_0", "org_1", "org_2"):
        previous = GENESIS_HASH
        entries = store.tenant_entries(tenant, 0, 1000)
        assert [e.tenant_seq for e in entries] == list(range(10))
        for entry in entries:
            previous = chain_hash(previous, entry.entry)
            assert entry.hash == previous


def undecoded(sub: Submission) -> Submission:
    """``sub`` as the writer gets it from an edge: canonical bytes and the core's fields."""
    return Submission.undecoded(sub.payload, sub.digest, sub.actor, sub.source, sub.tenant, sub.event_id,
                                sub.session_id, sub.model)


def test_events_handed_over_undecoded_are_stored_byte_for_byte_as_decoded_ones(tmp_path: Path) -> None:
    subs = [submission(f"evt_{i}", **{"user.organization_id": f"org_{i % 2}", "session.session_id": f"s{i}"})
            for i in range(6)]
    stored: list[list[tuple[int, str, str | None, dict[str, object]]]] = []
    seen: list[list[Committed]] = []
    for name, handed in (("decoded", subs), ("undecoded", [undecoded(s) for s in subs])):
        opened = SqliteStore(tmp_path / name)
        committer = committer_for(opened)
        committer.keep_events = name == "decoded"
        committer.commit_hooks.append(seen.append)
        try:
            assert outcomes(asyncio.run(committer.append_events(handed))) == [Outcome.ACCEPTED] * 6
        finally:
            committer.close()
        entries = opened.entries_after(0, 100)
        stored.append([(e.seq, e.tenant, e.event_id, without_time(e.entry)) for e in entries])
        assert [e.seq for e in opened.session_entries("org_1", "s3")] == [4]
        opened.close()
    assert stored[0] == stored[1]  # the same entries and keys (but for the time of commit)
    decoded, handed_over = seen
    assert [c.event for c in decoded] == [s.event for s in subs]
    # the writer of a served instance never read the events back: nothing asked for them
    assert [c.event for c in handed_over] == [None] * 6


def without_time(entry: bytes) -> dict[str, object]:
    fields: dict[str, object] = json.loads(entry)
    del fields["ts"]
    return fields


def outcomes(answers: list[tuple[Outcome, int]]) -> list[Outcome]:
    return [outcome for outcome, _ in answers]


def test_a_failing_write_fails_only_its_caller(store: Store) -> None:
    committer = committer_for(store)

    def broken(tx: Transaction) -> None:
        store.set_cursor(tx, "x", 1)
        raise ValueError("this write is wrong")

    async def both() -> tuple[object, object]:
        results = await asyncio.gather(
            committer.run(broken), committer.append_events([submission("evt_ok")]),
            return_exceptions=True,
        )
        return results[0], results[1]

    try:
        failed, fine = asyncio.run(both())
    finally:
        committer.close()
    assert isinstance(failed, ValueError)
    assert fine == [(Outcome.ACCEPTED, 1)]
    assert store.cursor("x") is None  # the failed write left nothing behind


def test_a_failed_commit_stores_nothing_and_recovers(store: Store) -> None:
    committer = committer_for(store)
    failures = {"left": 1}

    def flaky_hook(tx: Transaction, committed: list[Committed]) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("disk went away")

    committer.append_hooks.append(flaky_hook)
    try:
        with pytest.raises(Unavailable):
            asyncio.run(committer.append_events([submission("evt_lost")]))
        assert not committer.healthy
        assert store.last_seq() == 0
        retried = asyncio.run(committer.append_events([submission("evt_lost")]))
    finally:
        committer.close()
    assert retried[0][0] is Outcome.ACCEPTED
    assert committer.healthy
    entries = store.tenant_entries("org_acme", 0, 10)  # the failed group left no trace
    assert len(entries) == 1 and entries[0].seq == retried[0][1] == store.last_seq()
    assert entries[0].hash == chain_hash(GENESIS_HASH, entries[0].entry)


def test_another_writer_process_does_not_break_the_chain(store: Store) -> None:
    server_side = committer_for(store)
    try:
        asyncio.run(server_side.append_events([submission("evt_1")]))
        cli_side = committer_for(store)  # as `scr keys create` does while the server runs
        asyncio.run(cli_side.append_events([submission("evt_2")]))
        cli_side.close()
        asyncio.run(server_side.append_events([submission("evt_3")]))
    finally:
        server_side.close()
    entries = store.tenant_entries("org_acme", 0, 10)
    assert [e.seq for e in entries] == [1, 2, 3]
    previous = GENESIS_HASH
    for entry in entries:
        previous = chain_hash(previous, entry.entry)
        assert entry.hash == previous


def test_the_wal_is_checkpointed_beside_the_writer(sqlite_store: SqliteStore) -> None:
    store = sqlite_store
    committer = committer_for(store)  # the writer's own automatic checkpoint is off
    try:
        asyncio.run(committer.append_events([submission(f"evt_{i}") for i in range(2000)]))
        # the entries reached scr.db: a checkpoint copies pages one by one, so wait for all of
        # them, not for the first (the file grows while it runs)
        reached = store.path.stat().st_size + 1_000_000
        deadline = time.monotonic() + 10 * WAL_CHECKPOINT_S
        while store.path.stat().st_size <= reached and time.monotonic() < deadline:
            time.sleep(0.05)
        # while the writer still runs (closing the last connection would checkpoint too)
        assert store.path.stat().st_size > reached
    finally:
        committer.close()


def test_the_wal_starts_over_while_writes_never_pause(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite rewinds its WAL only at a write that begins with every frame checkpointed;
    back-to-back commits never give it one, so without the writer's help the WAL (and the
    cost of each fsync) grows for as long as the load lasts."""
    monkeypatch.setattr("scr.store.sqlite.WAL_CHECKPOINT_S", 0.05)
    store = sqlite_store
    committer = committer_for(store)
    wal = store.path.with_name(store.path.name + "-wal")
    payload = {"blob": "x" * 8000}

    def write(tx: Transaction) -> None:
        committer.append_entry(tx, "org_wal", Kind.OBSERVATION, payload, actor="test", source="test", ref="")

    try:
        written = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and written < 4000:
            committer.run_sync(write)
            written += 1
        largest_wal = wal.stat().st_size
    finally:
        committer.close()
    appended = written * len(json.dumps(payload))
    assert written > 200  # enough commits for several checkpoint rounds
    # a WAL that never starts over holds every frame: more bytes than the entries themselves
    # (measured: 90 MB for 28 MB of entries; 3-7 MB once it starts over, and a third of the
    # entries' bytes with the checkpointer starved of CPU by a busy machine)
    assert largest_wal < appended, (largest_wal, appended)
