"""Evidence from similar past sessions: a decision whose request carries ``context.text``
weighs the sessions most like it (enrichment on), and says so in its estimates."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from test_canon_api import import_refs, one_action

from scr.enrich.enricher import Enricher
from scr.enrich.minilm import MiniLM
from scr.enrich.texts import DEFAULT_FIELDS
from scr.enrich.writes import LocalWrites
from scr.store import open_store
from support import make_event

CONFIG = """\
session_completion_runtime:
  routing: {destinations: []}
  enrichment: {embedder: {kind: local}}
"""


def session(n: int, text: str, status: str, duration_ms: int) -> dict[str, Any]:
    start = "2026-11-25T10:00:00Z"
    end = f"2026-11-25T10:{duration_ms // 60_000:02d}:{duration_ms // 1000 % 60:02d}Z"
    return make_event(f"evt_sim_{n}", **{
        "session.session_id": f"sess_sim_{n}", "session.start_time": start, "session.end_time": end,
        "session.duration_ms": duration_ms, "outcome.status": status, "outcome.final_message": text,
        "metadata.custom_tags": {"action": "restart"},
    })


def test_a_decision_with_context_text_weighs_the_most_similar_sessions(serve: Any) -> None:
    client = serve(CONFIG)
    import_refs(client)
    # restarts of a database always failed, slowly; restarts of a web cache always worked
    database = [session(n, f"restart the primary postgres database after disk full, case {n}", "error",
                        600_000) for n in range(6)]
    cache = [session(10 + n, f"restart the redis web cache after eviction storm, case {n}", "success",
                     60_000) for n in range(14)]
    posted = client.post("/v1/events", content=json.dumps(database + cache), headers=client.key())
    assert posted.status_code == 202
    store = open_store(client.data)
    try:
        enricher = Enricher(store, MiniLM(), DEFAULT_FIELDS, LocalWrites(store))
        enricher.cursor = 0  # embed what is already there (as a backfill would)
        asyncio.run(enricher.catch_up(store.last_seq()))
        assert store.vectors.counts("org_acme")[1] == 20
    finally:
        store.close()
    asked = {"goal": "recover", "canon_refs": ["CANON_001"], "candidates": [one_action("restart", "LOW")]}
    plain = client.post("/v1/decide", json=asked, headers=client.key()).json()
    with_text = client.post("/v1/decide", json={
        **asked, "context": {"text": "the postgres database disk is full, restart it?"}},
        headers=client.key()).json()
    recent = plain["candidates"][0]["features"]["success_prob"]
    similar = with_text["candidates"][0]["features"]["success_prob"]
    assert recent["source"] == "evidence" and recent["evidence_count"] == 20
    assert similar["source"] == "similar_sessions" and similar["evidence_count"] == 10
    # the ten most like the text are the six database restarts (all failed) and four others
    assert similar["value"] < recent["value"]
    assert with_text["candidates"][0]["features"]["ttv_ms"]["source"] == "similar_sessions"
    ids = set(similar["entry_ids"])
    assert len(ids) == 10 and ids <= set(recent["entry_ids"])
    refused = client.post("/v1/decide", json={**asked, "context": {"text": ""}}, headers=client.key())
    assert refused.status_code == 400
    unknown = client.post("/v1/decide", json={**asked, "context": {"mood": "x"}}, headers=client.key())
    assert unknown.status_code == 400
