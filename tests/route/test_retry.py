"""After an attempt: the verdict, Retry-After, and backoff with full jitter."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scr.route.retry import Verdict, backoff_ms, classify, next_delay_ms, retry_after_seconds

NOW = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
BASE_MS = 1000
MAX_MS = 3_600_000


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED), (201, Verdict.DELIVERED), (202, Verdict.DELIVERED),
        (204, Verdict.DELIVERED), (299, Verdict.DELIVERED),
        (None, Verdict.RETRY), (408, Verdict.RETRY), (429, Verdict.RETRY),
        (500, Verdict.RETRY), (502, Verdict.RETRY), (503, Verdict.RETRY), (599, Verdict.RETRY),
        (410, Verdict.DISABLE),
        (300, Verdict.DEAD), (301, Verdict.DEAD), (302, Verdict.DEAD), (307, Verdict.DEAD),
        (400, Verdict.DEAD), (401, Verdict.DEAD), (403, Verdict.DEAD), (404, Verdict.DEAD),
        (409, Verdict.DEAD), (413, Verdict.DEAD), (422, Verdict.DEAD), (499, Verdict.DEAD),
        (100, Verdict.RETRY), (600, Verdict.RETRY),
    ],
)
def test_classify_table(status: int | None, verdict: Verdict) -> None:
    assert classify(status) is verdict


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), ConnectionResetError(), TimeoutError()],
)
def test_no_response_is_retried_whatever_the_error(error: BaseException) -> None:
    assert classify(None, error) is Verdict.RETRY


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Wed, 25 Nov 2026 10:01:30 GMT", 90.0),  # IMF-fixdate
        ("Wednesday, 25-Nov-26 10:00:10 GMT", 10.0),  # obsolete RFC 850 form
        ("Wed, 25 Nov 2026 09:00:00 GMT", 0.0),  # in the past: now
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("12 seconds", None),
    ],
)
def test_retry_after_both_forms(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, NOW) == seconds


def test_retry_after_with_a_naive_now_is_taken_as_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert retry_after_seconds("Wed, 25 Nov 2026 10:00:30 GMT", naive) == 30.0


@given(attempt=st.integers(1, 200), seed=st.integers(0, 2**32))
def test_backoff_stays_within_full_jitter_bounds(attempt: int, seed: int) -> None:
    delay = backoff_ms(attempt, BASE_MS, MAX_MS, random.Random(seed))
    assert 0 <= delay <= min(MAX_MS, BASE_MS * 2 ** (attempt - 1))


def test_backoff_grows_exponentially_to_the_cap_with_full_jitter() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1000), (2, 2000), (3, 4000), (10, 512_000), (13, MAX_MS), (10_000, MAX_MS)]:
        draws = [backoff_ms(attempt, BASE_MS, MAX_MS, rng) for _ in range(400)]
        assert max(draws) <= ceiling
        # Full jitter spreads over the whole range, not just near the ceiling.
        assert min(draws) < ceiling * 0.1
        assert max(draws) > ceiling * 0.9


def test_backoff_is_reproducible_with_a_seeded_rng_and_works_without_one() -> None:
    first = [backoff_ms(a, BASE_MS, MAX_MS, random.Random(1)) for a in range(1, 20)]
    assert first == [backoff_ms(a, BASE_MS, MAX_MS, random.Random(1)) for a in range(1, 20)]
    assert 0 <= backoff_ms(3, BASE_MS, MAX_MS) <= 4000
    assert backoff_ms(5, 0, MAX_MS) == 0


@pytest.mark.parametrize(
    ("attempt", "base", "cap"), [(0, BASE_MS, MAX_MS), (1, -1, MAX_MS), (1, BASE_MS, -1)]
)
def test_backoff_refuses_bad_arguments(attempt: int, base: int, cap: int) -> None:
    with pytest.raises(ValueError):
        backoff_ms(attempt, base, cap)


def test_next_delay_honours_retry_after_capped_at_retry_after_max() -> None:
    assert next_delay_ms(1, BASE_MS, MAX_MS, 120.0) == 120_000
    assert next_delay_ms(1, BASE_MS, MAX_MS, 0.0015) == 2  # rounded up: never early
    assert next_delay_ms(1, BASE_MS, MAX_MS, 0.0) == 0
    assert next_delay_ms(9, BASE_MS, MAX_MS, 10.0) == 10_000  # even below the backoff
    assert next_delay_ms(1, BASE_MS, MAX_MS, 86_400.0) == 3_600_000  # default cap: 3600 s
    assert next_delay_ms(1, BASE_MS, MAX_MS, 86_400.0, retry_after_max_s=60) == 60_000
    assert next_delay_ms(1, BASE_MS, MAX_MS, float("inf"), retry_after_max_s=60) == 60_000
    assert next_delay_ms(1, BASE_MS, MAX_MS, 5.0, retry_after_max_s=0) == 0


def test_backoff_max_never_shortens_retry_after() -> None:
    # the receiver said when it will be back; the backoff's cap is not the receiver's cap
    assert next_delay_ms(1, BASE_MS, 200, 2.0) == 2_000
    assert next_delay_ms(1, 0, 0, 30.0, retry_after_max_s=3600) == 30_000


def test_next_delay_without_retry_after_is_backoff() -> None:
    assert next_delay_ms(3, BASE_MS, MAX_MS, None, random.Random(3)) == backoff_ms(
        3, BASE_MS, MAX_MS, random.Random(3)
    )
    assert 0 <= next_delay_ms(2, BASE_MS, MAX_MS, float("nan")) <= 2000


def test_retry_after_feeds_next_delay() -> None:
    later = (NOW + timedelta(seconds=45)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert next_delay_ms(1, BASE_MS, MAX_MS, retry_after_seconds(later, NOW)) == 45_000
