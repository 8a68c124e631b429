"""HTTP plumbing every route module shares: JSON responses and bounded request bodies."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from scr.errors import PayloadTooLarge

_encode = msgspec.json.Encoder(decimal_format="string").encode


class JSONResponse(Response):
    """A JSON response encoded by msgspec (Structs as objects, decimals as strings)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encode(content)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 before reading past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
