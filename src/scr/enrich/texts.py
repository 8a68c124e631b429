"""What the enricher embeds of an event: the configured fields' text, joined.

The fields are named as in the config (``content.user_request``, ``content.summary``,
``content.tool_outputs``, ``outcome.final_message``); the ones that hold text become the
vector's ``source_fields``. An event with none of them costs nothing: no vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from scr.schema import Event
from scr.store.records import VectorRow

FIELDS = ("content.user_request", "content.summary", "content.tool_outputs", "outcome.final_message")
DEFAULT_FIELDS = list(FIELDS)


def _texts(event: Event, field: str) -> list[str]:
    section, name = field.split(".")
    holder: Any = getattr(event, section, None)
    value = getattr(holder, name, None) if holder is not None else None
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return [text for text in value if isinstance(text, str) and text.strip()]
    return []


def text_of(event: Event, fields: Sequence[str]) -> tuple[str, list[str]]:
    """The text to embed and the fields it came from (``""``: nothing to embed)."""
    parts, sources = [], []
    for field in fields:
        texts = _texts(event, field)
        if texts:
            parts.extend(texts)
            sources.append(field)
    return "\n".join(parts), sources


def vector_row(seq: int, user_key: str, event: Event, sources: list[str], model: str,
               vector: np.ndarray) -> VectorRow:
    """The row of an event's vector (``user_key``: its user id, or its subject's keyed hash
    when its personal fields are sealed)."""
    return VectorRow(
        key=0, tenant=event.tenant, session_id=event.session.session_id, event_id=event.event_id,
        seq=seq, source_fields=sources, model=model, dimensions=int(vector.shape[0]),
        vector=np.asarray(vector, dtype="<f4").tobytes(), event_model=event.usage.model,
        status=event.outcome.status, session_type=event.session.session_type,
        user_key=user_key, at_ms=int(event.timestamp.timestamp() * 1000),
    )
