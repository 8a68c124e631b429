"""The embedders: the local all-MiniLM-L6-v2 (run on numpy from its package's files) and an
OpenAI-compatible endpoint (a real HTTP server on 127.0.0.1, scripted failures)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from capture.openai_server import OpenAIServer, Reply

from scr.enrich.embedders import EmbedderError, open_embedder
from scr.enrich.minilm import MiniLM
from scr.enrich.openai_embeddings import ATTEMPTS, BATCH, OpenAIEmbeddings

REFERENCE = Path(__file__).parent / "minilm_reference.json"
SECRET = "sk-test-9f8e7d6c5b4a"  # no substring of it is in any other text here


@pytest.fixture(scope="module")
def minilm() -> MiniLM:
    return MiniLM()


def test_the_local_model_matches_the_reference_forward_pass(minilm: MiniLM) -> None:
    """Against transformers' BertModel on the same files (``minilm_reference.json`` says how its
    vectors were made), text by text."""
    reference = json.loads(REFERENCE.read_text())
    expected = np.array(reference["vectors"], dtype=np.float32)
    vectors = minilm.embed(reference["texts"])
    cosines = (vectors * expected).sum(axis=1) / np.linalg.norm(expected, axis=1)
    assert len(reference["texts"]) == 6 and cosines.min() >= 0.99999, cosines


def test_the_local_model_gives_unit_vectors_that_put_paraphrases_together(minilm: MiniLM) -> None:
    texts = ["My card was charged twice for the same subscription",
             "I see a duplicate payment on my credit card for one plan",
             "How do I export my chat history to a PDF file?"]
    vectors = minilm.embed(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.5 > 0.1 > max(similarity[0, 2], similarity[1, 2])


def test_a_text_gets_the_same_vector_alone_or_in_any_batch(minilm: MiniLM) -> None:
    texts = ["short", "a somewhat longer request about exporting invoices to a spreadsheet", "",
             "refund please " * 20, "émoji 🎉 and ünïcode"]
    together = minilm.embed(texts)
    for index, text in enumerate(texts):
        assert np.allclose(minilm.embed([text])[0], together[index], atol=1e-5)
    assert np.allclose(minilm.embed(texts[::-1])[::-1], together, atol=1e-5)
    assert minilm.embed([]).shape == (0, 384)


def test_a_long_text_is_cut_to_the_models_limit(minilm: MiniLM) -> None:
    head = "the invoice total is wrong and I want a corrected copy sent to my accountant "
    long = head * 200  # thousands of tokens: only the first 256 count
    assert np.allclose(minilm.embed([long])[0], minilm.embed([head * 40])[0], atol=1e-5)


def test_an_unknown_kind_or_model_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="local or openai"):
        open_embedder("word2vec", None, None, None)
    with pytest.raises(ValueError, match="all-MiniLM-L6-v2 only"):
        open_embedder("local", "bge-large", None, None)
    with pytest.raises(ValueError, match="needs `model` and `url`"):
        open_embedder("openai", None, "http://127.0.0.1:1/v1", None)
    with pytest.raises(ValueError, match="SCR_TEST_UNSET_KEY"):
        open_embedder("openai", "m", "http://127.0.0.1:1/v1", "SCR_TEST_UNSET_KEY")


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as running:
        yield running


def embedder(server: OpenAIServer, monkeypatch: pytest.MonkeyPatch) -> OpenAIEmbeddings:
    """The embedder on the test server; the backoff's waits (not its retries) are skipped."""
    monkeypatch.setenv("SCR_TEST_EMBEDDINGS_KEY", SECRET)
    return OpenAIEmbeddings("text-embedding-3-small", server.base_url, "SCR_TEST_EMBEDDINGS_KEY",
                            sleep=lambda seconds: None)


def test_texts_go_in_batches_with_the_model_and_the_bearer_key(
        server: OpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCR_TEST_EMBEDDINGS_KEY", SECRET)
    configured = open_embedder("openai", "text-embedding-3-small", server.base_url, "SCR_TEST_EMBEDDINGS_KEY")
    texts = [f"request number {n} about billing" for n in range(BATCH + 3)]
    vectors = configured.embed(texts)
    assert vectors.shape == (BATCH + 3, 64)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert [len(r.body["input"]) for r in server.requests] == [BATCH, 3]
    assert {r.body["model"] for r in server.requests} == {"text-embedding-3-small"}
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {SECRET}"}


@pytest.mark.parametrize("failure", [Reply(status=429), Reply(status=500), Reply(status=503),
                                     Reply(delay_s=3.0)])
def test_a_passing_failure_is_retried(server: OpenAIServer, monkeypatch: pytest.MonkeyPatch,
                                      failure: Reply) -> None:
    monkeypatch.setattr("scr.enrich.openai_embeddings.TIMEOUT_S", 1.0)
    server.script(failure)
    vectors = embedder(server, monkeypatch).embed(["hello there"])
    assert vectors.shape == (1, 64) and len(server.requests) == 2


def test_a_lasting_failure_is_an_error_without_the_key(server: OpenAIServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    server.script(*[Reply(status=500)] * ATTEMPTS)
    with pytest.raises(EmbedderError) as raised:
        embedder(server, monkeypatch).embed(["hello"])
    assert "500" in str(raised.value) and SECRET not in str(raised.value)
    assert len(server.requests) == ATTEMPTS


def test_a_refusal_fails_at_once(server: OpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.script(Reply(status=400))
    with pytest.raises(EmbedderError, match="400"):
        embedder(server, monkeypatch).embed(["hello"])
    assert len(server.requests) == 1


def test_vectors_of_another_width_than_before_are_refused(server: OpenAIServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    embedding = embedder(server, monkeypatch)
    assert embedding.embed(["first"]).shape == (1, 64) and embedding.dimensions == 64
    server.script(Reply(embedding_dimensions=32))
    with pytest.raises(EmbedderError, match="32"):
        embedding.embed(["second"])
