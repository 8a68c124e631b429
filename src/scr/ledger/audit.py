"""``scr ledger audit``: a remote auditor that trusts the first checkpoint it sees, then demands growth.

Each run fetches the server's newest checkpoint and checks its signature with the pinned key
(``--verifier-key``, or the key saved on the first run). If a checkpoint was saved by an earlier
run, the new one must extend it: a smaller tree is a rollback, the same size with another root
or a consistency proof that fails is a fork; both are reported with the two checkpoints. Then a
sample of entries is fetched and each one's inclusion proof checked against the new root. Only
a run that verifies everything saves the new checkpoint.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import msgspec

from scr.ledger.leaves import check_leaf
from scr.ledger.report import Report
from scr.ledger.sources import HttpSource, Leaf, SourceError
from scr.log.checkpoint import Checkpoint, CheckpointError, VerifierKey, verify_note
from scr.log.merkle import ProofError, verify_consistency

DEFAULT_SAMPLES = 16
STATE_MODE = 0o600


class AuditState(msgspec.Struct, forbid_unknown_fields=True):
    """What an auditor keeps between runs: the pinned key and the last verified checkpoint."""

    verifier_key: str
    checkpoint: str


@dataclass(frozen=True, slots=True)
class AuditOutcome:
    """A run's report; ``new_state`` (to save) only when everything verified."""

    report: Report
    checkpoint: Checkpoint | None = None
    previous: Checkpoint | None = None
    new_state: AuditState | None = None


def load_state(path: Path) -> AuditState | None:
    """The saved state, or ``None`` on a first run; ``ValueError`` if the file is unreadable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(raw, type=AuditState)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise ValueError(f"{path} is not an audit state file: {error}") from None


def save_state(path: Path, state: AuditState) -> None:
    """Replace the state file atomically (write aside, sync, rename)."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, STATE_MODE)
    with os.fdopen(descriptor, "wb") as file:
        file.write(msgspec.json.format(msgspec.json.encode(state), indent=1))
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def tenant_of(checkpoint: Checkpoint, key: VerifierKey) -> str:
    """The tenant a checkpoint's origin ``<key name>/<tenant>`` names."""
    prefix = f"{key.name}/"
    if not checkpoint.origin.startswith(prefix) or len(checkpoint.origin) == len(prefix):
        raise CheckpointError(f"origin {checkpoint.origin!r} is not {prefix}<tenant>")
    return checkpoint.origin[len(prefix) :]


def audit(
    source: HttpSource, state: AuditState | None, verifier_key: str | None = None,
    samples: int = DEFAULT_SAMPLES, rng: random.Random | None = None,
) -> AuditOutcome:
    """One audit run against a server (see the module docstring); nothing is saved here."""
    report = Report()
    rng = rng or random.Random()
    try:
        served_key = source.verifier_key()
        pinned = VerifierKey.parse(verifier_key or (state.verifier_key if state else served_key))
        note = source.checkpoint("")
    except (SourceError, CheckpointError) as error:
        report.unverifiable = str(error)
        return AuditOutcome(report)
    if served_key != str(pinned):
        report.notes.append(f"the server now publishes another key: {served_key}")
    try:
        checkpoint = verify_note(note, pinned)
        tenant = tenant_of(checkpoint, pinned)
    except CheckpointError as error:
        report.found(f"the server's checkpoint is rejected: {error}\n{_indent(note)}")
        return AuditOutcome(report)
    try:
        previous = verify_note(state.checkpoint, VerifierKey.parse(state.verifier_key)) if state else None
    except CheckpointError as error:
        report.unverifiable = f"the saved checkpoint does not verify (is the state file damaged?): {error}"
        return AuditOutcome(report)
    if previous is not None and previous.origin != checkpoint.origin:
        report.found(f"the server now serves the log {checkpoint.origin!r}, not {previous.origin!r}", tenant)
        return AuditOutcome(report, checkpoint, previous)
    report.checkpoints = 1
    if previous is not None and state is not None:
        _check_growth(source, state.checkpoint, note, previous, checkpoint, tenant, report)
    if not report.findings and report.unverifiable is None:
        _spot_check(source, tenant, checkpoint, samples, rng, report)
    verified = not report.findings and report.unverifiable is None
    new_state = AuditState(str(pinned), note) if verified else None
    return AuditOutcome(report, checkpoint, previous, new_state)


def _indent(note: str) -> str:
    return "\n".join(f"    {line}" for line in note.rstrip("\n").split("\n"))


def _check_growth(
    source: HttpSource, old_note: str, new_note: str, old: Checkpoint, new: Checkpoint, tenant: str,
    report: Report,
) -> None:
    both = f"\n  saved checkpoint:\n{_indent(old_note)}\n  server's checkpoint:\n{_indent(new_note)}"
    if new.tree_size < old.tree_size:
        report.found(
            f"ROLLBACK: the server's newest checkpoint has {new.tree_size} entries, fewer than the "
            f"{old.tree_size} of the checkpoint saved earlier{both}", tenant, new.tree_size,
        )
        return
    try:
        grown = new.tree_size > old.tree_size
        proof = source.consistency_proof(old.tree_size, new.tree_size) if grown else []
    except SourceError as error:
        report.unverifiable = f"no consistency proof from {old.tree_size} to {new.tree_size}: {error}"
        return
    try:
        verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof)
    except ProofError as error:
        report.found(
            f"FORK: the server's log of {new.tree_size} entries does not extend the checkpoint of "
            f"{old.tree_size} entries saved earlier ({error}){both}", tenant,
        )
        return
    report.notes.append(f"checkpoint {new.tree_size} extends the saved checkpoint {old.tree_size}")


def _spot_check(
    source: HttpSource, tenant: str, checkpoint: Checkpoint, samples: int, rng: random.Random,
    report: Report,
) -> None:
    size = checkpoint.tree_size
    chosen = set(rng.sample(range(size), min(samples, size))) if size else set()
    if size:
        chosen.add(size - 1)  # always the newest entry
    try:
        for index in sorted(chosen):
            leaves = source.leaves(tenant, index, index + 1)
            if len(leaves) != 1 or leaves[0].index != index:
                report.found(f"the server does not give entry {index} of its checkpoint", tenant, index)
                continue
            _check_leaf(source, tenant, leaves[0], checkpoint, report)
            report.entries += 1
    except SourceError as error:
        report.unverifiable = f"could not spot-check entries: {error}"


def _check_leaf(source: HttpSource, tenant: str, leaf: Leaf, checkpoint: Checkpoint, report: Report) -> None:
    try:
        proof = source.inclusion_proof(tenant, leaf, checkpoint.tree_size)
    except ProofError as error:
        report.found(f"not in the checkpoint's tree: {error}", tenant, leaf.index, leaf.event_id)
        return
    check_leaf(report, tenant, leaf.index, leaf.event_id, leaf.stored, proof, checkpoint)
