"""The cost a capture source puts on an event it builds, from the server's price table.

Sources that build events on the server (browser beacons, OpenTelemetry spans) know tokens
and a model but no price. They price them with ``scr.route.prices``; a model the table does
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
from decimal import Decimal

from prometheus_client import Counter

from scr.log.commit import Outcome, Submission
from scr.route.prices import (
    PRICE_VERSION_TAG,
    UNKNOWN_PRICE_TAG,
    UNKNOWN_PRICE_VALUE,
    PriceTable,
    default_prices,
    format_usd,
)
from scr.schema import Usage

MAX_MODEL_LABELS = 100
OTHER_MODELS = "other"

_labelled: set[str] = set()
_labelled_lock = threading.Lock()


def estimated_cost(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int | None = None,
    prices: PriceTable | None = None,
) -> tuple[str, dict[str, str]]:
    """(cost in USD as a decimal string, tags to add to the event)."""
    table = prices or default_prices()
    usage = Usage(
        input_tokens=input_tokens, output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens, model=model,
        estimated_cost_usd=Decimal(0), cache_read_tokens=cache_read_tokens,
    )
    cost = table.cost(usage)
    if cost is None:
        return "0", {UNKNOWN_PRICE_TAG: UNKNOWN_PRICE_VALUE, PRICE_VERSION_TAG: table.version}
    return format_usd(cost), {}


def count_unpriced(
    counter: Counter,
    prices: PriceTable,
    submissions: Sequence[Submission],
    outcomes: Sequence[tuple[Outcome, int]],
) -> None:
    """Count the newly accepted events whose model ``prices`` cannot price."""
    for submission, (outcome, _seq) in zip(submissions, outcomes, strict=True):
        model = submission.event.usage.model
        if outcome is not Outcome.ACCEPTED or prices.price(model) is not None:
            continue
        with _labelled_lock:
            if model not in _labelled and len(_labelled) < MAX_MODEL_LABELS:
                _labelled.add(model)
            label = model if model in _labelled else OTHER_MODELS
        counter.labels(label).inc()
