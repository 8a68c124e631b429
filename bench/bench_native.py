"""Native core benchmark: the per-event cost of each native function against its Python
reference, and a 1,000-event group through the writer (chain hashes, Merkle leaves) with
each, in the same run. Under 60 s; ``python -m bench.bench_native``.

(a) per function, on 1,000 realistic events (the stored entry bytes of ``bench.ingest``
    events): the median over ``REPEATS`` calls of one batch call, in µs per event; for the
    destinations' transforms, what the worker pays for a 1,000-event group either way (native:
    the events written as JSON lines and shaped in one call; reference: each event shaped
    by its Python transform and encoded); ``count_usage``, what the group adds to the usage
    aggregates; and ``select_events``, a destination's filter (a status and a model wildcard)
    and sampling of the group;
(b) ``Committer.append_events`` with the ledger's tree upkeep installed (exactly what the
    server runs), 1,000-event groups, fsync each, runs alternated native/reference: events/s;
(c) the edge's ``validate`` over one 1,000-event request (``bench.ingest``'s events, random
    ids), the core on and off: µs per event, and the two parts of the native path (the core's
    ``check_events``, and reading the canonical bytes back into ``Event`` objects).
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgspec

from bench.bench_ledger import GROUP_EVENTS, _ingest_once, _submissions
from bench.ingest import event
from scr import event_check, native
from scr.capture.ingest import Item, validate
from scr.ledger import upkeep
from scr.log import commit, entry, merkle
from scr.log.entry import GENESIS_HASH, LedgerEntry, Provenance, entry_bytes
from scr.route import selection, signing
from scr.route import transforms as route_transforms
from scr.route.prices import default_prices
from scr.route.transforms import (
    BUILTIN_TRANSFORMS,
    EntryRef,
    encode_lines,
    encode_output,
    resolve_transform,
)
from scr.schema import Event
from scr.security.keys import Principal, Role
from scr.usage import counting

EVENTS = 1000
TENANTS = 10
REPEATS = 30
SECRETS = [b"k" * 32]
INGEST_GROUPS = int(os.environ.get("SCR_BENCH_NATIVE_GROUPS", "20"))
INGEST_ROUNDS = 5  # alternated native/reference pairs; medians


def _stored_entries(count: int) -> list[tuple[str, bytes, str]]:
    """(tenant, stored entry bytes, event id) of ``count`` events as the writer stores them."""
    made = []
    for seq, sub in enumerate(_submissions(count, TENANTS), start=1):
        event = sub.event
        stored = entry_bytes(LedgerEntry(
            seq, commit.utc_now(), sub.actor, event.user.organization_id, "SESSION_COMPLETION",
            msgspec.Raw(sub.payload), Provenance(sub.source, event.event_id, sub.actor),
        ))
        made.append((event.user.organization_id, stored, event.event_id))
    return made


def _per_event_us(call: Callable[[], Any], events: int) -> float:
    samples = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) / events * 1e6


def _compare(
    native_call: Callable[[], Any], reference_call: Callable[[], Any], events: int
) -> dict[str, float]:
    native_us = _per_event_us(native_call, events)
    reference_us = _per_event_us(reference_call, events)
    return {"native_us_per_event": round(native_us, 3), "reference_us_per_event": round(reference_us, 3),
            "speedup": round(reference_us / native_us, 2)}


def per_function(core: Any) -> dict[str, Any]:
    """(a) each native function against its reference on the same 1,000 events."""
    made = _stored_entries(EVENTS)
    stored = [s for _, s, _ in made]
    names = sorted({t for t, _, _ in made})
    heads = [GENESIS_HASH] * len(names)
    slots = [names.index(t) for t, _, _ in made]
    event_ids = [e for _, _, e in made]
    batch_body = b"[" + b",".join(stored) + b"]"
    tenants, lines = [t for t, _, _ in made], b"".join(s + b"\n" for s in stored)
    native_prices = core.Prices(*default_prices().plain)
    reference_prices = route_transforms.Prices(*default_prices().plain)
    payloads = b"".join(sub.payload + b"\n" for sub in _submissions(EVENTS, TENANTS))
    chosen = ("analytics", 0.5, [], ["success", "error"], [], ["gpt-4o*", "claude-*"], [], [])
    return {
        "entry_bytes_mean": round(statistics.mean(len(s) for s in stored)),
        "leaf_hashes": _compare(lambda: core.leaf_hashes(stored), lambda: merkle.leaf_hashes(stored), EVENTS),
        "chain_hashes": _compare(lambda: core.chain_hashes(heads, slots, stored),
                                 lambda: entry.chain_hashes(heads, slots, stored), EVENTS),
        "webhook_ids": _compare(lambda: core.webhook_ids("billing", event_ids),
                                lambda: signing.webhook_ids("billing", event_ids), EVENTS),
        # one signature per event's own body (single-event deliveries), in a loop as the worker does
        "sign_each_event": _compare(lambda: [core.sign(SECRETS, "msg_x", 1, s) for s in stored],
                                    lambda: [signing.sign(SECRETS, "msg_x", 1, s) for s in stored], EVENTS),
        # one signature over a 1,000-event batched body
        "sign_batch_body": _compare(lambda: core.sign(SECRETS, "msg_x", 1, batch_body),
                                    lambda: signing.sign(SECRETS, "msg_x", 1, batch_body), EVENTS),
        # what the group adds to the usage aggregates (the usage reader's per-group call)
        "count_usage": _compare(lambda: core.count_usage(native_prices, tenants, lines),
                                lambda: counting.count_usage(reference_prices, tenants, lines), EVENTS),
        # a destination's filter and sampling of the group's ledgered events (its reader's call)
        "select_events": _compare(lambda: core.select_events(core.Selection(*chosen), payloads),
                                  lambda: selection.select_events(selection.Selection(*chosen), payloads),
                                  EVENTS),
    }


def transforms(core: Any) -> dict[str, Any]:
    """Each built-in transform of a 1,000-event group, native against the Python path."""
    events: list[Event] = [sub.event for sub in _submissions(EVENTS, TENANTS)]
    refs = [EntryRef(seq, seq, bytes(32)) for seq in range(1, EVENTS + 1)]
    seqs, hashes = [ref.seq for ref in refs], [ref.entry_hash for ref in refs]
    figures: dict[str, Any] = {"event_json_bytes_mean": round(len(encode_lines(events)) / EVENTS) - 1}
    for name in BUILTIN_TRANSFORMS:
        shape = resolve_transform(name, default_prices())
        prices = core.Prices(*default_prices().plain) if name == "billing_v1" else None

        def native_group(name: str = name, prices: Any = prices) -> Any:
            return core.transform_events(name, prices, encode_lines(events), seqs, seqs, hashes)

        def python_group(shape: Any = shape) -> Any:
            return [encode_output(shape(event, ref)) for event, ref in zip(events, refs, strict=True)]

        figures[name] = _compare(native_group, python_group, EVENTS)
    return figures


@contextlib.contextmanager
def _bound(chain_hashes: Callable[[Sequence[bytes], Sequence[int], Sequence[bytes]], list[bytes]],
           leaf_hashes: Callable[[Sequence[bytes]], list[bytes]]) -> Iterator[None]:
    """The writer's and the tree keeper's hashing bound to these functions for a while."""
    saved = commit.chain_hashes, upkeep.leaf_hashes
    commit.chain_hashes, upkeep.leaf_hashes = chain_hashes, leaf_hashes
    try:
        yield
    finally:
        commit.chain_hashes, upkeep.leaf_hashes = saved


def through_the_writer(core: Any) -> dict[str, Any]:
    """(b) 1,000-event groups through the committer and the tree upkeep, native vs reference."""
    submissions = _submissions(INGEST_GROUPS * GROUP_EVENTS, TENANTS)
    gc.collect()
    gc.freeze()  # the prepared events are the fixture: keep the GC from walking them
    runs: dict[str, list[float]] = {"native": [], "reference": []}
    _ingest_once(submissions[: 2 * GROUP_EVENTS], True)  # warm up
    for _ in range(INGEST_ROUNDS):
        with _bound(core.chain_hashes, core.leaf_hashes):
            runs["native"].append(_ingest_once(submissions, True))
        with _bound(entry.chain_hashes, merkle.leaf_hashes):
            runs["reference"].append(_ingest_once(submissions, True))
    gc.unfreeze()
    native_rate, reference_rate = (statistics.median(runs[k]) for k in ("native", "reference"))
    return {
        "events_per_run": len(submissions),
        "native_events_per_s": round(native_rate),
        "reference_events_per_s": round(reference_rate),
        "native_us_per_event": round(1e6 / native_rate, 2),
        "reference_us_per_event": round(1e6 / reference_rate, 2),
        "runs_native": [round(r) for r in runs["native"]],
        "runs_reference": [round(r) for r in runs["reference"]],
    }


def _validate(items: list[Item], core_on: bool) -> None:
    """``validate`` as the edge runs it, with the native core on or off."""
    saved = native.NATIVE
    native.NATIVE = core_on
    try:
        validate(items, Principal("bench", None, Role.PLATFORM), True, "http")
    finally:
        native.NATIVE = saved


def through_validate(core: Any) -> dict[str, Any]:
    """(c) the edge's per-event validation of one 1,000-event request, core on and off."""
    raws = [msgspec.json.encode(event(uuid.uuid4().hex)) for _ in range(EVENTS)]
    items = [Item(index, raw) for index, raw in enumerate(raws)]
    latest = event_check.latest_epoch_us()
    canonical = [verdict[4] for verdict in core.check_events(raws, latest) if verdict is not None]
    assert len(canonical) == EVENTS, "every benchmark event is valid"
    read_back = msgspec.json.Decoder(Event).decode
    return {
        "event_bytes_mean": round(statistics.mean(len(raw) for raw in raws)),
        "validate": _compare(lambda: _validate(items, True), lambda: _validate(items, False), EVENTS),
        "check_events": _compare(lambda: core.check_events(raws, latest),
                                 lambda: event_check.check_events(raws, latest), EVENTS),
        "canonical_to_event_us_per_event": round(
            _per_event_us(lambda: [read_back(payload) for payload in canonical], EVENTS), 3),
    }


def main() -> dict[str, Any]:
    """(a) and (b) as one dict; says so (and measures nothing) when the core is not built."""
    try:
        from scr import _core
    except ImportError:
        return {"native_core": native.STATUS, "why": native.WHY_OFF}
    return {"native_core": native.STATUS, "per_function": per_function(_core),
            "transforms": transforms(_core), "through_validate": through_validate(_core),
            "through_the_writer": through_the_writer(_core)}


if __name__ == "__main__":
    started = time.perf_counter()
    figures = main()
    figures["bench_seconds"] = round(time.perf_counter() - started, 1)
    print(msgspec.json.format(msgspec.json.encode(figures), indent=2).decode())
