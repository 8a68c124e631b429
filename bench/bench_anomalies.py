"""Anomaly detection benchmark (usage issue): precision, recall and detection delay of the
detector ``scr: usage`` runs (``scr.usage.anomalies``) and of a rolling z-score baseline, on
the same synthetic data, in one run.

The data (deterministic from ``SCR_BENCH_ANOMALY_SEED``): ``DAYS`` days of hourly windows for
``ESTABLISHED`` tenants of sizes from 20 to 3,000 events an hour at their peak, ``NEW`` tenants
that start in the last ``JUDGED_DAYS`` days, and ``LOW_TRAFFIC`` tenants of 1 to 8 events an
hour. Traffic has a daily shape (a day peak, each tenant's shifted by up to 2 hours) and a
weekly one (weekends at half), Poisson event counts, tokens and cost per event that wander
a little from window to window, and a binomial error count. Injected anomalies, each labelled
with the metrics it moves: traffic spikes and drops and token bloat (cost and tokens), an
expensive model (cost), level shifts of traffic (cost and tokens), error spikes (error rate).
Low-traffic tenants get none: any alarm on them is false.

Scoring, per (tenant, metric): an alarm in a labelled span (its windows, plus ``TOLERANCE``
windows after it; a level shift's span is its first ``SHIFT_SPAN`` windows) is true, any other
alarm is false; a label is found when one of its span's windows alarms; the delay is the
first such window less the anomaly's first one. The detectors never see the labels.
Runs in well under a minute on the 2-core machine.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from statistics import fmean, median, pstdev
from typing import Any

from scr.usage.anomalies import METRICS, MIN_ERROR_EVENTS, MIN_EVENTS, Counts, Series, Verdict, judge

SEED = int(os.environ.get("SCR_BENCH_ANOMALY_SEED", "20261205"))
HOURS_PER_DAY, WEEK = 24, 168
DAYS = 28
JUDGED_DAYS = 14  # the last two weeks are judged; the first two are every established tenant's history
ESTABLISHED, NEW, LOW_TRAFFIC = 40, 8, 8
ANOMALIES_PER_TENANT = 5
APART = 30  # windows between two anomalies' starts at least
ATTEMPTS = 1000  # draws of an anomaly's start
TOLERANCE = 2  # windows after an anomaly where an alarm still counts as finding it
SHIFT_SPAN = 6
Z_WINDOWS, Z_LIMIT = 24, 3.0  # the rolling z-score baseline: mean and std of the last 24 windows


@dataclass(frozen=True)
class Label:
    tenant: str
    metric: str
    kind: str
    start: int
    end: int  # the last window of the span that counts


@dataclass
class Tenant:
    name: str
    start: int
    peak: float  # events an hour at the day's peak on a weekday
    shift: int
    tokens: float
    price: float  # USD per token
    error_rate: float


def shape(hour: int, shift: int) -> float:
    """A working day's traffic: low at night, peaking mid-afternoon; weekends at half."""
    local = (hour - shift) % HOURS_PER_DAY
    day = 0.15 + 0.85 * math.exp(-(((local - 14) / 4.5) ** 2))
    weekend = 0.5 if (hour // HOURS_PER_DAY) % 7 in (5, 6) else 1.0
    return day * weekend


def poisson(rng: random.Random, mean: float) -> int:
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def binomial(rng: random.Random, n: int, p: float) -> int:
    if n * p * (1 - p) > 25:
        return min(n, max(0, round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))))
    return sum(rng.random() < p for _ in range(n))


def tenants(rng: random.Random) -> list[Tenant]:
    made = []
    judged_from = (DAYS - JUDGED_DAYS) * HOURS_PER_DAY
    for n in range(ESTABLISHED + NEW + LOW_TRAFFIC):
        if n < ESTABLISHED + NEW:
            peak = math.exp(rng.uniform(math.log(60), math.log(3000)))
        else:
            peak = rng.uniform(1, 8)
        start = 0
        if ESTABLISHED <= n < ESTABLISHED + NEW:
            start = judged_from + rng.randrange(0, (JUDGED_DAYS - 3) * HOURS_PER_DAY)
        made.append(Tenant(f"t{n:02d}", start, peak, rng.randrange(0, 3), rng.uniform(300, 5000),
                           rng.uniform(1e-7, 2e-5), rng.uniform(0.005, 0.08)))
    return made


def plan(rng: random.Random, tenant: Tenant, judged_from: int, end: int) -> list[tuple[str, int, int, float]]:
    """(kind, first window, windows, factor) of a tenant's anomalies, apart from each other."""
    first = max(judged_from, tenant.start + 6)
    # a new tenant's first anomaly falls in its first day: the pooled baseline must find it
    starts = [first + rng.randrange(0, 12)] if tenant.start else []
    for _ in range(ATTEMPTS):  # a new tenant's short life holds fewer
        if len(starts) == ANOMALIES_PER_TENANT:
            break
        at = rng.randrange(first, end - SHIFT_SPAN - TOLERANCE)
        if all(abs(at - other) > APART for other in starts):
            starts.append(at)
    planned = []
    kinds = ["spike", "drop", "expensive_model", "token_bloat", "error_spike", "level_shift"]
    for at in sorted(starts):
        kind = rng.choice(kinds)
        windows = rng.randint(1, 3)
        factor = {"spike": rng.uniform(3, 6), "drop": rng.uniform(0.05, 0.25),
                  "expensive_model": rng.uniform(4, 8), "token_bloat": rng.uniform(3, 5),
                  "error_spike": rng.uniform(0.15, 0.4), "level_shift": rng.choice([2.5, 3.0, 0.3])}[kind]
        planned.append((kind, at, windows, factor))
    return planned


def synthesize(seed: int) -> tuple[dict[str, list[Counts]], list[Label]]:
    rng = random.Random(seed)
    hours, judged_from = DAYS * HOURS_PER_DAY, (DAYS - JUDGED_DAYS) * HOURS_PER_DAY
    series: dict[str, list[Counts]] = {}
    labels: list[Label] = []
    for tenant in tenants(rng):
        low = tenant.peak < MIN_EVENTS / 2
        planned = [] if low else plan(rng, tenant, judged_from, hours)
        traffic, tokens, price, errors = [1.0] * hours, [1.0] * hours, [1.0] * hours, [0.0] * hours
        for kind, at, windows, factor in planned:
            last = hours if kind == "level_shift" else at + windows
            for hour in range(at, last):
                if kind in ("spike", "drop", "level_shift"):
                    traffic[hour] *= factor
                elif kind == "token_bloat":
                    tokens[hour] *= factor
                elif kind == "expensive_model":
                    price[hour] *= factor
                else:
                    errors[hour] += factor
            span_end = at + (SHIFT_SPAN if kind == "level_shift" else windows) - 1 + TOLERANCE
            moved = ["error_rate"] if kind == "error_spike" else \
                ["cost_usd"] if kind == "expensive_model" else ["cost_usd", "total_tokens"]
            labels.extend(Label(tenant.name, metric, kind, at, span_end) for metric in moved)
        counts = []
        for hour in range(hours):
            if hour < tenant.start:
                counts.append(Counts())
                continue
            events = poisson(rng, tenant.peak * shape(hour, tenant.shift) * traffic[hour])
            used = events * tenant.tokens * tokens[hour] * math.exp(rng.gauss(0, 0.08))
            cost = used * tenant.price * price[hour] * math.exp(rng.gauss(0, 0.04))
            failed = binomial(rng, events, min(1.0, tenant.error_rate + errors[hour]))
            counts.append(Counts(events, failed, round(used), cost))
        series[tenant.name] = counts
    return series, labels


def rolling_z(series: Series, at: int, metric: str) -> list[Verdict]:
    """The baseline: mean ± Z_LIMIT standard deviations of the last Z_WINDOWS windows (with the
    same low-traffic rule as the detector, to be fair)."""
    verdicts = []
    for tenant, counts in series.counts.items():
        past = counts[max(0, at - Z_WINDOWS):at]
        if len(past) < Z_WINDOWS or not past[0].events:
            continue
        window = counts[at]
        if metric == "error_rate":
            if window.events < MIN_ERROR_EVENTS:
                continue
            values = [c.errors / c.events if c.events else 0.0 for c in past]
            value = window.errors / window.events
        else:
            if max(window.events, fmean(c.events for c in past)) < MIN_EVENTS:
                continue
            values = [float(getattr(c, metric)) for c in past]
            value = float(getattr(window, metric))
        mean, std = fmean(values), pstdev(values)
        verdicts.append(Verdict(tenant, metric, at, value, mean, mean - Z_LIMIT * std, mean + Z_LIMIT * std))
    return verdicts


def score(detector: Callable[[Series, int, str], list[Verdict]], series: Series, labels: list[Label],
          judged_from: int, end: int, new: set[str]) -> dict[str, Any]:
    by_key: dict[tuple[str, str], list[Label]] = {}
    for label in labels:
        by_key.setdefault((label.tenant, label.metric), []).append(label)
    true = false = 0
    found: dict[Label, int] = {}
    started = time.perf_counter()
    for at in range(judged_from, end):
        for metric in METRICS:
            for verdict in detector(series, at, metric):
                if not verdict.anomalous:
                    continue
                hit = [lb for lb in by_key.get((verdict.tenant, metric), []) if lb.start <= at <= lb.end]
                if hit:
                    true += 1
                    for label in hit:
                        found.setdefault(label, at - label.start)
                else:
                    false += 1
    delays = sorted(found.values())
    return {
        "alarms": true + false, "false_alarms": false,
        "precision": round(true / (true + false), 3) if true + false else None,
        "recall": round(len(found) / len(labels), 3),
        "recall_new_tenants": round(sum(1 for lb in found if lb.tenant in new)
                                    / max(1, sum(1 for lb in labels if lb.tenant in new)), 3),
        "delay_windows_median": median(delays) if delays else None,
        "delay_windows_max": max(delays) if delays else None,
        "recall_by_kind": {kind: _share_found(kind, found, labels)
                           for kind in sorted({lb.kind for lb in labels})},
        "seconds": round(time.perf_counter() - started, 2),
    }


def _share_found(kind: str, found: dict[Label, int], labels: list[Label]) -> float:
    labelled = sum(1 for lb in labels if lb.kind == kind)
    return round(sum(1 for lb in found if lb.kind == kind) / max(1, labelled), 3)


def main() -> dict[str, Any]:
    counts, labels = synthesize(SEED)
    hours, judged_from = DAYS * HOURS_PER_DAY, (DAYS - JUDGED_DAYS) * HOURS_PER_DAY
    new_names = {f"t{n:02d}" for n in range(ESTABLISHED, ESTABLISHED + NEW)}
    return {
        "seed": SEED, "tenants": len(counts), "windows": hours, "judged_windows": hours - judged_from,
        "labelled_anomalies": len(labels),
        "labelled_on_new_tenants": sum(1 for lb in labels if lb.tenant in new_names),
        "detector": score(judge, Series(WEEK, counts), labels, judged_from, hours, new_names),
        "rolling_z_score": score(rolling_z, Series(WEEK, counts), labels, judged_from, hours, new_names),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
