"""HTTP plumbing every route module shares: JSON responses and bounded request bodies."""

from __future__ import annotations

import zlib
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from scr.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib reads the gzip header and trailer
# Content-Encoding names for gzip (RFC 9110, section 8.4.1.3: x-gzip is the same).
GZIP_NAMES = ("gzip", "x-gzip")

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


def content_encoding(header: str | None) -> str:
    """``identity`` or ``gzip``, from a Content-Encoding header; 415 names any other."""
    name = (header or "identity").strip().lower()
    if name in GZIP_NAMES:
        return "gzip"
    if name != "identity":
        raise UnsupportedMediaType(
            f"content encoding '{name[:40]}' is not supported; send gzip or none"
        )
    return name


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body without its content encoding (identity or gzip), at most ``limit`` bytes.

    Inflated at most ``limit`` + 1 bytes, so a gzip bomb is a 413, never a large buffer.
    """
    if content_encoding(encoding) == "identity":
        return body
    inflater = zlib.decompressobj(GZIP_WBITS)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise BadRequest(f"malformed gzip body: {error}") from None
    if len(plain) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"the decompressed body is over the limit of {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise BadRequest("malformed gzip body: truncated, or data after its end")
    return plain


async def read_decoded_body(request: Request, limit: int) -> bytes:
    """The request body without its content encoding (``decompress``): 415 for an encoding
    other than identity or gzip (before reading), 413 past ``limit`` bytes read or inflated."""
    encoding = request.headers.get("content-encoding")
    content_encoding(encoding)  # an unknown encoding is refused before the body is read
    return decompress(await read_body(request, limit), encoding, limit)
