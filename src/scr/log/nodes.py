"""An incremental RFC 6962 Merkle tree over a store of perfect-subtree hashes.

A tenant's tree is kept as its *perfect subtrees*: node ``(level, index)`` is the root of
leaves ``[index·2^level, (index+1)·2^level)``, written once when its last leaf arrives and
never changed afterwards (the log is append-only). Any subtree of any past tree, including
a past root, is composed from at most ``log2(n)`` of them, so roots and proofs for any size
cost ``O(log n)`` node reads, and an append writes exactly the nodes it completes (one
leaf plus one node per trailing one bit of the old size), which a SQL store persists in the
same transaction as the entries.

``NodeStore`` is the small protocol a backend implements (one store per tenant);
``MemoryNodeStore`` keeps each level as one packed ``bytearray`` (32 bytes a node), which is
compact enough to rebuild a 10-million-leaf tree in memory for offline verification.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Protocol

from scr.log import merkle
from scr.log.merkle import EMPTY_ROOT, HASH_SIZE, NODE_PREFIX, Node, ProofError, node_hash
from scr.native import extend_frontier

PAIR_SIZE = 2 * HASH_SIZE


class NodeStore(Protocol):
    """Where one tenant's perfect-subtree hashes live."""

    def get(self, level: int, index: int) -> bytes:
        """The hash of node ``(level, index)``; ``KeyError`` if it was never stored."""
        ...

    def put_many(self, items: Iterable[tuple[int, int, bytes]]) -> None:
        """Store new nodes ``(level, index, hash)``; they are never overwritten later."""
        ...

    def size(self) -> int:
        """How many leaves (level-0 nodes) are stored."""
        ...


class MemoryNodeStore:
    """A ``NodeStore`` in memory: each level is one packed ``bytearray``, appended in order."""

    def __init__(self) -> None:
        self._levels: list[bytearray] = []

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: Iterable[bytes]) -> MemoryNodeStore:
        """A store holding the whole tree over ``leaf_hashes``, built level by level."""
        return cls.from_packed_leaf_hashes(b"".join(leaf_hashes))

    @classmethod
    def from_packed_leaf_hashes(cls, packed: bytes | bytearray) -> MemoryNodeStore:
        """Like ``from_leaf_hashes`` from the leaf hashes concatenated into one buffer."""
        if len(packed) % HASH_SIZE:
            raise ValueError(f"packed leaf hashes must be a multiple of {HASH_SIZE} bytes")
        store = cls()
        level = bytearray(packed)
        sha256 = hashlib.sha256
        while level:
            store._levels.append(level)
            view = memoryview(level)
            # A node's children are adjacent in the level below: hash 0x01 ‖ that 64-byte pair.
            level = bytearray().join(
                sha256(NODE_PREFIX + view[offset : offset + PAIR_SIZE]).digest()
                for offset in range(0, len(level) - PAIR_SIZE + 1, PAIR_SIZE)
            )
        return store

    def get(self, level: int, index: int) -> bytes:
        """The hash of node ``(level, index)``; ``KeyError`` if it was never stored."""
        offset = index * HASH_SIZE
        if level < 0 or level >= len(self._levels) or index < 0:
            raise KeyError((level, index))
        packed = self._levels[level]
        if offset + HASH_SIZE > len(packed):
            raise KeyError((level, index))
        return bytes(packed[offset : offset + HASH_SIZE])

    def put_many(self, items: Iterable[tuple[int, int, bytes]]) -> None:
        """Append nodes; each must be the next index of its level (the tree only grows)."""
        for level, index, value in items:
            if len(value) != HASH_SIZE:
                raise ValueError(f"node hash must be {HASH_SIZE} bytes")
            while len(self._levels) <= level:
                self._levels.append(bytearray())
            packed = self._levels[level]
            expected = len(packed) // HASH_SIZE
            if index != expected:
                raise ValueError(f"level {level} expects node index {expected}, got {index}")
            packed += value

    def size(self) -> int:
        """How many leaves are stored."""
        return len(self._levels[0]) // HASH_SIZE if self._levels else 0


def perfect_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """The ``(level, index)`` of the perfect subtrees that make up tree node ``[start, end)``.

    ``[start, end)`` must be a node of an RFC 6962 tree: ``start`` a multiple of a power of
    two at least ``end - start``. The pieces come largest (leftmost) first.
    """
    if not 0 <= start < end:
        raise ValueError(f"[{start}, {end}) is not a range of leaves")
    pieces: list[tuple[int, int]] = []
    offset, width = start, end - start
    for level in reversed(range(width.bit_length())):
        if width >> level & 1:
            if offset % (1 << level):
                raise ValueError(f"[{start}, {end}) is not a node of a Merkle tree")
            pieces.append((level, offset >> level))
            offset += 1 << level
    return pieces


def _fold_right(hashes: list[bytes]) -> bytes:
    """Join perfect subtrees (largest first) into their tree: the right edge hashes first."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


class MerkleTree:
    """One tenant's Merkle tree, kept incrementally in a ``NodeStore``.

    The roots of the perfect subtrees of the current size (the *frontier*) are cached, so an
    append reads nothing. If the transaction that stored an append's nodes is rolled back,
    call ``reload()`` so the cache matches the store again.
    """

    def __init__(self, store: NodeStore) -> None:
        self._store = store
        self._size = 0
        self._frontier: list[bytes] = []
        self.reload()

    def reload(self) -> None:
        """Re-read the size and frontier from the store (after a rollback, or another writer)."""
        size = self._store.size()
        self._frontier = [self._store.get(level, index) for level, index in self._pieces(size)]
        self._size = size

    @staticmethod
    def _pieces(size: int) -> list[tuple[int, int]]:
        return perfect_subtrees(0, size) if size else []

    @property
    def size(self) -> int:
        """How many leaves the tree has."""
        return self._size

    def append(self, leaf_hash: bytes) -> list[Node]:
        """Add one leaf; store and return the nodes it completes (the leaf first)."""
        return self.extend([leaf_hash])

    def extend(self, leaf_hashes: Iterable[bytes]) -> list[Node]:
        """Add leaves in order with one ``put_many``; return every node they complete
        (hashed in one call: ``scr.native.extend_frontier``)."""
        leaves = list(leaf_hashes)
        completed, frontier = extend_frontier(self._frontier, self._size, leaves)
        self._store.put_many(completed)
        # Only once the store took them: a failed put_many leaves the tree as it was.
        self._frontier, self._size = frontier, self._size + len(leaves)
        return completed

    def _check_size(self, tree_size: int) -> None:
        if not 0 <= tree_size <= self._size:
            raise ProofError(f"tree size {tree_size} is beyond the tree (size {self._size})")

    def leaf_hash(self, index: int) -> bytes:
        """The leaf hash stored at ``index``."""
        if not 0 <= index < self._size:
            raise ProofError(f"leaf index {index} is not in the tree (size {self._size})")
        return self._store.get(0, index)

    def subtree_hash(self, start: int, end: int) -> bytes:
        """The root of tree node ``[start, end)`` composed from stored perfect subtrees."""
        self._check_size(end)
        return _fold_right([self._store.get(level, index) for level, index in perfect_subtrees(start, end)])

    def root(self, tree_size: int | None = None) -> bytes:
        """The root hash of the tree at ``tree_size`` leaves (default: now); any past size works."""
        if tree_size is None or tree_size == self._size:
            return _fold_right(self._frontier) if self._frontier else EMPTY_ROOT
        self._check_size(tree_size)
        return self.subtree_hash(0, tree_size) if tree_size else EMPTY_ROOT

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        """The inclusion proof of leaf ``index`` in the tree of ``tree_size`` leaves."""
        self._check_size(tree_size)
        return merkle.inclusion_proof(index, tree_size, self.subtree_hash)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """The proof that the tree at ``first`` leaves is a prefix of the tree at ``second``."""
        self._check_size(second)
        return merkle.consistency_proof(first, second, self.subtree_hash)
