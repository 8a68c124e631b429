"""Standard Webhooks v1: the published vector, rotation, verification and stable ids."""

from __future__ import annotations

import base64
import re

import pytest

from scr.route.signing import (
    batch_webhook_id,
    decode_secret,
    generate_secret,
    sign,
    verify,
    webhook_id,
)

# The example of the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OLD_KEY = decode_secret(SPEC_SECRET)
NEW_KEY = decode_secret(generate_secret())
NOW = SPEC_TIMESTAMP + 10


def test_sign_matches_the_standard_webhooks_example() -> None:
    assert sign([OLD_KEY], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_verify_accepts_the_standard_webhooks_example() -> None:
    assert verify(OLD_KEY, SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY, SPEC_SIGNATURE, now=NOW)
    assert verify(SPEC_SECRET, SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY, SPEC_SIGNATURE, now=NOW)


def test_rotation_signs_with_every_secret_and_either_verifies() -> None:
    header = sign([NEW_KEY, OLD_KEY], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    signatures = header.split(" ")
    assert len(signatures) == 2
    assert signatures[1] == SPEC_SIGNATURE
    assert all(s.startswith("v1,") for s in signatures)
    for key in (NEW_KEY, OLD_KEY):
        assert verify(key, SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY, header, now=NOW)
    stranger = decode_secret(generate_secret())
    assert not verify(stranger, SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY, header, now=NOW)


@pytest.mark.parametrize(
    ("msg_id", "timestamp", "body", "header"),
    [
        (SPEC_ID, str(SPEC_TIMESTAMP), b'{"test": 2432232315}', SPEC_SIGNATURE),  # body changed
        ("msg_other", str(SPEC_TIMESTAMP), SPEC_BODY, SPEC_SIGNATURE),  # id changed
        (SPEC_ID, str(SPEC_TIMESTAMP + 1), SPEC_BODY, SPEC_SIGNATURE),  # timestamp changed
        (SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF="),
        (SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY, SPEC_SIGNATURE.replace("v1,", "v2,")),
        (SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY, ""),
        (SPEC_ID, f" {SPEC_TIMESTAMP}", SPEC_BODY, SPEC_SIGNATURE),  # not the signed text
        (SPEC_ID, "not-a-number", SPEC_BODY, SPEC_SIGNATURE),
    ],
)
def test_verify_rejects_tampering(msg_id: str, timestamp: str, body: bytes, header: str) -> None:
    assert not verify(OLD_KEY, msg_id, timestamp, body, header, now=NOW)


def test_verify_ignores_unknown_versions_beside_a_good_signature() -> None:
    header = f"v1a,bogus {SPEC_SIGNATURE} v2,xyz"
    assert verify(OLD_KEY, SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY, header, now=NOW)


@pytest.mark.parametrize(("offset_s", "fresh"), [(300, True), (-300, True), (301, False), (-301, False)])
def test_verify_rejects_stale_and_future_timestamps(offset_s: int, fresh: bool) -> None:
    now = SPEC_TIMESTAMP + offset_s
    assert verify(OLD_KEY, SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY, SPEC_SIGNATURE, now=now) is fresh


def test_verify_tolerance_is_configurable_and_defaults_to_the_clock() -> None:
    assert verify(
        OLD_KEY, SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY, SPEC_SIGNATURE, tolerance_s=5, now=NOW - 5
    )
    # The example is from 2021: by the real clock it is long stale.
    assert not verify(OLD_KEY, SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY, SPEC_SIGNATURE)


def test_sign_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="at least one secret"):
        sign([], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)


def test_generated_secrets_are_32_random_bytes_in_whsec_form() -> None:
    first, second = generate_secret(), generate_secret()
    assert first != second
    assert first.startswith("whsec_")
    assert len(decode_secret(first)) == 32
    assert base64.b64encode(decode_secret(first)).decode() == first.removeprefix("whsec_")


@pytest.mark.parametrize("secret", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_not base64!"])
def test_decode_secret_rejects_malformed_secrets(secret: str) -> None:
    with pytest.raises(ValueError, match="secret"):
        decode_secret(secret)


def test_webhook_id_is_stable_and_distinct_per_destination_and_event() -> None:
    first = webhook_id("billing", "evt_1")
    assert first == webhook_id("billing", "evt_1")
    assert re.fullmatch(r"msg_[a-z2-7]{52}", first)
    # Pinned: a replay after an upgrade must carry the same id as the first delivery.
    assert first == "msg_lhaeigswnbvc3ughk26kouuk3bllwmzk3e2dlt7aiwov67jtbmya"
    others = {
        webhook_id("analytics", "evt_1"), webhook_id("billing", "evt_2"), webhook_id("billin", "gevt_1"),
    }
    assert first not in others and len(others) == 3


def test_batch_webhook_id_is_stable_and_never_a_single_events_id() -> None:
    batch = batch_webhook_id("billing", 10, 19)
    assert batch == batch_webhook_id("billing", 10, 19)
    assert re.fullmatch(r"msg_[a-z2-7]{52}", batch)
    assert len({batch, batch_webhook_id("billing", 10, 20), batch_webhook_id("archive", 10, 19)}) == 3
    assert len({batch_webhook_id("b", 1, 23), batch_webhook_id("b", 12, 3)}) == 2
    assert batch != webhook_id("billing", "10")
