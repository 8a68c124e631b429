"""The partition of a tenant: a stable hash, the same in every instance, store and version.

A tenant lives in exactly one partition, so its hash chain and Merkle tree keep a single
writer (the partition's owner). The hash must never change: instances of different versions
would otherwise disagree on who owns a tenant.
"""

from __future__ import annotations

import hashlib

PARTITION_HASH_BYTES = 8


def partition_of(tenant: str, partitions: int) -> int:
    """The partition (0 .. partitions-1) of ``tenant``: BLAKE2b-64 of its UTF-8 name, modulo."""
    digest = hashlib.blake2b(tenant.encode(), digest_size=PARTITION_HASH_BYTES).digest()
    return int.from_bytes(digest, "big") % partitions
