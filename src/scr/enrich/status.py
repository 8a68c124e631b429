"""``GET /v1/enrichment`` and ``scr enrich status``: the embedder, the tenant's indexed
sessions, the enricher's lag behind the ledger, its last error, and the backfill's progress
(``done`` the ledger seq it reached, ``end`` where the enricher started, ``running`` while one
asked through the API is under way)."""

from __future__ import annotations

from typing import Any

from scr.config import LOCAL_EMBEDDING_MODEL, EmbedderConfig
from scr.store.protocol import Store
from scr.store.records import (
    BACKFILL_ANSWERED,
    BACKFILL_ASKED,
    BACKFILL_CURSOR,
    ENRICH_CURSOR,
    ENRICH_START,
)

LOCAL_DIMENSIONS = 384  # all-MiniLM-L6-v2's
STATE_NAME = ENRICH_CURSOR  # the enricher's row in destination_state: its last error


def enrichment_status(store: Store, embedder: EmbedderConfig, tenant: str) -> dict[str, Any]:
    """The status as the API answers it (blocking)."""
    models = store.vectors.models()
    dimensions: int | None
    if models:
        model, dimensions = models[0]
    else:  # nothing embedded yet: what the embedder will write
        model = embedder.model or LOCAL_EMBEDDING_MODEL
        dimensions = LOCAL_DIMENSIONS if embedder.kind == "local" else None
    cursor, head = store.cursor(ENRICH_CURSOR), store.last_seq()
    asked, answered = store.cursor(BACKFILL_ASKED) or 0, store.cursor(BACKFILL_ANSWERED) or 0
    state, reason = store.destination_state(STATE_NAME)
    return {
        "embedder": embedder.kind, "model": model, "dimensions": dimensions,
        "indexed": store.vectors.counts(tenant)[1],
        "lag": head if cursor is None else max(0, head - cursor),
        "last_error": reason if state == "failing" and reason else None,
        "backfill": {"done": store.cursor(BACKFILL_CURSOR) or 0, "end": store.cursor(ENRICH_START) or 0,
                     "running": asked > answered},
    }
