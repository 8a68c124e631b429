"""A destination's outputs: each event it sends, transformed and encoded, a batch at a time.

With the native core on (``scr.native``), a built-in transform shapes a whole batch of events
in one call that releases the GIL: the events cross as JSON lines (each event's bytes as the
ledger holds them when the destination shows it as it is, so a reader need not decode it;
else as msgspec writes it; the core splits them at each newline without reading them) and
each output comes back as the bytes ``encode_output(transform(event, entry))`` gives. An
event the core leaves to Python (see ``transform_events``), every event of a custom
transform, and every event with the core off are shaped by the Python transform, one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from scr import native
from scr.log.commit import Committed, event_of
from scr.route.price_file import PriceSource
from scr.route.prices import PriceTable
from scr.route.transforms import (
    BUILTIN_TRANSFORMS,
    EntryRef,
    Prices,
    PythonTransformLike,
    encode_lines,
    encode_output,
    json_lines,
    resolve_transform,
)
from scr.schema import Event

# billing_v1 and analytics_v2 show no message text: an event whose ledgered line is longer than
# this crosses to the core without its final message and content (which it would only copy
# and skip, about a microsecond per KiB, far more than the transform's own work).
TEXT_CROSSING_MAX_CHARS = 4096
TEXTLESS_TRANSFORMS = frozenset(("billing_v1", "analytics_v2"))


class Outputs:
    """Shapes a destination's events with its transform."""

    def __init__(
        self, spec: str | PythonTransformLike, prices: PriceSource,
        shown: Callable[[Event], Event] | None,
    ) -> None:
        """``spec`` names the transform (``resolve_transform``), ``prices`` costs
        ``billing_v1``; ``shown`` is each event as the destination may see it (``None``: as
        it is)."""
        self.transform = resolve_transform(spec, prices)
        self.prices = prices
        self.shown = shown
        self._read_prices: tuple[PriceTable, Prices] | None = None
        self.native_transform = self.native_transform_of(spec)

    @staticmethod
    def native_transform_of(spec: str | PythonTransformLike) -> str | None:
        """The built-in transform the native core shapes for ``spec``; ``None``: Python does."""
        return spec if isinstance(spec, str) and spec in BUILTIN_TRANSFORMS and native.NATIVE else None

    def of(self, entries: Sequence[Committed]) -> list[bytes]:
        """The output of each entry (every one a committed event, decoded or not)."""
        if self.native_transform is None or not entries:
            return [self._shaped(self._shown(entry), entry) for entry in entries]
        # an event shown as it is crosses as its ledgered line, when it has one
        events = [entry.event if self.shown is None else self._shown(entry) for entry in entries]
        prices = self._native_prices() if self.native_transform == "billing_v1" else None
        textless = self.native_transform in TEXTLESS_TRANSFORMS  # a long text need not cross
        lines = [_line(entry, event, textless) for entry, event in zip(entries, events, strict=True)]
        outputs = native.transform_events(
            self.native_transform, prices, json_lines(lines), [e.seq for e in entries],
            [e.tenant_seq for e in entries], [e.entry_hash for e in entries],
        )
        return [
            output if output is not None
            else self._shaped(event if event is not None else self._shown(entry), entry)
            for output, event, entry in zip(outputs, events, entries, strict=True)
        ]

    def _shown(self, entry: Committed) -> Event:
        event = event_of(entry)
        return event if self.shown is None else self.shown(event)

    def _native_prices(self) -> Prices:
        """The current price table as the core reads it, read again only when it changes."""
        table = self.prices.current()
        if self._read_prices is None or self._read_prices[0] is not table:
            self._read_prices = (table, native.Prices(*table.plain))
        return self._read_prices[1]

    def _shaped(self, event: Event, entry: Committed) -> bytes:
        """One event's output, by the Python transform."""
        return encode_output(self.transform(event, EntryRef(entry.seq, entry.tenant_seq, entry.entry_hash)))


def _line(entry: Committed, event: Event | None, textless: bool) -> bytes:
    """An event as it crosses to the core, one JSON line (without its newline): its ledgered
    bytes where the event crosses as it was ledgered (the core reads either key order), else
    the event encoded. For the transforms that show no text, a long message or content is left
    out of it."""
    if entry.line and (event is None or event is entry.event):
        if not textless or len(entry.line) <= TEXT_CROSSING_MAX_CHARS:
            return entry.line
        event = event_of(entry)
    assert event is not None  # an entry without a line was read decoded
    return encode_lines((_without_long_text(event) if textless else event,))[:-1]


def _without_long_text(event: Event) -> Event:
    """The event without its final message and content if it carries content or a long
    message (else the event itself: the common case costs two attribute reads)."""
    message = event.outcome.final_message
    if event.content is msgspec.UNSET and (message is None or len(message) <= TEXT_CROSSING_MAX_CHARS):
        return event
    outcome = msgspec.structs.replace(event.outcome, final_message=None)
    return msgspec.structs.replace(event, outcome=outcome, content=msgspec.UNSET)
