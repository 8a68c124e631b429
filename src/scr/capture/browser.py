"""Browser capture: the ``scr.js`` beacon script and the endpoint its beacons post to.

A page loads ``GET /v1/sdk/scr.js``, records a chat session with it, and the script posts
the session's completion with ``navigator.sendBeacon`` when the page is hidden or closed.

Why the endpoint looks the way it does:

- ``sendBeacon`` cannot set headers, so the **publishable key** travels in the query string
  (``?key=``), not in ``Authorization``. A publishable key is public by design (it is in the
  page's source): it may only post beacons, only for its own tenant, only from its origins,
  and only at its rate limit.
- A beacon whose body is a string is sent as ``text/plain;charset=UTF-8``, a CORS-safelisted
  type, so the browser sends it at once without a preflight (a preflight may not finish
  while the page unloads). The body is JSON all the same; ``application/json`` is accepted
  too (then the browser preflights, and ``OPTIONS`` answers it).
- Browsers send ``Origin`` on every cross-origin POST, beacons included; it is checked
  against the key's origins before the body is read. It keeps other sites from spending a
  key in their visitors' browsers; it is no defence against a non-browser client, which is
  why the key can do nothing else and is rate-limited.

The body is one session record (``BeaconSession``); the server completes it into a v1.2
event (tenant from the key, cost from the price table, source IP from the connection) and
commits it like ``POST /v1/events``. Its event id is derived from (tenant, session id,
segment), so a beacon sent twice is a duplicate, never a second charge.
"""

from __future__ import annotations

import hashlib
import ipaddress
from importlib import resources
from typing import Annotated

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scr.capture.ingest import Item, commit, media_type, validate
from scr.errors import BadRequest, Detail, Forbidden, ScrError, Unauthorized, UnsupportedMediaType
from scr.httpio import JSONResponse, read_body
from scr.jsontext import check_json_text
from scr.route.price_file import live_prices
from scr.route.prices import PriceTable
from scr.runtime import Runtime
from scr.schema import (
    InvalidEvent,
    Name,
    OutcomeStatus,
    SessionType,
    TagKey,
    TagValue,
    Tier,
    Timestamp,
    TokenCount,
)
from scr.sdk.event import build_event
from scr.security.keys import KEY_PREFIX, MAX_KEY_LENGTH, Principal
from scr.security.ratelimit import RateLimiter

SCRIPT_PATH = "/v1/sdk/scr.js"
BEACON_PATH = "/v1/browser/events"
# sendBeacon itself refuses more than 64 KiB in flight; a session record is far smaller.
MAX_BEACON_BYTES = 64 * 1024
MAX_SEGMENTS = 10_000
MAX_FINAL_MESSAGE_CHARS = 4096
MAX_BEACON_TAGS = 32
SCRIPT_CACHE_S = 3600
PREFLIGHT_CACHE_S = 600
EVENT_ID_PREFIX = "web_"
EVENT_ID_DIGEST_BYTES = 16
BEACON_MEDIA_TYPES = ("text/plain", "application/json")


class BeaconSession(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """What ``scr.js`` sends: one segment of a chat session, as the page saw it."""

    session_id: Name
    start_time: Timestamp
    end_time: Timestamp
    model: Name
    input_tokens: TokenCount = 0
    output_tokens: TokenCount = 0
    cache_read_tokens: TokenCount | None = None
    reasoning_tokens: TokenCount | None = None
    provider: Name | None = None
    status: OutcomeStatus = "user_terminated"
    error_code: Annotated[str, Meta(max_length=256)] | None = None
    final_message: Annotated[str, Meta(max_length=MAX_FINAL_MESSAGE_CHARS)] | None = None
    user_id: Name = "anonymous"
    tier: Tier = "free"
    session_type: SessionType = "chat"
    # Optional; when given it must be the key's own tenant (403 otherwise).
    organization_id: str | None = None
    # A session that goes on after its page was hidden sends its later part as segment 1, 2, …
    segment: Annotated[int, Meta(ge=0, le=MAX_SEGMENTS)] = 0
    messages: TokenCount | None = None
    tags: Annotated[dict[TagKey, TagValue], Meta(max_length=MAX_BEACON_TAGS)] = {}
    client_version: Annotated[str, Meta(max_length=128)] | None = None


_beacon = msgspec.json.Decoder(BeaconSession)


def beacon_event_id(tenant: str, session_id: str, segment: int) -> str:
    """The deterministic event id of one segment of a browser session."""
    digest = hashlib.blake2b(
        f"{tenant}\0{session_id}\0{segment}".encode(), digest_size=EVENT_ID_DIGEST_BYTES
    ).hexdigest()
    return EVENT_ID_PREFIX + digest


def beacon_event(
    session: BeaconSession, tenant: str, source_ip: str | None, prices: PriceTable
) -> bytes:
    """The v1.2 event of a beacon (JSON): tenant from the key, cost from the price table;
    ``InvalidEvent`` if the session's facts break the schema."""
    tags = {**session.tags, "capture": "browser"}
    if session.segment:
        tags["segment"] = str(session.segment)
    if session.messages is not None:
        tags["messages"] = str(session.messages)
    captured = build_event(
        session_id=session.session_id, model=session.model, user_id=session.user_id,
        organization_id=session.organization_id or tenant, input_tokens=session.input_tokens,
        output_tokens=session.output_tokens, tier=session.tier, session_type=session.session_type,
        status=session.status, final_message=session.final_message, error_code=session.error_code,
        provider=session.provider, cache_read_tokens=session.cache_read_tokens,
        reasoning_tokens=session.reasoning_tokens,
        # The page's own times: a beacon sent again has the same body (a duplicate).
        start_time=session.start_time, end_time=session.end_time, tags=tags,
        event_id=beacon_event_id(tenant, session.session_id, session.segment),
        client_version=session.client_version, source_ip=source_ip, prices=prices,
    )
    return captured.body


def _client_ip(request: Request) -> str | None:
    """The peer's IP address (None behind a transport that has none, e.g. a test client)."""
    host = request.client.host if request.client else None
    try:
        return str(ipaddress.ip_address(host)) if host else None
    except ValueError:
        return None


def _invalid(invalid: InvalidEvent) -> BadRequest:
    details = [Detail(problem.path, problem.message) for problem in invalid.problems]
    error = BadRequest("the beacon makes an invalid event", details)
    error.code = invalid.problems[0].code
    return error


def _cors(origin: str) -> dict[str, str]:
    return {"access-control-allow-origin": origin, "vary": "Origin"}


class BeaconEndpoint:
    """``POST`` and ``OPTIONS`` of the beacon endpoint, over one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        limits = runtime.config.capture.browser
        self.limiter = RateLimiter(limits.rate_limit_per_minute, limits.rate_limit_burst)

    def _key(self, request: Request) -> Principal:
        """The publishable key of ``?key=``; 401 when absent or unknown, 403 for another role."""
        key = request.query_params.get("key")
        if not key:
            raise Unauthorized("missing publishable key; send it as ?key=<publishable key>")
        if len(key) > MAX_KEY_LENGTH or not key.startswith(KEY_PREFIX):
            raise Unauthorized("invalid publishable key")
        principal = self.runtime.auth.key_principal(key)
        principal.require("beacon")
        return principal

    @staticmethod
    def _origin(request: Request, principal: Principal) -> str:
        origin = request.headers.get("origin")
        if origin is None:
            raise Forbidden("a publishable key is accepted only from a web page (no Origin header)")
        if origin.lower() not in principal.origins:
            raise Forbidden(f"origin '{origin[:200]}' is not allowed for this key")
        return origin

    async def preflight(self, request: Request) -> Response:
        """Answer a CORS preflight: allowed only for the key's origins and for POST."""
        principal = self._key(request)
        origin = self._origin(request, principal)
        method = request.headers.get("access-control-request-method", "POST")
        if method.upper() != "POST":
            raise Forbidden(f"only POST is allowed here, not {method[:20]}")
        return Response(status_code=204, headers={
            **_cors(origin),
            "access-control-allow-methods": "POST",
            "access-control-allow-headers": "content-type",
            "access-control-max-age": str(PREFLIGHT_CACHE_S),
        })

    async def post(self, request: Request) -> Response:
        """Take one beacon: key, origin, rate, size, then the same commit as ``/v1/events``."""
        principal = self._key(request)
        origin = self._origin(request, principal)
        try:
            self.limiter.take(principal.key_id)
            kind = media_type(request.headers.get("content-type"))
            if kind not in BEACON_MEDIA_TYPES:
                raise UnsupportedMediaType(
                    f"send the session as text/plain or application/json, not {kind[:60]}"
                )
            body = await read_body(request, MAX_BEACON_BYTES)
            check_json_text(body)
            try:
                session = _beacon.decode(body)
            except msgspec.ValidationError as error:
                raise BadRequest("the beacon is invalid", [Detail("$", str(error))]) from None
            except msgspec.DecodeError as error:
                raise BadRequest(f"malformed JSON: {error}") from None
            assert principal.tenant is not None  # a stored key always has one
            prices = live_prices(self.runtime.data_dir)
            try:
                event = beacon_event(session, principal.tenant, _client_ip(request), prices.current())
            except InvalidEvent as invalid:
                raise _invalid(invalid) from None
            batch = validate([Item(0, event)], principal, False, "browser")
            runtime = self.runtime
            status, content = await commit(batch, runtime, runtime.metrics, prices)
        except ScrError as error:
            if error.status == 429:
                self.runtime.metrics.beacons_limited.inc()
            return JSONResponse(
                error.body(), status_code=error.status, headers={**_cors(origin), **error.headers()}
            )
        return JSONResponse(content, status_code=status, headers=_cors(origin))


async def script(request: Request) -> Response:
    """``scr.js``: public, cacheable, JavaScript."""
    return Response(
        SCRIPT,
        media_type="text/javascript; charset=utf-8",
        headers={
            "cache-control": f"public, max-age={SCRIPT_CACHE_S}",
            "access-control-allow-origin": "*",
            "x-content-type-options": "nosniff",
        },
    )


SCRIPT = resources.files("scr.capture").joinpath("scr.js").read_bytes()


def browser_routes(runtime: Runtime) -> list[Route]:
    """The script and beacon routes over ``runtime``."""
    endpoint = BeaconEndpoint(runtime)
    return [
        Route(SCRIPT_PATH, script, methods=["GET"]),
        Route(BEACON_PATH, endpoint.post, methods=["POST"]),
        Route(BEACON_PATH, endpoint.preflight, methods=["OPTIONS"]),
    ]
