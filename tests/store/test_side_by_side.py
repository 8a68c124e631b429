"""Writers side by side on PostgreSQL (issue 19): the owners of different partitions commit in
parallel, seqs commit out of order, and no reader ever passes a seq still in flight."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_commit import committer_for, submission

from scr.errors import ConfigError
from scr.log.commit import Committer
from scr.log.entry import Kind
from scr.log.tail import LedgerTail
from scr.store.postgres import PostgresStore, partition_of
from scr.store.protocol import Transaction
from support import create_key

PARTITIONS = 16
WAIT_S = 10.0


def tenants_of_two_partitions() -> tuple[str, str]:
    first = "org_a"
    other = next(f"org_{n}" for n in range(1000)
                 if partition_of(f"org_{n}", PARTITIONS) != partition_of(first, PARTITIONS))
    return first, other


@pytest.fixture
def stores(postgres_uri: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    pair = PostgresStore(postgres_uri, PARTITIONS), PostgresStore(postgres_uri, PARTITIONS)
    yield pair
    for store in pair:
        store.close()


class HeldOpen:
    """A write of one committer that appends an entry, then keeps its transaction open until
    ``release``: a group commit caught mid-way."""

    def __init__(self, committer: Committer, tenant: str) -> None:
        self.appended = threading.Event()
        self.released = threading.Event()
        self.seq = 0
        self.thread = threading.Thread(target=committer.run_sync, args=(self._write,), daemon=True)
        self.tenant, self.committer = tenant, committer

    def _write(self, tx: Transaction) -> None:
        entry = self.committer.append_entry(tx, self.tenant, Kind.OBSERVATION, {"n": 1},
                                            actor="test", source="test", ref="")
        self.seq = entry.seq
        self.appended.set()
        assert self.released.wait(WAIT_S)

    def __enter__(self) -> HeldOpen:
        self.thread.start()
        assert self.appended.wait(WAIT_S)
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.thread.join(WAIT_S)


def test_owners_of_two_partitions_commit_side_by_side_and_readers_wait_for_the_first(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    held_tenant, other_tenant = tenants_of_two_partitions()
    holding, writing = committer_for(stores[0]), committer_for(stores[1])
    reader = stores[0]
    try:
        with HeldOpen(holding, held_tenant) as held:
            # the other partition's writer does not wait for the open transaction
            started = time.monotonic()
            outcomes = asyncio.run(writing.append_events(
                [submission(f"evt_{n}", **{"user.organization_id": other_tenant}) for n in range(3)]))
            assert time.monotonic() - started < WAIT_S / 2
            later = [seq for _, seq in outcomes]
            assert min(later) > held.seq  # committed out of seq order
            # a reader stops below the seq in flight: past it, it would never see it
            assert reader.last_seq() == held.seq - 1
            assert [e.seq for e in reader.entries_after(0, 100)] == []
            tail = LedgerTail(reader)
            assert tail.head_seq == held.seq - 1
        # committed: the reader sees both, in seq order, none skipped
        assert reader.last_seq() == max(later)
        assert [e.seq for e in reader.entries_after(0, 100)] == [held.seq, *later]
    finally:
        holding.close()
        writing.close()


def test_one_partition_still_has_one_writer_at_a_time(stores: tuple[PostgresStore, PostgresStore]) -> None:
    tenant, _ = tenants_of_two_partitions()
    holding, writing = committer_for(stores[0]), committer_for(stores[1])
    try:
        with HeldOpen(holding, tenant) as held:
            waiting = threading.Thread(target=lambda: asyncio.run(writing.append_events(
                [submission("evt_same_partition", **{"user.organization_id": tenant})])))
            waiting.start()
            waiting.join(1.0)
            assert waiting.is_alive()  # it waits for the partition's lock
        waiting.join(WAIT_S)
        assert not waiting.is_alive()
        # its chain follows the held write's entry: positions 0 and 1, one chain
        entries = stores[0].tenant_entries(tenant, 0, 10)
        assert [(e.tenant_seq, e.seq > held.seq) for e in entries] == [(0, False), (1, True)]
    finally:
        holding.close()
        writing.close()


HOLDER = """
import sys, time, psycopg
conn = psycopg.connect(sys.argv[1], autocommit=False)
seq = conn.execute("SELECT scr_reserve_seqs(5)").fetchone()[0]
print(seq, flush=True)
time.sleep(60)
"""


def test_a_writer_killed_with_seqs_in_flight_leaves_a_gap_readers_pass(
    stores: tuple[PostgresStore, PostgresStore], postgres_uri: str,
) -> None:
    _, tenant = tenants_of_two_partitions()
    writing = committer_for(stores[1])
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, postgres_uri], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        reserved = int(holder.stdout.readline())
        outcomes = asyncio.run(writing.append_events(
            [submission("evt_after_the_gap", **{"user.organization_id": tenant})]))
        (_, seq), = outcomes
        assert seq > reserved + 4
        assert stores[0].last_seq() == reserved - 1  # the killed writer's seqs are in flight
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(WAIT_S)
        deadline = time.monotonic() + WAIT_S  # PostgreSQL ends the session when it sees the socket close
        while stores[0].last_seq() < seq and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stores[0].last_seq() == seq
        assert [e.seq for e in stores[0].entries_after(reserved - 1, 10)] == [seq]  # the gap is passed
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        writing.close()


def test_every_writer_numbers_the_partitions_as_the_store_records_them(
        postgres_uri: str, tmp_path: Path) -> None:
    PostgresStore(postgres_uri, 4).close()  # the first instance records its cluster.partitions
    with pytest.raises(ConfigError, match=r"partitions is 8, but this store's ledger is in 4 partitions"):
        PostgresStore(postgres_uri, 8)
    tenant = next(f"org_{n}" for n in range(1000)
                  if partition_of(f"org_{n}", 4) != partition_of(f"org_{n}", 16))
    create_key(tmp_path, tenant, store=postgres_uri)  # a command without a config
    store = PostgresStore(postgres_uri)
    try:
        assert store.partitions == 4
        with store.connect() as conn:
            rows = conn.execute("SELECT partition FROM ledger WHERE tenant = %s", (tenant,)).fetchall()
        assert rows == [(partition_of(tenant, 4),)]  # in the tenant's partition as writers lock it
    finally:
        store.close()
