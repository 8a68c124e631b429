"""Session durations as mergeable histograms: the median of any range without the durations.

A duration of ``d`` ms falls in a log-spaced bucket (the DDSketch mapping: bucket ``i`` holds
``GAMMA**(i-1) < d <= GAMMA**i``, with ``GAMMA = (1 + ALPHA) / (1 - ALPHA)``); a bucket stands
for ``2 * GAMMA**i / (GAMMA + 1)``, within ``ALPHA`` of every duration it holds. Histograms are
counts by bucket, so they add up across users, quarter hours and rounds of the usage reader.

The median is the lower median (the duration of rank ``ceil(n / 2)`` in ascending order): the
bucket holding that rank holds the exact lower median, so the estimate is within ``ALPHA``
of it, and within ``2 * ALPHA`` = 1% once rounded to whole milliseconds (the exact
duration is a whole number of ms, so rounding can at most double the error).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

ALPHA = 0.005  # relative error of a bucket's value (before rounding to whole ms)
GAMMA = (1 + ALPHA) / (1 - ALPHA)
_LOG_GAMMA = math.log(GAMMA)
ZERO_BUCKET = 0  # 0 ms, which no log-spaced bucket holds
_OFFSET = 1  # bucket i of the mapping is stored as i + 1 (1 ms is i = 0, stored as 1)


def bucket_of(duration_ms: int) -> int:
    """The stored bucket of a duration (0 ms: ``ZERO_BUCKET``; buckets grow with durations)."""
    if duration_ms <= 0:
        return ZERO_BUCKET
    return math.ceil(math.log(duration_ms) / _LOG_GAMMA) + _OFFSET


def value_of(bucket: int) -> float:
    """The duration a bucket stands for (ms; within ``ALPHA`` of each duration it holds)."""
    if bucket == ZERO_BUCKET:
        return 0.0
    return 2 * GAMMA ** (bucket - _OFFSET) / (GAMMA + 1)


def median_ms(histogram: Iterable[tuple[int, int]]) -> int | None:
    """The lower median of a histogram of (bucket, count) pairs, in whole ms (None: empty)."""
    counts: dict[int, int] = {}
    for bucket, count in histogram:
        counts[bucket] = counts.get(bucket, 0) + count
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = (total + 1) // 2  # ceil(total / 2): the lower median's rank from 1
    seen = 0
    for bucket in sorted(counts):
        seen += counts[bucket]
        if seen >= rank:
            return round(value_of(bucket))
    raise AssertionError("unreachable: the ranks add up to total")
