"""Ledger proof benchmark (issue 3): tree upkeep, proof latency at 10,000,000 leaves, verify speed.

(a) append throughput of the incremental tree (one ``append`` per leaf, and ``extend`` in
    group-commit-sized batches) over a ``MemoryNodeStore``;
(b) inclusion and consistency proof latency on a 10,000,000-leaf tree (synthetic leaf
    hashes, the upper levels built level by level), for the newest and for past tree sizes,
    timed with the cyclic GC paused (as ``timeit`` does; the tree itself allocates no cycles);
(c) verify speed: ledger entries re-checked per second the way ``scr ledger verify`` does
    (leaf hash of every entry's stored bytes, rebuild the tree, compare the root), and
    inclusion proofs verified per second.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from scr.log.entry import LedgerEntry, Provenance, entry_bytes
from scr.log.merkle import HASH_SIZE, leaf_hash, verify_consistency, verify_inclusion
from scr.log.nodes import MemoryNodeStore, MerkleTree

PROOF_TREE_LEAVES = int(os.environ.get("SCR_BENCH_PROOF_LEAVES", "10000000"))
APPEND_LEAVES = 200_000
APPEND_BATCH = 1000
PROOF_SAMPLES = 2000
VERIFY_ENTRIES = int(os.environ.get("SCR_BENCH_VERIFY_ENTRIES", "1000000"))
PROOF_TARGET_MS = 5.0
VERIFY_TARGET_PER_S = 500_000
SEED = 6962


def _rate(count: int, seconds: float) -> int:
    return round(count / seconds)


def _latency_ms(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 4),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 4),
        "max_ms": round(ordered[-1] * 1000, 4),
    }


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@contextlib.contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """Collect once, then keep the cyclic GC out of the timed loop (as ``timeit`` does)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def bench_append() -> dict[str, Any]:
    """(a) Leaves appended per second, one at a time and in batches."""
    leaves = [leaf_hash(i.to_bytes(8, "big")) for i in range(APPEND_LEAVES)]
    one_by_one = MerkleTree(MemoryNodeStore())
    seconds_single = _timed(lambda: [one_by_one.append(leaf) for leaf in leaves])
    batched = MerkleTree(MemoryNodeStore())
    seconds_batched = _timed(
        lambda: [batched.extend(leaves[i : i + APPEND_BATCH]) for i in range(0, APPEND_LEAVES, APPEND_BATCH)]
    )
    assert one_by_one.root() == batched.root()
    return {
        "append_leaves": APPEND_LEAVES,
        "append_per_s": _rate(APPEND_LEAVES, seconds_single),
        f"extend_batch_{APPEND_BATCH}_leaves_per_s": _rate(APPEND_LEAVES, seconds_batched),
    }


def bench_proofs(rng: random.Random) -> dict[str, Any]:
    """(b) Proof latency on a large tree built in memory from synthetic leaf hashes."""
    size = PROOF_TREE_LEAVES
    build_start = time.perf_counter()
    store = MemoryNodeStore.from_packed_leaf_hashes(os.urandom(size * HASH_SIZE))
    tree = MerkleTree(store)
    build_s = time.perf_counter() - build_start
    newest_root = tree.root()

    inclusion_newest: list[float] = []
    inclusion_past: list[float] = []
    consistency: list[float] = []
    with _no_gc_pauses():
        for _ in range(PROOF_SAMPLES):
            index = rng.randrange(size)
            inclusion_newest.append(_timed(lambda: tree.inclusion_proof(index, size)))  # noqa: B023
            past = rng.randrange(1, size + 1)
            past_index = rng.randrange(past)
            inclusion_past.append(_timed(lambda: tree.inclusion_proof(past_index, past)))  # noqa: B023
            second = rng.randrange(2, size + 1)
            first = rng.randrange(1, second)
            consistency.append(_timed(lambda: tree.consistency_proof(first, second)))  # noqa: B023

    # The proofs are right, not only fast: spot-check a few against the roots.
    for _ in range(20):
        index = rng.randrange(size)
        verify_inclusion(store.get(0, index), index, size, tree.inclusion_proof(index, size), newest_root)
        first = rng.randrange(1, size)
        verify_consistency(first, size, tree.root(first), newest_root, tree.consistency_proof(first, size))

    return {
        "proof_tree_leaves": size,
        "proof_tree_build_s": round(build_s, 2),
        "inclusion_newest_size": _latency_ms(inclusion_newest),
        "inclusion_past_size": _latency_ms(inclusion_past),
        "consistency": _latency_ms(consistency),
        "proof_target_ms": PROOF_TARGET_MS,
        "proof_target_met": max(inclusion_newest + inclusion_past + consistency) * 1000 < PROOF_TARGET_MS,
    }


def _sample_entries(count: int) -> list[bytes]:
    """Stored bytes of ledger entries about the size of a session.completed event (~800 bytes)."""
    payload = {
        "event_type": "session.completed",
        "session": {"session_id": "s_0", "session_type": "chat", "duration_ms": 120000,
                    "start_time": "2026-11-25T09:58:00Z", "end_time": "2026-11-25T10:00:00Z"},
        "user": {"user_id": "user_42", "organization_id": "org_bench", "tier": "pro"},
        "usage": {"input_tokens": 1200, "output_tokens": 300, "total_tokens": 1500,
                  "model": "gpt-4o", "estimated_cost_usd": "0.0075", "provider": "openai"},
        "outcome": {"status": "success", "final_message": "Here is the summary you asked for."},
        "metadata": {"client_version": "web-2.3.1", "source_ip": "203.0.113.77",
                     "custom_tags": {"feature": "summarize", "region": "eu"}},
    }
    provenance = Provenance(source="http", ref="", author="key_bench")
    entry = LedgerEntry(
        0, "2026-11-25T10:00:05Z", "ingest", "org_bench", "SESSION_COMPLETION", payload, provenance
    )
    template = entry_bytes(entry)
    # Distinct entries without paying for canonical encoding in the timed part.
    return [template + i.to_bytes(8, "big") for i in range(count)]


def bench_verify(rng: random.Random) -> dict[str, Any]:
    """(c) Entries re-checked per second, and inclusion proofs verified per second."""
    entries = _sample_entries(VERIFY_ENTRIES)
    expected = MerkleTree(MemoryNodeStore.from_leaf_hashes(leaf_hash(e) for e in entries)).root()

    start = time.perf_counter()
    rebuilt = MemoryNodeStore.from_packed_leaf_hashes(b"".join(map(leaf_hash, entries)))
    assert MerkleTree(rebuilt).root() == expected
    verify_s = time.perf_counter() - start

    tree = MerkleTree(rebuilt)
    size, root_hash = tree.size, tree.root()
    cases = []
    for _ in range(PROOF_SAMPLES):
        index = rng.randrange(size)
        cases.append((rebuilt.get(0, index), index, tree.inclusion_proof(index, size)))
    start = time.perf_counter()
    for leaf, index, proof in cases:
        verify_inclusion(leaf, index, size, proof, root_hash)
    inclusion_s = time.perf_counter() - start

    entries_per_s = _rate(VERIFY_ENTRIES, verify_s)
    return {
        "verify_entries": VERIFY_ENTRIES,
        "entry_bytes": len(entries[0]),
        "verify_entries_per_s": entries_per_s,
        "verify_target_per_s": VERIFY_TARGET_PER_S,
        "verify_target_met": entries_per_s >= VERIFY_TARGET_PER_S,
        "verify_inclusion_proofs_per_s": _rate(len(cases), inclusion_s),
    }


def main() -> dict[str, Any]:
    """Run every part once and return the figures (``python -m bench bench.bench_proofs``)."""
    rng = random.Random(SEED)
    figures: dict[str, Any] = {}
    figures.update(bench_append())
    figures.update(bench_verify(rng))
    figures.update(bench_proofs(rng))
    return figures


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
