"""The master key: 32 random bytes in base64 in a file of the operator's, never logged.

It never encrypts data itself. Two keys are derived from it (HKDF-SHA256): one wraps the
subjects' data keys (AES-256-GCM, bound to the tenant and subject it belongs to), the other
gives a check value stored beside the data, which tells at start-up whether the configured
key is the one the data was written with.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MASTER_KEY_BYTES = 32
NONCE_BYTES = 12
KEY_FILE_MODE = 0o600
MAX_KEY_FILE_BYTES = 1024  # a key file is 45 bytes; anything far larger is not one
_WRAP_INFO = b"scr master key: wraps data keys v1"
_CHECK_INFO = b"scr master key: check value v1"


class MasterKeyError(Exception):
    """The master key cannot be used: missing, unreadable, malformed or not the data's."""


class MasterKey:
    """Wraps and unwraps data keys; its secret is never shown (``repr`` hides it)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != MASTER_KEY_BYTES:
            raise MasterKeyError(f"a master key is {MASTER_KEY_BYTES} bytes, not {len(secret)}")
        self._wrapping = AESGCM(_derive(secret, _WRAP_INFO))
        self.check_value = _derive(secret, _CHECK_INFO)

    def __repr__(self) -> str:
        return "MasterKey(<secret>)"

    def wrap(self, key: bytes, context: bytes) -> bytes:
        """``key`` encrypted for storage, bound to ``context`` (tenant and subject)."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._wrapping.encrypt(nonce, key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        try:
            return self._wrapping.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)
        except InvalidTag:
            raise MasterKeyError(
                "a stored data key does not open with this master key (another key, or the "
                "stored key was altered)"
            ) from None


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def read_master_key(path: Path) -> MasterKey:
    """The key in ``path``: base64 of 32 bytes, with at most one newline after it."""
    try:
        with path.open("rb") as file:
            text = file.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise MasterKeyError(f"the master key file {path} does not exist") from None
    except OSError as error:
        raise MasterKeyError(f"cannot read the master key file {path}: {error.strerror}") from None
    if len(text) > MAX_KEY_FILE_BYTES:
        raise MasterKeyError(f"the master key file {path} is not a key (over {MAX_KEY_FILE_BYTES} bytes)")
    text = text.removesuffix(b"\n")
    try:
        secret = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(
            f"the master key file {path} is not base64 (it holds {MASTER_KEY_BYTES} random "
            "bytes in base64, e.g. from `scr keys create-master`)"
        ) from None
    if len(secret) != MASTER_KEY_BYTES:
        raise MasterKeyError(
            f"the master key file {path} holds {len(secret)} bytes; a master key is {MASTER_KEY_BYTES}"
        )
    return MasterKey(secret)


def write_master_key(path: Path) -> None:
    """A new random master key in ``path`` (0600); an existing file is never overwritten."""
    write_key_file(path, base64.b64encode(os.urandom(MASTER_KEY_BYTES)) + b"\n")


def write_key_file(path: Path, content: bytes) -> None:
    """A new file only its owner reads (0600), synced to disk; ``FileExistsError`` if there is one."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
