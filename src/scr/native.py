"""The boundary to scr's native core, ``scr._core`` (Rust, built from ``native/``).

Each per-event function below is bound once, at import, either to the native core or to
its pure-Python reference, which stays the definition: both give byte-identical results
(tests/native/). ``NATIVE`` says which is live; ``SCR_NATIVE=0`` forces the reference (for
tests and comparisons). Every function takes a whole batch, so the boundary is crossed once
per batch, and the native core releases the GIL while it hashes.

The native functions and their references:

- ``leaf_hashes``: ``scr.log.merkle.leaf_hashes`` (RFC 6962 leaf hashes of stored entries);
- ``extend_frontier``: ``scr.log.merkle.extend_frontier`` (the tree nodes new leaves complete);
- ``chain_hashes``: ``scr.log.entry.chain_hashes`` (a group's per-tenant chain hashes);
- ``webhook_ids``, ``batch_webhook_id``, ``sign``: ``scr.route.signing`` (Standard Webhooks);
- ``event_keys`` and the class ``KeyIndex``: ``scr.log.keys`` (the embedded store's
  dedup index, kept durable by ``scr.store.keylog``);
- ``transform_events`` and the class ``Prices``: ``scr.route.transforms`` (the built-in
  transforms' outputs of a batch of events, costed with a price table read once; the native
  one may leave an event to the reference, which ``scr.route.outputs`` then calls);
- ``check_events``: ``scr.event_check.check_events`` (the edge's per-event validation,
  canonical bytes and digest);
- ``count_usage``: ``scr.usage.counting.count_usage`` (what a group of events adds to the
  usage counters);
- ``select_events`` and the class ``Selection``: ``scr.route.selection`` (a destination's filter
  and sampling of a batch of events, each read for the fields a filter names).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from types import ModuleType

from scr import event_check
from scr.log import entry, keys, merkle
from scr.route import selection, signing, transforms
from scr.usage import counting

FORCE_REFERENCE_ENV = "SCR_NATIVE"  # "0": run the pure-Python reference


def _load_core() -> tuple[ModuleType | None, str]:
    """The native core if it is built and wanted, else why the reference runs."""
    if os.environ.get(FORCE_REFERENCE_ENV) == "0":
        return None, f"{FORCE_REFERENCE_ENV}=0 forces the pure-Python reference"
    try:
        from scr import _core
    except ImportError as error:
        return None, f"scr._core is not built ({error}); install scr where cargo is to build it"
    return _core, ""


_core, WHY_OFF = _load_core()
NATIVE = _core is not None
STATUS = "native core: on" if NATIVE else "native core: off (pure Python)"
"""Whether the native core is live (else every function below is the Python reference)."""

leaf_hashes: Callable[[Sequence[bytes]], list[bytes]]
chain_hashes: Callable[[Sequence[bytes], Sequence[int], Sequence[bytes]], list[bytes]]
extend_frontier: Callable[[Sequence[bytes], int, Sequence[bytes]], tuple[list[merkle.Node], list[bytes]]]
webhook_ids: Callable[[str, Sequence[str]], list[str]]
batch_webhook_id: Callable[[str, int, int], str]
sign: Callable[[list[bytes], str, int, bytes], str]
event_keys: Callable[[Sequence[str], Sequence[str]], list[int]]
KeyIndex: type[keys.KeyIndex]
Prices: type[transforms.Prices]
transform_events: Callable[
    [str, transforms.Prices | None, bytes, Sequence[int], Sequence[int], Sequence[bytes]], list[bytes | None]
]
check_events: Callable[[Sequence[bytes], int], list[event_check.Verdict]]
count_usage: Callable[[transforms.Prices, Sequence[str], bytes], counting.Counted]
Selection: type[selection.Selection]
select_events: Callable[[selection.Selection, bytes], bytes]

if _core is not None:
    leaf_hashes = _core.leaf_hashes
    chain_hashes = _core.chain_hashes
    extend_frontier = _core.extend_frontier
    webhook_ids = _core.webhook_ids
    batch_webhook_id = _core.batch_webhook_id
    sign = _core.sign
    event_keys = _core.event_keys
    KeyIndex = _core.KeyIndex
    Prices = _core.Prices
    transform_events = _core.transform_events
    check_events = _core.check_events
    count_usage = _core.count_usage
    Selection = _core.Selection
    select_events = _core.select_events
else:
    leaf_hashes = merkle.leaf_hashes
    chain_hashes = entry.chain_hashes
    extend_frontier = merkle.extend_frontier
    webhook_ids = signing.webhook_ids
    batch_webhook_id = signing.batch_webhook_id
    sign = signing.sign
    event_keys = keys.event_keys
    KeyIndex = keys.KeyIndex
    Prices = transforms.Prices
    transform_events = transforms.transform_events
    check_events = event_check.check_events
    count_usage = counting.count_usage
    Selection = selection.Selection
    select_events = selection.select_events
