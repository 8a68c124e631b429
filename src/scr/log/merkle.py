"""RFC 6962 / RFC 9162 Merkle tree hashing, proof generation and proof verification.

Written here on purpose: no well-kept Python library implements RFC 6962 consistency proofs
(pymerkle uses its own proof format and is GPL-licensed), and the algorithms are short,
pure functions that are checked in the tests against the transparency-dev reference vectors.

Hashing (RFC 9162 §2.1.1): a leaf is ``SHA-256(0x00 ‖ entry bytes)``, an interior node is
``SHA-256(0x01 ‖ left ‖ right)``, the empty tree is ``SHA-256("")``. A tree of ``n`` leaves
splits at ``k``, the largest power of two below ``n``.

Proof generation needs only a ``SubtreeHash``: a function giving the root hash of the
leaves ``[start, end)`` for the ranges the RFC recursion asks for, which are always nodes
of the tree (``start`` is a multiple of a power of two at least ``end - start``). A store
answers those from its perfect subtrees (``scr.log.nodes``); a test answers them naively.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

SubtreeHash = Callable[[int, int], bytes]
"""``subtree(start, end)``: the Merkle root of leaves ``[start, end)`` (a node of the tree)."""


class ProofError(ValueError):
    """A proof that does not verify, or arguments no proof can exist for."""


def leaf_hash(data: bytes) -> bytes:
    """The RFC 6962 leaf hash of one entry's stored bytes."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def leaf_hashes(entries: Sequence[bytes]) -> list[bytes]:
    """The leaf hash of each entry, in order (the reference of ``scr.native.leaf_hashes``)."""
    return [leaf_hash(stored) for stored in entries]


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 6962 hash of an interior node from its two children."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


Node = tuple[int, int, bytes]
"""``(level, index, hash)``: the root of leaves ``[index·2^level, (index+1)·2^level)``."""


def extend_frontier(
    frontier: Sequence[bytes], size: int, leaves: Sequence[bytes]
) -> tuple[list[Node], list[bytes]]:
    """The nodes ``leaves`` complete when appended to a tree of ``size`` leaves whose frontier
    (the roots of its perfect subtrees, largest first) is ``frontier``, each leaf before the
    nodes it closes; and the frontier after them (the reference of
    ``scr.native.extend_frontier``)."""
    if len(frontier) != size.bit_count():
        raise ValueError(
            f"a tree of {size} leaves has {size.bit_count()} frontier hashes, not {len(frontier)}"
        )
    roots = list(frontier)
    if any(len(root) != HASH_SIZE for root in roots):
        raise ValueError(f"frontier hash must be {HASH_SIZE} bytes")
    completed: list[Node] = []
    for leaf in leaves:
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes")
        completed.append((0, size, leaf))
        value, level, index = leaf, 0, size
        while index & 1:  # each trailing one bit of the old size closes a perfect subtree
            value = node_hash(roots.pop(), value)
            level += 1
            index >>= 1
            completed.append((level, index, value))
        roots.append(value)
        size += 1
    return completed, roots


def split_point(size: int) -> int:
    """The largest power of two strictly below ``size`` (``size`` >= 2): where RFC 6962 splits."""
    return 1 << ((size - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of a whole list of leaf hashes (``EMPTY_ROOT`` for none).

    Level by level, pairing neighbours and carrying an odd last node up unchanged: this
    builds exactly the RFC 6962 tree (its right edge is the only incomplete part).
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def inclusion_proof(index: int, tree_size: int, subtree: SubtreeHash) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``tree_size`` leaves (RFC 9162 §2.1.3.1).

    Hashes are ordered from the leaf's sibling up to the root's child, as the verifier reads them.
    """
    if not 0 <= index < tree_size:
        raise ProofError(f"leaf index {index} is not in a tree of size {tree_size}")
    path: list[bytes] = []
    start, end = 0, tree_size
    while end - start > 1:  # walk down from the root; siblings are collected top-down
        middle = start + split_point(end - start)
        if index < middle:
            path.append(subtree(middle, end))
            end = middle
        else:
            path.append(subtree(start, middle))
            start = middle
    path.reverse()
    return path


def consistency_proof(first: int, second: int, subtree: SubtreeHash) -> list[bytes]:
    """The proof that the tree of ``first`` leaves is a prefix of the tree of ``second``.

    RFC 9162 §2.1.4.1 (SUBPROOF); empty when ``first`` is 0 or equals ``second``.
    """
    if not 0 <= first <= second:
        raise ProofError(f"no consistency proof from tree size {first} to {second}")
    if first in (0, second):
        return []
    proof: list[bytes] = []
    start, end = 0, second
    # True while [start, end) is still a subtree the first tree holds whole (the RFC's b).
    whole_in_first = True
    while first != end:  # invariant: start < first <= end
        middle = start + split_point(end - start)
        if first <= middle:
            proof.append(subtree(middle, end))
            end = middle
        else:
            proof.append(subtree(start, middle))
            start = middle
            whole_in_first = False
    if not whole_in_first:
        proof.append(subtree(start, end))
    proof.reverse()
    return proof


def _check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise ProofError(f"{name} must be {HASH_SIZE} bytes")


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for position, value in enumerate(proof):
        _check_hash(f"proof hash {position}", value)


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes]
) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 §2.1.3.2 steps 1-5); raise on a bad shape."""
    _check_hash("leaf hash", leaf_hash)
    _check_proof_hashes(proof)
    if not 0 <= index < tree_size:
        raise ProofError(f"leaf index {index} is not in a tree of size {tree_size}")
    fn, sn, result = index, tree_size - 1, bytes(leaf_hash)
    for sibling in proof:
        if sn == 0:
            raise ProofError(f"inclusion proof is too long for leaf {index} of tree size {tree_size}")
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof is too short for leaf {index} of tree size {tree_size}")
    return result


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree ``root`` of ``tree_size`` leaves.

    Raises ``ProofError`` on any malformed input or a proof that does not lead to ``root``.
    """
    _check_hash("root", root)
    computed = root_from_inclusion_proof(leaf_hash, index, tree_size, proof)
    if computed != root:
        raise ProofError(
            f"inclusion proof of leaf {index} does not lead to the root of tree size {tree_size}"
        )


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree ``first_root`` (``first`` leaves) is a prefix of ``second_root``.

    RFC 9162 §2.1.4.2, with the trivial cases made strict: from size 0 the first root must be
    the empty-tree hash and the proof empty; between equal sizes the roots must be equal and
    the proof empty. Raises ``ProofError`` on anything that does not verify.
    """
    _check_hash("first root", first_root)
    _check_hash("second root", second_root)
    _check_proof_hashes(proof)
    if not 0 <= first <= second:
        raise ProofError(f"no consistency proof from tree size {first} to {second}")
    if first == 0 or first == second:
        if proof:
            raise ProofError(f"consistency proof from {first} to {second} must be empty")
        expected = EMPTY_ROOT if first == 0 else second_root
        if first_root != expected:
            raise ProofError(f"first root is not the root of a tree of size {first} within {second}")
        return
    if not proof:
        raise ProofError(f"consistency proof from {first} to {second} must not be empty")
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: the first tree is itself a node of the second
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first_result = second_result = path[0]
    for value in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof from {first} to {second} is too long")
        if fn & 1 or fn == sn:
            first_result = node_hash(value, first_result)
            second_result = node_hash(value, second_result)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            second_result = node_hash(second_result, value)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof from {first} to {second} is too short")
    if first_result != first_root:
        raise ProofError(f"consistency proof does not lead to the root of tree size {first}")
    if second_result != second_root:
        raise ProofError(f"consistency proof does not lead to the root of tree size {second}")
