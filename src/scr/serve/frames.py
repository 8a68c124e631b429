"""Calls between the processes of one instance: length-prefixed frames on a Unix socket.

A frame is a 4-byte length, an 8-byte call id and the body (msgpack, typed by the caller).
``FrameClient`` sends calls on one connection and matches each answer to its call by id, so
many calls are in flight at once; ``FrameServer`` answers each call as soon as its handler
is done, in any order. A lost connection fails every call in flight with ``Unavailable``;
the next call connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from scr.errors import Unavailable

log = logging.getLogger("scr.serve.frames")

HEADER = struct.Struct(">IQ")  # body length, call id
MAX_BODY_BYTES = 256 * 1024 * 1024  # a 16 MiB request's events, or 100,000 replayed deliveries


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    length, call_id = HEADER.unpack(await reader.readexactly(HEADER.size))
    if length > MAX_BODY_BYTES:
        raise OSError(f"a frame of {length} bytes is over the limit of {MAX_BODY_BYTES}")
    return call_id, await reader.readexactly(length)


def _frame(call_id: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), call_id) + body


class FrameClient:
    """Calls to the ``FrameServer`` at ``path``; ``who`` names it in errors."""

    def __init__(self, path: Path, who: str) -> None:
        self.path, self.who = path, who
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._listener: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()

    async def call(self, body: bytes) -> bytes:
        writer = await self._connected()
        call_id = next(self._ids)
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = answer
        try:
            writer.write(_frame(call_id, body))
            await writer.drain()
            return await answer
        except OSError as error:
            raise Unavailable(f"lost {self.who}: {error}") from None
        finally:
            self._waiting.pop(call_id, None)

    async def _connected(self) -> asyncio.StreamWriter:
        async with self._connecting:
            if self._writer is None or self._writer.is_closing():
                try:
                    reader, self._writer = await asyncio.open_unix_connection(str(self.path))
                except OSError:
                    raise Unavailable(f"{self.who} is not answering (restarting?); try again") from None
                self._listener = asyncio.ensure_future(self._listen(reader, self._writer))
            return self._writer

    async def _listen(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                call_id, body = await _read_frame(reader)
                waiting = self._waiting.get(call_id)
                if waiting is not None and not waiting.done():
                    waiting.set_result(body)
        except (asyncio.IncompleteReadError, OSError) as error:
            lost = Unavailable(f"lost {self.who} before it answered ({error!r}); try again")
            for waiting in self._waiting.values():
                if not waiting.done():
                    waiting.set_exception(lost)
            writer.close()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._writer is not None:
            self._writer.close()


class FrameServer:
    """Answers calls on a Unix socket at ``path`` with ``handler``."""

    def __init__(self, path: Path, handler: Callable[[bytes], Awaitable[bytes]]) -> None:
        self.path, self.handler = path, handler
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a killed predecessor
        self._server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                call_id, body = await _read_frame(reader)
                task = asyncio.ensure_future(self._answer(call_id, body, writer))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (asyncio.IncompleteReadError, OSError):
            pass  # the caller went away; what was committed for it stays committed
        finally:
            writer.close()

    async def _answer(self, call_id: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        answer = await self.handler(body)
        if not writer.is_closing():
            writer.write(_frame(call_id, answer))
