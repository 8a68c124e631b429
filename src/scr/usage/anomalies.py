"""Anomalies: a tenant's cost, tokens or error rate in a closed window, far from its usual.

Pure functions over per-window counts, so the bench (``bench/bench_anomalies.py``) runs the very
code ``scr: usage`` runs. Cost and tokens are judged in log space (a spike of ×3 is the same
distance for a small tenant as for a large one):

- A tenant with ``OWN_WEEKS`` weeks of its own history: the expected value is the median of
  the same window of the week in past weeks (daily and weekly shape at once), plus a level
  term: how far the last ``LEVEL_WINDOWS`` windows were from their own seasonal medians (so
  growth, or a weekend that starts early, is followed).
- A newer tenant (cold start, from its ``MIN_OWN_WINDOWS``-th active window): the POOLED
  baseline. Each established tenant's value at the same window, less its own weekly level,
  gives the shape of that window across tenants; the new tenant's level is the median of its
  last ``LEVEL_WINDOWS`` windows against that shape. So a tenant is covered on its first day.
- The band is expected ± max(``BAND_MADS`` · 1.4826 · MAD, floor): the MAD of the seasonal
  samples' deviations (pooled: of the tenants' deviations from the shape), the floor the
  Poisson noise of the window's expected event count plus ``RELATIVE_FLOOR``, so a flat
  history does not alarm on noise.
- Low traffic is never judged: cost and tokens need ``MIN_EVENTS`` events in the window or
  expected in it; the error rate needs ``MIN_ERROR_EVENTS`` events in the window, and only a
  rise alarms (fewer errors is not an incident).

``breakdown`` explains an alert: the models and users whose share of the window differs most
from their usual share (``contributors``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import NamedTuple

METRICS = ("cost_usd", "total_tokens", "error_rate")
WINDOW_MINUTES = {"hour": 60, "day": 1440}
MINUTES_PER_WEEK = 7 * 1440

OWN_WEEKS = 2  # weeks of a tenant's own history before its own seasonal baseline is used
MAX_WEEKS = 4  # past weeks in the seasonal median
LEVEL_WINDOWS = 8  # recent windows in the level term (a 3-window spike is outvoted)
MIN_OWN_WINDOWS = 3  # active windows a new tenant needs before the pooled baseline judges it
MIN_POOL_TENANTS = 3  # established tenants the pooled baseline needs
BAND_MADS = 5.0  # the band's half-width in robust standard deviations
MAD_TO_SIGMA = 1.4826
RELATIVE_FLOOR = 0.25  # log-space floor of the band's half-width (about ±25%)
POISSON_SIGMAS = 5.0  # plus this many sigmas of the expected event count's Poisson noise
MIN_EVENTS = 20  # cost and tokens: events in the window, or expected in it
MIN_ERROR_EVENTS = 50  # error rate: events in the window
RATE_HISTORY_WEEKS = 1  # the usual error rate: the past week's errors over its events
MIN_RATE_EVENTS = 200  # events of that week a tenant needs for its own usual rate
RATE_FLOOR = 0.03  # the error rate's band is at least ±3 points beyond the binomial noise
BREAKDOWN_TOP = 3  # contributors listed per dimension
_ZERO = 1e-9  # log(0) stands for this (a window without cost is far below any usual one)


class Counts(NamedTuple):
    """What a tenant's window holds (``cost_usd`` as a float: the detector's, never billing's)."""

    events: int = 0
    errors: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class Verdict:
    """A judged window of one tenant and metric (``value`` etc. in the metric's own unit)."""

    tenant: str
    metric: str
    index: int
    value: float
    expected: float
    low: float
    high: float

    @property
    def anomalous(self) -> bool:
        return not self.low <= self.value <= self.high


@dataclass
class Series:
    """Every tenant's counts by window index (0 is the oldest window held; missing: none)."""

    week: int  # windows per week: 168 for hours, 7 for days
    counts: Mapping[str, Sequence[Counts]]
    _logs: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    _levels: dict[tuple[str, str, int], float] = field(default_factory=dict)
    _shapes: dict[tuple[str, int], tuple[float, float] | None] = field(default_factory=dict)

    def logs(self, tenant: str, metric: str) -> list[float]:
        key = (tenant, metric)
        if key not in self._logs:
            self._logs[key] = [math.log(_value(c, metric) + _ZERO) for c in self.counts[tenant]]
        return self._logs[key]

    def first_active(self, tenant: str) -> int | None:
        return next((i for i, c in enumerate(self.counts[tenant]) if c.events), None)

    def level(self, tenant: str, metric: str, at: int) -> float:
        """The tenant's weekly level before window ``at``: the median of its past week."""
        key = (tenant, metric, at)
        if key not in self._levels:
            self._levels[key] = median(self.logs(tenant, metric)[max(0, at - self.week):at])
        return self._levels[key]

    def established(self, tenant: str, at: int) -> bool:
        first = self.first_active(tenant)
        return first is not None and first <= at - OWN_WEEKS * self.week

    def shape(self, metric: str, at: int) -> tuple[float, float] | None:
        """The pooled shape of window ``at``: the median across established tenants of their
        value less their weekly level, and the MAD of those; None without enough tenants."""
        key = (metric, at)
        if key not in self._shapes:
            offsets = [
                self.logs(tenant, metric)[at] - self.level(tenant, metric, at)
                for tenant, counts in self.counts.items()
                if self.established(tenant, at) and _busy(counts, at, self.week)
            ]
            self._shapes[key] = None if len(offsets) < MIN_POOL_TENANTS else (
                median(offsets), median(abs(o - median(offsets)) for o in offsets))
        return self._shapes[key]


def judge(series: Series, at: int, metric: str) -> list[Verdict]:
    """Every tenant's verdict on window ``at`` for ``metric`` (low traffic is left out)."""
    verdicts = []
    for tenant in series.counts:
        found = (_judge_rate(series, tenant, at) if metric == "error_rate"
                 else _judge_amount(series, tenant, at, metric))
        if found is not None:
            verdicts.append(found)
    return verdicts


def _judge_amount(series: Series, tenant: str, at: int, metric: str) -> Verdict | None:
    counts = series.counts[tenant]
    expected_events = _usual_events(series, tenant, at)
    if max(counts[at].events, expected_events) < MIN_EVENTS:
        return None
    if series.established(tenant, at):
        estimate: tuple[float, float] | None = _seasonal(series, tenant, metric, at)
    else:
        estimate = _pooled(series, tenant, metric, at)
    if estimate is None:
        return None
    centre, spread = estimate
    floor = RELATIVE_FLOOR + POISSON_SIGMAS / math.sqrt(max(expected_events, 1.0))
    width = max(BAND_MADS * MAD_TO_SIGMA * spread, floor)
    return Verdict(tenant, metric, at, _value(counts[at], metric), math.exp(centre),
                   math.exp(centre - width), math.exp(centre + width))


def _usual_events(series: Series, tenant: str, at: int) -> float:
    """The events usual in window ``at``: the median of the same window in past weeks, or for
    a new tenant of its recent windows (counts, not logs: an empty window is 0, not -inf)."""
    counts, week = series.counts[tenant], series.week
    first = series.first_active(tenant) or 0
    past = [counts[at - w * week].events for w in range(1, MAX_WEEKS + 1) if at - w * week >= first]
    if not series.established(tenant, at):
        past = [c.events for c in counts[max(0, at - LEVEL_WINDOWS):at]]
    return float(median(past)) if past else 0.0


def _seasonal(series: Series, tenant: str, metric: str, at: int) -> tuple[float, float]:
    """(expected log value, MAD) from the same window of past weeks and the level term."""
    logs, week = series.logs(tenant, metric), series.week
    first = series.first_active(tenant) or 0  # established: it has one

    def samples(index: int) -> list[float]:
        return [logs[index - w * week] for w in range(1, MAX_WEEKS + 1) if index - w * week >= first]

    here = samples(at)
    deviations = [abs(v - median(here)) for v in here]
    level_terms = []
    for back in range(1, LEVEL_WINDOWS + 1):
        past = samples(at - back)
        if past:
            level_terms.append(logs[at - back] - median(past))
            deviations.extend(abs(v - median(past)) for v in past)
    level = median(level_terms) if level_terms else 0.0
    return median(here) + level, median(deviations)


def _pooled(series: Series, tenant: str, metric: str, at: int) -> tuple[float, float] | None:
    """(expected log value, MAD) of a new tenant: its level against the pooled shape."""
    first = series.first_active(tenant)
    if first is None or at - first < MIN_OWN_WINDOWS:
        return None
    shape = series.shape(metric, at)
    if shape is None:
        return None
    logs = series.logs(tenant, metric)
    own = []
    for index in range(max(first, at - LEVEL_WINDOWS), at):
        past = series.shape(metric, index)
        if past is not None:
            own.append(logs[index] - past[0])
    if len(own) < MIN_OWN_WINDOWS:
        return None
    return shape[0] + median(own), shape[1]


def _judge_rate(series: Series, tenant: str, at: int) -> Verdict | None:
    counts = series.counts[tenant]
    window = counts[at]
    if window.events < MIN_ERROR_EVENTS:
        return None
    usual = _usual_rate(series, tenant, at)
    if usual is None:
        return None
    rate, spread = usual
    noise = math.sqrt(max(rate * (1 - rate), 1e-6) / window.events)
    width = max(BAND_MADS * MAD_TO_SIGMA * spread, POISSON_SIGMAS * noise + RATE_FLOOR)
    # only a rise alarms: the band's low end is 0
    return Verdict(tenant, "error_rate", at, window.errors / window.events, rate, 0.0, min(1.0, rate + width))


def _usual_rate(series: Series, tenant: str, at: int) -> tuple[float, float] | None:
    """(usual error rate, MAD of busy windows' rates): the tenant's past week, or pooled."""
    past = series.counts[tenant][max(0, at - RATE_HISTORY_WEEKS * series.week):at]
    events = sum(c.events for c in past)
    if events >= MIN_RATE_EVENTS:
        rates = [c.errors / c.events for c in past if c.events >= MIN_ERROR_EVENTS]
        spread = median(abs(r - median(rates)) for r in rates) if len(rates) >= MIN_OWN_WINDOWS else 0.0
        return sum(c.errors for c in past) / events, spread
    pooled = []
    for other, counts in series.counts.items():
        window = counts[max(0, at - RATE_HISTORY_WEEKS * series.week):at]
        total = sum(c.events for c in window)
        if other != tenant and total >= MIN_RATE_EVENTS:
            pooled.append(sum(c.errors for c in window) / total)
    if len(pooled) < MIN_POOL_TENANTS:
        return None
    return median(pooled), median(abs(r - median(pooled)) for r in pooled)


def _value(counts: Counts, metric: str) -> float:
    if metric == "error_rate":
        return counts.errors / counts.events if counts.events else 0.0
    return float(getattr(counts, metric))


def _busy(counts: Sequence[Counts], at: int, week: int) -> bool:
    """Whether a tenant's past week averaged ``MIN_EVENTS`` events a window (a low-traffic
    tenant's shape is noise, kept out of the pool)."""
    past = counts[max(0, at - week):at]
    return bool(past) and sum(c.events for c in past) >= MIN_EVENTS * len(past)


def contributors(window: Mapping[str, float], usual: Mapping[str, float], usual_windows: int
                 ) -> list[dict[str, float | str]]:
    """The ``BREAKDOWN_TOP`` keys (models or users) that moved the window's value most from
    their usual amount per window (``usual`` sums ``usual_windows`` windows):
    ``{"key", "value", "share", "usual_share"}``."""
    total, usual_total = sum(window.values()), sum(usual.values())
    rows = []
    for key in set(window) | set(usual):
        share = window.get(key, 0.0) / total if total else 0.0
        usual_share = usual.get(key, 0.0) / usual_total if usual_total else 0.0
        moved = abs(window.get(key, 0.0) - usual.get(key, 0.0) / usual_windows)
        rows.append((moved, key, window.get(key, 0.0), share, usual_share))
    rows.sort(key=lambda row: (-row[0], row[1]))
    return [{"key": key, "value": value, "share": round(share, 4), "usual_share": round(usual_share, 4)}
            for _, key, value, share, usual_share in rows[:BREAKDOWN_TOP]]
