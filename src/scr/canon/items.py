"""Canon items, event-sourced: the ledger's STRUCTURE_UPDATE and PROMOTION entries, folded.

The ledger is the store. ``CanonState.apply`` folds one entry at a time and enforces the
rules mechanically, so a forged or mistaken entry cannot raise a level:

- STRUCTURE_UPDATE ``{"item": {...}}`` creates or changes an item. It needs a valid ``ts``
  and a provenance hash equal to the item's content hash. It enters at EVIDENCE unless its
  provenance source is ``import``. A change of content drops the item back to EVIDENCE: a
  changed item earns its level again. The six seed invariants cannot be changed.
- PROMOTION (``PromotionRecord``) moves an item exactly one level up, and only when it is
  approved, starts from the item's current level and content, and all four tests passed.

Every entry that breaks a rule is ignored and reported as a ``Breach`` for the audit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import Struct

from scr.canon.config import PromotionThresholds
from scr.canon.decide import CanonSnapshot
from scr.canon.gates import ActiveRule
from scr.canon.ledger import LedgerEntryLike
from scr.canon.model import LEVELS, CanonItem, ItemSpec, Level, PromotionTests
from scr.canon.seeds import INV_PROMOTION_GATE, INV_TS_MANDATORY, SEED_IDS, seed_items
from scr.schema import canonical_bytes

STRUCTURE_UPDATE = "STRUCTURE_UPDATE"
PROMOTION = "PROMOTION"
ITEM_KINDS = (STRUCTURE_UPDATE, PROMOTION)


class PromotionRecord(Struct, gc=False, kw_only=True):
    """The payload of a PROMOTION entry: the decision, approved or not, and its tests.

    ``as_of`` is the last ledger entry id the tests saw and ``thresholds`` what they were
    computed with: the audit recomputes them there.
    """

    item_id: str
    from_level: Level
    to_level: Level | None
    approved: bool
    tests: PromotionTests | None
    item_hash: str
    as_of: int
    thresholds: PromotionThresholds = PromotionThresholds()
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class Breach:
    """A ledger entry that tried to break an invariant (and was ignored)."""

    invariant_id: str
    entry_id: int
    message: str


def item_hash(item: ItemSpec | CanonItem) -> str:
    """The content hash of an item: SHA-256 over the canonical JSON of what it says."""
    content = {
        "id": item.id,
        "kind": item.kind,
        "title": item.title,
        "statement": item.statement,
        "severity": item.severity,
        "rule": msgspec.to_builtins(item.rule),
    }
    return "sha256:" + hashlib.sha256(canonical_bytes(content)).hexdigest()


def next_level(level: Level) -> Level | None:
    """The level above ``level`` (``None`` above CANON)."""
    index = LEVELS.index(level)
    return LEVELS[index + 1] if index + 1 < len(LEVELS) else None


SEED_HASHES = {spec.id: item_hash(spec) for spec in seed_items()}


def structure_update_payload(item: CanonItem) -> dict[str, Any]:
    """The STRUCTURE_UPDATE payload that records ``item`` (its entry id is not part of it)."""
    record = msgspec.to_builtins(item)
    record.pop("entry_id", None)
    return {"item": record}


class CanonState:
    """A tenant's canon items as folded from its ledger so far."""

    def __init__(self) -> None:
        self.items: dict[str, CanonItem] = {}
        self.last_entry_id = 0
        self._rules: list[ActiveRule] | None = None

    def apply(self, entry: LedgerEntryLike) -> list[Breach]:
        """Fold one entry; entries of other kinds only advance ``last_entry_id``."""
        self.last_entry_id = max(self.last_entry_id, entry.id)
        if entry.kind == STRUCTURE_UPDATE:
            breaches = self._structure_update(entry)
        elif entry.kind == PROMOTION:
            breaches = self._promotion(entry)
        else:
            return []
        self._rules = None
        return breaches

    def _structure_update(self, entry: LedgerEntryLike) -> list[Breach]:
        payload = entry.payload
        raw = payload.get("item") if isinstance(payload, Mapping) else None
        if not isinstance(raw, Mapping):
            return [Breach(INV_PROMOTION_GATE, entry.id, "STRUCTURE_UPDATE without an item")]
        try:
            spec = msgspec.convert(raw, ItemSpec)
        except msgspec.ValidationError as error:
            about_ts = "`$.ts`" in str(error) or "field `ts`" in str(error)
            invariant = INV_TS_MANDATORY if about_ts else INV_PROMOTION_GATE
            return [Breach(invariant, entry.id, f"invalid item ignored: {error}")]
        content_hash = item_hash(spec)
        if spec.provenance.hash != content_hash:
            return [Breach(INV_PROMOTION_GATE, entry.id,
                           f"item {spec.id}: provenance hash does not match its content")]
        if spec.id in SEED_IDS and (
            content_hash != SEED_HASHES[spec.id] or spec.provenance.source != "import"
        ):
            return [Breach(INV_PROMOTION_GATE, entry.id,
                           f"item {spec.id} is a built-in invariant and cannot be changed")]
        breaches: list[Breach] = []
        level = spec.level
        if level != "EVIDENCE" and spec.provenance.source != "import":
            breaches.append(Breach(INV_PROMOTION_GATE, entry.id,
                                   f"item {spec.id} claimed level {level} without the "
                                   "promotion gate; it enters as EVIDENCE"))
            level = "EVIDENCE"
        known = self.items.get(spec.id)
        if known is not None and item_hash(known) == content_hash and spec.provenance.source != "import":
            level = known.level  # the same content again keeps the level it earned
        self.items[spec.id] = CanonItem(
            id=spec.id, kind=spec.kind, title=spec.title, ts=spec.ts, provenance=spec.provenance,
            statement=spec.statement, severity=spec.severity, rule=spec.rule, level=level,
            entry_id=entry.id,
        )
        return breaches

    def _promotion(self, entry: LedgerEntryLike) -> list[Breach]:
        try:
            record = msgspec.convert(entry.payload, PromotionRecord)
        except msgspec.ValidationError as error:
            return [Breach(INV_PROMOTION_GATE, entry.id, f"invalid promotion ignored: {error}")]
        if not record.approved:
            return []
        item = self.items.get(record.item_id)
        problem = None
        if item is None:
            problem = f"promotes unknown item {record.item_id}"
        elif record.from_level != item.level:
            problem = f"promotes {item.id} from {record.from_level} but it is at {item.level}"
        elif record.to_level is None or record.to_level != next_level(item.level):
            problem = f"promotes {item.id} from {item.level} to {record.to_level}: not one level"
        elif record.item_hash != item_hash(item):
            problem = f"promotes {item.id} as content it no longer has"
        elif record.tests is None or not record.tests.all_passed():
            problem = f"promotes {item.id} although a promotion test failed"
        if problem is not None or item is None or record.to_level is None:
            return [Breach(INV_PROMOTION_GATE, entry.id, f"approved promotion ignored: {problem}")]
        item.level = record.to_level
        item.entry_id = entry.id
        return []

    def level(self, item_id: str) -> Level | None:
        """The item's level, or ``None`` for an unknown id."""
        item = self.items.get(item_id)
        return item.level if item is not None else None

    def active_rules(self, overrides: Mapping[str, Level | None] | None = None) -> list[ActiveRule]:
        """The CANON-level INVARIANT and CONSTRAINT items with a rule, by id.

        ``overrides`` sets hypothetical levels (``None``: as if the item did not exist).
        """
        if not overrides and self._rules is not None:
            return self._rules
        rules = []
        for item in sorted(self.items.values(), key=lambda i: i.id):
            level = overrides.get(item.id, item.level) if overrides else item.level
            if level == "CANON" and item.kind != "DEFINITION" and not item.rule.is_empty():
                rules.append(ActiveRule(id=item.id, kind=item.kind, severity=item.severity,
                                        rule=item.rule))
        if not overrides:
            self._rules = rules
        return rules

    def snapshot(
        self, ids: Iterable[str], overrides: Mapping[str, Level | None] | None = None
    ) -> CanonSnapshot:
        """The levels of ``ids`` and the active rules, as a decision records them."""
        hypothetical = overrides or {}
        levels: dict[str, Level] = {}
        for item_id in ids:
            level = hypothetical[item_id] if item_id in hypothetical else self.level(item_id)
            if level is not None:
                levels[item_id] = level
        return CanonSnapshot(levels=levels, rules=self.active_rules(overrides))

    def hard_rules_any_level(self) -> list[ActiveRule]:
        """Every HARD_FAIL invariant and CONSTRAINT with a rule, whatever its level."""
        return [
            ActiveRule(id=item.id, kind=item.kind, severity=item.severity, rule=item.rule)
            for item in sorted(self.items.values(), key=lambda i: i.id)
            if item.kind != "DEFINITION" and not item.rule.is_empty()
            and (item.kind == "CONSTRAINT" or item.severity != "SOFT_FAIL")
        ]

