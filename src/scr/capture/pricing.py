"""Unpriced models of accepted events, counted.

Sources that build events on the server (browser beacons, OpenTelemetry spans) price them
with ``scr.sdk.event.build_event`` and the server's table in force; a model the table does
not know is never silently free: it costs ``0`` and the event carries the tag
``price: unknown`` (with the table's version), so billing can find and re-price it.

Every accepted event whose model the table does not know, whoever built it, is also counted
by ``count_unpriced`` in ``scr_events_unpriced_model_total{model}``, so an operator sees a
new model before the invoices do. Model names come from clients, so the label takes at most
``MAX_MODEL_LABELS`` names; later ones count under ``other``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from prometheus_client import Counter

from scr.log.commit import Outcome, Submission
from scr.route.prices import (
    PriceTable,
)

MAX_MODEL_LABELS = 100
OTHER_MODELS = "other"

_labelled: set[str] = set()
_labelled_lock = threading.Lock()


def count_unpriced(
    counter: Counter,
    prices: PriceTable,
    submissions: Sequence[Submission],
    outcomes: Sequence[tuple[Outcome, int]],
) -> None:
    """Count the newly accepted events whose model ``prices`` cannot price."""
    for submission, (outcome, _seq) in zip(submissions, outcomes, strict=True):
        model = submission.model
        if outcome is not Outcome.ACCEPTED or prices.price(model) is not None:
            continue
        with _labelled_lock:
            if model not in _labelled and len(_labelled) < MAX_MODEL_LABELS:
                _labelled.add(model)
            label = model if model in _labelled else OTHER_MODELS
        counter.labels(label).inc()
