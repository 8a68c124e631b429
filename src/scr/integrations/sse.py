"""An incremental ``text/event-stream`` reader: bytes in as they pass, each event's data out.

Memory is bounded: at most ``max_event_bytes`` of one unfinished event are held; an event
larger than that is skipped whole (and counted in ``skipped``), never buffered.
"""

from __future__ import annotations

MAX_EVENT_BYTES = 1024 * 1024  # far above any completion chunk or Responses API event
_EVENT_END = b"\n\n"


class SSEReader:
    """Feed it a stream's bytes in order; it answers the ``data`` of each complete event."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self.skipped = 0
        self._pending = bytearray()
        self._skipping = False  # inside an oversized event: drop bytes until its end

    def feed(self, chunk: bytes) -> list[str]:
        """The data of every event that ``chunk`` completes (multi-line data joined by \\n)."""
        self._pending += chunk
        if b"\r" in self._pending:
            # CRLF and CR line ends are SSE too; a CR last in a chunk may begin a CRLF: wait.
            keep_cr = self._pending.endswith(b"\r")
            text = bytes(self._pending[:-1] if keep_cr else self._pending)
            self._pending = bytearray(text.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
            if keep_cr:
                self._pending += b"\r"
        found: list[str] = []
        while (end := self._pending.find(_EVENT_END)) >= 0:
            block = bytes(self._pending[:end])
            del self._pending[: end + len(_EVENT_END)]
            if self._skipping:
                self._skipping = False
                continue
            data = [line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
            if data:
                found.append(b"\n".join(data).decode("utf-8", "replace"))
        if len(self._pending) > self.max_event_bytes:
            del self._pending[:-1]  # the last byte may be the first half of the event's end
            if not self._skipping:
                self.skipped += 1
            self._skipping = True
        return found
