"""Route: deliver committed events to destinations.

For each destination, in order: filter → sample (``selection``) → transform (``transforms``,
costed by ``prices``) → sign (``signing``) → deliver, and after each attempt classify and
wait (``retry``). Those steps are pure functions; the delivery worker (``worker``) and sinks
(``sinks``) do the I/O.
"""

from scr.route.prices import ModelPrice, PriceTable, default_prices
from scr.route.retry import Verdict, backoff_ms, classify, next_delay_ms, retry_after_seconds
from scr.route.selection import FilterLike, passes_filter, sampled_in
from scr.route.signing import batch_webhook_id, generate_secret, sign, verify, webhook_id
from scr.route.transforms import EntryRef, Transform, resolve_transform

__all__ = [
    "EntryRef",
    "FilterLike",
    "ModelPrice",
    "PriceTable",
    "Transform",
    "Verdict",
    "backoff_ms",
    "batch_webhook_id",
    "classify",
    "default_prices",
    "generate_secret",
    "next_delay_ms",
    "passes_filter",
    "resolve_transform",
    "retry_after_seconds",
    "sampled_in",
    "sign",
    "verify",
    "webhook_id",
]
