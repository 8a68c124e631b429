"""The store protocol: what the runtime asks of a durable store, in the user's words.

Two backends implement it: ``scr.store.sqlite.SqliteStore`` (the embedded default, one file
in the data folder) and ``scr.store.postgres.PostgresStore`` (the shared store of a cluster).
``scr.store.open_store`` picks one from ``--data`` or a ``postgresql://`` URI.

Writes happen only inside a ``Transaction`` opened by the one writer (``scr.log.commit``):
each group commit is one transaction, each caller's write inside it a savepoint, and a write
method never commits by itself. Reads run on their own connections and may be called from
any thread; they see committed state only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from scr.retention.tiers import ArchiveTier
from scr.store.records import (
    AttemptRow,
    DeliveryRow,
    DurationRow,
    EventKey,
    Hit,
    KeyRecord,
    LegalHold,
    NewEntry,
    SegmentRow,
    StoredEntry,
    UsageRow,
    UsageSum,
)
from scr.store.vectors import VectorTable

# A data key wrapped anew: (tenant, subject, wrapped under the old master key) -> wrapped under the new.
Rewrap = Callable[[str, str, bytes], bytes]


class Transaction(Protocol):
    """The writer's connection: one open transaction per group commit."""

    def begin(self, durable: bool) -> None:
        """Open the group's transaction; ``durable=False`` may skip the flush to disk."""

    def savepoint(self) -> None:
        """Mark the start of one caller's write."""

    def release(self) -> None:
        """Keep the write since the last savepoint."""

    def rollback_to_savepoint(self) -> None:
        """Undo the write since the last savepoint (the group goes on)."""

    def commit(self) -> None:
        """Make the group durable; raises if the store could not commit."""

    def rollback(self) -> None:
        """Abandon the open transaction, if any (never raises)."""

    def changed_elsewhere(self) -> bool:
        """True when another writer appended since this one last looked (``scr keys create``):
        the committer then reloads the chain heads. Call inside the open transaction."""

    def close(self) -> None:
        """Close the connection."""


class Store(Protocol):
    """A durable ledger with its dedup index, keys and destination state."""

    @property
    def vectors(self) -> VectorTable:
        """The enricher's session vectors (``scr.enrich``)."""

    @property
    def tier(self) -> ArchiveTier:
        """Where the entries of archived rows are read (``scr.retention.tiers``)."""

    @property
    def dedup_in_memory(self) -> bool:
        """Whether ``find_events`` answers from memory (the committer's front window of recent
        keys would only repeat it)."""

    def writer(self) -> Transaction:
        """The connection of the one writer (opened once, by the committer)."""

    def close(self) -> None:
        """Close the reading connections."""

    # ----- the ledger: appends (inside a transaction) -----------------------------------------

    def chain_heads(self, tx: Transaction) -> dict[str, tuple[int, bytes]]:
        """Per tenant: (number of entries, hash of the newest entry)."""

    def lock_tenants(self, tx: Transaction, tenants: Iterable[str]) -> bool:
        """Before a write appends for ``tenants`` (or reads their chain heads or trees): hold
        what keeps their chains in one writer's hands until ``tx`` ends. Whether another
        writer appended to them since this one last looked (the chain heads must be read
        again). SQLite's one write transaction holds everything already: never."""

    def reserve_seqs(self, tx: Transaction, count: int) -> list[int]:
        """``count`` new ledger sequence numbers, increasing, larger than every committed one."""

    def find_events(self, tx: Transaction, keys: Sequence[EventKey]) -> dict[EventKey, Hit]:
        """Dedup lookup: the events among ``keys`` that the ledger holds, exactly."""

    def append(self, tx: Transaction, entries: Sequence[NewEntry]) -> None:
        """Append entries (their event ids, if any, become dedup keys)."""

    # ----- the ledger: reads ------------------------------------------------------------------

    def last_seq(self, tx: Transaction | None = None) -> int:
        """The newest seq (0 for an empty ledger)."""

    def entries_after(self, after_seq: int, limit: int) -> list[StoredEntry]:
        """Entries with seq > after_seq, in order."""

    def entries_by_seq(self, seqs: Sequence[int]) -> dict[int, StoredEntry]:
        """The entries at these seqs that exist."""

    def tenant_entries(
        self, tenant: str, start: int, end: int, kinds: Sequence[str] | None = None
    ) -> list[StoredEntry]:
        """A tenant's entries with start <= tenant_seq < end, in order."""

    def tenant_entries_between(
        self, tenant: str, low_seq: int, high_seq: int, limit: int
    ) -> list[StoredEntry]:
        """A tenant's entries with low_seq < seq <= high_seq, oldest first."""

    def tenant_entries_after(self, tenant: str, after_seq: int) -> Iterator[StoredEntry]:
        """A tenant's entries with seq > after_seq, oldest first, read lazily."""

    def tenant_entries_of_kinds(
        self, tenant: str, kinds: Sequence[str], after_seq: int
    ) -> list[StoredEntry]:
        """A tenant's entries of these kinds (never SESSION_COMPLETION) after a seq."""

    def tenants(self) -> list[str]:
        """Every tenant with ledger entries."""

    def accepted_events(self, tenant: str) -> list[tuple[str, int]]:
        """(event id, seq) of every event the dedup index holds for a tenant."""

    def find_event(self, tenant: str, event_id: str) -> StoredEntry | None:
        """The SESSION_COMPLETION entry of a tenant's event id, exactly."""

    def session_entries(self, tenant: str, session_id: str) -> list[StoredEntry]:
        """A tenant's entries of one session, in order (callers check the session id)."""

    def first_session_entries(
        self, tenant: str, session_ids: Sequence[str], before_seq: int
    ) -> list[StoredEntry]:
        """For each of these sessions with a SESSION_COMPLETION entry before ``before_seq``,
        its first such entry (callers check the session id, as for ``session_entries``)."""

    @property
    def commits_in_order(self) -> bool:
        """Whether entries commit in seq order (one writer at a time: SQLite); else writers
        commit side by side and readers read up to ``last_seq``, the safe seq."""

    def wait_for_appends(self, timeout_s: float) -> bool:
        """Wait until a commit of any instance appends entries; whether one did within
        ``timeout_s`` (a store that cannot tell just waits)."""

    def index_sessions(self) -> Callable[[], None]:
        """Start whatever keeps the session lookups current off the commit path (the ledger's
        writer calls it once); call what it returns after each durable commit."""

    def entry_time(self, seq: int) -> float | None:
        """When the entry at ``seq`` (or the next one) was committed, as a Unix time."""

    def seq_at_time(self, ts: str) -> int:
        """The last seq whose entry time is before ``ts`` (RFC 3339, as entries store it)."""

    # ----- keys -------------------------------------------------------------------------------

    def insert_key(
        self, tx: Transaction, key_hash: bytes, key_id: str, tenant: str, role: str, label: str,
        created_at: str,
    ) -> None:
        """Store a new API key by its hash."""

    def find_key(self, key_hash: bytes) -> KeyRecord | None:
        """The key with this hash, if any."""

    def revoke_key(self, tx: Transaction, key_id: str, revoked_at: str) -> str | None:
        """Mark the key ``key_id`` revoked; its tenant, or None when no such key is active."""

    def insert_key_origins(self, tx: Transaction, key_id: str, origins: Iterable[str]) -> None:
        """The web origins a publishable key is accepted from."""

    def find_key_origins(self, key_id: str) -> frozenset[str]:
        """A key's web origins (empty for keys that are not publishable)."""

    # ----- usage aggregates (scr.usage) ------------------------------------------------------

    def add_usage(self, tx: Transaction, rows: Sequence[UsageRow], after_seq: int, seq: int,
                  durations: Sequence[DurationRow] = ()) -> bool:
        """Move the usage cursor from ``after_seq`` to ``seq`` and add each row's counters to
        its (tenant, minute, group key) aggregate and each duration row's sessions to its
        histogram bucket, exactly; False (nothing added) when the cursor is not at
        ``after_seq`` (another usage reader got there first)."""

    def usage_sums(self, tenant: str | None, from_minute: int, to_minute: int, bucket_minutes: int,
                   keys: Sequence[str]) -> list[UsageSum]:
        """The aggregates of a tenant (every tenant: None) with from <= minute < to, summed by
        tenant, bucket of ``bucket_minutes`` counted from ``from_minute``, and ``keys``."""

    def usage_durations(self, tenant: str, from_minute: int, to_minute: int) -> list[tuple[str, int, int]]:
        """A tenant's session-duration histograms of the quarter hours from <= minute < to,
        summed by user: (user_id, bucket, sessions) rows (``scr.usage.durations``)."""

    # ----- destinations: cursors, deliveries, attempts ----------------------------------------

    def cursor(self, destination: str) -> int | None:
        """The destination's durable cursor (None: it never ran here)."""

    def set_cursor(self, tx: Transaction, destination: str, seq: int) -> None:
        """Move the cursor forward (never back: replay requeues entries instead)."""

    def destination_state(self, destination: str) -> tuple[str, str]:
        """(state, reason) of a destination; ("active", "") when never set."""

    def set_destination_state(
        self, tx: Transaction, destination: str, state: str, reason: str, now: str
    ) -> None:
        """Record a destination's state (``disabled`` after a 410, ``active`` again)."""

    def upsert_deliveries(self, tx: Transaction, rows: Iterable[DeliveryRow]) -> None:
        """Insert or replace delivery rows, keyed by (destination, seq)."""

    def open_deliveries(self, destination: str, limit: int) -> list[DeliveryRow]:
        """Pending and retrying deliveries of a destination, oldest entry first."""

    def make_due(self, tx: Transaction, destination: str, now_ms: int) -> int:
        """Bring every open delivery of a destination forward to now; how many."""

    def list_deliveries(
        self, tenant: str | None, destination: str | None, status: str | None, limit: int
    ) -> list[DeliveryRow]:
        """Delivery rows matching the filters, newest entry first."""

    def delivery_rows_for(self, destination: str, seqs: Sequence[int]) -> dict[int, DeliveryRow]:
        """A destination's delivery rows for these seqs."""

    def insert_attempts(self, tx: Transaction, rows: Iterable[AttemptRow]) -> None:
        """Log delivery attempts."""

    def recent_attempts(self, destination: str | None, limit: int) -> list[AttemptRow]:
        """The newest attempts, newest first."""

    # ----- privacy (scr.privacy) ------------------------------------------------------------

    def privacy_value(self, name: str, tx: Transaction | None = None) -> bytes | None:
        """A value of the privacy set-up (the master key's check value, the wrapped hash key);
        in ``tx``, held until it commits (a rotation waits)."""

    def set_privacy_values(self, values: dict[str, bytes]) -> None:
        """Record those of ``values`` not recorded yet, in a transaction of their own."""

    def rewrap_subject_keys(self, tx: Transaction, rewrap: Rewrap, values: dict[str, bytes]) -> int:
        """Wrap every live data key anew (``rewrap(tenant, subject, wrapped)``) and replace the
        privacy ``values`` (the master key's rotation); how many keys."""

    def subject_keys(
        self, tenant: str, subject: str, tx: Transaction | None = None
    ) -> dict[int, bytes | None]:
        """A subject's wrapped data keys by generation (None: erased); in ``tx`` when given."""

    def add_subject_key(self, tx: Transaction, tenant: str, subject: str, generation: int,
                        wrapped: bytes) -> None: ...

    def erase_subject_keys(self, tx: Transaction, tenant: str, subject: str, erased_at: str) -> int:
        """Destroy every stored data key of the subject; how many there were."""

    def scrub(self) -> bool:
        """Remove older copies of what the writer overwrote (an erased key) from the store's
        files; False if it could not now."""

    def add_subject_entries(self, tx: Transaction, rows: Sequence[tuple[str, str, int]]) -> None:
        """Record (tenant, subject, seq) of sealed events."""

    def subject_entries(self, tenant: str, subject: str) -> list[int]:
        """The seqs of a subject's sealed events, in order."""

    # ----- retention: legal holds (scr.retention.holds) ---------------------------------------

    def add_legal_hold(self, tx: Transaction, hold: LegalHold) -> None:
        """Record a new hold."""

    def release_legal_hold(self, tx: Transaction, tenant: str, hold_id: str,
                           released_at: str) -> LegalHold | None:
        """Release a tenant's active hold (its user id is forgotten); the released hold, or None
        when the tenant has no such active hold."""

    def legal_holds(self, tenant: str | None, active: bool = True,
                    tx: Transaction | None = None) -> list[LegalHold]:
        """A tenant's holds (every tenant: None), oldest first; only unreleased ones when
        ``active``; in ``tx`` (a hold placed earlier in the same group counts) when given."""

    # ----- retention: archive segments (scr.retention) ---------------------------------------

    def archive_segments(self, tenant: str | None = None) -> list[SegmentRow]:
        """The archive segments of a tenant (every tenant: None), by tenant and first leaf."""

    def stub_limit(self, tenant: str) -> int:
        """The leaves below which the hot store may drop archived entries' bytes (SQLite: the
        leaves of full tree tiles, whose hashes are stored; PostgreSQL: every leaf)."""

    def add_segment(self, tx: Transaction, segment: SegmentRow) -> bool:
        """List a durable segment; False (nothing listed) unless it starts where the tenant's
        last segment ended (another archiver listed it first)."""

    def stub_entries(self, tx: Transaction, tenant: str, first_leaf: int, end: int) -> int:
        """Drop the bytes of the segment's SESSION_COMPLETION rows below ``end`` from the hot
        store (their keys and hashes stay; reads fill them from the segment); how many."""

    def purge_segment(self, tx: Transaction, tenant: str, first_leaf: int, end: int,
                      purged_at: str) -> int:
        """Mark the segment purged and delete its rows below ``end`` (their dedup keys, sealed
        events' index and session vectors with them); how many rows."""
