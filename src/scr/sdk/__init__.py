"""The Python SDK: capture session completions and send them to an scr server.

``Client`` / ``AsyncClient`` (``client``) normalize what the caller knows into a v1.2 event
(``event``) and hand it to a bounded, batching background sender (``sender``).
"""

from scr.sdk.client import AsyncClient, CaptureFields, Client
from scr.sdk.event import CapturedEvent, build_event, derive_event_id
from scr.sdk.sender import CaptureStats

__all__ = [
    "AsyncClient",
    "CaptureFields",
    "CaptureStats",
    "CapturedEvent",
    "Client",
    "build_event",
    "derive_event_id",
]
