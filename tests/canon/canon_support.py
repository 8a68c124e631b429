"""Builders shared by the canon tests: the source document's demo, actions, events."""

from __future__ import annotations

from typing import Any

from scr.canon import Canon, CanonConfig, MemoryLedger

TENANT = "org_demo"
TS = "2025-06-01T12:00:00Z"
DEMO_REFS = ["CANON_001", "CANON_042"]


def action(
    action_id: str,
    risk_level: str = "LOW",
    prerequisites: list[str] | None = None,
    resources: list[str] | None = None,
    state: list[str] | None = None,
) -> dict[str, Any]:
    """An action as JSON."""
    return {
        "id": action_id,
        "risk_level": risk_level,
        "prerequisites_canon_ids": prerequisites or [],
        "resources_used": resources or [],
        "shared_state_modified": state or [],
    }


def candidate(
    action_id: str, ttv_ms: float, cost: float, risk: float, success_prob: float,
    **action_fields: Any,
) -> dict[str, Any]:
    """A one-action candidate path with every feature given."""
    return {
        "actions": [action(action_id, **action_fields)],
        "features": {"ttv_ms": ttv_ms, "cost": cost, "risk": risk, "success_prob": success_prob},
    }


def item(
    item_id: str, kind: str = "DEFINITION", *, source: str = "import", level: str = "EVIDENCE",
    severity: str | None = None, rule: dict[str, Any] | None = None, title: str | None = None,
) -> dict[str, Any]:
    """A canon item spec as JSON."""
    spec: dict[str, Any] = {
        "id": item_id, "kind": kind, "title": title or f"item {item_id}", "ts": TS,
        "provenance": {"source": source, "ref": "tests/canon", "author": "tester"},
        "level": level,
    }
    if severity is not None:
        spec["severity"] = severity
    if rule is not None:
        spec["rule"] = rule
    return spec


def canon_with(
    *canon_ids: str, ledger: MemoryLedger | None = None, config: CanonConfig | None = None,
    tenant: str = TENANT,
) -> Canon:
    """A canon whose ``canon_ids`` are imported DEFINITIONs at CANON level."""
    canon = Canon(ledger or MemoryLedger(), tenant, config)
    for canon_id in canon_ids:
        canon.add_item(item(canon_id, level="CANON"))
    return canon


def demo_request() -> dict[str, Any]:
    """The source document's demo: deploy, rollback and scale as one-action paths."""
    return {
        "goal": "restore the service",
        "canon_refs": list(DEMO_REFS),
        "bounds": {"max_risk": 0.5, "max_cost": 150},
        "candidates": [
            candidate("deploy", 300_000, 50, 0.3, 0.9, risk_level="MEDIUM"),
            candidate("rollback", 120_000, 10, 0.1, 0.9, risk_level="LOW"),
            candidate("scale", 600_000, 200, 0.7, 0.9, risk_level="HIGH"),
        ],
    }


def completion(
    event_id: str, *, action_id: str | None = None, status: str = "success",
    duration_ms: int = 60_000, cost: str = "0.10", tenant: str = TENANT,
    session_id: str | None = None, user_id: str = "user_1", tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A valid v1.2 session.completed event, tagged with an action if given."""
    custom_tags = dict(tags or {})
    if action_id is not None:
        custom_tags["action"] = action_id
    end_s = duration_ms // 1000
    return {
        "event_type": "session.completed",
        "event_id": event_id,
        "timestamp": "2025-06-01T12:10:00Z",
        "session": {
            "session_id": session_id or f"s_{event_id}", "session_type": "autonomous",
            "start_time": "2025-06-01T12:00:00Z",
            "end_time": f"2025-06-01T12:{end_s // 60:02d}:{end_s % 60:02d}Z",
            "duration_ms": duration_ms,
        },
        "user": {"user_id": user_id, "organization_id": tenant, "tier": "pro"},
        "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15, "model": "m",
                  "estimated_cost_usd": cost},
        "outcome": {"status": status},
        "metadata": {"custom_tags": custom_tags},
    }
