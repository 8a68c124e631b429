"""Archive segments: a tenant's consecutive ledger entries, compressed, with a manifest.

A segment is two files in the tenant's folder of the archive directory:

* ``<first>-<last>.jsonl.gz``: the entries' stored bytes, exactly as the ledger hashed them,
  one per line, in leaf order. The file is a series of gzip members of ``BLOCK_ENTRIES``
  lines each (one standard gzip stream to ``zcat``); a reader seeks to one member to read
  one entry. ``SHA-256(0x00 ‖ line)`` is the entry's RFC 6962 leaf hash and
  ``SHA-256(previous chain hash ‖ line)`` its chain hash.
* ``<first>-<last>.manifest.json``: the tenant, the first and last leaf index and ledger seq,
  the file's SHA-256 and size, the blocks' offsets, the chain hash before the first entry and
  after the last, the Merkle frontier before the first leaf (the roots of the perfect subtrees
  that cover leaves ``[0, first)``, so a segment is checked without the ones before it, even
  after they are purged) and after the last, the tree's root after the last leaf, and the signed checkpoint of
  that tree size (the segment ends where a checkpoint does; none on a store without
  checkpoints).

Both are written to a temporary name, fsynced, renamed and the folder fsynced, data first:
a manifest is never seen before its data, and a segment is only listed (in the hot store's
``archive_segments``) after both are durable.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgspec

from scr.fsync import fsync_path
from scr.log.entry import chain_hash
from scr.log.merkle import node_hash
from scr.native import leaf_hashes

FORMAT = "scr-archive-1"
BLOCK_ENTRIES = 512  # lines per gzip member: one archived read decompresses at most this many
COMPRESS_LEVEL = 6
DATA_SUFFIX = ".jsonl.gz"
MANIFEST_SUFFIX = ".manifest.json"
TEMPORARY_SUFFIX = ".tmp"  # a file while it is written: renamed once whole, never listed before
_PLAIN_TENANT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")
_NAME = re.compile(r"^(\d{12})-(\d{12})$")


class Block(msgspec.Struct, frozen=True, array_like=True):
    """One gzip member: where it is in the file and the entries it holds."""

    offset: int
    length: int
    first_leaf: int
    first_seq: int
    last_seq: int


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """What a segment holds and how to check it (hashes in hex)."""

    format: str = FORMAT
    tenant: str
    first_leaf: int
    last_leaf: int
    first_seq: int
    last_seq: int
    min_ts: str
    max_ts: str
    file: str
    file_sha256: str
    file_bytes: int
    blocks: list[Block]
    chain_before: str
    chain_last: str
    frontier: list[str]
    frontier_after: list[str]
    root_hash: str
    checkpoint: str | None
    created_at: str

    @property
    def entries(self) -> int:
        return self.last_leaf - self.first_leaf + 1

    @property
    def name(self) -> str:
        return segment_name(self.first_leaf, self.last_leaf)


_manifest_decoder = msgspec.json.Decoder(Manifest)


class ArchiveError(RuntimeError):
    """A segment that cannot be read as written (missing, altered or not this tenant's)."""


@dataclass(frozen=True, slots=True)
class Archived:
    """One ledger entry as it goes into a segment."""

    seq: int
    leaf: int
    ts: str
    entry: bytes


def tenant_folder(tenant: str) -> str:
    """The tenant's folder name: the tenant id itself when it is a plain name, else its hex."""
    if _PLAIN_TENANT.match(tenant) and tenant not in (".", ".."):
        return tenant
    return "x-" + tenant.encode().hex()


def segment_name(first_leaf: int, last_leaf: int) -> str:
    return f"{first_leaf:012d}-{last_leaf:012d}"


def parse_name(stem: str) -> tuple[int, int] | None:
    """(first leaf, last leaf) of a segment file's stem, None when it is not a segment's."""
    found = _NAME.match(stem)
    return (int(found.group(1)), int(found.group(2))) if found else None


def file_leaves(file_name: str) -> tuple[int, int] | None:
    """(first leaf, last leaf) of a segment's data or manifest file, whole or being written
    (``.tmp``); None for any other file."""
    stem = file_name.removesuffix(TEMPORARY_SUFFIX).removesuffix(DATA_SUFFIX).removesuffix(MANIFEST_SUFFIX)
    return parse_name(stem)


def left_unlisted(file_name: str, start: int) -> bool:
    """Whether a file in a tenant's folder is one a pass writes before it lists its segment:
    being written (``.tmp``), or a segment's file from leaf ``start`` on (the first leaf no
    listed segment holds). Never listed, so never read."""
    leaves = file_leaves(file_name)
    return file_name.endswith(TEMPORARY_SUFFIX) or (leaves is not None and leaves[0] >= start)


def covers(ranges: Iterable[tuple[int, int]], first: int, last: int) -> bool:
    """The union of the inclusive ``ranges`` (purged segments' leaves or seqs) covers
    ``first..last``."""
    covered = first
    for low, high in sorted(ranges):
        if low <= covered <= high:
            covered = high + 1
    return covered > last


class Frontier:
    """The roots of the perfect subtrees covering a tree's leaves, left to right: enough to
    append leaves and compute the RFC 6962 root without the leaves before."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        heights = [bit for bit in range(size.bit_length() - 1, -1, -1) if size >> bit & 1]
        if len(heights) != len(hashes):
            raise ArchiveError(f"a frontier of {size} leaves has {len(heights)} subtrees, not {len(hashes)}")
        self.size = size
        self._stack = list(zip(heights, hashes, strict=True))

    def extend(self, leaves: Iterable[bytes]) -> None:
        stack = self._stack
        for leaf in leaves:
            height, value = 0, leaf
            while stack and stack[-1][0] == height:
                value = node_hash(stack.pop()[1], value)
                height += 1
            stack.append((height, value))
            self.size += 1

    def hashes(self) -> list[bytes]:
        return [value for _, value in self._stack]

    def root(self) -> bytes:
        if not self._stack:
            raise ArchiveError("an empty tree has no root here")
        value = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            value = node_hash(left, value)
        return value


def write_segment(
    folder: Path, tenant: str, archived: Sequence[Archived], chain_before: bytes, frontier: Frontier,
    checkpoint: str | None, created_at: str,
) -> Manifest:
    """Write a segment's data and manifest durably; the frontier is moved past its leaves.

    The chain hash after the last entry and the root are computed here from the bytes written,
    so a manifest never claims what its file does not hold.
    """
    first, last = archived[0], archived[-1]
    name = segment_name(first.leaf, last.leaf)
    folder.mkdir(parents=True, exist_ok=True)
    frontier_before = [value.hex() for value in frontier.hashes()]
    blocks, offset, chain = [], 0, chain_before
    data = folder / (name + DATA_SUFFIX)
    digest = hashlib.sha256()
    with _durable(data) as out:
        for start in range(0, len(archived), BLOCK_ENTRIES):
            part = archived[start : start + BLOCK_ENTRIES]
            lines = [item.entry for item in part]
            member = gzip.compress(b"\n".join(lines) + b"\n", COMPRESS_LEVEL, mtime=0)
            out.write(member)
            digest.update(member)
            blocks.append(Block(offset, len(member), part[0].leaf, part[0].seq, part[-1].seq))
            offset += len(member)
            for line in lines:
                chain = chain_hash(chain, line)
            frontier.extend(leaf_hashes(lines))
    manifest = Manifest(
        tenant=tenant, first_leaf=first.leaf, last_leaf=last.leaf, first_seq=first.seq,
        last_seq=last.seq, min_ts=min(item.ts for item in archived),
        max_ts=max(item.ts for item in archived), file=data.name, file_sha256=digest.hexdigest(),
        file_bytes=offset, blocks=blocks, chain_before=chain_before.hex(), chain_last=chain.hex(),
        frontier=frontier_before, frontier_after=[value.hex() for value in frontier.hashes()],
        root_hash=frontier.root().hex(), checkpoint=checkpoint,
        created_at=created_at,
    )
    with _durable(folder / (name + MANIFEST_SUFFIX)) as out:
        out.write(msgspec.json.format(msgspec.json.encode(manifest)))
    return manifest


class _durable:
    """A file written under a temporary name, fsynced, renamed into place, folder fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temporary = path.with_name(path.name + TEMPORARY_SUFFIX)

    def __enter__(self) -> BinaryIO:
        self.file = open(self.temporary, "wb")
        return self.file

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        try:
            if error is None:
                self.file.flush()
                os.fsync(self.file.fileno())
        finally:
            self.file.close()
        if error is not None:
            self.temporary.unlink(missing_ok=True)
            return
        os.replace(self.temporary, self.path)
        fsync_path(self.path.parent)


def read_manifest(path: Path) -> tuple[Manifest, bytes]:
    """A manifest and the SHA-256 of its bytes (the hot store lists segments by it)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ArchiveError(f"cannot read manifest {path}: {error.strerror}") from None
    try:
        return _manifest_decoder.decode(raw), hashlib.sha256(raw).digest()
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise ArchiveError(f"manifest {path} is not a segment manifest: {error}") from None


def read_block(data: Path, block: Block) -> list[bytes]:
    """The entries' stored bytes in one block of a segment's data file."""
    try:
        with open(data, "rb") as file:
            file.seek(block.offset)
            member = file.read(block.length)
        text = gzip.decompress(member)
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise ArchiveError(f"cannot read block at {block.offset} of {data}: {error}") from None
    if len(member) != block.length:
        raise ArchiveError(f"block at {block.offset} of {data} is cut short")
    return block_lines(text, f"block at {block.offset} of {data}")


def block_lines(text: bytes, what: str) -> list[bytes]:
    """The entries of a block's decompressed text (each line ends with a newline)."""
    if not text.endswith(b"\n"):
        raise ArchiveError(f"{what} is cut short")
    return text[:-1].split(b"\n")
