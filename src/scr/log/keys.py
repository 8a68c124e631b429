"""Event keys' 64-bit hashes, and the pure-Python reference of the native dedup index
(``scr._core.KeyIndex``, keys.rs).

Every event key's 64-bit hash (``event_key``) maps to its ledger seq; 0
stands for none, so a log record ``(hash, 0)`` removes a key (its entry was purged). The log
records are 16 bytes each: the hash, then the seq, both signed little-endian.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

RECORD = struct.Struct("<qq")


def event_key(tenant: str, event_id: str) -> int:
    """The signed 64-bit hash of ``(tenant, event_id)`` (the embedded store's dedup key)."""
    digest = hashlib.blake2b(f"{tenant}\0{event_id}".encode(), digest_size=8).digest()
    return int(struct.unpack("<q", digest)[0])


def event_keys(tenants: Sequence[str], event_ids: Sequence[str]) -> list[int]:
    """The hash of each ``(tenant, event id)``."""
    if len(tenants) != len(event_ids):
        raise ValueError(
            f"event_keys needs one tenant per event id: {len(tenants)} tenants for {len(event_ids)} ids"
        )
    return [event_key(tenant, event_id) for tenant, event_id in zip(tenants, event_ids, strict=True)]


class KeyIndex:
    """Key hash to seq, in a dict (about 100 bytes a key, where the native one takes 20-40)."""

    def __init__(self) -> None:
        self._seqs: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._seqs)

    def seqs(self, keys: Sequence[int]) -> list[int]:
        """The seq each key maps to, 0 where none."""
        found = self._seqs.get
        return [found(key, 0) for key in keys]

    def insert(self, keys: Sequence[int], seqs: Sequence[int]) -> bytes:
        """Map each key to its seq; the pairs' log records."""
        if len(keys) != len(seqs):
            raise ValueError(f"insert needs one seq per key: {len(keys)} keys for {len(seqs)} seqs")
        self._seqs.update(zip(keys, seqs, strict=True))
        return b"".join(RECORD.pack(key, seq) for key, seq in zip(keys, seqs, strict=True))

    def load(self, log: bytes) -> tuple[int, int]:
        """Insert the whole records of ``log``: (bytes that were whole records, largest seq)."""
        whole = len(log) - len(log) % RECORD.size
        last = 0
        for key, seq in RECORD.iter_unpack(log[:whole]):
            self._seqs[key] = seq
            last = max(last, seq)
        return whole, last
