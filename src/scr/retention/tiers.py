"""Reads across tiers: a hot row whose entry was archived is filled from its segment.

Once a segment is durable, its SESSION_COMPLETION rows in the hot store keep everything but
their entry's bytes (``scr.retention.archiver``): the seq, tenant, leaf index, time, event and
session keys, payload digest and chain hash stay, so dedup, the chain heads and every lookup
work as before, and each store's reads hand their rows to ``ArchiveTier.fill``, which reads
the missing bytes from the archive. A tier learns the segments from the hot store itself
(``archive_segments``), so any process that opens the store can read them.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from scr.errors import Unavailable
from scr.retention.segments import (
    DATA_SUFFIX,
    MANIFEST_SUFFIX,
    ArchiveError,
    Manifest,
    read_block,
    read_manifest,
)
from scr.store.records import SegmentRow, StoredEntry

CACHED_BLOCKS = 32  # decompressed blocks kept (at most BLOCK_ENTRIES entries each)

SegmentsOf = Callable[[str], list[SegmentRow]]
"""``segments_of(tenant)``: the tenant's archive segments as the hot store lists them."""


class _Id(msgspec.Struct):
    id: int


_id_of = msgspec.json.Decoder(_Id)


class ArchiveTier:
    """Fills archived rows' entries from their segments (thread-safe; caches blocks)."""

    def __init__(self, segments_of: SegmentsOf, folder: Path | None = None) -> None:
        self._segments_of = segments_of
        self._folder = folder  # where the archive is now, when it moved (``--archive-dir``)
        self._lock = threading.Lock()
        self._segments: dict[str, list[SegmentRow]] = {}
        self._manifests: dict[tuple[str, str], Manifest] = {}
        self._blocks: OrderedDict[tuple[str, str, int], list[bytes]] = OrderedDict()

    def fill(self, entries: list[StoredEntry]) -> list[StoredEntry]:
        """The entries with their archived bytes in place (rows of purged leaves left out)."""
        if all(entry.entry for entry in entries):
            return entries
        found = self._read_missing(entries)
        replace = msgspec.structs.replace
        return [
            entry if entry.entry else replace(entry, entry=found[entry.tenant, entry.tenant_seq])
            for entry in entries if entry.entry or (entry.tenant, entry.tenant_seq) in found
        ]

    def fill_by_seq(self, entries: dict[int, StoredEntry]) -> dict[int, StoredEntry]:
        return {entry.seq: entry for entry in self.fill(list(entries.values()))}

    def _read_missing(self, entries: Sequence[StoredEntry]) -> dict[tuple[str, int], bytes]:
        found = {}
        try:
            for entry in entries:
                if not entry.entry:
                    stored = self.entry(entry.tenant, entry.tenant_seq)
                    if stored is not None:
                        if _id_of.decode(stored).id != entry.seq:
                            raise ArchiveError(f"leaf {entry.tenant_seq} of {entry.tenant!r} in the "
                                               f"archive is not ledger entry {entry.seq}")
                        found[entry.tenant, entry.tenant_seq] = stored
        except (ArchiveError, msgspec.DecodeError) as error:
            raise Unavailable(
                f"an archived entry cannot be read: {error}; run `scr archive verify`"
            ) from None
        return found

    def entry(self, tenant: str, leaf: int) -> bytes | None:
        """The stored bytes of a tenant's archived leaf; None when its segment was purged."""
        try:
            return self._entry(tenant, leaf, reload=False)
        except ArchiveError:  # purged (its file deleted) since the listing was read: look again
            return self._entry(tenant, leaf, reload=True)

    def _entry(self, tenant: str, leaf: int, reload: bool) -> bytes | None:
        segment = self._segment(tenant, leaf, reload)
        if segment is None:
            raise ArchiveError(f"no archive segment of {tenant!r} holds leaf {leaf}")
        if segment.purged_at is not None:
            return None
        manifest = self.manifest(segment)
        index = bisect.bisect_right([block.first_leaf for block in manifest.blocks], leaf) - 1
        lines = self._block(segment, manifest, index)
        offset = leaf - manifest.blocks[index].first_leaf
        if not 0 <= offset < len(lines):
            raise ArchiveError(f"segment {segment.name} of {tenant!r} does not hold leaf {leaf}")
        return lines[offset]

    def _segment(self, tenant: str, leaf: int, reload: bool) -> SegmentRow | None:
        for again in (reload, True):
            with self._lock:
                if again or tenant not in self._segments:
                    self._segments[tenant] = self._segments_of(tenant)
                segments = self._segments[tenant]
            index = bisect.bisect_right([s.first_leaf for s in segments], leaf) - 1
            if index >= 0 and segments[index].last_leaf >= leaf:
                return segments[index]
        return None

    def folder_of(self, segment: SegmentRow) -> Path:
        return (self._folder or Path(segment.folder)) / Path(segment.name).parent

    def manifest(self, segment: SegmentRow) -> Manifest:
        """The segment's manifest, checked against the listing's SHA-256 (cached)."""
        key = (segment.tenant, segment.name)
        with self._lock:
            cached = self._manifests.get(key)
        if cached is not None:
            return cached
        path = self.folder_of(segment) / (Path(segment.name).name + MANIFEST_SUFFIX)
        manifest, digest = read_manifest(path)
        if digest != segment.manifest_sha256 or manifest.tenant != segment.tenant:
            raise ArchiveError(f"manifest {path} is not the one the store listed (altered or swapped)")
        with self._lock:
            self._manifests[key] = manifest
        return manifest

    def _block(self, segment: SegmentRow, manifest: Manifest, index: int) -> list[bytes]:
        key = (segment.tenant, segment.name, index)
        with self._lock:
            lines = self._blocks.get(key)
            if lines is not None:
                self._blocks.move_to_end(key)
                return lines
        data = self.folder_of(segment) / (Path(segment.name).name + DATA_SUFFIX)
        lines = read_block(data, manifest.blocks[index])
        with self._lock:
            self._blocks[key] = lines
            while len(self._blocks) > CACHED_BLOCKS:
                self._blocks.popitem(last=False)
        return lines
