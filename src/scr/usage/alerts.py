"""The usage reader's alerts, budget alerts (``scr.usage.budgets``) and anomalies
(``scr.usage.judging``): one face for the writer and the destinations, by the payload's type."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scr.log.entry import Kind, decode_entry
from scr.usage import budgets, judging

KINDS = {budgets.ALERT_TYPE: Kind.BUDGET_ALERT, judging.ALERT_TYPE: Kind.ANOMALY}
KIND_VALUES = frozenset(kind.value for kind in KINDS.values())


def kind_of(payload: dict[str, Any]) -> Kind:
    """The ledger entry kind of an alert's payload."""
    return KINDS[payload["type"]]


def key_of(payload: dict[str, Any]) -> str:
    """An alert's identity (a budget's threshold and period, an anomaly's metric and window)."""
    if payload["type"] == judging.ALERT_TYPE:
        return judging.key_of(payload)
    return budgets.key_of(payload)


def alert_body(payload: dict[str, Any]) -> bytes:
    """The document an alert's destinations receive."""
    if payload["type"] == judging.ALERT_TYPE:
        return judging.alert_body(payload)
    return budgets.alert_body(payload)


def sent_keys(entries: Iterable[Any]) -> set[str]:
    """The identities of stored alert entries (of one kind or both)."""
    return {key_of(decode_entry(stored.entry).payload) for stored in entries}
