"""Rate limits per key: a token bucket each, in bounded memory.

A bucket holds up to ``burst`` tokens and refills at ``per_minute / 60`` tokens a second; a
request takes one token or is refused with the wait until the next one. Only keys that
passed authentication get a bucket, so unknown keys cannot fill the table; past
``max_keys`` buckets the least recently used is forgotten (it restarts full, which only ever
errs towards admitting a request, never towards refusing one).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from scr.errors import TooManyRequests

SECONDS_PER_MINUTE = 60.0
DEFAULT_MAX_KEYS = 100_000


class RateLimiter:
    """Token buckets keyed by key id."""

    def __init__(
        self,
        per_minute: int,
        burst: int,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = per_minute / SECONDS_PER_MINUTE
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        # key id -> (tokens left, when they were counted)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key_id: str) -> None:
        """Spend one token of ``key_id``; raise ``TooManyRequests`` (with Retry-After) if none is left."""
        now = self._clock()
        tokens, counted = self._buckets.pop(key_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - counted) * self.rate_per_s)
        if tokens < 1.0:
            self._buckets[key_id] = (tokens, now)
            wait_s = math.ceil((1.0 - tokens) / self.rate_per_s)
            raise TooManyRequests(
                f"this key is over its rate limit of {self.rate_per_s * SECONDS_PER_MINUTE:g} "
                f"requests per minute; retry in {wait_s} s",
                wait_s,
            )
        self._buckets[key_id] = (tokens - 1.0, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
