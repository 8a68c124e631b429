"""The segment format on its own: what a reader gets back, and the tree it proves."""

from __future__ import annotations

import gzip
from dataclasses import replace
from pathlib import Path

from scr.log.entry import GENESIS_HASH
from scr.log.merkle import leaf_hash, root
from scr.retention.segments import BLOCK_ENTRIES, Archived, Frontier, read_manifest, write_segment
from scr.retention.tiers import ArchiveTier
from scr.store.records import SegmentRow

ENTRIES = 2 * BLOCK_ENTRIES + 10  # three blocks


def entry(seq: int) -> bytes:
    return b'{"id":%d,"kind":"SESSION_COMPLETION","tenant_id":"org_acme"}' % seq


def test_a_segment_holds_the_stored_bytes_and_the_roots_that_prove_them(tmp_path: Path) -> None:
    before = [leaf_hash(entry(seq)) for seq in range(1, 6)]  # leaves 0..4, archived earlier
    frontier = Frontier()
    frontier.extend(before)
    archived = [Archived(seq, seq - 1, f"2026-01-01T00:00:{seq % 60:02d}.000000Z", entry(seq))
                for seq in range(6, 6 + ENTRIES)]
    manifest = write_segment(tmp_path, "org_acme", archived, GENESIS_HASH, frontier, None, "now")
    data = tmp_path / manifest.file
    assert gzip.decompress(data.read_bytes()).splitlines() == [a.entry for a in archived]  # zcat reads it
    assert len(manifest.blocks) == 3 and manifest.blocks[1].first_leaf == 5 + BLOCK_ENTRIES
    everything = before + [leaf_hash(a.entry) for a in archived]
    assert bytes.fromhex(manifest.root_hash) == root(everything)  # from the frontier, not the leaves before
    alone = Frontier(manifest.first_leaf, [bytes.fromhex(h) for h in manifest.frontier])
    alone.extend(leaf_hash(a.entry) for a in archived)
    assert alone.root() == root(everything)
    assert not list(tmp_path.glob("*.tmp"))


def test_a_reader_finds_each_leaf_and_forgets_a_segment_purged_behind_its_back(tmp_path: Path) -> None:
    archived = [Archived(seq, seq - 1, "2026-01-01T00:00:00.000000Z", entry(seq))
                for seq in range(1, ENTRIES + 1)]
    folder = tmp_path / "org_acme"
    manifest = write_segment(folder, "org_acme", archived, GENESIS_HASH, Frontier(), None, "now")
    _, digest = read_manifest(tmp_path / "org_acme" / f"{manifest.name}.manifest.json")
    listed = SegmentRow("org_acme", 0, ENTRIES - 1, 1, ENTRIES, str(tmp_path), f"org_acme/{manifest.name}",
                        digest, manifest.max_ts, "now")
    listing = [listed]
    tier = ArchiveTier(lambda tenant: list(listing) if tenant == "org_acme" else [])
    assert tier.entry("org_acme", 0) == entry(1)
    assert tier.entry("org_acme", ENTRIES - 1) == entry(ENTRIES)  # the third block
    (tmp_path / "org_acme" / manifest.file).unlink()  # purged since the tier read the listing
    listing[0] = replace(listed, purged_at="later")
    assert tier.entry("org_acme", BLOCK_ENTRIES + 3) is None  # a block not read before: purged, no error
