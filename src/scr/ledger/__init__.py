"""The verifiable ledger: Merkle tree upkeep, signed checkpoints, proofs and their API."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import Route

if TYPE_CHECKING:
    from scr.server import Runtime


def install(runtime: Runtime) -> list[Route]:
    """Attach the ledger's hooks to a runtime and return its HTTP routes."""
    return []
