"""What a verification found: tampering (with where), notes, or why it could not verify."""

from __future__ import annotations

from dataclasses import dataclass, field

EXIT_VERIFIED = 0
EXIT_TAMPERED = 1
EXIT_UNVERIFIABLE = 2


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of evidence of tampering, located as precisely as the evidence allows."""

    problem: str
    tenant: str | None = None
    index: int | None = None  # the entry's leaf index in its tenant's tree
    event_id: str | None = None
    seq: int | None = None  # the entry's global ledger sequence number

    def where(self) -> str:
        """``tenant org_acme, entry 41 (event evt_1, seq 52)`` — as much of it as is known."""
        parts = []
        if self.tenant is not None:
            parts.append(f"tenant {self.tenant}")
        if self.index is not None:
            parts.append(f"entry {self.index}")
        detail = []
        if self.event_id is not None:
            detail.append(f"event {self.event_id}")
        if self.seq is not None:
            detail.append(f"seq {self.seq}")
        text = ", ".join(parts) or "ledger"
        return f"{text} ({', '.join(detail)})" if detail else text

    def __str__(self) -> str:
        return f"{self.where()}: {self.problem}"


@dataclass(slots=True)
class Report:
    """The outcome of ``verify``, ``verify --bundle`` or ``audit``."""

    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unverifiable: str | None = None  # why verification could not be done at all
    entries: int = 0
    checkpoints: int = 0

    def found(
        self, problem: str, tenant: str | None = None, index: int | None = None,
        event_id: str | None = None, seq: int | None = None,
    ) -> None:
        """Record a finding, located as precisely as known."""
        self.findings.append(Finding(problem, tenant, index, event_id, seq))

    @property
    def exit_code(self) -> int:
        """0 verified, 1 tampering found, 2 could not verify."""
        if self.findings:
            return EXIT_TAMPERED
        return EXIT_UNVERIFIABLE if self.unverifiable is not None else EXIT_VERIFIED
