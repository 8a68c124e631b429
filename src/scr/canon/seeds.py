"""The six hard-fail invariants every tenant's canon starts with.

They are ledgered as STRUCTURE_UPDATE entries (provenance source ``import``) at CANON level
the first time a tenant's canon is used. Their ids are reserved: no later entry can change
them. They carry no ``Rule``: the code enforces each one mechanically, as named below.
"""

from __future__ import annotations

from datetime import UTC, datetime

from scr.canon.model import ItemProvenance, ItemSpec

INV_TS_MANDATORY = "INV_TS_MANDATORY"
INV_CANON_ONLY_EXECUTION = "INV_CANON_ONLY_EXECUTION"
INV_PROMOTION_GATE = "INV_PROMOTION_GATE"
INV_NON_INTERFERENCE = "INV_NON_INTERFERENCE"
INV_TRUST_DENIAL_TRACE = "INV_TRUST_DENIAL_TRACE"
INV_SESSION_COMPLETION_LEDGER = "INV_SESSION_COMPLETION_LEDGER"

SEED_REF = "scr.canon.seeds"
SEED_AUTHOR = "scr"
# The seeds' own timestamp: fixed, so their content (and hash) is the same for every tenant.
SEED_TS = datetime(2025, 1, 1, tzinfo=UTC)

_STATEMENTS = {
    INV_TS_MANDATORY: (
        "Every canon item has a timestamp",
        "Every canon item, decision and trace carries an RFC 3339 timestamp with an offset; "
        "an item without one is refused and a ledgered one without it is ignored.",
    ),
    INV_CANON_ONLY_EXECUTION: (
        "Only canon authorises execution",
        "A path is admissible only if every prerequisite of its actions and every canon ref "
        "the decision cites is a known item at CANON level.",
    ),
    INV_PROMOTION_GATE: (
        "Evidence becomes canon only through the promotion gate",
        "An item's level changes one step at a time, only by an approved PROMOTION whose four "
        "tests (resistance, reproducibility, invariant safety, feasibility impact) all pass.",
    ),
    INV_NON_INTERFERENCE: (
        "No agent's action slows another",
        "admissible(π_i) ⇒ ΔE[TTV_j | π_i] ≤ 0 for every other agent j, and no two agents' "
        "planned actions modify the same shared state.",
    ),
    INV_TRUST_DENIAL_TRACE: (
        "Every denial has a trace and is ledgered",
        "Every denied candidate has a WhyNot trace with its reason codes, and every decision "
        "with its traces is a ledger entry (DECIDE, or DENY when none is admissible).",
    ),
    INV_SESSION_COMPLETION_LEDGER: (
        "Every accepted session completion is a ledger entry",
        "Every session completion the runtime accepted is exactly one SESSION_COMPLETION "
        "ledger entry holding a valid v1.2 event of its tenant.",
    ),
}


def seed_items() -> list[ItemSpec]:
    """The six invariants as item specs, at CANON level with ``import`` provenance."""
    return [
        ItemSpec(
            id=item_id, kind="INVARIANT", title=title, statement=statement, ts=SEED_TS,
            severity="HARD_FAIL", level="CANON",
            provenance=ItemProvenance(source="import", ref=SEED_REF, author=SEED_AUTHOR),
        )
        for item_id, (title, statement) in _STATEMENTS.items()
    ]


SEED_IDS = frozenset(_STATEMENTS)
