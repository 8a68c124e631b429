"""Sealing an event's personal fields for the ledger, and opening them again.

The personal fields (DESIGN.md, "Privacy") are ``user.user_id``, ``metadata.source_ip``,
each value of ``metadata.custom_tags``, ``outcome.final_message`` and each string of
``content``. A sealed event is ledgered as a valid event without them: ``user.user_id``
becomes ``subject:<keyed hash>``, the others are left out (tags keep their names and content
its keys and number of tool outputs, with empty strings). Beside it, the entry's
``seal`` holds each field as AES-256-GCM ciphertext under the subject's data key, with the
event id and the field's path as associated data (a ciphertext moved to another event or
field does not open), and a commitment ``SHA-256(salt ‖ canonical JSON of the fields)``.
The salt is derived from the data key and the event id: a verifier given the plaintext and
the salt (``GET /v1/subjects/{user_id}/export``) checks the commitment; once the key is
destroyed, nobody can test guesses against it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from scr.errors import ScrError
from scr.schema import Content, Event, canonical_bytes

SEAL_VERSION = 1
SUBJECT_PREFIX = "subject:"
USER_ID = "user.user_id"
SOURCE_IP = "metadata.source_ip"
FINAL_MESSAGE = "outcome.final_message"
CONTENT_PREFIX = "content."
TAG_PREFIX = "metadata.custom_tags."
NONCE_BYTES = 12
NONCE_SPACE = 2 ** (8 * NONCE_BYTES)
SALT_BYTES = 16
_SALT_INFO = b"scr seal salt v1\0"


class Seal(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The sealed personal fields of one ledgered event."""

    v: int
    subject: str  # the subject's keyed hash (scr.privacy.subjects)
    g: int  # the generation of the subject's data key
    fields: dict[str, str]  # field path → base64(nonce ‖ ciphertext ‖ tag)
    commitment: str  # hex SHA-256(salt ‖ canonical JSON of the plaintext fields)


class TamperedSeal(ScrError):
    """A sealed field failed its GCM tag, or the fields do not match their commitment."""

    status = 500
    code = "sealed_data_corrupt"


def personal_values(event: Event) -> dict[str, str]:
    """The event's personal fields, by path."""
    values = {USER_ID: event.user.user_id}
    if event.metadata.source_ip is not None:
        values[SOURCE_IP] = event.metadata.source_ip
    for name, value in event.metadata.custom_tags.items():
        values[TAG_PREFIX + name] = value
    if event.outcome.final_message is not None:
        values[FINAL_MESSAGE] = event.outcome.final_message
    if isinstance(event.content, Content):
        values.update(event.content.texts())
    return values


def _emptied(content: Content | msgspec.UnsetType,
             values: dict[str, str] | None = None) -> Content | msgspec.UnsetType:
    """``content`` with each string emptied, or taken from ``values`` (by path)."""
    if not isinstance(content, Content):
        return content
    found = values or {}

    def text(path: str, value: str | msgspec.UnsetType) -> str | msgspec.UnsetType:
        return found.get(path, "") if isinstance(value, str) else value

    outputs = content.tool_outputs
    return Content(
        user_request=text(CONTENT_PREFIX + "user_request", content.user_request),
        summary=text(CONTENT_PREFIX + "summary", content.summary),
        tool_outputs=outputs if not isinstance(outputs, list) else [
            found.get(f"{CONTENT_PREFIX}tool_outputs.{n}", "") for n in range(len(outputs))],
    )


def redacted(event: Event, subject: str) -> Event:
    """The event without its personal fields, as the ledger holds it."""
    replace = msgspec.structs.replace
    metadata = event.metadata
    return replace(
        event,
        user=replace(event.user, user_id=SUBJECT_PREFIX + subject),
        outcome=replace(event.outcome, final_message=None),
        metadata=replace(metadata, source_ip=None, custom_tags=dict.fromkeys(metadata.custom_tags, "")),
        content=_emptied(event.content),
    )


REDACTED_USER = "redacted"  # a user id withheld where no keyed hash names the subject


def without_personal(event: Event, subject: str | None) -> Event:
    """The event for a destination that opts out of personal fields: as the ledger holds it
    when sealed (``subject`` the keyed hash), else with the user id ``redacted``."""
    withheld = redacted(event, subject or "")
    if subject is None:
        user = msgspec.structs.replace(withheld.user, user_id=REDACTED_USER)
        return msgspec.structs.replace(withheld, user=user)
    return withheld


def restored(event: Event, values: dict[str, str]) -> Event:
    """A redacted event with its personal fields put back."""
    replace = msgspec.structs.replace
    tags = {name: values.get(TAG_PREFIX + name, "") for name in event.metadata.custom_tags}
    return replace(
        event,
        user=replace(event.user, user_id=values[USER_ID]),
        outcome=replace(event.outcome, final_message=values.get(FINAL_MESSAGE)),
        metadata=replace(event.metadata, source_ip=values.get(SOURCE_IP), custom_tags=tags),
        content=_emptied(event.content, values),
    )


def erased(payload: dict[str, object]) -> dict[str, object]:
    """An event's JSON whose subject was erased: personal fields null, ``"erased": true``."""
    user, outcome = payload.get("user"), payload.get("outcome")
    metadata = payload.get("metadata")
    if isinstance(user, dict):
        user["user_id"] = None
    if isinstance(outcome, dict):
        outcome["final_message"] = None
    if isinstance(metadata, dict):
        metadata["source_ip"] = None
        tags = metadata.get("custom_tags")
        if isinstance(tags, dict):
            metadata["custom_tags"] = dict.fromkeys(tags)
    content = payload.get("content")
    if isinstance(content, dict):
        payload["content"] = {key: [None] * len(value) if isinstance(value, list) else None
                              for key, value in content.items()}
    payload["erased"] = True
    return payload


def salt(data_key: bytes, event_id: str) -> bytes:
    """The event's salt: BLAKE2b keyed by the data key (a PRF), so it dies with the key."""
    return hashlib.blake2b(_SALT_INFO + event_id.encode(), key=data_key, digest_size=SALT_BYTES).digest()


def commitment(salt_bytes: bytes, values: dict[str, str]) -> str:
    return hashlib.sha256(salt_bytes + canonical_bytes(values)).hexdigest()


def seal(event: Event, cipher: AESGCM, data_key: bytes, subject: str, generation: int) -> tuple[Event, Seal]:
    """The event as ledgered, and the seal of its personal fields (``cipher`` is
    ``AESGCM(data_key)``, kept per subject by the caller: its key schedule is most of a field's
    cost). Each field's nonce is one random 96-bit value per event with the field's number
    added in its last bytes: unique per field as random nonces are, for a fifth of the
    random draws."""
    values = personal_values(event)
    base = int.from_bytes(os.urandom(NONCE_BYTES), "big")
    prefix = event.event_id.encode() + b"\0"
    fields = {}
    for number, (path, value) in enumerate(values.items()):
        nonce = ((base + number) % NONCE_SPACE).to_bytes(NONCE_BYTES, "big")
        sealed = nonce + cipher.encrypt(nonce, value.encode(), prefix + path.encode())
        fields[path] = binascii.b2a_base64(sealed, newline=False).decode()
    proof = commitment(salt(data_key, event.event_id), values)
    return redacted(event, subject), Seal(SEAL_VERSION, subject, generation, fields, proof)


def open_seal(sealed: Seal, event_id: str, data_key: bytes) -> dict[str, str]:
    """The plaintext fields of ``sealed``; ``TamperedSeal`` if any was altered."""
    cipher = AESGCM(data_key)
    values = {}
    for path, text in sealed.fields.items():
        raw = base64.b64decode(text)
        try:
            plain = cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _associated(event_id, path))
        except InvalidTag:
            raise TamperedSeal(f"the sealed field {path} of event {event_id} fails its check "
                               "(altered in the store)") from None
        values[path] = plain.decode()
    if commitment(salt(data_key, event_id), values) != sealed.commitment:
        raise TamperedSeal(f"the sealed fields of event {event_id} do not match their commitment")
    return values


def _associated(event_id: str, path: str) -> bytes:
    return f"{event_id}\0{path}".encode()
