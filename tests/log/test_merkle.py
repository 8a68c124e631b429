"""The ledger's Merkle tree against outside references: RFC 6962 vectors and the RFC recursion.

Reference values come from transparency-dev/merkle (Apache-2.0): ``rfc6962/rfc6962_test.go``
(hasher vectors) and ``proof/verify_test.go`` (roots for sizes 1..8 of the eight leaves below,
and the inclusion and consistency proofs). They are the certificate-transparency test vectors
that Trillian and the Go CT libraries check against; the tests here are our own.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scr.log.entry import LedgerEntry, Provenance, entry_bytes
from scr.log.merkle import (
    EMPTY_ROOT,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from scr.log.nodes import MemoryNodeStore, MerkleTree, perfect_subtrees

LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    bytes(range(0x60, 0x70)),
]

# ROOTS[k] is the root of the tree over LEAVES[: k + 1].
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]

H = bytes.fromhex

# (leaf index from 0, tree size, proof); the Go file numbers leaves from 1.
INCLUSION_VECTORS = [
    (0, 8, [H("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]),
    (5, 8, [H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
    (2, 3, [H("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (1, 5, [H("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]),
]

CONSISTENCY_VECTORS = [
    (1, 1, []),
    (1, 8, [H("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]),
    (6, 8, [H("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
    (2, 5, [H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]),
    (6, 7, [H("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            H("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
]

SOME_HASH = H("abacaba000000000000000000000000000000000000000000060061e00123456")
REFERENCE_SIZE = 64


# --- A naive reference: RFC 6962 §2.1 written as its recursive definitions -----------------


@functools.cache
def ref_mth(leaves: tuple[bytes, ...]) -> bytes:
    """MTH(D[n]) over leaf *hashes*, literally as RFC 6962 defines it."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_path(m: int, leaves: tuple[bytes, ...]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 §2.1.1."""
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: tuple[bytes, ...], whole: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 6962 §2.1.2."""
    if m == len(leaves):
        return [] if whole else [ref_mth(leaves)]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m <= k:
        return [*ref_subproof(m, leaves[:k], whole), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def ref_consistency(m: int, leaves: tuple[bytes, ...]) -> list[bytes]:
    if m in (0, len(leaves)):
        return []
    return ref_subproof(m, leaves, True)


def synthetic_leaves(count: int) -> tuple[bytes, ...]:
    return tuple(leaf_hash(i.to_bytes(8, "big")) for i in range(count))


def tree_of(leaf_hashes: Sequence[bytes]) -> MerkleTree:
    tree = MerkleTree(MemoryNodeStore())
    tree.extend(leaf_hashes)
    return tree


# --- mutations, after transparency-dev's corruptInclusionProof / corruptConsistencyProof ---


def flipped(proof: list[bytes], position: int, bit: int = 3) -> list[bytes]:
    changed = list(proof)
    value = bytearray(changed[position])
    value[0] ^= 1 << bit
    changed[position] = bytes(value)
    return changed


def inclusion_mutations(
    index: int, size: int, proof: list[bytes], root_hash: bytes, leaf: bytes
) -> list[tuple[str, Callable[[], None]]]:
    def probe(i: int, n: int, p: list[bytes], r: bytes = root_hash, h: bytes = leaf) -> Callable[[], None]:
        return lambda: verify_inclusion(h, i, n, p, r)

    cases = [
        ("index - 1", probe(index - 1, size, proof)),
        ("index + 1", probe(index + 1, size, proof)),
        ("index ^ 2", probe(index ^ 2, size, proof)),
        ("size * 2", probe(index, size * 2, proof)),
        ("size / 2", probe(index, size // 2, proof)),
        ("wrong leaf", probe(index, size, proof, h=SOME_HASH)),
        ("empty-tree root", probe(index, size, proof, r=EMPTY_ROOT)),
        ("other root", probe(index, size, proof, r=SOME_HASH)),
        ("extra hash at the end", probe(index, size, [*proof, root_hash])),
        ("extra hash in front", probe(index, size, [root_hash, *proof])),
        ("empty extra element", probe(index, size, [*proof, b""])),
    ]
    cases += [(f"bit flip in hash {i}", probe(index, size, flipped(proof, i))) for i in range(len(proof))]
    if proof:
        cases.append(("missing last hash", probe(index, size, proof[:-1])))
        cases.append(("missing first hash", probe(index, size, proof[1:])))
    if len(proof) > 1:
        cases.append(("inserted hash", probe(index, size, [proof[0], SOME_HASH, *proof[1:]])))
    if len(proof) > 1 and proof[0] != proof[-1]:
        cases.append(("reversed hashes", probe(index, size, proof[::-1])))
    return cases


def consistency_mutations(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: list[bytes]
) -> list[tuple[str, Callable[[], None]]]:
    def probe(
        m: int, n: int, p: list[bytes], r1: bytes = first_root, r2: bytes = second_root
    ) -> Callable[[], None]:
        return lambda: verify_consistency(m, n, r1, r2, p)

    cases = [
        ("first - 1", probe(first - 1, second, proof)),
        ("first + 1", probe(first + 1, second, proof)),
        ("first ^ 2", probe(first ^ 2, second, proof)),
        ("second * 2", probe(first, second * 2, proof)),
        ("second / 2", probe(first, second // 2, proof)),
        ("wrong first root", probe(first, second, proof, r1=SOME_HASH)),
        ("wrong second root", probe(first, second, proof, r2=SOME_HASH)),
        ("swapped roots", probe(first, second, proof, r1=second_root, r2=first_root)),
        ("empty proof", probe(first, second, [])),
        ("extra first root at the end", probe(first, second, [*proof, first_root])),
        ("extra second root at the end", probe(first, second, [*proof, second_root])),
        ("extra hash in front", probe(first, second, [first_root, *proof])),
        ("repeated first hash", probe(first, second, [proof[0], *proof])),
        ("empty extra element", probe(first, second, [b"", *proof])),
        ("missing last hash", probe(first, second, proof[:-1])),
    ]
    cases += [
        (f"bit flip in hash {i}", probe(first, second, flipped(proof, i, 4))) for i in range(len(proof))
    ]
    return cases


def assert_all_rejected(cases: list[tuple[str, Callable[[], None]]], context: str) -> None:
    accepted = []
    for name, check in cases:
        try:
            check()
        except ProofError:
            continue
        accepted.append(name)
    assert not accepted, f"{context}: mutated proofs accepted: {accepted}"


# --- hashing ---------------------------------------------------------------------------------


def test_hashes_match_rfc6962_vectors() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert leaf_hash(b"L123456").hex() == "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    assert node_hash(b"N123", b"N456").hex() == (
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    left, right = leaf_hash(b"Hello"), leaf_hash(b"World")
    assert node_hash(left, right) != leaf_hash(left + right)
    assert node_hash(left, right) != node_hash(right, left)


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_reference_vectors(size: int) -> None:
    hashes = [leaf_hash(leaf) for leaf in LEAVES[:size]]
    assert root(hashes) == ROOTS[size - 1]
    assert tree_of(hashes).root() == ROOTS[size - 1]
    assert MemoryNodeStore.from_leaf_hashes(hashes).size() == size
    assert MerkleTree(MemoryNodeStore.from_leaf_hashes(hashes)).root() == ROOTS[size - 1]


def test_past_roots_of_a_grown_tree_match_reference_vectors() -> None:
    tree = tree_of([leaf_hash(leaf) for leaf in LEAVES])
    assert [tree.root(size) for size in range(1, 9)] == ROOTS
    assert tree.root(0) == EMPTY_ROOT


def test_empty_tree_root_is_the_hash_of_nothing() -> None:
    assert root([]) == EMPTY_ROOT
    assert MerkleTree(MemoryNodeStore()).root() == EMPTY_ROOT


def test_leaf_is_over_the_exact_stored_entry_bytes() -> None:
    entry = LedgerEntry(
        id=1, ts="2026-11-25T10:00:05Z", actor="ingest", tenant_id="org_acme",
        kind="SESSION_COMPLETION", payload={"event_id": "evt_1", "cost": "0.0075"},
        provenance=Provenance(source="http", ref="evt_1", author="key_1"),
    )
    stored = entry_bytes(entry)
    assert leaf_hash(stored) == hashlib.sha256(b"\x00" + stored).digest()
    tree = tree_of([leaf_hash(stored), leaf_hash(b"next entry")])
    proof = tree.inclusion_proof(0, 2)
    verify_inclusion(leaf_hash(stored), 0, 2, proof, tree.root())
    tampered = stored.replace(b"0.0075", b"0.0076")
    with pytest.raises(ProofError, match="does not lead to the root"):
        verify_inclusion(leaf_hash(tampered), 0, 2, proof, tree.root())


# --- reference proofs ------------------------------------------------------------------------


@pytest.mark.parametrize(("index", "size", "expected"), INCLUSION_VECTORS)
def test_inclusion_proofs_match_reference_vectors(index: int, size: int, expected: list[bytes]) -> None:
    hashes = [leaf_hash(leaf) for leaf in LEAVES]
    assert tree_of(hashes).inclusion_proof(index, size) == expected
    verify_inclusion(hashes[index], index, size, expected, ROOTS[size - 1])
    assert_all_rejected(
        inclusion_mutations(index, size, expected, ROOTS[size - 1], hashes[index]), f"leaf {index}/{size}"
    )


@pytest.mark.parametrize(("first", "second", "expected"), CONSISTENCY_VECTORS)
def test_consistency_proofs_match_reference_vectors(first: int, second: int, expected: list[bytes]) -> None:
    tree = tree_of([leaf_hash(leaf) for leaf in LEAVES])
    assert tree.consistency_proof(first, second) == expected
    verify_consistency(first, second, ROOTS[first - 1], ROOTS[second - 1], expected)
    if expected:
        assert_all_rejected(
            consistency_mutations(first, second, ROOTS[first - 1], ROOTS[second - 1], expected),
            f"{first} -> {second}",
        )


def test_all_inclusion_proofs_up_to_64_leaves_match_the_rfc_recursion() -> None:
    leaves = synthetic_leaves(REFERENCE_SIZE)
    tree = tree_of(leaves)
    for size in range(1, REFERENCE_SIZE + 1):
        root_hash = ref_mth(leaves[:size])
        assert tree.root(size) == root_hash
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            assert proof == ref_path(index, leaves[:size]), (index, size)
            verify_inclusion(leaves[index], index, size, proof, root_hash)
            assert_all_rejected(
                inclusion_mutations(index, size, proof, root_hash, leaves[index]), f"leaf {index}/{size}"
            )


def test_all_consistency_proofs_up_to_64_leaves_match_the_rfc_recursion() -> None:
    leaves = synthetic_leaves(REFERENCE_SIZE)
    tree = tree_of(leaves)
    for second in range(1, REFERENCE_SIZE + 1):
        second_root = ref_mth(leaves[:second])
        for first in range(0, second + 1):
            first_root = ref_mth(leaves[:first])
            proof = tree.consistency_proof(first, second)
            assert proof == ref_consistency(first, leaves[:second]), (first, second)
            verify_consistency(first, second, first_root, second_root, proof)
            if proof:
                assert_all_rejected(
                    consistency_mutations(first, second, first_root, second_root, proof),
                    f"{first} -> {second}",
                )


def test_generation_from_a_naive_subtree_source_matches_the_tree() -> None:
    leaves = synthetic_leaves(37)
    tree = tree_of(leaves)

    def naive(start: int, end: int) -> bytes:
        return root(leaves[start:end])

    assert inclusion_proof(20, 37, naive) == tree.inclusion_proof(20, 37)
    assert consistency_proof(13, 37, naive) == tree.consistency_proof(13, 37)


# --- trivial and malformed cases -------------------------------------------------------------


def test_single_leaf_tree_needs_an_empty_proof() -> None:
    leaf = leaf_hash(b"data")
    verify_inclusion(leaf, 0, 1, [], leaf)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, 0, 1, [], SOME_HASH)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, 0, 1, [leaf], leaf)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (1, 1), (2, 1), (-1, 4), (8, 8)])
def test_inclusion_rejects_an_index_outside_the_tree(index: int, size: int) -> None:
    with pytest.raises(ProofError, match="not in a tree"):
        verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)
    with pytest.raises(ProofError, match="not in a tree"):
        inclusion_proof(index, size, lambda start, end: SOME_HASH)


@pytest.mark.parametrize(
    ("leaf", "proof", "root_hash", "message"),
    [
        (b"", [], SOME_HASH, "leaf hash must be 32 bytes"),
        (SOME_HASH, [], b"short", "root must be 32 bytes"),
        (SOME_HASH, [SOME_HASH[:31], SOME_HASH], SOME_HASH, "proof hash 0 must be 32 bytes"),
        (SOME_HASH, [SOME_HASH, SOME_HASH + b"x"], SOME_HASH, "proof hash 1 must be 32 bytes"),
    ],
)
def test_inclusion_rejects_hashes_of_the_wrong_length(
    leaf: bytes, proof: list[bytes], root_hash: bytes, message: str
) -> None:
    with pytest.raises(ProofError, match=message):
        verify_inclusion(leaf, 0, 4, proof, root_hash)


def test_inclusion_names_a_proof_of_the_wrong_length() -> None:
    leaves = synthetic_leaves(8)
    proof = tree_of(leaves).inclusion_proof(3, 8)
    with pytest.raises(ProofError, match="too long"):
        root_from_inclusion_proof(leaves[3], 3, 8, [*proof, SOME_HASH])
    with pytest.raises(ProofError, match="too short"):
        root_from_inclusion_proof(leaves[3], 3, 8, proof[:-1])


def test_trivial_consistency_cases() -> None:
    some_root = ROOTS[3]
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, some_root, [])
    verify_consistency(4, 4, some_root, some_root, [])
    with pytest.raises(ProofError, match="root of a tree of size 4"):
        verify_consistency(4, 4, some_root, SOME_HASH, [])
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency(4, 4, some_root, some_root, [EMPTY_ROOT])
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency(0, 4, EMPTY_ROOT, some_root, [EMPTY_ROOT])
    with pytest.raises(ProofError, match="root of a tree of size 0"):
        verify_consistency(0, 4, SOME_HASH, some_root, [])


@pytest.mark.parametrize(("first", "second"), [(1, 0), (5, 4), (-1, 3), (-2, -1)])
def test_consistency_rejects_sizes_going_backwards(first: int, second: int) -> None:
    with pytest.raises(ProofError, match="no consistency proof"):
        verify_consistency(first, second, SOME_HASH, SOME_HASH, [SOME_HASH])
    with pytest.raises(ProofError, match="no consistency proof"):
        consistency_proof(first, second, lambda start, end: SOME_HASH)


def test_consistency_rejects_hashes_of_the_wrong_length() -> None:
    with pytest.raises(ProofError, match="first root must be 32 bytes"):
        verify_consistency(1, 2, b"WrongRoot", SOME_HASH, [SOME_HASH])
    with pytest.raises(ProofError, match="second root must be 32 bytes"):
        verify_consistency(1, 2, SOME_HASH, b"", [SOME_HASH])
    with pytest.raises(ProofError, match="proof hash 0 must be 32 bytes"):
        verify_consistency(1, 2, SOME_HASH, SOME_HASH, [b"x" * 33])


# --- the incremental tree --------------------------------------------------------------------


def test_append_stores_exactly_the_perfect_subtrees_it_completes() -> None:
    hashes = [leaf_hash(leaf) for leaf in LEAVES]
    tree = tree_of(hashes[:7])
    completed = tree.append(hashes[7])
    h01, h23 = node_hash(hashes[0], hashes[1]), node_hash(hashes[2], hashes[3])
    h45, h67 = node_hash(hashes[4], hashes[5]), node_hash(hashes[6], hashes[7])
    assert completed == [
        (0, 7, hashes[7]),
        (1, 3, h67),
        (2, 1, node_hash(h45, h67)),
        (3, 0, ROOTS[7]),
    ]
    assert node_hash(h01, h23) == tree.subtree_hash(0, 4)
    assert tree.append(leaf_hash(b"ninth")) == [(0, 8, leaf_hash(b"ninth"))]


def test_extend_equals_one_append_at_a_time() -> None:
    leaves = synthetic_leaves(100)
    one_by_one = MerkleTree(MemoryNodeStore())
    nodes = [node for leaf in leaves for node in one_by_one.append(leaf)]
    batched = MerkleTree(MemoryNodeStore())
    assert batched.extend(leaves[:33]) + batched.extend(leaves[33:]) == nodes
    assert batched.root() == one_by_one.root() == root(leaves)
    # 100 leaves close 100 + 50 + 25 + 12 + 6 + 3 + 1 perfect subtrees.
    assert len(nodes) == 197


def test_bulk_built_store_holds_the_same_nodes_as_incremental_appends() -> None:
    for size in (1, 2, 3, 31, 64, 65, 100):
        leaves = synthetic_leaves(size)
        bulk = MemoryNodeStore.from_leaf_hashes(leaves)
        incremental = MemoryNodeStore()
        expected = MerkleTree(incremental).extend(leaves)
        assert [bulk.get(level, index) for level, index, _ in expected] == [h for *_, h in expected]
        assert bulk.size() == incremental.size() == size


def test_a_tree_reopened_on_its_store_continues_where_it_stopped() -> None:
    leaves = synthetic_leaves(45)
    store = MemoryNodeStore()
    MerkleTree(store).extend(leaves[:29])
    reopened = MerkleTree(store)
    assert reopened.size == 29
    reopened.extend(leaves[29:])
    assert reopened.root() == root(leaves)
    assert reopened.root(29) == root(leaves[:29])


def test_reload_sees_nodes_another_writer_added() -> None:
    store = MemoryNodeStore()
    reader, writer = MerkleTree(store), MerkleTree(store)
    writer.extend(synthetic_leaves(10))
    assert reader.size == 0
    reader.reload()
    assert (reader.size, reader.root()) == (10, writer.root())


def test_tree_refuses_sizes_and_leaves_it_does_not_have() -> None:
    tree = tree_of(synthetic_leaves(10))
    for call in (
        lambda: tree.root(11),
        lambda: tree.inclusion_proof(3, 11),
        lambda: tree.consistency_proof(5, 11),
        lambda: tree.inclusion_proof(10, 10),
        lambda: tree.consistency_proof(6, 5),
        lambda: tree.leaf_hash(10),
        lambda: tree.root(-1),
    ):
        with pytest.raises(ProofError):
            call()
    with pytest.raises(ValueError, match="32 bytes"):
        tree.append(b"not a hash")
    assert tree.size == 10


def test_memory_store_refuses_out_of_order_and_unknown_nodes() -> None:
    store = MemoryNodeStore()
    store.put_many([(0, 0, SOME_HASH)])
    with pytest.raises(ValueError, match="expects node index 1"):
        store.put_many([(0, 5, SOME_HASH)])
    with pytest.raises(ValueError, match="32 bytes"):
        store.put_many([(0, 1, b"short")])
    with pytest.raises(KeyError):
        store.get(0, 1)
    with pytest.raises(KeyError):
        store.get(3, 0)
    with pytest.raises(ValueError, match="multiple of 32"):
        MemoryNodeStore.from_packed_leaf_hashes(b"x" * 33)


def test_perfect_subtrees_decompose_only_tree_nodes() -> None:
    assert perfect_subtrees(0, 13) == [(3, 0), (2, 2), (0, 12)]
    assert perfect_subtrees(8, 13) == [(2, 2), (0, 12)]
    assert perfect_subtrees(16, 17) == [(0, 16)]
    with pytest.raises(ValueError, match="not a node"):
        perfect_subtrees(2, 7)
    with pytest.raises(ValueError, match="not a range"):
        perfect_subtrees(5, 5)


class CountingStore(MemoryNodeStore):
    """A real memory store that counts its reads, to check the O(log n) promise."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, level: int, index: int) -> bytes:
        self.reads += 1
        return super().get(level, index)


def test_roots_and_proofs_read_a_logarithmic_number_of_nodes() -> None:
    size = 100_003
    store = CountingStore()
    tree = MerkleTree(store)
    tree.extend(synthetic_leaves(size))
    assert store.reads == 0  # appends read nothing: the frontier is cached
    depth = size.bit_length()
    for call, bound in (
        (lambda: tree.root(77_777), depth),
        (lambda: tree.inclusion_proof(54_321, 99_999), 2 * depth),
        (lambda: tree.consistency_proof(12_345, 100_001), 2 * depth + 1),
    ):
        store.reads = 0
        call()
        assert store.reads <= bound


# --- properties ------------------------------------------------------------------------------


@st.composite
def tree_and_leaf(draw: st.DrawFn) -> tuple[tuple[bytes, ...], int, int]:
    size = draw(st.integers(1, 300))
    index = draw(st.integers(0, size - 1))
    leaves = tuple(leaf_hash(draw(st.binary(max_size=8)) + i.to_bytes(2, "big")) for i in range(size))
    return leaves, index, size


@settings(max_examples=150, deadline=None)
@given(tree_and_leaf(), st.data())
def test_any_leaf_proves_in_and_a_changed_proof_never_does(
    case: tuple[tuple[bytes, ...], int, int], data: st.DataObject
) -> None:
    leaves, index, size = case
    tree = tree_of(leaves)
    proof = tree.inclusion_proof(index, size)
    verify_inclusion(leaves[index], index, size, proof, tree.root())
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 8 * 32 - 1))
        changed = list(proof)
        value = bytearray(changed[position])
        value[bit // 8] ^= 1 << (bit % 8)
        changed[position] = bytes(value)
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, size, changed, tree.root())
    other = data.draw(st.integers(0, size - 1))
    if leaves[other] != leaves[index]:
        with pytest.raises(ProofError):
            verify_inclusion(leaves[other], index, size, proof, tree.root())


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 300), st.data())
def test_every_past_tree_is_consistent_with_every_later_one(second: int, data: st.DataObject) -> None:
    first = data.draw(st.integers(0, second))
    leaves = synthetic_leaves(second)
    tree = tree_of(leaves)
    proof = tree.consistency_proof(first, second)
    verify_consistency(first, second, root(leaves[:first]), root(leaves), proof)
    # A log that rewrote any leaf before `first` cannot prove it extends the old tree.
    if first:
        rewritten = list(leaves)
        rewritten[data.draw(st.integers(0, first - 1))] = leaf_hash(b"rewritten")
        forked = tree_of(rewritten)
        with pytest.raises(ProofError):
            verify_consistency(first, second, root(leaves[:first]), forked.root(),
                               forked.consistency_proof(first, second))
