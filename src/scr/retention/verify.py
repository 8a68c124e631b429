"""``scr archive verify``: every segment against its manifest, its checkpoint and its neighbours.

For each segment the hot store lists (``archive_segments``):

* the manifest must be there with the SHA-256 the store listed (an altered or swapped manifest
  is named), and name the tenant and leaves the store listed;
* the data file must be there, with the manifest's size and SHA-256, and hold the manifest's
  entries in its blocks (each entry a ledger entry of the tenant, at its seq);
* the chain hashes, recomputed from ``chain_before``, must end at ``chain_last``; the leaves,
  appended to ``frontier``, must give ``frontier_after`` and ``root_hash``; the checkpoint
  must be signed by a verifier key for the tenant, at the segment's end, with that root;
* consecutive segments must join: one's ``chain_last`` and ``frontier_after`` are the next
  one's ``chain_before`` and ``frontier``.

A purged segment keeps its manifest (checked, and joined) and must have no data file left.
Any file of the archive directory that no listed segment names is reported as extra.
``ledger_chain`` (the hot store's chain hashes at the seams) is checked by ``scr ledger verify``.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from scr.ledger.report import Report
from scr.log.checkpoint import CheckpointError, VerifierKey, origin_for, verify_note
from scr.log.entry import chain_hash
from scr.native import leaf_hashes
from scr.retention.archiver import LOCK_FILE
from scr.retention.segments import (
    DATA_SUFFIX,
    MANIFEST_SUFFIX,
    ArchiveError,
    Frontier,
    Manifest,
    block_lines,
    left_unlisted,
    read_manifest,
    tenant_folder,
)
from scr.store.records import SegmentRow

Progress = Callable[[int], None]
"""``progress(entries)``: called as each segment's entries are checked."""


class _Line(msgspec.Struct):
    id: int
    tenant_id: str


_line = msgspec.json.Decoder(_Line)


@dataclass
class Joint:
    """Where one segment ended: the next one must start there."""

    leaf: int
    chain: str
    frontier: list[str]


def verify_archive(segments: Iterable[SegmentRow], folder: Path | None, keys: list[VerifierKey],
                   report: Report, progress: Progress | None = None, every_file: bool = True) -> None:
    """Check every listed segment and (``every_file``: when ``segments`` are all of them) the
    archive directory's files; findings go to ``report``."""
    expected: set[Path] = set()
    roots: set[Path] = set()
    joints: dict[str, Joint] = {}
    listed_end: dict[str, int] = {}  # per tenant folder: the last leaf its listed segments hold
    for segment in segments:
        root = folder or Path(segment.folder)
        roots.add(root)
        where = tenant_folder(segment.tenant)
        listed_end[where] = max(listed_end.get(where, -1), segment.last_leaf)
        base = root / segment.name
        manifest_path = base.with_name(base.name + MANIFEST_SUFFIX)
        data_path = base.with_name(base.name + DATA_SUFFIX)
        expected.add(manifest_path)
        manifest = _listed_manifest(segment, manifest_path, report)
        if manifest is None:
            joints.pop(segment.tenant, None)
            continue
        _join(segment, manifest, joints.get(segment.tenant), report)
        joints[segment.tenant] = Joint(manifest.last_leaf + 1, manifest.chain_last, manifest.frontier_after)
        _check_checkpoint(segment, manifest, keys, report)
        if segment.purged_at is not None:
            if data_path.exists():
                report.found(f"segment {segment.name} was purged at {segment.purged_at} but its data file "
                             f"{data_path} remains", segment.tenant, segment.first_leaf)
                expected.add(data_path)
            continue
        expected.add(data_path)
        _check_data(segment, manifest, data_path, report)
        report.entries += manifest.entries
        if progress is not None:
            progress(manifest.entries)
    for root in roots if every_file else ():
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path in expected or path.name == LOCK_FILE:
                continue
            if left_unlisted(path.name, listed_end.get(path.parent.name, -1) + 1):
                report.notes.append(f"unfinished write {path}: a pass in progress, or one interrupted "
                                    "(the archiver's next pass removes it)")
            else:
                report.found(f"extra file {path}: no listed segment names it")


def _listed_manifest(segment: SegmentRow, path: Path, report: Report) -> Manifest | None:
    where = (segment.tenant, segment.first_leaf)
    if not path.exists():
        report.found(f"the manifest of segment {segment.name} ({path}) is missing", *where)
        return None
    try:
        manifest, digest = read_manifest(path)
    except ArchiveError as error:
        report.found(str(error), *where)
        return None
    if digest != segment.manifest_sha256:
        report.found(f"the manifest {path} is not the one listed when the segment was archived "
                     "(altered or swapped)", *where)
        return None
    if (manifest.tenant, manifest.first_leaf, manifest.last_leaf) != (
            segment.tenant, segment.first_leaf, segment.last_leaf):
        report.found(f"the manifest {path} describes {manifest.tenant!r} leaves {manifest.first_leaf}.."
                     f"{manifest.last_leaf}, not this segment", *where)
        return None
    return manifest


def _join(segment: SegmentRow, manifest: Manifest, before: Joint | None, report: Report) -> None:
    if before is None:
        return
    if before.leaf != manifest.first_leaf:
        report.found(f"segment {segment.name} does not start where the previous one ended "
                     f"(leaf {before.leaf})", segment.tenant, manifest.first_leaf)
    elif before.chain != manifest.chain_before or before.frontier != manifest.frontier:
        report.found(f"segment {segment.name} does not continue the previous segment's chain and tree",
                     segment.tenant, manifest.first_leaf)


def _check_checkpoint(segment: SegmentRow, manifest: Manifest, keys: list[VerifierKey],
                      report: Report) -> None:
    if manifest.checkpoint is None:
        return
    where = (segment.tenant, segment.first_leaf)
    errors = []
    for key in keys:
        try:
            signed = verify_note(manifest.checkpoint, key, origin_for(key.name, segment.tenant))
            break
        except CheckpointError as error:
            errors.append(str(error))
    else:
        report.found(f"the checkpoint of segment {segment.name} is rejected: "
                     f"{'; '.join(errors) or 'no verifier key'}", *where)
        return
    if signed.tree_size != manifest.last_leaf + 1 or signed.root_hash.hex() != manifest.root_hash:
        report.found(f"segment {segment.name}'s root is not the one its checkpoint ({signed.tree_size} "
                     "entries) signs", *where)


def _check_data(segment: SegmentRow, manifest: Manifest, path: Path, report: Report) -> None:
    where = (segment.tenant, segment.first_leaf)
    try:
        raw = path.read_bytes()
    except OSError as error:
        report.found(f"the data file of segment {segment.name} ({path}) cannot be read: "
                     f"{error.strerror}", *where)
        return
    if len(raw) != manifest.file_bytes or hashlib.sha256(raw).hexdigest() != manifest.file_sha256:
        report.found(f"the data file {path} differs from its manifest's size or SHA-256 (altered)", *where)
        return
    chain = bytes.fromhex(manifest.chain_before)
    frontier = Frontier(manifest.first_leaf, [bytes.fromhex(h) for h in manifest.frontier])
    leaf = manifest.first_leaf
    for block in manifest.blocks:
        try:
            lines = block_lines(gzip.decompress(raw[block.offset : block.offset + block.length]),
                                f"block at {block.offset}")
            if block.first_leaf != leaf:
                raise ArchiveError(f"block at {block.offset} starts at leaf {block.first_leaf}, not {leaf}")
            _check_lines(segment.tenant, block.first_seq, block.last_seq, lines)
        except (ArchiveError, OSError, EOFError, msgspec.DecodeError) as error:
            report.found(f"segment {segment.name}: {error}", segment.tenant, leaf)
            return
        for line in lines:
            chain = chain_hash(chain, line)
        frontier.extend(leaf_hashes(lines))
        leaf += len(lines)
    if leaf != manifest.last_leaf + 1:
        report.found(f"segment {segment.name} holds leaves up to {leaf - 1}, not {manifest.last_leaf}",
                     *where)
    elif chain.hex() != manifest.chain_last:
        report.found(f"segment {segment.name}'s entries do not chain to its manifest's last hash", *where)
    elif frontier.root().hex() != manifest.root_hash or [
            h.hex() for h in frontier.hashes()] != manifest.frontier_after:
        report.found(f"segment {segment.name}'s entries do not have its manifest's root", *where)


def _check_lines(tenant: str, first_seq: int, last_seq: int, lines: list[bytes]) -> None:
    first, last = _line.decode(lines[0]), _line.decode(lines[-1])
    if (first.id, last.id) != (first_seq, last_seq):
        raise ArchiveError(f"the block holds seqs {first.id}..{last.id}, not {first_seq}..{last_seq}")
    if first.tenant_id != tenant or last.tenant_id != tenant:
        raise ArchiveError(f"the block holds entries of another tenant than {tenant!r}")
