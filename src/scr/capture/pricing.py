"""The cost a capture source puts on an event it builds, from the server's price table.

Sources that build events on the server (browser beacons, OpenTelemetry spans) know tokens
and a model but no price. They price them with ``scr.route.prices``; a model the table does
not know is never silently free: it costs ``0`` and the event carries the tag
``price: unknown`` (with the table's version), so billing can find and re-price it.
"""

from __future__ import annotations

from decimal import Decimal

from scr.route.prices import PriceTable, default_prices, format_usd
from scr.schema import Usage

UNKNOWN_PRICE_TAG = "price"


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
        return "0", {UNKNOWN_PRICE_TAG: "unknown", "price_table_version": table.version}
    return format_usd(cost), {}
