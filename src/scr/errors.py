"""The one exception hierarchy of scr.

Every error a caller can act on is a ``ScrError``. Each leaf carries the HTTP status and the
machine-readable code it maps to; ``server.py`` turns them into the JSON error body
``{"error": {"code", "message", "details": [{"path", "message"}]}}`` in exactly one place.

    ScrError
    ├── BadRequest            400  malformed body, invalid event, bad query
    ├── Unauthorized          401  no key or an unknown key
    ├── Forbidden             403  role or tenant does not allow it
    ├── NotFound              404  unknown (or another tenant's) resource, or no such endpoint
    ├── MethodNotAllowed      405  a known endpoint asked with a method it does not serve (Allow)
    ├── RequestTimeout        408  headers or body not received in time (connection closed)
    ├── Conflict              409  same event id, different body
    ├── PayloadTooLarge       413  body, event or batch over its bound
    ├── UnsupportedMediaType  415  a content type or encoding the endpoint does not read
    ├── TooManyRequests       429  over a key's rate limit (with Retry-After)
    ├── Unavailable           503  not ready to commit
    └── ConfigError                a config file that cannot be used (not an HTTP error)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Detail:
    """One located problem: a JSON path (or config key) and what is wrong there."""

    path: str
    message: str


class ScrError(Exception):
    """Base of every error scr raises on purpose."""

    status = 500
    code = "internal"

    def __init__(self, message: str, details: list[Detail] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def headers(self) -> dict[str, str]:
        """HTTP headers the error answers with, besides its body (e.g. ``Retry-After``)."""
        return {}

    def body(self) -> dict[str, object]:
        """The JSON error body of the HTTP API."""
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "details": [{"path": d.path, "message": d.message} for d in self.details],
            }
        }


class BadRequest(ScrError):
    status = 400
    code = "bad_request"


class Unauthorized(ScrError):
    status = 401
    code = "unauthorized"


class Forbidden(ScrError):
    status = 403
    code = "forbidden"


class NotFound(ScrError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ScrError):
    """A known path asked with a method it does not serve; ``allow`` is sent as Allow."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, allow: str) -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"allow": self.allow}


class RequestTimeout(ScrError):
    status = 408
    code = "request_timeout"


class Conflict(ScrError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ScrError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ScrError):
    status = 415
    code = "unsupported_media_type"


class TooManyRequests(ScrError):
    """Over a rate limit; ``retry_after_s`` (whole seconds, at least 1) is sent as Retry-After."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after_s)}


class Unavailable(ScrError):
    status = 503
    code = "unavailable"


class ConfigError(ScrError):
    """A config file that cannot be used; ``details`` name each key and its line."""

    code = "config_error"
