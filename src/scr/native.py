"""The boundary to scr's native core, ``scr._core`` (Rust, built from ``native/``).

Each per-event function below is bound once, at import, either to the native core or to
its pure-Python reference, which stays the definition: both give byte-identical results
(tests/native/). ``NATIVE`` says which is live; ``SCR_NATIVE=0`` forces the reference (for
tests and comparisons). Every function takes a whole batch, so the boundary is crossed once
per batch, and the native core releases the GIL while it hashes.

The native functions and their references:

- ``leaf_hashes``: ``scr.log.merkle.leaf_hashes`` (RFC 6962 leaf hashes of stored entries);
- ``chain_hashes``: ``scr.log.entry.chain_hashes`` (a group's per-tenant chain hashes);
- ``webhook_ids``, ``batch_webhook_id``, ``sign``: ``scr.route.signing`` (Standard Webhooks);
- ``check_events``: ``scr.event_check.check_events`` (the edge's per-event validation,
  canonical bytes and digest).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from types import ModuleType

from scr import event_check
from scr.log import entry, merkle
from scr.route import signing

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
webhook_ids: Callable[[str, Sequence[str]], list[str]]
batch_webhook_id: Callable[[str, int, int], str]
sign: Callable[[list[bytes], str, int, bytes], str]
check_events: Callable[[Sequence[bytes], int], list[event_check.Verdict]]

if _core is not None:
    leaf_hashes = _core.leaf_hashes
    chain_hashes = _core.chain_hashes
    webhook_ids = _core.webhook_ids
    batch_webhook_id = _core.batch_webhook_id
    sign = _core.sign
    check_events = _core.check_events
else:
    leaf_hashes = merkle.leaf_hashes
    chain_hashes = entry.chain_hashes
    webhook_ids = signing.webhook_ids
    batch_webhook_id = signing.batch_webhook_id
    sign = signing.sign
    check_events = event_check.check_events
