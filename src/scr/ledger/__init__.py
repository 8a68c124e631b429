"""The verifiable ledger: Merkle tree upkeep, signed checkpoints, proofs and their API.

``install(runtime)`` is called once by the server at app creation: it hashes in any entries
the trees lack, attaches the tree upkeep to the committer and returns the ``/v1/ledger``
routes. ``scr.ledger.cli`` holds ``scr ledger verify | audit | export``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the server's modules: not loaded by the CLI's ``scr ledger`` commands
    from starlette.routing import Route

    from scr.runtime import Runtime

CHECKPOINTER_STOP_S = 10.0


def install(runtime: Runtime) -> list[Route]:
    """Attach the ledger's hooks to a runtime and return its HTTP routes."""
    from scr.ledger.routes import ledger_routes
    from scr.ledger.service import LedgerService
    from scr.privacy.routes import export_routes  # it answers with proofs

    service = LedgerService(runtime)
    # It follows the writer thread: once the committer stops, it signs what is left and ends.
    runtime.on_shutdown.append(lambda: service.checkpointer.join(CHECKPOINTER_STOP_S))
    return ledger_routes(service, runtime.principal) + export_routes(runtime, service)
