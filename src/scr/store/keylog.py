"""The embedded store's exact dedup without a random-key B-tree on the commit path.

Every event key's 64-bit hash maps to its ledger seq in memory (``scr.native.KeyIndex``), so a
commit group looks its keys up without a query, and appending a key costs a 16-byte record
in an append-only file, ``event-keys.log`` beside the database, instead of an insert into an
index whose pages are random (DESIGN.md, "Measured": that index was the ingest ceiling, and
its cost grew with the ledger).

The ledger stays the truth; the log is what makes the index quick to load:

- The writer adds a group's records while it holds the write lock, just before the commit
  (not fsynced: a record the disk lost is found again in the ledger, below). The records
  are therefore in seq order, from every process that writes, and a record of a group that
  rolled back only points at a seq some other entry (or none) holds.
- A hash is only a candidate: the store confirms it on the ledger row. A row holding another
  key whose hash is the same is a true collision, and that key is filed by its exact text
  (``event_keys_overflow``); a row holding a key of another hash, or none, shows the record
  was left by a rollback and proves nothing.
- On opening, the writer loads the log, cuts a record a crash left half-written, and reads
  the ledger after the log's last seq (what the disk lost, or all of it when a data folder
  of a version before the log is first opened). A record naming a seq past the ledger's end
  stays: its key was acknowledged and the ledger lost it, which the audit reports.
- A purged entry's key is removed by a record ``(hash, 0)``.

Other processes (``scr ledger``, the API's lookups) read the same log from where they
stopped, and look past its end in the ledger, so they find exactly what was committed.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from scr.log.keys import RECORD
from scr.native import KeyIndex, event_keys
from scr.store import ledger_rows

log = logging.getLogger("scr.store.keylog")

KEY_LOG_FILE = "event-keys.log"
SCAN_ROWS = 50_000  # ledger rows hashed per batch when the index is rebuilt or caught up

EventRows = Callable[[int], Iterator[list[tuple[int, str, str]]]]
"""(seq, tenant, event id) of the ledger's event entries after a seq, in batches."""


class KeyLog:
    """The in-memory index of every event key, and the log that keeps it (one per store)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.index = KeyIndex()
        self.covered = 0  # every event key of a seq up to this one is in the index
        self._read_to = 0  # bytes of the log read into the index
        self._staged_keys: list[int] = []
        self._staged_seqs: list[int] = []
        self._lock = threading.Lock()

    # ----- the writer ---------------------------------------------------------------------

    def open_writer(self, rows: EventRows, last_seq: int) -> None:
        """Load the log and bring it level with the ledger, whose last seq is ``last_seq``."""
        with self._lock:
            self._load_all()
            if self.covered > last_seq:  # kept: `scr ledger audit` names the keys it lost
                log.warning("%s names seq %d, past the ledger's end (%d): the ledger lost entries "
                            "it had acknowledged (restored from a backup?); run `scr ledger audit`",
                            self.path, self.covered, last_seq)
            self._add_from_ledger(rows, self.covered)
            self.covered = max(self.covered, last_seq)

    def catch_up(self, rows: EventRows, last_seq: int) -> None:
        """Add what other processes appended since (the writer holds the write lock)."""
        with self._lock:
            self._read_new()
            self._add_from_ledger(rows, self.covered)
            self.covered = max(self.covered, last_seq)

    def stage(self, keys: Sequence[int], seqs: Sequence[int]) -> None:
        """Keys of the open transaction (``seqs`` 0: removed), written at ``flush``."""
        self._staged_keys += keys
        self._staged_seqs += seqs

    def mark(self) -> int:
        return len(self._staged_keys)

    def restore(self, mark: int) -> None:
        """Forget what a rolled-back savepoint staged."""
        del self._staged_keys[mark:]
        del self._staged_seqs[mark:]

    def discard(self) -> None:
        self.restore(0)

    def flush(self, last_seq: int) -> None:
        """Index and log the staged keys, just before the commit (the lock is held)."""
        with self._lock:
            if self._staged_keys:
                self._append(self.index.insert(self._staged_keys, self._staged_seqs))
            self.covered = max(self.covered, last_seq)
            self.discard()

    # ----- everyone -----------------------------------------------------------------------

    def seqs(self, keys: Sequence[int]) -> list[int]:
        """The seq each key hash was last given (0: none), as far as the index knows."""
        with self._lock:
            return self.index.seqs(keys)

    def refresh(self) -> int:
        """Read what other processes logged since the last call; the log's last seq."""
        with self._lock:
            self._read_new()
            return self.covered

    def records(self) -> dict[int, int]:
        """Every key hash and its seq as the log leaves them (an audit reads them all)."""
        with self._lock:
            data = self._read_from(0)
        seqs: dict[int, int] = {}
        for key, seq in RECORD.iter_unpack(data[: len(data) - len(data) % RECORD.size]):
            seqs[key] = seq
        return {key: seq for key, seq in seqs.items() if seq}

    # ----- the file -----------------------------------------------------------------------

    def _load_all(self) -> None:
        self.index, self.covered, self._read_to = KeyIndex(), 0, 0
        self._read_new()
        size = self.path.stat().st_size if self.path.exists() else 0
        if size != self._read_to:  # a record cut short by a crash
            with self.path.open("r+b") as file:
                file.truncate(self._read_to)

    def _read_new(self) -> None:
        data = self._read_from(self._read_to)
        if data:
            whole, last = self.index.load(data)
            self._read_to += whole
            self.covered = max(self.covered, last)

    def _read_from(self, offset: int) -> bytes:
        try:
            with self.path.open("rb") as file:
                file.seek(offset)
                return file.read()
        except FileNotFoundError:
            return b""

    def _append(self, records: bytes) -> None:
        self._read_new()  # another process may have logged since (it held the write lock)
        with self.path.open("ab") as file:
            file.write(records)
        self._read_to += len(records)

    def _add_from_ledger(self, rows: EventRows, after: int) -> None:
        added = 0
        for batch in rows(after):
            seqs = [seq for seq, _, _ in batch]
            keys = event_keys([tenant for _, tenant, _ in batch], [event_id for _, _, event_id in batch])
            self._append(self.index.insert(keys, seqs))
            self.covered = max(self.covered, seqs[-1])
            added += len(batch)
        if added:
            log.info("%s: %d event keys read from the ledger", self.path, added)


def event_rows(conn: sqlite3.Connection) -> EventRows:
    """The ledger's event entries after a seq, in batches of ``SCAN_ROWS``, by ``conn`` (but
    for the keys filed by their text after a collision)."""

    def after(seq: int) -> Iterator[list[tuple[int, str, str]]]:
        while True:
            batch = ledger_rows.event_keys_after(conn, seq, SCAN_ROWS)
            if not batch:
                return
            yield batch
            seq = batch[-1][0]

    return after


def key_log(data_dir: Path) -> KeyLog:
    return KeyLog(Path(data_dir) / KEY_LOG_FILE)


