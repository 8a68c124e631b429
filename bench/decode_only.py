"""The decode-only ceiling: the same server stack (uvicorn, Starlette, scr's capture code)
answering ``POST /v1/events`` after reading, splitting and validating the body, without
committing anything. Run as its own process: ``python -m bench.decode_only PORT``.
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scr.capture.ingest import answer, media_type, split_body, validate
from scr.httpio import JSONResponse, read_body
from scr.security.keys import ANONYMOUS

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_BATCH_EVENTS = 10_000


async def decode_events(request: Request) -> Response:
    body = await read_body(request, MAX_BODY_BYTES)
    is_batch, items, source = split_body(
        body, media_type(request.headers.get("content-type")), MAX_BATCH_EVENTS
    )
    batch = validate(items, ANONYMOUS, is_batch, source)
    for position in batch.positions:  # what a commit would report: all accepted
        batch.results[position]["status"] = "accepted"
    status, content = answer(batch)
    return JSONResponse(content, status_code=status)


app = Starlette(routes=[Route("/v1/events", decode_events, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False, loop="uvloop", http="httptools")
