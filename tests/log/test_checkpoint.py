"""Signed checkpoints: the C2SP note format, Ed25519 signing, verifier keys and the key file.

The outside reference is the signed-note example of golang.org/x/mod/sumdb/note (the
PeterNeumann key, its published verifier key and the published signed note). Ed25519 is
deterministic (RFC 8032), so signing the same text with the same key must reproduce that
note byte for byte; a Go verifier then accepts what scr signs.
"""

from __future__ import annotations

import base64
import hashlib
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from scr.log.checkpoint import (
    Checkpoint,
    CheckpointError,
    Signer,
    VerifierKey,
    key_id_for,
    open_note,
    origin_for,
    parse_note,
    verify_note,
)
from scr.log.merkle import EMPTY_ROOT, leaf_hash
from scr.log.nodes import MemoryNodeStore, MerkleTree

GO_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIGNATURE = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
GO_NOTE = GO_TEXT + "\n— PeterNeumann " + GO_SIGNATURE + "\n"
# The example checkpoint body of c2sp.org/tlog-checkpoint.
C2SP_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"

# The PeterNeumann public key with type byte 0x02 (ECDSA) instead of 0x01 (Ed25519).
ECDSA_TYPED_KEY = base64.b64encode(b"\x02" + base64.b64decode(GO_VERIFIER_KEY.split("+")[2])[1:]).decode()

NAME = "scr.example/ledger"
ROOT_HASH = hashlib.sha256(b"some root").digest()


def go_signer() -> Signer:
    encoded = GO_SIGNER_KEY.split("+", 4)[4]
    typed_seed = base64.b64decode(encoded)
    assert typed_seed[0] == 1  # Ed25519
    return Signer("PeterNeumann", Ed25519PrivateKey.from_private_bytes(typed_seed[1:]))


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(NAME, Ed25519PrivateKey.generate())


@pytest.fixture(scope="module")
def other_signer() -> Signer:
    return Signer(NAME, Ed25519PrivateKey.generate())


def checkpoint(size: int = 42, origin: str = origin_for(NAME, "org_acme")) -> Checkpoint:
    return Checkpoint(origin, size, ROOT_HASH)


# --- interoperability with the Go reference --------------------------------------------------


def test_signing_reproduces_the_go_reference_note_byte_for_byte() -> None:
    signer = go_signer()
    assert signer.verifier_key() == GO_VERIFIER_KEY
    assert signer.key_id.hex() == "c74f20a3"
    assert signer.sign_note(GO_TEXT) == GO_NOTE


def test_the_go_reference_note_opens_with_its_verifier_key() -> None:
    assert open_note(GO_NOTE, GO_VERIFIER_KEY) == GO_TEXT
    assert open_note(GO_NOTE.encode(), VerifierKey.parse(GO_VERIFIER_KEY)) == GO_TEXT
    with pytest.raises(CheckpointError, match="does not verify"):
        open_note(GO_NOTE.replace("cryptography", "cryptographY"), GO_VERIFIER_KEY)


def test_key_id_is_sha256_of_name_newline_type_and_key() -> None:
    signer = go_signer()
    expected = hashlib.sha256(b"PeterNeumann\n\x01" + signer.public_key).digest()[:4]
    assert key_id_for("PeterNeumann", signer.public_key) == expected == bytes.fromhex("c74f20a3")


# --- checkpoint bodies -----------------------------------------------------------------------


def test_body_is_origin_size_and_base64_root() -> None:
    body = Checkpoint("scr.example/ledger/org_acme", 7, EMPTY_ROOT).body()
    assert body == b"scr.example/ledger/org_acme\n7\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    assert Checkpoint.parse(body) == Checkpoint("scr.example/ledger/org_acme", 7, EMPTY_ROOT)


def test_the_c2sp_example_body_parses() -> None:
    parsed = Checkpoint.parse(C2SP_BODY)
    assert (parsed.origin, parsed.tree_size) == ("example.com/behind-the-sofa", 20852163)
    assert parsed.body().decode() == C2SP_BODY


def test_extension_lines_are_kept_and_round_trip() -> None:
    text = C2SP_BODY + "extension one\n"
    parsed = Checkpoint.parse(text)
    assert parsed.extensions == ("extension one",)
    assert parsed.body().decode() == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("origin\n01\n" + base64.b64encode(ROOT_HASH).decode() + "\n", "leading zeros"),
        ("origin\n-1\n" + base64.b64encode(ROOT_HASH).decode() + "\n", "decimal"),
        ("origin\n1e3\n" + base64.b64encode(ROOT_HASH).decode() + "\n", "decimal"),
        ("origin\n5\nnot base64!\n", "not valid base64"),
        ("origin\n5\n" + base64.b64encode(b"short").decode() + "\n", "32 bytes"),
        ("\n5\n" + base64.b64encode(ROOT_HASH).decode() + "\n", "origin"),
        ("origin\n5\n", "origin, tree size and root hash"),
        ("origin\n5\n" + base64.b64encode(ROOT_HASH).decode(), "end with a newline"),
        ("origin\n5\n" + base64.b64encode(ROOT_HASH).decode() + "\n\n", "extension lines"),
    ],
)
def test_malformed_bodies_are_rejected(text: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        Checkpoint.parse(text)


def test_checkpoint_fields_are_checked() -> None:
    with pytest.raises(CheckpointError, match="origin"):
        Checkpoint("two\nlines", 1, ROOT_HASH)
    with pytest.raises(CheckpointError, match="tree size"):
        Checkpoint("origin", -1, ROOT_HASH)
    with pytest.raises(CheckpointError, match="32 bytes"):
        Checkpoint("origin", 1, b"")


# --- signing and verifying -------------------------------------------------------------------


def test_signed_checkpoint_round_trips(signer: Signer) -> None:
    note = signer.sign(checkpoint())
    assert note.startswith(checkpoint().body().decode() + "\n— scr.example/ledger ")
    assert verify_note(note, signer.verifier_key()) == checkpoint()
    assert verify_note(note.encode(), signer.verifier_key(), origin=checkpoint().origin) == checkpoint()


def test_a_real_tree_head_verifies_with_the_public_key_only(signer: Signer) -> None:
    tree = MerkleTree(MemoryNodeStore())
    tree.extend(leaf_hash(str(i).encode()) for i in range(1000))
    note = signer.sign(Checkpoint(origin_for(NAME, "org_acme"), tree.size, tree.root()))
    head = verify_note(note, signer.verifier_key())
    assert (head.tree_size, head.root_hash) == (1000, tree.root())


def test_a_note_signed_by_another_key_is_rejected(signer: Signer, other_signer: Signer) -> None:
    note = other_signer.sign(checkpoint())
    with pytest.raises(CheckpointError, match="no signature by key"):
        verify_note(note, signer.verifier_key())


def test_a_forged_signature_under_our_name_and_key_id_is_rejected(
    signer: Signer, other_signer: Signer
) -> None:
    text = checkpoint().body().decode()
    forged_blob = signer.key_id + base64.b64decode(other_signer.sign_note(text).split(" ")[-1])[4:]
    forged = f"{text}\n— {NAME} {base64.b64encode(forged_blob).decode()}\n"
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_note(forged, signer.verifier_key())


@pytest.mark.parametrize(
    ("old", "new"),
    [("\n42\n", "\n43\n"), ("org_acme", "org_evil"), ("=\n\n", "=\nextra\n\n")],
)
def test_a_tampered_body_is_rejected(signer: Signer, old: str, new: str) -> None:
    note = signer.sign(checkpoint())
    assert old in note
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_note(note.replace(old, new, 1), signer.verifier_key())


def test_a_tampered_root_is_rejected(signer: Signer) -> None:
    note = signer.sign(checkpoint())
    other_root = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    tampered = note.replace(base64.b64encode(ROOT_HASH).decode(), other_root)
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_note(tampered, signer.verifier_key())


def test_signatures_by_unknown_keys_are_ignored(signer: Signer) -> None:
    note = signer.sign(checkpoint())
    witness = Signer("witness.example", Ed25519PrivateKey.generate())
    witness_line = witness.sign_note(checkpoint().body()).splitlines()[-1]
    cosigned = note + witness_line + "\n"
    assert verify_note(cosigned, signer.verifier_key()) == checkpoint()
    assert verify_note(cosigned, witness.verifier_key()) == checkpoint()


def test_another_tenants_checkpoint_is_rejected_when_the_origin_is_given(signer: Signer) -> None:
    note = signer.sign(checkpoint(origin=origin_for(NAME, "org_other")))
    with pytest.raises(CheckpointError, match=re.escape("not 'scr.example/ledger/org_acme'")):
        verify_note(note, signer.verifier_key(), origin=origin_for(NAME, "org_acme"))


def test_origin_is_key_name_slash_tenant() -> None:
    assert origin_for("scr.example/ledger", "org_acme") == "scr.example/ledger/org_acme"


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda n: n.replace("\n\n", "\n"), "no blank line"),
        (lambda n: n[:-1], "end with a newline"),
        (lambda n: n.replace("— ", "- "), "must start with"),
        (lambda n: n.replace("— ", "—  "), "key name"),
        (lambda n: n[:-6] + "!!!!=\n", "not valid base64"),
        (lambda n: n.rsplit(" ", 1)[0] + " AAAA\n", "too short"),
        (lambda n: n.replace("\n42\n", "\n4\t2\n"), "control characters"),
        (lambda n: n.replace("\n42\n", "\n42\r\n"), "control characters"),
        (lambda n: n + "\n", "must start with"),
        (lambda n: n + "— x AAAAAAAA\n" * 100, "over 100 signatures"),
    ],
)
def test_malformed_notes_are_rejected(signer: Signer, mangle: Callable[[str], str], message: str) -> None:
    note = mangle(signer.sign(checkpoint()))
    with pytest.raises(CheckpointError, match=message):
        verify_note(note, signer.verifier_key())


def test_invalid_utf8_and_oversized_notes_are_rejected(signer: Signer) -> None:
    with pytest.raises(CheckpointError, match="UTF-8"):
        parse_note(b"\xff\xfe\n\n\xe2\x80\x94 a AAAAAAAA\n")
    with pytest.raises(CheckpointError, match="over"):
        parse_note(b"x" * (1024 * 1024 + 1))


def test_parse_note_splits_at_the_last_blank_line(signer: Signer) -> None:
    text = "first paragraph\n\nsecond paragraph\n"
    signed = parse_note(signer.sign_note(text))
    assert signed.text == text
    assert [(s.name, s.key_id) for s in signed.signatures] == [(NAME, signer.key_id)]
    assert open_note(signer.sign_note(text), signer.verifier_key()) == text


def test_note_text_must_end_with_a_newline(signer: Signer) -> None:
    with pytest.raises(CheckpointError, match="newline"):
        signer.sign_note("no newline")


# --- verifier keys ---------------------------------------------------------------------------


def test_verifier_key_round_trips(signer: Signer) -> None:
    parsed = VerifierKey.parse(signer.verifier_key())
    assert (parsed.name, parsed.key_id, parsed.public_key) == (NAME, signer.key_id, signer.public_key)
    assert str(parsed) == signer.verifier_key()
    assert VerifierKey.parse(signer.verifier_key() + "\n") == parsed


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "8 hex digits"),
        ("PeterNeumann+c74f20a3+" + ECDSA_TYPED_KEY, "Ed25519"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10", "base64"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "key name"),
        ("PeterNeumann", "must be <name>"),
        ("", "must be <name>"),
    ],
)
def test_bad_verifier_keys_are_rejected(key: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        VerifierKey.parse(key)


def test_signer_names_follow_the_key_name_rules() -> None:
    for bad in ("", "with space", "plus+sign"):
        with pytest.raises(CheckpointError, match="key name"):
            Signer(bad, Ed25519PrivateKey.generate())


# --- the key file ----------------------------------------------------------------------------


def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "data" / "ledger-key.pem"
    first = Signer.load_or_create(path, NAME)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = Signer.load_or_create(path, NAME)
    assert again.verifier_key() == first.verifier_key()
    assert verify_note(again.sign(checkpoint()), first.verifier_key()) == checkpoint()
    assert sorted(p.name for p in path.parent.iterdir()) == ["ledger-key.pem"]


def test_a_key_file_that_is_not_an_ed25519_key_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(CheckpointError, match="not an unencrypted PEM private key"):
        Signer.load_or_create(garbage, NAME)
    ecdsa = tmp_path / "ecdsa.pem"
    ecdsa.write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(CheckpointError, match="not hold an Ed25519"):
        Signer.load_or_create(ecdsa, NAME)


# --- properties ------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    tenant=st.from_regex(r"[A-Za-z0-9_.:-]{1,40}", fullmatch=True),
    size=st.integers(0, 2**63),
    root_hash=st.binary(min_size=32, max_size=32),
)
def test_any_checkpoint_round_trips_through_a_signed_note(tenant: str, size: int, root_hash: bytes) -> None:
    signer = go_signer()
    head = Checkpoint(origin_for("PeterNeumann", tenant), size, root_hash)
    assert verify_note(signer.sign(head), GO_VERIFIER_KEY, origin=head.origin) == head
