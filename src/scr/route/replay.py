"""Replay: put chosen ledger entries back in a destination's queue, keeping their ids."""

from __future__ import annotations

import asyncio

from scr.errors import BadRequest
from scr.log.commit import Committer, utc_now
from scr.log.entry import Kind
from scr.route.signing import webhook_id
from scr.route.worker import DestinationWorker, now_ms
from scr.security.audit import Acting, append_admin_action
from scr.store.protocol import Store, Transaction
from scr.store.records import DeliveryRow, StoredEntry


def _entries(
    store: Store, worker: DestinationWorker, tenant: str, event_ids: list[str] | None,
    start: str | None, end: str | None, status: str | None, cap: int,
) -> list[StoredEntry]:
    if event_ids is not None:
        if len(event_ids) > cap:
            raise BadRequest(f"replay at most {cap} event ids per call")
        found = [store.find_event(tenant, event_id) for event_id in event_ids]
        return [entry for entry in found if entry is not None]
    assert start is not None
    low = store.seq_at_time(start)
    high = store.seq_at_time(end) if end else store.last_seq()
    entries = [
        e for e in store.tenant_entries_between(tenant, low, high, cap)
        if e.kind == Kind.SESSION_COMPLETION.value
    ]
    if status is None:
        return entries
    rows = store.delivery_rows_for(worker.name, [e.seq for e in entries])
    if status != "delivered":
        return [e for e in entries if e.seq in rows and rows[e.seq].status == status]
    # delivered: a row says so, or the entry is behind the cursor with no open or dead row
    # and the destination's (deterministic) filter and sampling chose it
    return [
        e for e in entries
        if (e.seq in rows and rows[e.seq].status == "delivered")
        or (e.seq not in rows and e.seq <= worker.cursor
            and worker.chooses(worker.tail.committed(e)))
    ]


async def requeue(
    store: Store, committer: Committer, worker: DestinationWorker, acting: Acting,
    event_ids: list[str] | None, start: str | None, end: str | None, status: str | None,
    cap: int,
) -> int:
    """Requeue entries of ``acting``'s tenant for ``worker``'s destination, and ledger the
    replay (even of nothing) in the same write; returns how many."""
    entries = await asyncio.to_thread(
        _entries, store, worker, acting.tenant, event_ids, start, end, status, cap
    )
    details = {
        "destination": worker.name, "requeued": len(entries),
        "event_id_count": len(event_ids) if event_ids is not None else None,
        "from": start, "to": end, "status": status,
    }
    existing = await asyncio.to_thread(
        store.delivery_rows_for, worker.name, [e.seq for e in entries]
    ) if entries else {}
    stamp, due = utc_now(), now_ms()
    rows = []
    for stored in entries:
        entry = worker.tail.committed(stored)
        previous = existing.get(stored.seq)
        hook = previous.webhook_id if previous else webhook_id(worker.name, entry.event_id)
        if previous is None or previous.status in ("delivered", "dead"):
            worker.track_open(entry)
        rows.append(DeliveryRow(
            worker.name, stored.seq, stored.tenant, entry.event_id,
            worker.session_of(entry), hook, "pending", 0, due, None, "replayed", stamp,
        ))

    def write(tx: Transaction) -> None:
        if rows:
            store.upsert_deliveries(tx, rows)
        append_admin_action(committer, tx, acting.tenant, Kind.DELIVERIES_REPLAYED, details,
                            key_id=acting.key_id, ref=worker.name)

    await committer.run(write, size=len(rows) + 1)
    return len(rows)
