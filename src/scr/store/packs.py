"""The embedded ledger packed: a row of ``ledger_packs`` per ``PACK_ENTRIES`` entries appended.

A row an event cost the writer a B-tree insert of ten columns and an index entry for each
event (``bench/bench_layout.py``), and every reader SQLite's fetch of eight columns an event.
Instead each group the writer appends is a few rows, packs of up to ``PACK_ENTRIES`` entries:
each a msgpack array in seq order, each entry ``PackedRow``'s ten fields. A pack is small
enough that one entry is found by reading its pack (a duplicate's dedup check, an event by
id: SQLite reads a long value page by page along a chain, and one entry of a 1,000-entry pack
took 2.0 ms where one of a 64-entry pack takes 0.17, ``bench_layout``). Beside the packs,
written with them, two small tables and a column find entries without reading every pack:

- ``ledger_runs``: a tenant's consecutive entries in one pack, by (tenant, tenant_seq); one
  row per tenant and pack, so lookups by a tenant's position read only the packs that hold it;
- ``ledger_kinds``: the seq of every entry that is not a session completion (the canon's
  kinds, erasures, alerts: few), by (tenant, kind);
- the pack's ``sessions``, a JSON array of ``[session key, seq]`` that the session index
  (``scr.store.sessions``) reads in SQL.

A pack's ``first_seq`` is its key and a lower bound of its entries' seqs, ``last_seq`` their
highest; packs never overlap, so the pack holding a seq is the one with the greatest
``first_seq`` at or below it. Retention rewrites a pack (an archived entry's bytes emptied,
a purged one removed), never the ranges of its neighbours. A data folder of an earlier
version, with a ``ledger`` table of a row an event, is packed 1,000 rows at a time when this
version first opens it (``migrate``), each step its own transaction.
"""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgspec

from scr.store.records import StoredEntry

SESSION_COMPLETION = "SESSION_COMPLETION"
PACK_ENTRIES = 64  # the append cost hardly moves from 64 to 1,000 (bench_layout), a lookup does
MIGRATE_ROWS = 1_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_packs (
    first_seq INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    last_ts TEXT NOT NULL,
    sessions TEXT NOT NULL,
    entries BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_packs_ts ON ledger_packs (last_ts);
CREATE TABLE IF NOT EXISTS ledger_runs (
    tenant TEXT NOT NULL,
    first_tenant_seq INTEGER NOT NULL,
    last_tenant_seq INTEGER NOT NULL,
    pack INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, first_tenant_seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_runs_pack ON ledger_runs (pack);
CREATE TABLE IF NOT EXISTS ledger_kinds (
    tenant TEXT NOT NULL, kind TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, kind, seq)
) WITHOUT ROWID;
"""


class PackedRow(StoredEntry, frozen=True, gc=False, array_like=True):
    """An entry as a pack holds it: ``StoredEntry``'s fields first (so a pack decodes into
    ``StoredEntry``s directly), then what only the store itself reads."""

    session_key: int | None
    digest: bytes | None  # the payload digest of an event, for dedup


Row = tuple[int, str, int, str, str, str | None, bytes, bytes, int | None, bytes | None]
"""A ``PackedRow``'s fields as the writer builds them."""

_encode = msgspec.msgpack.Encoder().encode
_as_rows = msgspec.msgpack.Decoder(list[PackedRow])
_as_entries = msgspec.msgpack.Decoder(list[StoredEntry])
_json = msgspec.json.Encoder()

# The packs holding a seq past ``?`` (given twice): from the one that may hold it on, but for
# a pack ending at it (its bytes are not read).
_FROM_PACK_OF = ("FROM ledger_packs WHERE first_seq >= coalesce((SELECT max(first_seq) "
                 "FROM ledger_packs WHERE first_seq <= ?), 0) AND last_seq > ?")


class DamagedPack(sqlite3.DatabaseError):
    """A pack that does not decode (the file was edited or damaged)."""


def decode_rows(first_seq: int, blob: bytes) -> list[PackedRow]:
    """The entries of the pack at ``first_seq``, with every field."""
    return _decode(_as_rows, first_seq, blob)


def _decode_entries(first_seq: int, blob: bytes) -> list[StoredEntry]:
    return _decode(_as_entries, first_seq, blob)


def _decode(decoder: msgspec.msgpack.Decoder[list[Any]], first_seq: int, blob: bytes) -> list[Any]:
    try:
        return decoder.decode(blob)
    except msgspec.DecodeError as error:
        raise DamagedPack(f"the ledger's pack at seq {first_seq} cannot be read ({error}): "
                          "run `scr ledger verify`") from None


# ----- writing ---------------------------------------------------------------------------------

def insert(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    """Append ``rows`` (seq ascending, past every pack) as packs of up to ``PACK_ENTRIES``,
    with their tenants' runs and their kinds."""
    for start in range(0, len(rows), PACK_ENTRIES):
        pack = rows[start : start + PACK_ENTRIES]
        first, last = pack[0][0], pack[-1][0]
        conn.execute("INSERT INTO ledger_packs VALUES (?,?,?,?,?)",
                     (first, last, *_described(pack), _encode(pack)))
        _insert_runs(conn, first, runs_of(pack))
    kinds = [(row[1], row[3], row[0]) for row in rows if row[3] != SESSION_COMPLETION]
    if kinds:
        conn.executemany("INSERT INTO ledger_kinds VALUES (?,?,?)", kinds)


def _described(rows: Sequence[Row]) -> tuple[str, str]:
    """A pack's newest entry time and its ``sessions`` (JSON [[session key, seq], ...])."""
    sessions = _json.encode([(row[8], row[0]) for row in rows if row[8] is not None])
    return max(row[4] for row in rows), sessions.decode()


def _insert_runs(conn: sqlite3.Connection, pack: int, runs: Iterable[Sequence[Any]]) -> None:
    conn.executemany("INSERT INTO ledger_runs VALUES (?,?,?,?,?)",
                     [(tenant, low, high, pack, last_seq) for tenant, low, high, last_seq in runs])


def runs_of(rows: Iterable[Sequence[Any]]) -> list[list[Any]]:
    """Each tenant's runs of consecutive tenant_seqs in ``rows``: [tenant, first, last, last seq]."""
    runs: list[list[Any]] = []
    open_runs: dict[str, list[Any]] = {}
    for row in rows:
        seq, tenant, tenant_seq = row[0], row[1], row[2]
        run = open_runs.get(tenant)
        if run is not None and run[2] == tenant_seq - 1:
            run[2], run[3] = tenant_seq, seq
        else:
            open_runs[tenant] = run = [tenant, tenant_seq, tenant_seq, seq]
            runs.append(run)
    return runs


def rewrite(conn: sqlite3.Connection, first_seq: int, old: Sequence[PackedRow],
            new: Sequence[PackedRow]) -> None:
    """Put ``new`` in place of the pack at ``first_seq`` that held ``old`` (an entry's bytes
    emptied, entries removed); an empty pack is deleted."""
    kept = {row.seq for row in new}
    gone = [row for row in old if row.seq not in kept]
    conn.executemany("DELETE FROM ledger_runs WHERE tenant = ? AND first_tenant_seq = ?",
                     [(tenant, low) for tenant, low, _, _ in runs_of(fields(row) for row in old)])
    conn.executemany("DELETE FROM ledger_kinds WHERE tenant = ? AND kind = ? AND seq = ?",
                     [(row.tenant, row.kind, row.seq) for row in gone if row.kind != SESSION_COMPLETION])
    if not new:
        conn.execute("DELETE FROM ledger_packs WHERE first_seq = ?", (first_seq,))
        return
    rows = [fields(row) for row in new]
    conn.execute("UPDATE ledger_packs SET last_seq = ?, last_ts = ?, sessions = ?, entries = ? "
                 "WHERE first_seq = ?", (rows[-1][0], *_described(rows), _encode(rows), first_seq))
    _insert_runs(conn, first_seq, runs_of(rows))


def fields(row: PackedRow) -> Row:
    """A packed entry's fields as the writer hands them over."""
    return (row.seq, row.tenant, row.tenant_seq, row.kind, row.ts, row.event_id, row.entry, row.hash,
            row.session_key, row.digest)


def require_packed(conn: sqlite3.Connection) -> None:
    """Refuse a read-only look at a data folder whose ledger is not packed yet (an earlier
    version's), with the way out; read-only readers never migrate it themselves."""
    if _unpacked(conn):
        raise sqlite3.DatabaseError(
            "its ledger was written by an earlier version of scr and is packed the first time this "
            "version opens the folder to write: start `scr serve` on it once")


def migrate(conn: sqlite3.Connection) -> int:
    """Pack the ``ledger`` table of an earlier version, ``MIGRATE_ROWS`` rows a step, each step
    its own transaction (a crash between steps leaves every row in one place or the other);
    the table is dropped once empty. How many rows were packed."""
    moved = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not _unpacked(conn):
                conn.execute("COMMIT")
                return moved
            rows = [_migrated(row) for row in conn.execute(
                "SELECT seq, tenant, tenant_seq, kind, ts, event_id, entry, hash, session_key, "
                "payload_digest FROM ledger ORDER BY seq LIMIT ?", (MIGRATE_ROWS,))]
            if rows:
                insert(conn, rows)
                conn.execute("DELETE FROM ledger WHERE seq <= ?", (rows[-1][0],))
                moved += len(rows)
            else:
                conn.execute("DROP TABLE ledger")
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()
            raise


def _unpacked(conn: sqlite3.Connection) -> bool:
    """Whether the database still has an earlier version's row-an-event ``ledger`` table."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ledger'").fetchone()
    return found is not None


def _migrated(row: Sequence[Any]) -> Row:
    seq, tenant, tenant_seq, kind, ts, event_id, entry, hash_, session, digest = row
    return (int(seq), tenant, int(tenant_seq), kind, ts, event_id, _bytes(entry), _bytes(hash_),
            session, None if digest is None else _bytes(digest))


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)  # a hand-edited row's text


# ----- reading by seq ----------------------------------------------------------------------------

def last_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT last_seq FROM ledger_packs ORDER BY first_seq DESC LIMIT 1").fetchone()
    return 0 if row is None else int(row[0])


def seq_bounds(conn: sqlite3.Connection) -> tuple[int | None, int | None]:
    """The lowest and highest seq held (None, None when the ledger is empty)."""
    first = conn.execute("SELECT first_seq, entries FROM ledger_packs ORDER BY first_seq LIMIT 1").fetchone()
    if first is None:
        return None, None
    return _decode_entries(first[0], first[1])[0].seq, last_seq(conn)


def entries_after(conn: sqlite3.Connection, after: int, limit: int) -> list[StoredEntry]:
    """The first ``limit`` entries with seq > ``after``, in order."""
    found: list[StoredEntry] = []
    for first_seq, blob in conn.execute(f"SELECT first_seq, entries {_FROM_PACK_OF} ORDER BY first_seq",
                                        (after, after)):
        entries = _decode_entries(first_seq, blob)
        if entries and entries[0].seq <= after:
            entries = [entry for entry in entries if entry.seq > after]
        found += entries
        if len(found) >= limit:
            return found[:limit]
    return found


def rows_after(conn: sqlite3.Connection, after: int, before: int) -> Iterator[list[PackedRow]]:
    """The entries with ``after < seq < before``, in seq order, a pack at a time."""
    for first_seq, blob in conn.execute(
            f"SELECT first_seq, entries {_FROM_PACK_OF} AND first_seq < ? ORDER BY first_seq",
            (after, after, before)):
        rows = decode_rows(first_seq, blob)
        if rows and (rows[0].seq <= after or rows[-1].seq >= before):
            rows = [row for row in rows if after < row.seq < before]
        if rows:
            yield rows


def rows_at(conn: sqlite3.Connection, seqs: Iterable[int]) -> dict[int, PackedRow]:
    """The entries at these seqs that the ledger holds, each pack read once."""
    wanted = sorted(set(seqs))
    found: dict[int, PackedRow] = {}
    at = 0
    while at < len(wanted):
        pack = conn.execute("SELECT first_seq, last_seq, entries FROM ledger_packs WHERE first_seq <= ? "
                            "ORDER BY first_seq DESC LIMIT 1", (wanted[at],)).fetchone()
        if pack is None or pack[1] < wanted[at]:
            at += 1
            continue
        end = bisect.bisect_right(wanted, pack[1], at)
        held, at = set(wanted[at:end]), end
        found.update((row.seq, row) for row in decode_rows(pack[0], pack[2]) if row.seq in held)
    return found


def seqs_between(conn: sqlite3.Connection, low: int, high: int) -> Iterator[int]:
    """The seqs held with ``low <= seq <= high``."""
    for rows in rows_after(conn, low - 1, high + 1):
        yield from (row.seq for row in rows)


def present(conn: sqlite3.Connection, seqs: Sequence[int]) -> set[int]:
    """Which of ``seqs`` the ledger holds."""
    if not seqs:
        return set()
    return set(seqs_between(conn, min(seqs), max(seqs))).intersection(seqs)


def tenants_between(conn: sqlite3.Connection, after: int, through: int) -> list[str]:
    """The tenants with an entry in ``after < seq <= through``."""
    found: set[str] = set()
    edges: dict[int, list[PackedRow]] = {}  # the packs a bound cuts through, read once
    for tenant, pack, run_last in conn.execute(
            "SELECT tenant, pack, last_seq FROM ledger_runs WHERE pack >= coalesce((SELECT max(first_seq) "
            "FROM ledger_packs WHERE first_seq <= ?), 0) AND pack <= ? AND last_seq > ?",
            (after, through, after)).fetchall():
        if tenant in found:
            continue
        if pack > after and run_last <= through:  # the whole run is in range
            found.add(tenant)
            continue
        if pack not in edges:
            edges[pack] = rows_at_pack(conn, pack)
        if any(row.tenant == tenant and after < row.seq <= through for row in edges[pack]):
            found.add(tenant)
    return sorted(found)


def entry_time(conn: sqlite3.Connection, seq: int) -> str | None:
    """The time of the entry at ``seq``, or of the next one."""
    for rows in rows_after(conn, seq - 1, 2**63 - 1):
        return rows[0].ts
    return None


def seq_at_time(conn: sqlite3.Connection, ts: str) -> int:
    """The last seq whose entry time is before ``ts`` (entry times grow with seq)."""
    pack = conn.execute("SELECT first_seq, entries FROM ledger_packs WHERE last_ts >= ? "
                        "ORDER BY last_ts, first_seq LIMIT 1", (ts,)).fetchone()
    if pack is None:
        return last_seq(conn)
    before = [entry.seq for entry in _decode_entries(pack[0], pack[1]) if entry.ts < ts]
    if before:
        return max(before)
    row = conn.execute("SELECT last_seq FROM ledger_packs WHERE first_seq < ? "
                       "ORDER BY first_seq DESC LIMIT 1", (pack[0],)).fetchone()
    return 0 if row is None else int(row[0])


# ----- reading by tenant -------------------------------------------------------------------------

def tenants(conn: sqlite3.Connection) -> list[str]:
    return [tenant for (tenant,) in conn.execute("SELECT DISTINCT tenant FROM ledger_runs")]


def tenant_rows(conn: sqlite3.Connection, tenant: str, start: int) -> Iterator[PackedRow]:
    """The tenant's entries with ``tenant_seq >= start``, in order, read a pack at a time."""
    packs = conn.execute(
        "SELECT pack FROM ledger_runs WHERE tenant = ? AND first_tenant_seq >= coalesce((SELECT "
        "max(first_tenant_seq) FROM ledger_runs WHERE tenant = ? AND first_tenant_seq <= ?), 0) "
        "ORDER BY first_tenant_seq", (tenant, tenant, start))
    read = -1  # a pack holds several runs of a tenant once retention removed entries between them
    while batch := packs.fetchmany(64):
        for (pack,) in batch:
            if pack == read:
                continue
            read = pack
            blob = conn.execute("SELECT entries FROM ledger_packs WHERE first_seq = ?", (pack,)).fetchone()
            if blob is None:
                continue  # rewritten away since the runs were read
            for row in decode_rows(pack, blob[0]):
                if row.tenant == tenant and row.tenant_seq >= start:
                    yield row


def tenant_range(conn: sqlite3.Connection, tenant: str, start: int, end: int,
                 limit: int | None = None) -> list[PackedRow]:
    """The tenant's entries with ``start <= tenant_seq < end`` (the first ``limit``), in order."""
    found: list[PackedRow] = []
    if end <= start or limit == 0:
        return found
    for row in tenant_rows(conn, tenant, start):
        if row.tenant_seq >= end:
            break
        found.append(row)
        if limit is not None and len(found) >= limit:
            break
    return found


def chain_length(conn: sqlite3.Connection, tenant: str, through: int) -> int:
    """How many entries the tenant's chain holds up to ``seq <= through`` (its next tenant_seq)."""
    # Walks the tenant's runs from their end; runs past ``through`` are rare.
    run = conn.execute(
        "SELECT first_tenant_seq, last_tenant_seq, pack, last_seq FROM ledger_runs "
        "WHERE tenant = ? AND pack <= ? ORDER BY first_tenant_seq DESC LIMIT 1", (tenant, through)).fetchone()
    if run is None:
        return 0
    low, high, pack, run_last = run
    if run_last <= through:
        return int(high) + 1
    held = [row.tenant_seq for row in rows_at_pack(conn, pack)
            if row.tenant == tenant and row.seq <= through]
    return max(held) + 1 if held else int(low)


def rows_at_pack(conn: sqlite3.Connection, first_seq: int) -> list[PackedRow]:
    blob = conn.execute("SELECT entries FROM ledger_packs WHERE first_seq = ?", (first_seq,)).fetchone()
    return [] if blob is None else decode_rows(first_seq, blob[0])


def chain_heads(conn: sqlite3.Connection) -> dict[str, tuple[int, bytes]]:
    """Per tenant: (number of entries, hash of the newest entry)."""
    newest = {seq: tenant for tenant, _, seq in conn.execute(  # the seq of each tenant's newest run's end
        "SELECT tenant, max(last_tenant_seq), last_seq FROM ledger_runs GROUP BY tenant")}
    return {row.tenant: (row.tenant_seq + 1, row.hash) for seq, row in rows_at(conn, newest).items()
            if row.tenant == newest[seq]}


def newest_tenant_seq(conn: sqlite3.Connection, tenant: str) -> int | None:
    (newest,) = conn.execute(
        "SELECT max(last_tenant_seq) FROM ledger_runs WHERE tenant = ?", (tenant,)).fetchone()
    return None if newest is None else int(newest)


def kind_seqs(conn: sqlite3.Connection, tenant: str, kinds: Sequence[str], after: int) -> list[int]:
    """The seqs of the tenant's entries of these kinds (never SESSION_COMPLETION) past ``after``."""
    marks = ",".join("?" * len(kinds))
    return [seq for (seq,) in conn.execute(
        f"SELECT seq FROM ledger_kinds WHERE tenant = ? AND kind IN ({marks}) AND seq > ? ORDER BY seq",
        (tenant, *kinds, after))]


# ----- retention ---------------------------------------------------------------------------------

def edit_tenant_range(conn: sqlite3.Connection, tenant: str, start: int, end: int, remove: bool) -> int:
    """Empty the bytes of the tenant's session completions with ``start <= tenant_seq < end``
    (``remove``: delete the tenant's entries in that range instead); how many entries matched."""
    matched = 0
    packs = sorted({pack for (pack,) in conn.execute(
        "SELECT pack FROM ledger_runs WHERE tenant = ? AND first_tenant_seq >= coalesce((SELECT "
        "max(first_tenant_seq) FROM ledger_runs WHERE tenant = ? AND first_tenant_seq <= ?), 0) "
        "AND first_tenant_seq < ?", (tenant, tenant, start, end))})
    for pack in packs:
        old = rows_at_pack(conn, pack)
        new: list[PackedRow] = []
        for row in old:
            if row.tenant != tenant or not start <= row.tenant_seq < end:
                new.append(row)
            elif remove:
                matched += 1
            elif row.kind == SESSION_COMPLETION:
                matched += 1
                new.append(msgspec.structs.replace(row, entry=b""))
            else:
                new.append(row)
        if new != old:
            rewrite(conn, pack, old, new)
    return matched
