"""The Bickford Canon: the decision layer that chooses an agent's next action.

Among the paths the canon (promoted, timestamped knowledge) admits, it picks the one that
minimises E[TTV + λC·C + λR·R − λP·ln p]; it refuses everything else with a written
WhyNot trace; it never lets one agent's action slow another; and raw evidence changes what
is admissible only after it passes the promotion gate. Every decision, denial, promotion
and item change is a ledger entry.

    from scr.canon import Canon, MemoryLedger
    canon = Canon(MemoryLedger(), "org_acme")
    decision = canon.decide({...})
"""

from scr.canon.audit import audit_ledger
from scr.canon.beta import BetaPosterior, beta_posterior
from scr.canon.canon import Canon
from scr.canon.config import (
    BetaPrior,
    CanonConfig,
    InterferenceCosts,
    PromotionThresholds,
    RiskLevels,
)
from scr.canon.decide import TIE_BREAK, DecisionInputs, evaluate
from scr.canon.ledger import AcceptedEvents, CanonLedger, LedgerEntryLike, MemoryLedger
from scr.canon.model import (
    Action,
    AgentPlan,
    AuditReport,
    Bounds,
    Candidate,
    CandidateResult,
    CanonItem,
    DecideRequest,
    Decision,
    Features,
    GateTest,
    ItemProvenance,
    ItemSpec,
    Observation,
    PromoteRequest,
    PromotionResult,
    PromotionTests,
    Rule,
    Score,
    Weights,
    WhyNot,
)
from scr.canon.score import optr_score
from scr.canon.seeds import SEED_IDS

__all__ = [
    "SEED_IDS",
    "TIE_BREAK",
    "AcceptedEvents",
    "Action",
    "AgentPlan",
    "AuditReport",
    "BetaPosterior",
    "BetaPrior",
    "Bounds",
    "Candidate",
    "CandidateResult",
    "Canon",
    "CanonConfig",
    "CanonItem",
    "CanonLedger",
    "DecideRequest",
    "Decision",
    "DecisionInputs",
    "Features",
    "GateTest",
    "InterferenceCosts",
    "ItemProvenance",
    "ItemSpec",
    "LedgerEntryLike",
    "MemoryLedger",
    "Observation",
    "PromoteRequest",
    "PromotionResult",
    "PromotionTests",
    "PromotionThresholds",
    "RiskLevels",
    "Rule",
    "Score",
    "Weights",
    "WhyNot",
    "audit_ledger",
    "beta_posterior",
    "evaluate",
    "optr_score",
]
