"""A minimal, fast webhook receiver for benchmarks (its own process).

It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) to accept deliveries
quickly, counts delivered items, and in ``--timing`` mode records when each event id arrived
(wall clock, so another process can compare it with its own send times).

    python -m bench.receiver PORT [--timing FILE]

A GET answers ``{"items": N}``; SIGTERM writes the timing file and exits.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from collections.abc import Callable

import msgspec

EVENT_ID = re.compile(rb'"event_id":"([^"]+)"')
ITEMS = msgspec.json.Decoder(list[msgspec.Raw])


class Receiver:
    def __init__(self, timing: bool, clock: Callable[[], float] = time.time) -> None:
        self.items = 0
        self.timing = timing
        self.clock = clock  # in-process users pass time.monotonic, shared with their client
        self.arrivals: dict[str, float] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                now = self.clock()
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length) if length else b""
                if head.startswith(b"GET"):
                    answer = json.dumps({"items": self.items}).encode()
                else:
                    items = ITEMS.decode(body) if body[:1] == b"[" else [body]
                    self.items += len(items)
                    if self.timing:
                        for item in items:
                            found = EVENT_ID.search(bytes(item))  # the first: the item's own
                            if found:
                                self.arrivals.setdefault(found.group(1).decode(), now)
                    answer = b"{}"
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(answer)).encode() + b"\r\n\r\n" + answer
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def main(port: int, timing_file: str | None) -> None:
    receiver = Receiver(timing_file is not None)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", port)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()
    if timing_file:
        with open(timing_file, "w") as out:
            json.dump(receiver.arrivals, out)


if __name__ == "__main__":
    args = sys.argv[1:]
    timing = args[args.index("--timing") + 1] if "--timing" in args else None
    asyncio.run(main(int(args[0]), timing))
