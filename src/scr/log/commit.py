"""Commit: the one writer that appends to the ledger, in group-committed transactions.

Requests hand their validated events (and any other write) to the ``Committer``. One thread
takes everything queued, up to ``capture.buffer_size`` events, runs it in one store
transaction (``scr.store.protocol.Transaction``) and commits it (fsync) before any caller is
answered. ``flush_interval_ms`` is therefore a bound, not a delay: the writer never waits
while work is queued.

Each write runs in its own SAVEPOINT, so one failing write fails only its caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, NamedTuple, Protocol, TypeVar

import msgspec

from scr.errors import Unavailable
from scr.log.entry import GENESIS_HASH, Kind, LedgerEntry, Provenance, chain_hash, entry_bytes
from scr.native import chain_hashes
from scr.schema import Event, EventSessionId, read_stored_event
from scr.store.protocol import Store, Transaction
from scr.store.records import ENTRY_TIME_FORMAT, EventKey, Hit, NewEntry

log = logging.getLogger("scr.commit")
T = TypeVar("T")

IDLE_POLL_S = 0.5
KEY_HASH_BYTES = 16  # the recent dedup keys' hashes (RecentKeys)
SEQ_BYTES = 8
SESSION_COMPLETION = Kind.SESSION_COMPLETION.value  # read per event: an enum's .value is slow


class Outcome(str, Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


class Submission:
    """A validated event on its way into the ledger: its canonical bytes and their digest
    (compared on duplicates), who sent it, and the fields it is keyed by.

    The ``Event`` is read back from the canonical bytes only when something asks for it: an
    edge whose native core accepted the event, and the writer that takes the edges' records,
    have no use for it (``undecoded``), unless the writer seals personal fields.
    """

    __slots__ = ("_event", "actor", "digest", "event_id", "model", "payload", "session_id", "source",
                 "tenant")

    def __init__(self, event: Event, payload: bytes, digest: bytes, actor: str, source: str) -> None:
        self._event: Event | None = event
        self.payload, self.digest, self.actor, self.source = payload, digest, actor, source
        self.tenant = event.user.organization_id
        self.event_id = event.event_id
        self.session_id = event.session.session_id
        self.model = event.usage.model

    @classmethod
    def undecoded(cls, payload: bytes, digest: bytes, actor: str, source: str, tenant: str,
                  event_id: str, session_id: str, model: str) -> Submission:
        """A submission of canonical bytes whose fields were read by the native core."""
        made = cls.__new__(cls)
        made._event = None
        made.payload, made.digest, made.actor, made.source = payload, digest, actor, source
        made.tenant, made.event_id, made.session_id, made.model = tenant, event_id, session_id, model
        return made

    @property
    def event(self) -> Event:
        if self._event is None:
            self._event = read_stored_event(self.payload)
        return self._event

    @property
    def decoded(self) -> Event | None:
        """The event if it was read already (else ``None``: reading it is not free)."""
        return self._event


class Committed(msgspec.Struct, frozen=True, gc=False):
    """An entry appended by a transaction: its position, hash, stored bytes and content.

    Untracked by the garbage collector (``gc=False``, like the events it holds): the
    ledger's in-memory tail keeps tens of thousands of these.
    """

    seq: int
    tenant: str
    tenant_seq: int
    kind: str
    entry_hash: bytes
    event: Event | None
    payload: Any = None
    stored: bytes = b""  # the exact stored entry bytes (empty when read back from the tail)
    # an event's JSON as ledgered, when it was read back from the store unsealed: a
    # destination that shows the event as it is hands these bytes to its transform
    line: bytes = b""
    # an event's id, also when ``event`` is left undecoded (``None``, with ``line`` set: a reader
    # whose destinations need no redaction, ``event_of``)
    event_id: str = ""
    # an event's session id; empty when it is left undecoded (``session_id_of`` reads its line)
    session_id: str = ""


def event_of(entry: Committed) -> Event:
    """A committed event's ``Event``: as it was read, or decoded from its ledgered line."""
    if entry.event is not None:
        return entry.event
    if not entry.line:
        raise ValueError(f"ledger entry {entry.seq} is not an event")
    return read_stored_event(entry.line)


_event_session = msgspec.json.Decoder(EventSessionId)


def session_id_of(entry: Committed) -> str:
    """A committed event's session id: as it was read, or from its ledgered line (an undecoded
    event's is read only when asked: a first-time delivery needs none)."""
    if entry.session_id or not entry.line:
        return entry.session_id
    return _event_session.decode(entry.line).session.session_id


# Runs inside the group's transaction, after its writes, with the entries they appended:
# state derived from the ledger (a Merkle tree) is written atomically with it.
AppendHook = Callable[[Transaction, list[Committed]], None]
# Runs on the writer thread after the group is durable (never before: a checkpoint must
# only ever cover what is on disk).
CommitHook = Callable[[list[Committed]], None]


@dataclass(slots=True)
class _Work:
    run: Callable[[Transaction], Any]
    size: int
    done: Callable[[Any, BaseException | None], None]
    durable: bool = True
    # the tenants whose chains it appends to, when known before it runs: their partitions are
    # locked for the whole group at its start, in order (two groups never wait for each other)
    tenants: frozenset[str] = frozenset()


@dataclass(slots=True)
class _Pending:
    """Entries and chain heads written by the open transaction, not yet durable."""

    committed: list[Committed] = field(default_factory=list)
    heads: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    keys: dict[EventKey, Hit] = field(default_factory=dict)
    # the keys appended, in order, each with its hash for the recent keys (hashed once)
    key_order: list[tuple[EventKey, bytes]] = field(default_factory=list)


class _NewEvent(NamedTuple):
    """An accepted event's entry within the open write, before it is chained."""

    submission: Submission
    tenant: str
    seq: int
    stored: bytes


class Sealing(Protocol):
    """Seals events' personal fields in the writer's transaction (``scr.privacy.sealer``)."""

    def seal(self, tx: Transaction, event: Event) -> tuple[bytes, Any, str]:
        """(the event's stored payload bytes, its seal, its subject); may store a new key in ``tx``."""

    def mark(self) -> int: ...

    def restore(self, mark: int) -> None:
        """Forget what was sealed since ``mark`` (its write was rolled back)."""

    def settle(self, committed: bool) -> None:
        """The group commit ended, committed or not."""

    def forget(self, tenant: str, subject: str) -> None:
        """The subject's keys were destroyed: seal its next event under a new one."""


def utc_now() -> str:
    """Now as RFC 3339 UTC with microseconds (entry times sort as text)."""
    return datetime.now(UTC).strftime(ENTRY_TIME_FORMAT)


class Committer:
    """The single ledger writer. Start it with ``start()``; stop it with ``close()``."""

    def __init__(
        self,
        store: Store,
        buffer_size: int,
        dedup_window_s: float = 0.0,
    ) -> None:
        self.store = store
        self.buffer_size = buffer_size
        self.recent = RecentKeys(0.0 if store.dedup_in_memory else dedup_window_s)
        self.append_hooks: list[AppendHook] = []
        self.commit_hooks: list[CommitHook] = []
        # called on the writer thread after a group failed (nothing of it is committed)
        self.failure_hooks: list[Callable[[], None]] = []
        self.sealer: Sealing | None = None  # set when encryption is on (scr.privacy)
        # each Committed carries its Event (the in-process tail reads it); a writer whose
        # readers are processes of their own reads none it was not handed decoded
        self.keep_events = True
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="scr-committer", daemon=True)
        self._tx: Transaction | None = None
        self._heads: dict[str, tuple[int, bytes]] = {}
        self._pending = _Pending()
        self._stale = False
        self.healthy = True
        self.last_error = ""
        self.groups = 0

    def start(self) -> None:
        self._tx = self.store.writer()
        self._reload()
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._tx is not None:
            self._tx.close()
            self._tx = None

    def _reload(self) -> None:
        assert self._tx is not None
        self._heads = self.store.chain_heads(self._tx)

    # ----- submitting work -----------------------------------------------------------------

    async def run(
        self, write: Callable[[Transaction], T], size: int = 1, durable: bool = True,
        tenants: frozenset[str] = frozenset(),
    ) -> T:
        """Run ``write`` in the next group transaction; return once it is committed.

        ``durable=False`` is for state that may be lost on power loss without losing data
        (a destination's cursor: at worst an entry is delivered again, with the same
        webhook-id). A group holding only such writes commits without an fsync; the next
        durable commit's fsync covers it, because the WAL is written in order.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def done(result: Any, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(_settle, future, result, error)

        self._queue.put(_Work(write, size, done, durable, tenants))
        return await future

    def run_sync(self, write: Callable[[Transaction], T], size: int = 1) -> T:
        """Like ``run`` for callers outside an event loop (CLI)."""
        box: dict[str, Any] = {}
        ready = threading.Event()

        def done(result: Any, error: BaseException | None) -> None:
            box["result"], box["error"] = result, error
            ready.set()

        self._queue.put(_Work(write, size, done))
        ready.wait()
        if box["error"] is not None:
            raise box["error"]
        result: T = box["result"]
        return result

    async def append_events(self, submissions: Sequence[Submission]) -> list[tuple[Outcome, int]]:
        """Append events with exact dedup; per event (outcome, ledger seq)."""
        return await self.run(lambda tx: self._append_events(tx, submissions), len(submissions),
                              tenants=frozenset(s.tenant for s in submissions))

    def append_events_in(
        self, tx: Transaction, submissions: Sequence[Submission]
    ) -> list[tuple[Outcome, int]]:
        """Append events with exact dedup inside a write (for a caller that commits other
        state atomically with them); per event (outcome, ledger seq)."""
        self.lock_tenants(tx, (s.tenant for s in submissions))  # (append_events declares them)
        return self._append_events(tx, submissions)

    def append_entry(
        self, tx: Transaction, tenant: str, kind: Kind | str, payload: Any,
        actor: str, source: str, ref: str,
    ) -> Committed:
        """Append one non-event entry inside a write (for keys, canon, config changes)."""
        kind_name = kind.value if isinstance(kind, Kind) else kind
        self.lock_tenants(tx, (tenant,))
        (seq,) = self.store.reserve_seqs(tx, 1)
        count, previous = self._head(tenant)
        ts = utc_now()
        entry = LedgerEntry(
            seq, ts, actor, tenant, kind_name, payload, Provenance(source, ref, actor)
        )
        stored = entry_bytes(entry)
        digest = chain_hash(previous, stored)
        self.store.append(
            tx, [NewEntry(seq, tenant, count, kind_name, ts, None, None, None, stored, digest)]
        )
        self._pending.heads[tenant] = (count + 1, digest)
        committed = Committed(seq, tenant, count, kind_name, digest, None, payload, stored)
        self._pending.committed.append(committed)
        return committed

    def lock_tenants(self, tx: Transaction, tenants: Iterable[str]) -> None:
        """Inside a write, before it reads or appends anything of ``tenants``' chains or
        trees: their partitions' write locks, and the chain heads read again if another
        writer moved them (``Store.lock_tenants``)."""
        if self.store.lock_tenants(tx, tenants):
            self._reload()

    def _head(self, tenant: str) -> tuple[int, bytes]:
        return self._pending.heads.get(tenant) or self._heads.get(tenant) or (0, GENESIS_HASH)

    # ----- the writer thread ---------------------------------------------------------------

    def _append_events(
        self, tx: Transaction, submissions: Sequence[Submission]
    ) -> list[tuple[Outcome, int]]:
        keys = [(s.tenant, s.event_id) for s in submissions]
        pending_keys = self._pending.keys
        # hashed only for a front window (none before a store whose index is in memory)
        hashes = {k: key_hash(k) for k in keys} if self.recent.window_s > 0 else {}
        known = {k: hit for k in keys
                 if (hit := pending_keys.get(k) or self.recent.get(hashes.get(k, b"")))}
        known.update(self.store.find_events(tx, [k for k in keys if k not in known]))
        # the first of each new key in the batch gets a seq; later copies are its duplicates
        fresh = {k: None for k in keys if k not in known}
        seqs = iter(self.store.reserve_seqs(tx, len(fresh)))
        outcomes: list[tuple[Outcome, int]] = []
        appended: list[_NewEvent] = []
        subjects: list[tuple[str, str, int]] = []
        ts = utc_now()
        for key, sub in zip(keys, submissions, strict=True):
            hit = known.get(key)
            if hit is not None:
                same = hit.payload_digest == sub.digest
                outcomes.append((Outcome.DUPLICATE if same else Outcome.CONFLICT, hit.seq))
                continue
            seq = next(seqs)
            appended.append(self._new_event(tx, sub, key[0], seq, ts, subjects))
            known[key] = pending_keys[key] = Hit(seq, sub.digest)
            self._pending.key_order.append((key, hashes.get(key, b"")))
            outcomes.append((Outcome.ACCEPTED, seq))
        self.store.append(tx, self._chain(appended, ts))
        if subjects:
            self.store.add_subject_entries(tx, subjects)
        return outcomes

    def _new_event(self, tx: Transaction, sub: Submission, tenant: str, seq: int, ts: str,
                   subjects: list[tuple[str, str, int]]) -> _NewEvent:
        """A new event's entry as stored (its personal fields sealed when encryption is on)."""
        payload, seal = sub.payload, None
        if self.sealer is not None:
            payload, seal, subject = self.sealer.seal(tx, sub.event)
            subjects.append((tenant, subject, seq))
        entry = LedgerEntry(
            seq, ts, sub.actor, tenant, SESSION_COMPLETION,
            msgspec.Raw(payload), Provenance(sub.source, sub.event_id, sub.actor), seal,
        )
        return _NewEvent(sub, tenant, seq, entry_bytes(entry))

    def _chain(self, appended: list[_NewEvent], ts: str) -> list[NewEntry]:
        """The rows of a group's new events, chained onto their tenants' heads (all hashed
        in one call: ``scr.native.chain_hashes``)."""
        slots: dict[str, int] = {}
        heads: list[bytes] = []
        counts: list[int] = []
        tenants: list[int] = []
        for new in appended:
            slot = slots.get(new.tenant)
            if slot is None:
                slot = slots[new.tenant] = len(heads)
                count, previous = self._head(new.tenant)
                heads.append(previous)
                counts.append(count)
            tenants.append(slot)
        digests = chain_hashes(heads, tenants, [new.stored for new in appended])
        pending = self._pending
        rows: list[NewEntry] = []
        for new, slot, digest in zip(appended, tenants, digests, strict=True):
            sub, tenant, seq = new.submission, new.tenant, new.seq
            count = counts[slot]
            counts[slot] = count + 1
            rows.append(NewEntry(
                seq, tenant, count, SESSION_COMPLETION, ts, sub.event_id,
                sub.session_id, sub.digest, new.stored, digest,
            ))
            pending.heads[tenant] = (count + 1, digest)
            event = sub.event if self.keep_events else sub.decoded
            pending.committed.append(Committed(
                seq, tenant, count, SESSION_COMPLETION, digest, event, None, new.stored,
                event_id=sub.event_id, session_id=sub.session_id,
            ))
        return rows

    def _loop(self) -> None:
        tx = self._tx
        assert tx is not None
        while True:
            try:
                first = self._queue.get(timeout=IDLE_POLL_S)
            except queue.Empty:
                continue
            if first is None:
                return
            group, size, stop = [first], first.size, False
            while size < self.buffer_size:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                group.append(more)
                size += more.size
            self._commit_group(tx, group)
            if stop:
                return

    def _commit_group(self, tx: Transaction, group: list[_Work]) -> None:
        results: list[tuple[Any, BaseException | None]] = []
        self._pending = _Pending()
        try:
            tx.begin(durable=any(work.durable for work in group))
            # another process appended (scr keys create), or the last group's outcome is unknown
            if tx.changed_elsewhere() or self._stale:
                self._reload()
                self._stale = False
            declared = frozenset[str]().union(*(work.tenants for work in group))
            if declared:
                self.lock_tenants(tx, declared)
            for work in group:
                tx.savepoint()
                mark = self._mark()
                try:
                    results.append((work.run(tx), None))
                    tx.release()
                except Exception as error:  # one failing write fails only its caller
                    tx.rollback_to_savepoint()
                    self._restore(mark)
                    results.append((None, error))
            for hook in self.append_hooks:
                hook(tx, self._pending.committed)
            tx.commit()
        except Exception as error:  # the store or an append hook failed: nothing is committed
            log.error("commit failed: %s", error)
            if self.sealer is not None:
                self.sealer.settle(committed=False)
            self.healthy, self.last_error = False, str(error)
            tx.rollback()
            self._pending = _Pending()
            self._stale = True  # a commit cut off mid-way may have landed: reload the heads
            for failure_hook in self.failure_hooks:
                failure_hook()
            failure = Unavailable("the ledger could not commit; nothing of this request was stored")
            for work in group:
                work.done(None, failure)
            return
        self.healthy, self.last_error = True, ""
        if self.sealer is not None:
            self.sealer.settle(committed=True)
        self.groups += 1
        self._heads.update(self._pending.heads)
        self.recent.add([(hashed, self._pending.keys[key]) for key, hashed in self._pending.key_order])
        committed = self._pending.committed
        self._pending = _Pending()
        for work, (result, failed) in zip(group, results, strict=True):
            work.done(result, failed)
        if committed:
            for commit_hook in self.commit_hooks:
                commit_hook(committed)

    def _mark(self) -> tuple[dict[str, tuple[int, bytes]], int, int, int]:
        p = self._pending
        sealed = self.sealer.mark() if self.sealer is not None else 0
        return (dict(p.heads), len(p.committed), len(p.key_order), sealed)

    def _restore(self, mark: tuple[dict[str, tuple[int, bytes]], int, int, int]) -> None:
        """Forget what a failed write added to the open transaction's state."""
        heads, committed, keys, sealed = mark
        if self.sealer is not None:
            self.sealer.restore(sealed)
        p = self._pending
        p.heads = heads
        del p.committed[committed:]
        for key, _ in p.key_order[keys:]:
            del p.keys[key]
        del p.key_order[keys:]


class RecentKeys:
    """The fast front of dedup: keys committed in the last ``window_s`` seconds.

    A hit here answers a retry without touching the index; a miss proves nothing, so the
    ledger's index is still asked (dedup stays exact beyond the window).

    Each key is held as a 16-byte hash of (tenant, event_id) mapping to its packed hit (seq
    and payload digest), and keys leave by commit group, oldest first: about 170 bytes a
    key, where a dict of tuples and ``Hit``s took over 430 (a million keys were 1 GiB of the
    writer). Two keys with one hash (odds of 2^-128 per pair) would answer a retry with the
    other's seq and digest; the digest then differs, so the event is refused as a
    conflicting duplicate, never stored under another's seq.
    """

    MAX_KEYS = 1_000_000  # bounds memory whatever the window and the rate

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._hits: dict[bytes, bytes] = {}
        self._groups: deque[tuple[float, list[bytes]]] = deque()

    def __len__(self) -> int:
        return len(self._hits)

    def get(self, hashed: bytes) -> Hit | None:
        """The hit of a key by its ``key_hash``."""
        packed = self._hits.get(hashed)
        if packed is None:
            return None
        return Hit(int.from_bytes(packed[:SEQ_BYTES], "big"), packed[SEQ_BYTES:])

    def add(self, hits: Sequence[tuple[bytes, Hit]]) -> None:
        """A committed group's keys, by their ``key_hash``."""
        if self.window_s <= 0 or not hits:
            return
        now = time.monotonic()
        group = []
        for hashed, hit in hits:
            self._hits[hashed] = hit.seq.to_bytes(SEQ_BYTES, "big") + hit.payload_digest
            group.append(hashed)
        self._groups.append((now, group))
        horizon = now - self.window_s
        while self._groups and (len(self._hits) > self.MAX_KEYS or self._groups[0][0] < horizon):
            for hashed in self._groups.popleft()[1]:
                self._hits.pop(hashed, None)


@contextlib.contextmanager
def writing_alone(store: Store) -> Iterator[Committer]:
    """A started one-slot committer on ``store``, for a command or a test that writes without
    a server; the committer, then the store, are closed after it (the store even if the
    committer cannot start)."""
    try:
        committer = Committer(store, buffer_size=1)
        committer.start()
        try:
            yield committer
        finally:
            committer.close()
    finally:
        store.close()


def key_hash(key: EventKey) -> bytes:
    tenant, event_id = key
    # the tenant's length first: no two (tenant, event_id) pairs give one text
    return hashlib.blake2b(f"{len(tenant)}:{tenant}{event_id}".encode(),
                           digest_size=KEY_HASH_BYTES).digest()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)
