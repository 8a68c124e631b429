"""The subjects' keys: a keyed hash names each subject, a data key per subject seals its data.

A subject is a tenant's user. Its name in the ledger, the store and every lookup is
``HMAC-SHA256(hash key, tenant, user_id)`` (16 bytes in hex), never the user id: the hash
key is random, made once per data folder or database and kept wrapped by the master key, so
the names stay the same when the master key is rotated.

Each subject has a random 256-bit data key per *generation*, wrapped by the master key and
bound to the tenant and subject. Erasure destroys the stored key (its row keeps the
generation and the time); events of the same user that come later get a new generation.

``Subjects.open`` checks the master key against the check value stored with the data on
its first start (``MasterKeyError`` if another key is configured). The writer seals with a
``KeyRing`` (keys made in a group commit are forgotten if the group fails); every other
process opens sealed fields with an ``Opener``, whose keys are trusted for ``OPEN_TTL_S``:
an erasure reaches them within that time.
"""

from __future__ import annotations

import hmac
import os
import time
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from scr.privacy.master import MasterKey, MasterKeyError, read_master_key
from scr.store.protocol import Store, Transaction

DATA_KEY_BYTES = 32
SUBJECT_BYTES = 16
CHECK_VALUE = "master_check"
HASH_KEY = "subject_hash_key"
OPEN_TTL_S = 1.0  # how long a reading process trusts a data key it loaded (erasure's reach)
MAX_CACHED_KEYS = 100_000  # per process; past it the cache starts over


class Subjects:
    """The subjects of one store, under one master key.

    After a rotation (``scr keys rotate-master``) the store's keys are wrapped by the new
    master key, which the rotation put in the key file first: a process that finds a key it
    cannot open, or is about to wrap a new one, takes the new key from ``path`` once the
    data names it (its check value), so running processes follow without a restart.
    """

    def __init__(self, store: Store, master: MasterKey, hash_key: bytes, path: Path | None = None) -> None:
        self.store, self.master, self.path = store, master, path
        self._hash_key = hash_key

    @classmethod
    def open(cls, store: Store, master: MasterKey, path: Path | None = None) -> Subjects:
        """Check ``master`` (read from ``path``) against the data (set it up on a first start)."""
        check, wrapped = store.privacy_value(CHECK_VALUE), store.privacy_value(HASH_KEY)
        if check is None or wrapped is None:
            hash_key = os.urandom(DATA_KEY_BYTES)
            store.set_privacy_values({CHECK_VALUE: master.check_value,
                                      HASH_KEY: master.wrap(hash_key, HASH_KEY.encode())})
            # two processes may start at once: whichever wrote first is what counts
            check, wrapped = store.privacy_value(CHECK_VALUE), store.privacy_value(HASH_KEY)
            assert check is not None and wrapped is not None
        if not hmac.compare_digest(check, master.check_value):
            raise MasterKeyError("the configured master key is not the one this data was written "
                                 "with (its check value differs)")
        return cls(store, master, master.unwrap(wrapped, HASH_KEY.encode()), path)

    def subject_of(self, tenant: str, user_id: str) -> str:
        """The subject's keyed hash."""
        return hmac.digest(self._hash_key, subject_text(tenant, user_id), "sha256")[:SUBJECT_BYTES].hex()

    def unwrap(self, tenant: str, subject: str, wrapped: bytes) -> bytes:
        try:
            return self.master.unwrap(wrapped, _context(tenant, subject))
        except MasterKeyError:
            if not self.follow_rotation():
                raise
            return self.master.unwrap(wrapped, _context(tenant, subject))

    def wrap(self, tx: Transaction, tenant: str, subject: str, key: bytes) -> bytes:
        """``key`` wrapped by the master key the data names in ``tx`` (never a rotated-out one)."""
        check = self.store.privacy_value(CHECK_VALUE, tx)
        if check != self.master.check_value and not self.follow_rotation():
            raise MasterKeyError("the master key was rotated, and the key file does not hold the new one")
        return self.master.wrap(key, _context(tenant, subject))

    def follow_rotation(self) -> bool:
        """Take the master key in ``path`` if the data now names it (it was rotated)."""
        if self.path is None:
            return False
        try:
            master = read_master_key(self.path)
        except MasterKeyError:
            return False
        check = self.store.privacy_value(CHECK_VALUE)
        if check is None or master.check_value == self.master.check_value:
            return False
        if not hmac.compare_digest(check, master.check_value):
            return False
        self.master = master
        return True

    def rotate(self, tx: Transaction, new: MasterKey) -> int:
        """Wrap every live data key and the hash key by ``new`` in ``tx``; how many data keys.
        The caller has put ``new`` in the key file first."""
        def rewrap(tenant: str, subject: str, wrapped: bytes) -> bytes:
            context = _context(tenant, subject)
            return new.wrap(self.master.unwrap(wrapped, context), context)

        return self.store.rewrap_subject_keys(tx, rewrap, {
            CHECK_VALUE: new.check_value, HASH_KEY: new.wrap(self._hash_key, HASH_KEY.encode()),
        })


class SealingKey(NamedTuple):
    generation: int
    key: bytes
    cipher: AESGCM  # AESGCM(key), made once per subject


class KeyRing:
    """The writer's data keys for sealing: the newest generation of each subject."""

    def __init__(self, subjects: Subjects) -> None:
        self.subjects = subjects
        self._keys: dict[tuple[str, str], SealingKey] = {}
        self._made: list[tuple[str, str]] = []  # made in the open group commit

    def key_for(self, tx: Transaction, tenant: str, subject: str) -> SealingKey:
        """The key to seal with; a subject's first (or first after erasure) event makes a new
        key, stored in ``tx``."""
        found = self._keys.get((tenant, subject))
        if found is not None:
            return found
        store = self.subjects.store
        generations = store.subject_keys(tenant, subject, tx)
        newest = max(generations, default=0)
        wrapped = generations.get(newest)
        if wrapped is not None:
            key = self.subjects.unwrap(tenant, subject, wrapped)
            found = SealingKey(newest, key, AESGCM(key))
        else:  # none yet, or the newest was erased
            key = os.urandom(DATA_KEY_BYTES)
            store.add_subject_key(tx, tenant, subject, newest + 1,
                                  self.subjects.wrap(tx, tenant, subject, key))
            found = SealingKey(newest + 1, key, AESGCM(key))
            self._made.append((tenant, subject))
        if len(self._keys) >= MAX_CACHED_KEYS:  # start over, keeping this group's new keys
            self._keys = {k: self._keys[k] for k in self._made if k in self._keys}
        self._keys[(tenant, subject)] = found
        return found

    def mark(self) -> int:
        return len(self._made)

    def restore(self, mark: int) -> None:
        """Forget the keys made since ``mark`` (their write was rolled back)."""
        for made in self._made[mark:]:
            self._keys.pop(made, None)
        del self._made[mark:]

    def settle(self, committed: bool) -> None:
        """The group commit ended: keep its new keys only if it committed."""
        if not committed:
            self.restore(0)
        self._made.clear()

    def forget(self, tenant: str, subject: str) -> None:
        """The subject was erased: its next event makes a new key."""
        self._keys.pop((tenant, subject), None)


class Opener:
    """Data keys for opening sealed fields, loaded from the store and trusted briefly."""

    def __init__(self, subjects: Subjects) -> None:
        self.subjects = subjects
        self._keys: dict[tuple[str, str, int], tuple[float, bytes | None]] = {}

    def key(self, tenant: str, subject: str, generation: int) -> bytes | None:
        """The data key of that generation; None when it was erased (or never existed)."""
        now = time.monotonic()
        found = self._keys.get((tenant, subject, generation))
        if found is not None and now - found[0] < OPEN_TTL_S:
            return found[1]
        wrapped = self.subjects.store.subject_keys(tenant, subject).get(generation)
        key = None if wrapped is None else self.subjects.unwrap(tenant, subject, wrapped)
        if len(self._keys) >= MAX_CACHED_KEYS:
            self._keys.clear()
        self._keys[(tenant, subject, generation)] = (now, key)
        return key

    def forget(self, tenant: str, subject: str) -> None:
        for cached in [k for k in self._keys if k[0] == tenant and k[1] == subject]:
            del self._keys[cached]


def subject_text(tenant: str, user_id: str) -> bytes:
    """What a subject's name hashes: the tenant's length first, so no two pairs give one text."""
    return f"{len(tenant)}:{tenant}{user_id}".encode()


def _context(tenant: str, subject: str) -> bytes:
    return f"scr data key\0{tenant}\0{subject}".encode()
