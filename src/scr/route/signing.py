"""Standard Webhooks v1: message ids, signatures and secrets.

A delivery carries three headers: ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}." + body)>``, several
space-separated while secrets rotate. A secret is written ``whsec_<base64 key>``; the HMAC
key is the decoded bytes (``decode_secret``).

Message ids are derived, never random, so a retry or a replay of the same delivery carries
the same ``webhook-id`` and a receiver can dedupe on it:

- one event: ``msg_`` + base32(SHA-256(``destination`` NUL ``event_id``));
- a batch: ``msg_`` + base32(SHA-256(``"batch"`` NUL ``destination`` NUL first seq NUL last
  seq)), the ledger positions of its first and last entries.

(base32 is lower-case RFC 4648 without padding: 52 characters.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as random_source
import time
from collections.abc import Sequence

SIGNATURE_VERSION = "v1"
SECRET_PREFIX = "whsec_"
MESSAGE_ID_PREFIX = "msg_"
SECRET_BYTES = 32
DEFAULT_TOLERANCE_S = 300  # Standard Webhooks' recommended replay window


def _message_id(*parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return MESSAGE_ID_PREFIX + base64.b32encode(digest).decode().rstrip("=").lower()


def webhook_id(destination: str, event_id: str) -> str:
    """The ``webhook-id`` of one event's delivery to ``destination`` (stable forever)."""
    return _message_id(destination, event_id)


def webhook_ids(destination: str, event_ids: Sequence[str]) -> list[str]:
    """The ``webhook-id`` of each event's delivery (the reference of ``scr.native.webhook_ids``)."""
    return [_message_id(destination, event_id) for event_id in event_ids]


def batch_webhook_id(destination: str, first_seq: int, last_seq: int) -> str:
    """The ``webhook-id`` of a batch spanning ledger positions ``first_seq``..``last_seq``."""
    return _message_id("batch", destination, str(first_seq), str(last_seq))


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; raise ``ValueError`` if malformed."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError:
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from None
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def generate_secret() -> str:
    """A new random secret, ``whsec_`` + base64 of 32 bytes."""
    return SECRET_PREFIX + base64.b64encode(random_source.token_bytes(SECRET_BYTES)).decode()


def _signature(key: bytes, msg_id: str, timestamp: int | str, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def sign(secrets: list[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,<base64>`` per key, space-separated."""
    if not secrets:
        raise ValueError("signing needs at least one secret")
    return " ".join(
        f"{SIGNATURE_VERSION},{_signature(key, msg_id, timestamp, body)}" for key in secrets
    )


def verify(
    secret: bytes | str,
    msg_id: str,
    timestamp: str,
    body: bytes,
    signature_header: str,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: int | None = None,
) -> bool:
    """Whether a delivery is authentic and fresh, as a receiver checks it.

    ``secret`` is the HMAC key, or the ``whsec_`` string. True when ``timestamp`` is within
    ``tolerance_s`` of ``now`` (default: the clock) and any ``v1`` signature in the header
    matches; other signature versions are ignored.
    """
    key = decode_secret(secret) if isinstance(secret, str) else secret
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    current = int(time.time()) if now is None else now
    if abs(current - int(timestamp)) > tolerance_s:
        return False
    # The header's own text is what the sender signed.
    expected = _signature(key, msg_id, timestamp, body).encode()
    for candidate in signature_header.split():
        version, _, value = candidate.partition(",")
        if version == SIGNATURE_VERSION and hmac.compare_digest(value.encode(), expected):
            return True
    return False
