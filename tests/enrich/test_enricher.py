"""The enricher's rounds, in-process on each store: it starts at the ledger's head, keeps its
place while the embedder fails (the error shown, the lag growing), and never mixes models."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from capture.openai_server import OpenAIServer, Reply
from store import test_store
from test_commit import submission

from scr.config import EmbedderConfig
from scr.enrich import enricher as enricher_module
from scr.enrich.enricher import Enricher
from scr.enrich.openai_embeddings import ATTEMPTS, OpenAIEmbeddings
from scr.enrich.status import enrichment_status
from scr.enrich.texts import DEFAULT_FIELDS
from scr.enrich.writes import LocalWrites
from scr.log.commit import Committer
from scr.store import Store
from scr.store.records import ENRICH_CURSOR, ENRICH_START, VectorRow
from support import make_event

committer = test_store.committer  # the store tests' fixture: a running Committer
OPENAI = EmbedderConfig(kind="openai", model="text-embedding-3-small", url="http://127.0.0.1:1/v1")


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as running:
        yield running


def append(committer: Committer, *texts: str) -> None:
    subs = [submission(f"evt_{text.replace(' ', '_')}", **{"outcome.final_message": text,
                                                          "session.session_id": f"sess_{n}"})
            for n, text in enumerate(texts)]
    asyncio.run(committer.append_events(subs))


def enricher_on(store: Store, server: OpenAIServer) -> Enricher:
    embedder = OpenAIEmbeddings("text-embedding-3-small", server.base_url, None, sleep=lambda s: None)
    return Enricher(store, embedder, DEFAULT_FIELDS, LocalWrites(store))


def test_it_starts_at_the_head_and_embeds_what_comes_after(
        store: Store, committer: Committer, server: OpenAIServer) -> None:
    append(committer, "before enrichment was on")
    enricher = enricher_on(store, server)
    asyncio.run(enricher.load(store.last_seq()))
    append(committer, "refund my double charge", "export chats to pdf")
    asyncio.run(enricher.catch_up(store.last_seq()))
    rows = store.vectors.after("org_acme", 0, 100)
    assert sorted(row.event_id for row in rows) == ["evt_export_chats_to_pdf", "evt_refund_my_double_charge"]
    assert {(row.model, row.dimensions) for row in rows} == {("text-embedding-3-small", 64)}
    assert enrichment_status(store, OPENAI, "org_acme")["lag"] == 0


def test_a_failing_embedder_keeps_the_place_shows_the_error_and_resumes(
        store: Store, committer: Committer, server: OpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enricher_module, "RETRY_FIRST_S", 0.01)
    enricher = enricher_on(store, server)
    asyncio.run(enricher.load(store.last_seq()))
    append(committer, "one", "two", "three")
    server.script(*[Reply(status=503)] * ATTEMPTS)
    asyncio.run(enricher.catch_up(store.last_seq()))
    failing = enrichment_status(store, OPENAI, "org_acme")
    assert failing["lag"] == 3 and failing["indexed"] == 0 and "503" in failing["last_error"]
    asyncio.run(enricher.catch_up(store.last_seq()))  # the endpoint is back
    recovered = enrichment_status(store, OPENAI, "org_acme")
    assert recovered["lag"] == 0 and recovered["indexed"] == 3 and recovered["last_error"] is None
    assert len(store.vectors.after("org_acme", 0, 100)) == 3  # each once


def test_vectors_of_another_model_are_never_mixed_in(
        store: Store, committer: Committer, server: OpenAIServer) -> None:
    enricher = enricher_on(store, server)
    asyncio.run(enricher.load(store.last_seq()))
    older = VectorRow(0, "org_acme", "sess_old", "evt_old", 1, ["outcome.final_message"], "all-MiniLM-L6-v2",
                      384, np.ones(384, dtype="<f4").tobytes(), "gpt-4o", "success", "chat", "u", 0)
    assert committer.run_sync(lambda tx: store.vectors.add(tx, [older], enricher.cursor, enricher.cursor))
    append(committer, "a new text")
    asyncio.run(enricher.catch_up(store.last_seq()))
    shown = enrichment_status(store, OPENAI, "org_acme")
    assert "rebuild" in shown["last_error"] and shown["lag"] == 1
    assert [row.event_id for row in store.vectors.after("org_acme", 0, 100)] == ["evt_old"]
    assert server.requests == []  # nothing was embedded


ENRICHMENT_ON = """\
session_completion_runtime:
  routing: {destinations: []}
  enrichment:
    embedder: {kind: local}
"""


@pytest.mark.every_store
def test_an_instance_starting_with_enrichment_on_marks_its_start_before_it_takes_an_event(
        serve: Any) -> None:
    first = serve(ENRICHMENT_ON)  # no enricher here: the instance marks where it is to start
    assert first.post("/v1/events", json=make_event("evt_first"), headers=first.key()).status_code == 202
    store = first.app.state.runtime.store
    start = store.cursor(ENRICH_START)
    assert start is not None and store.find_event("org_acme", "evt_first").seq > start
    assert store.cursor(ENRICH_CURSOR) == start  # the enricher, however late, embeds the event
    first.__exit__(None, None, None)
    again = serve(ENRICHMENT_ON)
    assert again.post("/v1/events", json=make_event("evt_second"), headers=again.key()).status_code == 202
    assert again.app.state.runtime.store.cursor(ENRICH_START) == start  # kept by a restart
