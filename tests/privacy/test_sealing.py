"""Sealing an event's personal fields, and the master key's file."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from scr.privacy.master import MasterKey, MasterKeyError, read_master_key, write_master_key
from scr.privacy.sealing import (
    SUBJECT_PREFIX,
    Seal,
    TamperedSeal,
    commitment,
    erased,
    open_seal,
    personal_values,
    restored,
    salt,
    seal,
)
from scr.schema import canonical_bytes, decode_event
from support import make_event

KEY = bytes(range(32))
CIPHER = AESGCM(KEY)
OTHER_KEY = bytes(range(1, 33))
PERSONAL = {
    "user.user_id": "alice@example.com",
    "metadata.source_ip": "203.0.113.7",
    "outcome.final_message": "Your refund for order 1234 is on its way, Alice.",
}


def an_event(event_id: str = "evt_1") -> object:
    raw = make_event(event_id, **{
        "user.user_id": PERSONAL["user.user_id"], "metadata.source_ip": PERSONAL["metadata.source_ip"],
        "outcome.final_message": PERSONAL["outcome.final_message"],
        "metadata.custom_tags": {"team": "billing-escalations", "ticket": "T-99"},
    })
    return decode_event(json.dumps(raw).encode())


def test_a_sealed_event_holds_no_personal_field_and_opens_to_the_original() -> None:
    event = an_event()
    ledgered, sealed = seal(event, CIPHER, KEY, "ab" * 16, 1)
    stored = canonical_bytes({"payload": ledgered, "seal": sealed})
    for value in [*PERSONAL.values(), "billing-escalations", "T-99"]:
        assert value.encode() not in stored
    assert ledgered.user.user_id == SUBJECT_PREFIX + "ab" * 16
    assert ledgered.metadata.custom_tags == {"team": "", "ticket": ""}  # names stay, values go
    assert ledgered.usage == event.usage and ledgered.outcome.status == event.outcome.status
    values = open_seal(sealed, "evt_1", KEY)
    assert values == personal_values(event)
    assert restored(ledgered, values) == event


def test_each_field_is_bound_to_its_event_and_path() -> None:
    _, sealed = seal(an_event("evt_1"), CIPHER, KEY, "ab" * 16, 1)
    with pytest.raises(TamperedSeal, match="evt_2"):
        open_seal(sealed, "evt_2", KEY)  # the whole seal moved to another event
    fields = dict(sealed.fields)
    fields["outcome.final_message"], fields["metadata.source_ip"] = (
        fields["metadata.source_ip"], fields["outcome.final_message"])
    with pytest.raises(TamperedSeal, match="fails its check"):
        open_seal(msgspec.structs.replace(sealed, fields=fields), "evt_1", KEY)
    with pytest.raises(TamperedSeal):
        open_seal(sealed, "evt_1", OTHER_KEY)


def test_a_flipped_bit_fails_the_tag_and_a_dropped_field_fails_the_commitment() -> None:
    _, sealed = seal(an_event(), CIPHER, KEY, "ab" * 16, 1)
    raw = bytearray(base64.b64decode(sealed.fields["user.user_id"]))
    raw[-20] ^= 1
    fields = {**sealed.fields, "user.user_id": base64.b64encode(bytes(raw)).decode()}
    with pytest.raises(TamperedSeal, match=r"user\.user_id"):
        open_seal(msgspec.structs.replace(sealed, fields=fields), "evt_1", KEY)
    fewer = {k: v for k, v in sealed.fields.items() if k != "metadata.source_ip"}
    with pytest.raises(TamperedSeal, match="commitment"):
        open_seal(msgspec.structs.replace(sealed, fields=fewer), "evt_1", KEY)


def test_the_commitment_checks_with_the_plaintext_and_its_salt() -> None:
    event = an_event()
    _, sealed = seal(event, CIPHER, KEY, "ab" * 16, 1)
    the_salt = salt(KEY, "evt_1")
    assert commitment(the_salt, personal_values(event)) == sealed.commitment
    wrong = {**personal_values(event), "user.user_id": "bob@example.com"}
    assert commitment(the_salt, wrong) != sealed.commitment
    assert msgspec.convert(msgspec.to_builtins(sealed), Seal) == sealed  # as stored and read back


def test_an_erased_event_shows_its_personal_fields_null() -> None:
    ledgered, _ = seal(an_event(), CIPHER, KEY, "ab" * 16, 1)
    shown = erased(msgspec.to_builtins(ledgered))
    assert shown["erased"] is True
    assert shown["user"]["user_id"] is None and shown["outcome"]["final_message"] is None
    assert shown["metadata"]["source_ip"] is None
    assert shown["metadata"]["custom_tags"] == {"team": None, "ticket": None}


def test_a_master_key_file_is_read_and_every_bad_one_is_named(tmp_path: Path) -> None:
    good = tmp_path / "master.key"
    write_master_key(good)
    assert good.stat().st_mode & 0o777 == 0o600
    key = read_master_key(good)
    assert "secret" in repr(key) and good.read_text().strip() not in repr(key)
    with pytest.raises(FileExistsError):
        write_master_key(good)  # never overwritten
    cases = {
        "missing": (tmp_path / "nowhere.key", "does not exist"),
        "folder": (tmp_path, "cannot read"),
        "not base64": (tmp_path / "text.key", "not base64"),
        "short": (tmp_path / "short.key", "holds 16 bytes"),
        "huge": (tmp_path / "huge.key", "not a key"),
    }
    (tmp_path / "text.key").write_text("this is not a key!\n")
    (tmp_path / "short.key").write_bytes(base64.b64encode(os.urandom(16)))
    (tmp_path / "huge.key").write_bytes(b"A" * 5000)
    for name, (path, message) in cases.items():
        with pytest.raises(MasterKeyError, match=message):
            read_master_key(path)
        print(name, "refused")


def test_a_data_key_unwraps_only_under_its_master_key_and_context() -> None:
    master, other = MasterKey(bytes(32)), MasterKey(bytes([1]) * 32)
    wrapped = master.wrap(KEY, b"org_a/subject")
    assert master.unwrap(wrapped, b"org_a/subject") == KEY
    with pytest.raises(MasterKeyError):
        master.unwrap(wrapped, b"org_b/subject")
    with pytest.raises(MasterKeyError):
        other.unwrap(wrapped, b"org_a/subject")
    assert master.check_value != other.check_value
