"""Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes, with Ed25519.

A checkpoint states a tenant's tree head::

    <origin>\\n<tree size>\\n<base64 root hash>\\n

and is signed as a note (c2sp.org/signed-note): the body, a blank line, then one line per
signature ``— <key name> <base64(key id ‖ Ed25519 signature)>``. The key id is the first 4
bytes of ``SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key)``; the public *verifier key* that
auditors configure is ``<key name>+<key id hex>+<base64(0x01 ‖ public key)>``.

One key signs every tenant's tree; each tenant's tree has its own origin,
``<key name>/<tenant>`` (``origin_for``), so a checkpoint of one tenant can never pass for
another's. The private key is a PEM file (PKCS #8) created with mode 0600 on first use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from scr.fsync import fsync_path
from scr.log.merkle import HASH_SIZE

ED25519_TYPE = b"\x01"
KEY_ID_SIZE = 4
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SIGNATURE_PREFIX = "— "  # em dash (U+2014), space
MAX_NOTE_BYTES = 1024 * 1024
MAX_SIGNATURES = 100  # the spec asks verifiers to accept at least 16
PRIVATE_KEY_MODE = 0o600

# Key names: non-empty, no Unicode whitespace and no '+' (c2sp.org/signed-note).
_KEY_NAME = re.compile(r"[^\s+]+")
_TREE_SIZE = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


class CheckpointError(ValueError):
    """A note or checkpoint that is malformed, unsigned by the expected key, or tampered with."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: which log (``origin``), how many leaves, and the root hash at that size."""

    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or _CONTROL.search(self.origin):
            raise CheckpointError("origin must be one non-empty line without control characters")
        if self.tree_size < 0:
            raise CheckpointError("tree size must be >= 0")
        if len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"root hash must be {HASH_SIZE} bytes")
        for line in self.extensions:
            if not line or "\n" in line or _CONTROL.search(line):
                raise CheckpointError("extension lines must be non-empty single lines")

    def body(self) -> bytes:
        """The checkpoint note text: ``<origin>\\n<size>\\n<base64 root>\\n`` (+ extension lines)."""
        root_line = base64.b64encode(self.root_hash).decode()
        lines = [self.origin, str(self.tree_size), root_line, *self.extensions]
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def parse(cls, text: str | bytes) -> Checkpoint:
        """Read a checkpoint from its note text (not signed: use ``verify_note`` for that)."""
        text = _as_text(text)
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("checkpoint needs origin, tree size and root hash lines")
        origin, size_line, root_line, *extensions = lines
        if not _TREE_SIZE.fullmatch(size_line):
            raise CheckpointError(f"tree size {size_line!r} is not a decimal without leading zeros")
        return cls(origin, int(size_line), _b64decode(root_line, "root hash"), tuple(extensions))


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line of a note: key name, 4-byte key id and the raw signature."""

    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignedNote:
    """A note split into its text (with its final newline) and its signature lines."""

    text: str
    signatures: tuple[NoteSignature, ...]


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A parsed Ed25519 verifier key ``<name>+<key id hex>+<base64(0x01 ‖ public key)>``."""

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """Parse and check a verifier key string; ``CheckpointError`` if it is not one."""
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise CheckpointError("verifier key must be <name>+<key id hex>+<base64 key>")
        name, id_hex, encoded = parts
        _check_key_name(name)
        if not re.fullmatch(r"[0-9a-fA-F]{8}", id_hex):
            raise CheckpointError("verifier key id must be 8 hex digits")
        typed_key = _b64decode(encoded, "verifier key")
        if len(typed_key) != 1 + PUBLIC_KEY_SIZE or typed_key[:1] != ED25519_TYPE:
            raise CheckpointError("verifier key is not an Ed25519 (type 0x01) key")
        public_key = typed_key[1:]
        key_id = bytes.fromhex(id_hex)
        if key_id != key_id_for(name, public_key):
            raise CheckpointError("verifier key id does not match its name and public key")
        return cls(name, key_id, public_key)

    def __str__(self) -> str:
        encoded = base64.b64encode(ED25519_TYPE + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"


def key_id_for(name: str, public_key: bytes) -> bytes:
    """The 4-byte C2SP key id of an Ed25519 key: ``SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[:4]``."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + public_key).digest()[:KEY_ID_SIZE]


def origin_for(name: str, tenant: str) -> str:
    """The checkpoint origin of one tenant's tree: ``<key name>/<tenant>``."""
    return f"{name}/{tenant}"


def _check_key_name(name: str) -> None:
    if not _KEY_NAME.fullmatch(name):
        raise CheckpointError(f"key name {name!r} must be non-empty, without spaces or '+'")


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"{what} is not valid base64") from None


def _as_text(note: str | bytes) -> str:
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_BYTES:
            raise CheckpointError(f"note is over {MAX_NOTE_BYTES} bytes")
        try:
            return note.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("note is not valid UTF-8") from None
    return note


def parse_note(note: str | bytes) -> SignedNote:
    """Split a signed note into text and signatures, checking the C2SP format strictly."""
    note = _as_text(note)
    if len(note.encode()) > MAX_NOTE_BYTES:
        raise CheckpointError(f"note is over {MAX_NOTE_BYTES} bytes")
    if _CONTROL.search(note):
        raise CheckpointError("note contains control characters")
    if not note.endswith("\n"):
        raise CheckpointError("note must end with a newline")
    # The text ends at the last blank line; everything after it is signature lines.
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError("note has no blank line before its signatures")
    text, signature_lines = note[: split + 1], note[split + 2 : -1].split("\n")
    if len(signature_lines) > MAX_SIGNATURES:
        raise CheckpointError(f"note has over {MAX_SIGNATURES} signatures")
    signatures = []
    for line in signature_lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise CheckpointError("signature line must start with '— '")
        fields = line[len(SIGNATURE_PREFIX) :].split(" ")
        if len(fields) != 2:
            raise CheckpointError("signature line must be '— <key name> <base64 signature>'")
        name, encoded = fields
        _check_key_name(name)
        blob = _b64decode(encoded, "signature")
        if len(blob) <= KEY_ID_SIZE:
            raise CheckpointError("signature is too short")
        signatures.append(NoteSignature(name, blob[:KEY_ID_SIZE], blob[KEY_ID_SIZE:]))
    return SignedNote(text, tuple(signatures))


def open_note(note: str | bytes, verifier_key: str | VerifierKey) -> str:
    """The text of a note once a signature by ``verifier_key`` verifies over it.

    Signatures by other keys are ignored (c2sp.org/signed-note); a signature that names
    this key but does not verify rejects the whole note.
    """
    key = verifier_key if isinstance(verifier_key, VerifierKey) else VerifierKey.parse(verifier_key)
    signed = parse_note(note)
    public_key = Ed25519PublicKey.from_public_bytes(key.public_key)
    ours = [s for s in signed.signatures if s.name == key.name and s.key_id == key.key_id]
    if not ours:
        raise CheckpointError(f"note has no signature by key {key.name}+{key.key_id.hex()}")
    for signature in ours:
        try:
            public_key.verify(signature.signature, signed.text.encode())
        except InvalidSignature:
            raise CheckpointError(f"signature by {key.name} does not verify: note was altered") from None
    return signed.text


def verify_note(note: str | bytes, verifier_key: str | VerifierKey, origin: str | None = None) -> Checkpoint:
    """The checkpoint in a note signed by ``verifier_key`` (and of ``origin``, if given).

    Raises ``CheckpointError`` on a bad format, a missing or bad signature, or another origin.
    """
    checkpoint = Checkpoint.parse(open_note(note, verifier_key))
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(f"checkpoint is for {checkpoint.origin!r}, not {origin!r}")
    return checkpoint


class Signer:
    """An Ed25519 note signer: a key name and its private key."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_key_name(name)
        self.name = name
        self._private_key = private_key
        self.public_key = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = key_id_for(name, self.public_key)

    @classmethod
    def load_or_create(cls, path: Path, name: str) -> Signer:
        """The signer whose PEM private key is at ``path``, creating it (mode 0600) if absent."""
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            pem = _create_key_file(path)
        try:
            private_key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"{path} is not an unencrypted PEM private key: {error}") from None
        if not isinstance(private_key, Ed25519PrivateKey):
            raise CheckpointError(f"{path} does not hold an Ed25519 private key")
        return cls(name, private_key)

    def verifier_key(self) -> str:
        """The public verifier key auditors configure: ``<name>+<key id hex>+<base64 key>``."""
        return str(VerifierKey(self.name, self.key_id, self.public_key))

    def sign_note(self, text: str | bytes) -> str:
        """A signed note over ``text`` (which must end with a newline), with this one signature."""
        text = _as_text(text)
        if not text.endswith("\n") or _CONTROL.search(text):
            raise CheckpointError("note text must end with a newline and hold no control characters")
        signature = self._private_key.sign(text.encode())
        encoded = base64.b64encode(self.key_id + signature).decode()
        return f"{text}\n{SIGNATURE_PREFIX}{self.name} {encoded}\n"

    def sign(self, checkpoint: Checkpoint) -> str:
        """The checkpoint as a signed note, as served at ``GET /v1/ledger/checkpoint``."""
        return self.sign_note(checkpoint.body())


def _create_key_file(path: Path) -> bytes:
    """Write a new Ed25519 key to ``path`` (0600, never over an existing file) and sync it.

    The key is written and synced under a temporary name, then hard-linked into place: the
    link fails if another process won the race, and nobody ever reads a half-written key.
    """
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_KEY_MODE)
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), PRIVATE_KEY_MODE)  # exactly 0600, whatever the umask
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return path.read_bytes()
    finally:
        temporary.unlink(missing_ok=True)
    fsync_path(path.parent)
    return pem
