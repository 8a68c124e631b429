"""The embedders: one small protocol, the ``local`` model (``scr.enrich.minilm``) and any
OpenAI-compatible endpoint (``scr.enrich.openai_embeddings``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    kind: str  # "local" | "openai"
    model: str
    dimensions: int  # 0 until an ``openai`` embedder has had its first answer

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (len(texts), dimensions), each row L2-normalised, in the texts' order."""


class EmbedderError(Exception):
    """Embedding failed (after the embedder's own retries); the message says why and never
    holds a key."""


def open_embedder(kind: str, model: str | None, url: str | None, api_key_env: str | None) -> Embedder:
    """The configured embedder; ValueError saying what is wrong (a model not installed, a
    missing ``url`` or key)."""
    if kind == "local":
        from scr.enrich.minilm import MODEL, MiniLM

        if model not in (None, MODEL):
            raise ValueError(f"the local embedder runs {MODEL} only, not {model}")
        return MiniLM()
    if kind == "openai":
        from scr.enrich.openai_embeddings import OpenAIEmbeddings

        if not model or not url:
            raise ValueError("an openai embedder needs `model` and `url`")
        return OpenAIEmbeddings(model, url, api_key_env)
    raise ValueError(f"unknown embedder kind {kind!r}: local or openai")
