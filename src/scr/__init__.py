"""scr: the Session Completion Runtime.

``scr.Client`` and ``scr.AsyncClient`` capture session completions (see ``scr.sdk``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from scr.sdk import AsyncClient, Client

__all__ = ["AsyncClient", "Client", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `scr serve` and the CLI do not load the SDK's sender.
    if name in ("Client", "AsyncClient"):
        import scr.sdk

        return getattr(scr.sdk, name)
    raise AttributeError(f"module 'scr' has no attribute {name!r}")
