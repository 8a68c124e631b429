"""The ledger's tail: recently committed entries kept in memory for the consumers.

Consumers (destinations, later the enricher and the usage aggregator) read the ledger from
their own cursor. Near the head they read from this tail without touching the database or
decoding anything; a consumer that fell behind reads older entries from the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import msgspec

from scr.log.commit import Committed
from scr.log.entry import Kind, Provenance, decode_entry, event_lines
from scr.schema import Event, read_stored_event
from scr.store.protocol import Store
from scr.store.records import StoredEntry

TAIL_ENTRIES = 20_000  # about a second of batch ingest; a consumer further behind reads the store
# A follower hears of every append through the store (PostgreSQL: LISTEN/NOTIFY) and then reads
# its safe seq; it also looks this often unasked (a notification lost while its connection was cut).
FOLLOW_LEDGER_S = 1.0

log = logging.getLogger("scr.tail")


class _EventEntry(msgspec.Struct, gc=False):
    """A SESSION_COMPLETION entry read with its payload typed as an event."""

    id: int
    ts: str
    actor: str
    tenant_id: str
    kind: str
    payload: Event
    provenance: Provenance
    seal: msgspec.Raw = msgspec.Raw()  # sealed personal fields (scr.privacy), as stored


class Opening(Protocol):
    """Opens sealed events (``scr.privacy.opening.EventOpener``)."""

    def open(self, event: Event, seal: msgspec.Raw) -> Event:
        """The event with its personal fields, from the entry's ``seal`` as stored (as
        ledgered when its subject was erased)."""

    def open_json(self, tenant: str, entry: dict[str, Any]) -> dict[str, Any]:
        """A stored entry's event JSON, as the API shows it."""

    def forget(self, tenant: str, subject: str) -> None:
        """Drop the subject's keys (it was erased)."""

    def subject_of(self, tenant: str, user_id: str) -> str:
        """The user's keyed hash."""


class _RawEventEntry(msgspec.Struct, gc=False):
    """A SESSION_COMPLETION entry read with its payload's bytes as they are stored."""

    payload: msgspec.Raw
    seal: msgspec.Raw = msgspec.Raw()


_event_entry = msgspec.json.Decoder(_EventEntry)
_raw_event_entry = msgspec.json.Decoder(_RawEventEntry)


def event_entry(entry: bytes) -> _EventEntry:
    """A SESSION_COMPLETION entry's stored bytes, decoded (its event as ledgered)."""
    return _event_entry.decode(entry)
# the usage reader's alerts (budget alerts, anomalies): their payload is what is delivered
_ALERT_KINDS = frozenset((Kind.BUDGET_ALERT.value, Kind.ANOMALY.value))
_SESSION_COMPLETION = Kind.SESSION_COMPLETION.value


def from_store(row: StoredEntry, opener: Opening | None = None, decode: bool = True) -> Committed:
    """A stored row as a consumer sees it (a sealed event opened by ``opener``; without one
    it stays as ledgered, without its personal fields). ``decode=False`` leaves an unsealed
    event undecoded (``event`` ``None``; ``event_of`` decodes its line when asked)."""
    if row.kind in _ALERT_KINDS:  # delivered like an event: its payload is the message
        return Committed(row.seq, row.tenant, row.tenant_seq, row.kind, row.hash, None,
                         decode_entry(row.entry).payload)
    if row.kind != Kind.SESSION_COMPLETION.value:
        return Committed(row.seq, row.tenant, row.tenant_seq, row.kind, row.hash, None)
    decoded = _raw_event_entry.decode(row.entry)
    if not decoded.seal:
        line = bytes(decoded.payload)
        if not decode:
            return Committed(row.seq, row.tenant, row.tenant_seq, row.kind, row.hash, None,
                             line=line, event_id=row.event_id or "")
        event = read_stored_event(line)
    else:
        line = b""
        event = read_stored_event(decoded.payload)
        if opener is not None:
            event = opener.open(event, decoded.seal)
    return Committed(row.seq, row.tenant, row.tenant_seq, row.kind, row.hash, event, line=line,
                     event_id=event.event_id, session_id=event.session.session_id)


def from_store_rows(rows: Sequence[StoredEntry], opener: Opening | None = None,
                    decode: bool = True) -> list[Committed]:
    """``from_store`` of each row; with ``decode=False``, the unsealed events' lines are found
    in one pass (``event_lines``), which leaves any other row to ``from_store``."""
    if decode:
        return [from_store(row, opener) for row in rows]
    lines = event_lines([row.entry if row.kind == _SESSION_COMPLETION else b"" for row in rows])
    return [
        from_store(row, opener, decode=False) if line is None
        else Committed(row.seq, row.tenant, row.tenant_seq, row.kind, row.hash, None, line=line,
                       event_id=row.event_id or "")
        for row, line in zip(rows, lines, strict=True)
    ]


def _slim(entry: Committed) -> Committed:
    """The entry without its payload object and stored bytes (neither is read from the tail,
    but for a budget alert's payload: the message its destinations deliver)."""
    if entry.kind in _ALERT_KINDS:
        return msgspec.structs.replace(entry, stored=b"")
    if entry.payload is None and not entry.stored:
        return entry
    return msgspec.structs.replace(entry, payload=None, stored=b"")


class LedgerTail:
    """Recent entries and a wake-up for consumers waiting at the head."""

    def __init__(self, store: Store, capacity: int = TAIL_ENTRIES) -> None:
        self.store = store
        self.opener: Opening | None = None  # set when encryption is on (scr.privacy)
        # whether entries read from the store have their events decoded (a reader process
        # whose destinations all take the ledgered line turns it off: ``event_of``)
        self.decode_events = True
        self._entries: deque[Committed] = deque(maxlen=capacity)
        # Every entry up to head_seq is committed (or was rolled back): consumers read up to
        # it. On a store whose writers commit side by side (PostgreSQL), a group of this
        # process's writer moves it only when it starts right after it; otherwise ``follow``
        # moves it, with the store's safe seq.
        self.head_seq = store.last_seq()
        self._in_order = store.commits_in_order
        self._changed = asyncio.Event()

    def extend(self, committed: Iterable[Committed], settled: bool = False) -> None:
        """Called on the event loop after each commit (``settled``: entries read from the
        store, none past its safe seq).

        The tail keeps what consumers read (position, hash, event) and drops the rest: a
        canon entry's payload holds hundreds of GC-tracked lists and dicts, and kept for
        ``TAIL_ENTRIES`` entries they made every young collection scan a growing heap.
        """
        moves = settled or self._in_order
        for full in committed:
            entry = _slim(full)
            if self._entries and entry.seq != self._entries[-1].seq + 1:
                # another writer appended in between: keep the tail dense
                self._entries.clear()
            self._entries.append(entry)
            if moves or entry.seq == self.head_seq + 1:
                self.head_seq = max(self.head_seq, entry.seq)
        self._changed.set()
        self._changed = asyncio.Event()

    def follow(self, head_seq: int) -> None:
        """Another writer (a cluster's other instances) committed up to ``head_seq``."""
        if head_seq > self.head_seq:
            self.head_seq = head_seq
            self._changed.set()
            self._changed = asyncio.Event()

    def forget(self, tenant: str, subject: str) -> None:
        """A subject was erased: drop every entry held (they may hold its fields opened;
        consumers read them again from the store) and its keys."""
        self._entries.clear()
        if self.opener is not None:
            self.opener.forget(tenant, subject)

    async def wait_beyond(self, seq: int, timeout_s: float | None = None) -> bool:
        """Wait until an entry after ``seq`` is committed; False on timeout."""
        while self.head_seq <= seq:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout_s)
            except TimeoutError:
                return False
        return True

    async def read(self, after_seq: int, limit: int) -> list[Committed]:
        """Up to ``limit`` entries after ``after_seq``, in ledger order."""
        entries = self._entries
        if entries and entries[0].seq <= after_seq + 1 <= entries[-1].seq:
            start = after_seq + 1 - entries[0].seq
            # seqs are dense in the tail, so the position is the offset from the first
            return [entries[i] for i in range(start, min(start + limit, len(entries)))]
        rows = await asyncio.to_thread(self.store.entries_after, after_seq, limit)
        return self.committed_rows(rows)

    def committed(self, row: StoredEntry) -> Committed:
        """A row read from the store, as this tail's consumers see it (``from_store``)."""
        return from_store(row, self.opener, self.decode_events)

    def committed_rows(self, rows: Sequence[StoredEntry]) -> list[Committed]:
        """Rows read from the store, as this tail's consumers see them (``from_store_rows``)."""
        return from_store_rows(rows, self.opener, self.decode_events)


async def follow_ledger(store: Store, tail: LedgerTail, on_head: Sequence[Callable[[int], None]]) -> None:
    """Move the tail's head with the store's safe seq whenever any writer commits: other
    instances of a cluster, ``scr keys create``, or this process's own groups that committed
    beyond an append still in flight. ``on_head`` is called with each head read."""
    while True:
        try:
            head = await asyncio.to_thread(store.last_seq)
            tail.follow(head)
            for callback in on_head:
                callback(head)
            await asyncio.to_thread(store.wait_for_appends, FOLLOW_LEDGER_S)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the store is down: the committer reports it
            log.debug("cannot read the ledger head: %s", error)
            await asyncio.sleep(FOLLOW_LEDGER_S)
