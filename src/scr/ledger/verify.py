"""``scr ledger verify --data DIR``: re-check a data folder offline, trusting nothing but the key.

1. **Entries.** Every entry's chain hash is recomputed from its stored bytes and the previous
   entry's hash, and each tenant's indexes must run 0, 1, 2, … in ledger order: a changed byte,
   a deleted entry or two swapped entries are named where they are.
2. **Tree.** Every leaf hash is recomputed from the stored bytes and the tenant's tree rebuilt;
   it is compared with the stored tiles proofs are served from.
3. **Checkpoints.** Each checkpoint (kept apart, in ``checkpoints.db``) must be signed by the
   ledger key with its tenant's origin, its root must be the rebuilt tree's root at its size
   (a truncated or rolled-back ledger fails here), and each must be consistent with the next.

Big ledgers are scanned in parallel, one process per core, in ranges of ledger sequence numbers;
the runs each range finds per tenant are joined in order (chain and indexes across the seams).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from scr.ledger.chains import verify_chains
from scr.ledger.checkpoints import (
    CHECKPOINTS_FILE,
    KEY_FILE,
    CheckpointLog,
    PgCheckpointLog,
    StoredCheckpoint,
)
from scr.ledger.report import Finding, Report
from scr.ledger.tiles import TILE_HEIGHT, TILE_WIDTH, TileError, TileNodes, covered_seq, expand, read_tile
from scr.log.checkpoint import Checkpoint, CheckpointError, Signer, VerifierKey, origin_for, verify_note
from scr.log.entry import GENESIS_HASH, chain_hash
from scr.log.merkle import HASH_SIZE, LEAF_PREFIX, NODE_PREFIX, ProofError, verify_consistency
from scr.log.nodes import MemoryNodeStore, MerkleTree
from scr.retention.segments import ArchiveError, covers
from scr.retention.tiers import ArchiveTier
from scr.retention.verify import verify_archive
from scr.store import ledger_rows, packs
from scr.store.postgres import PostgresStore
from scr.store.sql import PgSql, Sql
from scr.store.sqlite import DATABASE_FILE, read_segments

PARALLEL_MIN_ENTRIES = 200_000  # below this, one process is faster than starting a pool
CHUNK_ENTRIES = 25_000  # ledger sequence numbers per parallel task (small: the cores stay balanced)
TILE_BYTES = TILE_WIDTH * HASH_SIZE
READ_MMAP_BYTES = 1 << 30


@dataclass(slots=True)
class _Run:
    """One tenant's entries within one scanned range."""

    first_index: int
    first_seq: int
    first_event_id: str | None
    first_entry: bytes
    first_hash: bytes
    next_index: int
    last_hash: bytes
    leaves: bytearray
    contiguous: bool = True
    tile_roots: dict[int, bytes] = field(default_factory=dict)  # whole tiles inside the run


@dataclass(slots=True)
class _Scan:
    """What one range of the ledger holds."""

    first_seq: int | None = None
    last_seq: int | None = None
    entries: int = 0
    runs: dict[str, _Run] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to an SQLite file (never creates or changes it)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    conn.execute(f"PRAGMA mmap_size = {READ_MMAP_BYTES}")  # a scan reads pages without copying
    try:
        packs.require_packed(conn)
    except sqlite3.DatabaseError:
        conn.close()
        raise
    return conn


def tile_root(packed: bytes) -> bytes:
    """The root of a whole tile (256 leaf hashes, packed): its level-8 node."""
    level, sha256 = packed, hashlib.sha256
    while len(level) > HASH_SIZE:
        level = b"".join(
            sha256(NODE_PREFIX + level[i : i + 2 * HASH_SIZE]).digest()
            for i in range(0, len(level), 2 * HASH_SIZE)
        )
    return level


_LEAF_STATE = hashlib.sha256(LEAF_PREFIX)  # copied per leaf: cheaper than concatenating the prefix


def _scan_range(database: str, low: int, high: int) -> _Scan:
    """Check the entries with ``low <= seq < high``: chain, indexes; hash their leaves.

    An archived row (its bytes left the hot store) is read from its segment, and must hash to
    the chain hash the hot store kept; leaves whose segment was purged are taken from the
    stored tiles, and the chain resumes from the next stored hash.
    """
    scan = _Scan()
    conn = connect_read_only(Path(database))
    archive = _Archive(conn)
    sha256, leaf_state = hashlib.sha256, _LEAF_STATE.copy
    runs = scan.runs
    previous_seq = None
    # the hot loop: an event id is read only to name one
    for seq, tenant, index, entry, digest in ledger_rows.chained_entries(conn, low, high):
        if type(entry) is not bytes or type(digest) is not bytes:  # a hand-edited row: compare as bytes
            entry, digest = _as_bytes(entry), _as_bytes(digest)
        if previous_seq is None:
            scan.first_seq = seq
        elif seq != previous_seq + 1 and not archive.purged_seqs(previous_seq + 1, seq - 1):
            scan.findings.append(Finding(
                f"ledger sequence numbers {previous_seq + 1}..{seq - 1} are missing", seq=previous_seq + 1
            ))
        previous_seq = seq
        if not entry:
            entry = archive.entry(tenant, index, seq, scan.findings)
        if entry is None:  # purged (or unreadable, reported): the tiles hold its leaf hash
            leaf = archive.tile_leaves(tenant, index, index + 1)
        else:
            state = leaf_state()  # leaf_hash(entry), inlined
            state.update(entry)
            leaf = state.digest()
        run = runs.get(tenant)
        if run is None:
            event_id = ledger_rows.event_id_at(conn, seq)
            runs[tenant] = _Run(
                index, seq, event_id, entry or b"", digest, index + 1, digest, bytearray(leaf)
            )
            continue
        resumed = False
        if index != run.next_index:
            if archive.purged_leaves(tenant, run.next_index, index - 1):
                run.leaves += archive.tile_leaves(tenant, run.next_index, index)
                resumed = True
            else:
                event_id = ledger_rows.event_id_at(conn, seq)
                scan.findings.append(_index_finding(tenant, run.next_index, index, event_id, seq))
                run.contiguous = False
        if entry is not None and not resumed and sha256(run.last_hash + entry).digest() != digest:
            scan.findings.append(_chain_finding(tenant, index, ledger_rows.event_id_at(conn, seq), seq))
        run.leaves += leaf
        run.next_index = index + 1
        run.last_hash = digest
    conn.close()
    scan.last_seq = previous_seq
    scan.entries = sum(len(run.leaves) // HASH_SIZE for run in runs.values())
    for run in runs.values():
        if run.contiguous:  # the roots of whole tiles, computed here in parallel
            first_tile = -(-run.first_index // TILE_WIDTH)
            for tile in range(first_tile, run.next_index // TILE_WIDTH):
                offset = (tile * TILE_WIDTH - run.first_index) * HASH_SIZE
                run.tile_roots[tile] = tile_root(bytes(run.leaves[offset : offset + TILE_BYTES]))
    return scan


class _Archive:
    """The archive as a scan sees it: archived rows' bytes, and the purged leaves and seqs."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        segments = read_segments(conn)
        self.tier = ArchiveTier(lambda tenant: [s for s in segments if s.tenant == tenant])
        self.purged = [s for s in segments if s.purged_at is not None]

    def entry(self, tenant: str, index: int, seq: int, findings: list[Finding]) -> bytes | None:
        try:
            return self.tier.entry(tenant, index)
        except ArchiveError as error:
            findings.append(Finding(f"its archived entry cannot be read: {error}", tenant, index, seq=seq))
            return None

    def purged_leaves(self, tenant: str, first: int, last: int) -> bool:
        """Every leaf of ``first..last`` lies in one of the tenant's purged segments."""
        return covers([(s.first_leaf, s.last_leaf) for s in self.purged if s.tenant == tenant], first, last)

    def purged_seqs(self, first: int, last: int) -> bool:
        """Every seq of ``first..last`` lies in a purged segment's seq range."""
        return covers([(s.first_seq, s.last_seq) for s in self.purged], first, last)

    def tile_leaves(self, tenant: str, start: int, end: int) -> bytes:
        """The packed leaf hashes ``[start, end)`` from the stored level-0 tiles."""
        packed = bytearray()
        for tile in range(start // TILE_WIDTH, (end - 1) // TILE_WIDTH + 1):
            try:
                hashes = read_tile(self.conn, tenant, 0, tile)
            except TileError:  # damaged: the zeros below make the tree checks name it
                hashes = b""
            low = max(start, tile * TILE_WIDTH) - tile * TILE_WIDTH
            high = min(end, (tile + 1) * TILE_WIDTH) - tile * TILE_WIDTH
            packed += hashes[low * HASH_SIZE : high * HASH_SIZE].ljust((high - low) * HASH_SIZE, b"\0")
        return bytes(packed)


def _as_bytes(value: object) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)  # type: ignore[call-overload]


def _index_finding(tenant: str, expected: int, found: int, event_id: str | None, seq: int) -> Finding:
    if found < expected:
        return Finding(
            f"entry {found} is stored out of order, after entry {expected - 1}", tenant, found, event_id, seq
        )
    missing = f"entry {expected} is" if found == expected + 1 else f"entries {expected}..{found - 1} are"
    return Finding(
        f"{missing} missing: the next stored entry is {found} (event {event_id}, seq {seq})", tenant, expected
    )


def _chain_finding(tenant: str, index: int, event_id: str | None, seq: int) -> Finding:
    return Finding(
        "its stored bytes do not hash to its stored chain hash (the entry or its hash was changed)",
        tenant, index, event_id, seq,
    )


@dataclass(slots=True)
class _Tenant:
    """A tenant's entries as joined across the scanned ranges."""

    next_index: int = 0
    last_hash: bytes = GENESIS_HASH
    leaves: bytearray = field(default_factory=bytearray)
    tile_roots: dict[int, bytes] = field(default_factory=dict)
    contiguous: bool = True


def _ranges(conn: sqlite3.Connection) -> tuple[list[tuple[int, int]], int]:
    low, high = ledger_rows.seq_bounds(conn)
    if low is None or high is None:
        return [], 0
    return [(start, min(start + CHUNK_ENTRIES, high + 1)) for start in range(low, high + 1, CHUNK_ENTRIES)], (
        high - low + 1
    )


def _scans(database: Path, ranges: list[tuple[int, int]], span: int) -> Iterator[_Scan]:
    workers = os.cpu_count() or 1
    if span < PARALLEL_MIN_ENTRIES or workers < 2 or len(ranges) < 2:
        for low, high in ranges:
            yield _scan_range(str(database), low, high)
        return
    # fork: the verifier is a short-lived command; workers need only the function and a path.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
        yield from pool.map(_scan_range, [str(database)] * len(ranges), *zip(*ranges, strict=True))


def _join(scans: Iterator[_Scan], report: Report, archive: _Archive) -> dict[str, _Tenant]:
    tenants: dict[str, _Tenant] = {}
    last_seq: int | None = None
    for scan in scans:
        report.findings.extend(scan.findings)
        report.entries += scan.entries
        if scan.first_seq is None:
            continue
        if last_seq is not None and scan.first_seq != last_seq + 1 and not archive.purged_seqs(
                last_seq + 1, scan.first_seq - 1):
            report.found(f"ledger sequence numbers {last_seq + 1}..{scan.first_seq - 1} are missing",
                         seq=last_seq + 1)
        last_seq = scan.last_seq
        for name, run in scan.runs.items():
            tenant = tenants.setdefault(name, _Tenant())
            resumed = False
            if run.first_index != tenant.next_index:
                if archive.purged_leaves(name, tenant.next_index, run.first_index - 1):
                    tenant.leaves += archive.tile_leaves(name, tenant.next_index, run.first_index)
                    resumed = True
                else:
                    report.findings.append(_index_finding(
                        name, tenant.next_index, run.first_index, run.first_event_id, run.first_seq
                    ))
                    tenant.contiguous = False
            chained = chain_hash(tenant.last_hash, run.first_entry) == run.first_hash
            if not resumed and run.first_entry and not chained:
                report.findings.append(
                    _chain_finding(name, run.first_index, run.first_event_id, run.first_seq)
                )
            tenant.leaves += run.leaves
            tenant.tile_roots.update(run.tile_roots)
            tenant.contiguous = tenant.contiguous and run.contiguous
            tenant.next_index, tenant.last_hash = run.next_index, run.last_hash
    return tenants


class PackedTree:
    """A tree rebuilt from its packed leaf hashes, kept as tile levels (levels 0, 8, 16, …)."""

    def __init__(self, leaves: bytes | bytearray, tile_roots: dict[int, bytes] | None = None) -> None:
        self.levels: list[bytes] = [bytes(leaves)]
        known = tile_roots or {}
        while len(self.levels[-1]) >= TILE_BYTES:
            below = self.levels[-1]
            whole = len(below) // TILE_BYTES
            self.levels.append(b"".join(
                known.get(tile) or tile_root(below[tile * TILE_BYTES : (tile + 1) * TILE_BYTES])
                for tile in range(whole)
            ))
            known = {}  # the scan's roots are of level-0 tiles only
        self._expanded: dict[tuple[int, int], MemoryNodeStore] = {}
        self.size = len(leaves) // HASH_SIZE
        self.tree = MerkleTree(TileNodes(self._fetch, self.size))

    def _fetch(self, level: int, index: int) -> MemoryNodeStore:
        tile = self._expanded.get((level, index))
        if tile is None:
            packed = self.levels[level][index * TILE_BYTES : (index + 1) * TILE_BYTES]
            tile = self._expanded[(level, index)] = expand(packed)
        return tile


def _compare_tiles(conn: Sql, tenant: str, rebuilt: PackedTree, report: Report) -> None:
    """The stored tiles (what proofs are served from) must be the rebuilt tree's."""
    rows = conn.execute(
        "SELECT level, idx, hashes FROM ledger_tiles WHERE tenant = ? ORDER BY level, idx", (tenant,)
    ).fetchall()
    stored_leaves = 0
    for level, index, stored in rows:
        hashes = bytes(stored)
        offset = index * TILE_BYTES
        computed = rebuilt.levels[level] if level < len(rebuilt.levels) else b""
        mine = computed[offset : offset + len(hashes)]
        if level == 0:
            stored_leaves = max(stored_leaves, index * TILE_WIDTH + len(hashes) // HASH_SIZE)
        if mine == hashes:
            continue
        if level > 0:
            if len(mine) == len(hashes):
                report.found(f"a stored tree node at level {level * TILE_HEIGHT} differs from the one "
                             "rebuilt from the entries", tenant)
            continue
        for position in range(len(mine) // HASH_SIZE):
            if hashes[position * HASH_SIZE : (position + 1) * HASH_SIZE] != mine[
                position * HASH_SIZE : (position + 1) * HASH_SIZE
            ]:
                leaf = index * TILE_WIDTH + position
                event_id, seq = ledger_rows.locate(conn, tenant, leaf)
                report.found("its leaf hash differs from the stored tree's: the entry (or the tree) was "
                             "changed after it was appended", tenant, leaf, event_id, seq)
                return
    if stored_leaves > rebuilt.size:
        report.found(f"the stored tree holds {stored_leaves} entries but the ledger only {rebuilt.size}: "
                     f"entries {rebuilt.size}..{stored_leaves - 1} were removed", tenant, rebuilt.size)


def _open_checkpoint(note: str, keys: list[VerifierKey], tenant: str) -> Checkpoint:
    error: CheckpointError | None = None
    for key in keys:
        try:
            return verify_note(note, key, origin_for(key.name, tenant))
        except CheckpointError as failed:
            error = error or failed
    raise error or CheckpointError("no verifier key")


def _check_checkpoints(
    conn: Sql, tenant: str, rebuilt: PackedTree, checkpoints: list[StoredCheckpoint],
    keys: list[VerifierKey], report: Report,
) -> None:
    previous: Checkpoint | None = None
    for stored in checkpoints:
        report.checkpoints += 1
        try:
            signed = _open_checkpoint(stored.note, keys, tenant)
        except CheckpointError as error:
            report.found(f"checkpoint {stored.tree_size} (issued {stored.issued_at}) is rejected: {error}",
                         tenant)
            continue
        if (signed.tree_size, signed.root_hash) != (stored.tree_size, stored.root_hash):
            report.found(f"checkpoint {stored.tree_size}: the stored size or root differs from its signed "
                         "note", tenant)
        size = signed.tree_size
        if size > rebuilt.size:
            event_id, seq = ledger_rows.locate(conn, tenant, rebuilt.size)
            report.found(
                f"checkpoint {size} (issued {stored.issued_at}) covers {size} entries but the ledger "
                f"holds {rebuilt.size}: entries {rebuilt.size}..{size - 1} were removed (truncated or "
                "rolled back to an older copy)", tenant, rebuilt.size, event_id, seq,
            )
            continue
        if rebuilt.tree.root(size) != signed.root_hash:
            start = previous.tree_size if previous else 0
            event_id, seq = ledger_rows.locate(conn, tenant, start)
            report.found(
                f"the ledger's first {size} entries do not have the root signed in checkpoint {size} "
                f"(issued {stored.issued_at}); the entries from {start} on were rewritten, reordered "
                f"or rolled back", tenant, start, event_id, seq,
            )
            continue
        if previous is not None:
            try:
                proof = rebuilt.tree.consistency_proof(previous.tree_size, size)
                verify_consistency(previous.tree_size, size, previous.root_hash, signed.root_hash, proof)
            except ProofError as error:
                report.found(f"checkpoint {size} is not consistent with checkpoint {previous.tree_size}: "
                             f"{error}", tenant)
        previous = signed
    if previous is not None and previous.tree_size < rebuilt.size:
        report.notes.append(f"tenant {tenant}: entries {previous.tree_size}..{rebuilt.size - 1} are after "
                            "the newest checkpoint (not yet signed)")


def data_keys(
    data_dir: Path, log_: CheckpointLog | None, given: str | None, report: Report
) -> list[VerifierKey]:
    """The verifier keys to check checkpoints with: the one given, else those the data folder names."""
    if given is not None:
        return [VerifierKey.parse(given)]
    keys = [VerifierKey.parse(text) for text in (log_.verifier_keys() if log_ else [])]
    pem = data_dir / KEY_FILE
    if keys and pem.exists():
        try:
            public_key = Signer.load_or_create(pem, keys[-1].name).public_key
        except OSError as error:
            report.notes.append(f"could not read {KEY_FILE} to compare it with the recorded key: {error}")
        else:
            if all(key.public_key != public_key for key in keys):
                report.found(f"{KEY_FILE} is not the key the checkpoints name: the signing key was replaced")
    if keys:
        report.notes.append(
            "checkpoint signatures were checked with the key recorded in the data folder; pass "
            "--verifier-key to check them against a key you obtained independently"
        )
    return keys


def verify_data(data_dir: Path, verifier_key: str | None = None) -> Report:
    """Verify a data folder offline (see the module docstring); the report says what was found."""
    report = Report()
    database = data_dir / DATABASE_FILE
    if not database.is_file():
        report.unverifiable = f"no ledger database at {database}"
        return report
    try:
        conn = connect_read_only(database)
        ranges, span = _ranges(conn)
        has_tiles = bool(conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'ledger_tiles'"
        ).fetchone())
    except sqlite3.DatabaseError as error:
        report.unverifiable = f"cannot read {database}: {error}"
        return report
    tenants = _join(_scans(database, ranges, span), report, _Archive(conn))
    log_path = data_dir / CHECKPOINTS_FILE
    log_ = CheckpointLog(log_path, read_only=True) if log_path.is_file() else None
    try:
        keys = data_keys(data_dir, log_, verifier_key, report)
    except CheckpointError as error:
        report.unverifiable = f"no usable verifier key: {error}"
        return report
    checkpoints: dict[str, list[StoredCheckpoint]] = {}
    for stored in log_.all() if log_ else []:
        checkpoints.setdefault(stored.tenant, []).append(stored)
    if log_ is None:
        report.notes.append(f"no {CHECKPOINTS_FILE}: there is no signed checkpoint to compare with")
    elif checkpoints and not keys:
        report.unverifiable = "the checkpoints cannot be checked: no verifier key (pass --verifier-key)"
        return report
    stored_tenants = set()
    if has_tiles:
        stored_tenants = {row[0] for row in conn.execute("SELECT DISTINCT tenant FROM ledger_tiles")}
        covered = covered_seq(conn)
        if ranges and covered < ranges[-1][1] - 1:
            report.notes.append(f"entries after ledger seq {covered} are not in the trees yet (the server "
                                "adds them at its next commit)")
    for name in sorted(set(tenants) | set(checkpoints) | stored_tenants):
        tenant = tenants.get(name, _Tenant())
        rebuilt = PackedTree(tenant.leaves, tenant.tile_roots if tenant.contiguous else None)
        if has_tiles:
            _compare_tiles(conn, name, rebuilt, report)
        _check_checkpoints(conn, name, rebuilt, checkpoints.get(name, []), keys, report)
    _check_archive(conn, keys, report)
    conn.close()
    return report


def _check_archive(conn: sqlite3.Connection, keys: list[VerifierKey], report: Report) -> None:
    """The archive segments, as ``scr archive verify`` checks them (their entries were checked
    against the hot store's chain hashes above)."""
    segments = read_segments(conn)
    if not segments:
        return
    archived = Report()
    verify_archive(segments, None, keys, archived)
    report.findings += archived.findings
    report.notes.append(f"{len(segments)} archive segment(s) checked against their manifests and checkpoints")


def verify_store(store: PostgresStore, verifier_key: str | None = None) -> Report:
    """Verify a PostgreSQL store (``scr ledger verify --store``): every tenant's chain and dedup
    keys (``scr.ledger.chains``), then its tree rebuilt from the entries against the stored
    tiles, and every checkpoint as on a data folder. Read-only."""
    with store.connect() as raw:
        conn = PgSql(raw)
        if conn.execute("SELECT to_regclass('ledger_checkpoints')").fetchone()[0] is None:
            report = verify_chains(store)
            report.notes.append("PostgreSQL store: chains and dedup index checked; it keeps no trees or "
                                "checkpoints yet (migration 11 is applied when an instance starts)")
            return report
        log_ = PgCheckpointLog(store.connect)
        try:
            keys = ([VerifierKey.parse(verifier_key)] if verifier_key is not None
                    else [VerifierKey.parse(text) for text in log_.verifier_keys()])
            checkpoints: dict[str, list[StoredCheckpoint]] = {}
            for stored in log_.all():
                checkpoints.setdefault(stored.tenant, []).append(stored)
        finally:
            log_.close()
        seen: set[str] = set()
        partial: list[str] = []

        def check_tree(tenant: str, leaves: bytes | None) -> None:
            seen.add(tenant)
            if leaves is None:
                partial.append(tenant)
                return
            rebuilt = PackedTree(leaves)
            _compare_tiles(conn, tenant, rebuilt, report)
            _check_checkpoints(conn, tenant, rebuilt, checkpoints.get(tenant, []), keys, report)

        report = Report()
        if any(checkpoints.values()) and not keys:
            report.unverifiable = "the checkpoints cannot be checked: no verifier key (pass --verifier-key)"
            return report
        verify_chains(store, check_tree, report)
        for tenant in sorted(set(checkpoints) - seen):  # checkpoints of a tenant without entries
            check_tree(tenant, b"")
        if partial:
            report.notes.append(f"trees and checkpoints not rebuilt for {len(partial)} tenant(s) whose "
                                f"entries are not all in the hot store (archived or missing): "
                                f"{', '.join(partial[:5])}")
        if keys and verifier_key is None:
            report.notes.append("checkpoint signatures were checked with the keys recorded in the store; "
                                "pass --verifier-key to check them against a key you obtained independently")
        return report
