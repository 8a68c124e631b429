"""The ``openai`` embedder: any OpenAI-compatible ``POST {url}/embeddings`` endpoint.

Texts go in batches of ``BATCH`` (each cut to ``MAX_TEXT_CHARS``), with the model's name;
the key, read from the environment variable the config names, is sent as a Bearer token and
never appears in a log or an error. A timeout, a connection error, ``429`` or a ``5xx`` is
retried up to ``ATTEMPTS`` times with exponential backoff and jitter; another status fails
at once. An answer is checked (one vector per text, by ``index``, all of one width, the
width it had before) and its vectors normalised; anything else is an ``EmbedderError``.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence

import httpx
import msgspec
import numpy as np

from scr.enrich.embedders import EmbedderError

BATCH = 256
MAX_TEXT_CHARS = 8_000  # about 2,000 tokens: under every OpenAI embedding model's 8,191
ATTEMPTS = 4
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 8.0
TIMEOUT_S = 30.0
RETRIED_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class _Item(msgspec.Struct):
    embedding: list[float]
    index: int


class _Answer(msgspec.Struct):
    data: list[_Item]


class OpenAIEmbeddings:
    """The ``openai`` embedder (``scr.enrich.embedders.Embedder``); ``dimensions`` is learnt
    from the first answer (0 before)."""

    kind = "openai"

    def __init__(self, model: str, url: str, api_key_env: str | None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.model, self.url = model, url.rstrip("/") + "/embeddings"
        key = os.environ.get(api_key_env) if api_key_env else None
        if api_key_env and not key:
            raise ValueError(f"the environment variable {api_key_env} (embedder.api_key_env) is not set")
        self._headers = {"authorization": f"Bearer {key}"} if key else {}
        self.dimensions = 0
        self._sleep = sleep
        self._http = httpx.Client(timeout=TIMEOUT_S)
        self._decode = msgspec.json.Decoder(_Answer).decode

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        parts = [self._batch([text[:MAX_TEXT_CHARS] for text in texts[start:start + BATCH]])
                 for start in range(0, len(texts), BATCH)]
        if not parts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return np.vstack(parts)

    def _batch(self, texts: list[str]) -> np.ndarray:
        body = msgspec.json.encode({"model": self.model, "input": texts})
        for attempt in range(ATTEMPTS):
            try:
                answer = self._http.post(self.url, content=body, headers={
                    **self._headers, "content-type": "application/json"})
            except httpx.TransportError as error:  # a timeout, a refused or cut connection
                why = f"{type(error).__name__} calling {self.url}"
            else:
                if answer.status_code == httpx.codes.OK:
                    return self._vectors(answer.content, len(texts))
                why = f"{self.url} answered {answer.status_code}"
                if answer.status_code not in RETRIED_STATUSES:
                    raise EmbedderError(why)
            if attempt + 1 < ATTEMPTS:
                delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**attempt)
                self._sleep(delay * random.uniform(0.5, 1.0))
        raise EmbedderError(f"{why} ({ATTEMPTS} attempts)")

    def _vectors(self, body: bytes, count: int) -> np.ndarray:
        try:
            items = self._decode(body).data
        except msgspec.DecodeError as error:
            raise EmbedderError(f"{self.url} answered no embeddings list: {error}") from None
        if sorted(item.index for item in items) != list(range(count)):
            raise EmbedderError(f"{self.url} answered {len(items)} vectors for {count} texts")
        widths = {len(item.embedding) for item in items}
        if len(widths) != 1 or 0 in widths or (self.dimensions and widths != {self.dimensions}):
            raise EmbedderError(f"{self.url} answered vectors of {sorted(widths)} dimensions"
                                + (f", not {self.dimensions}" if self.dimensions else ""))
        vectors = np.array([item.embedding for item in sorted(items, key=lambda item: item.index)],
                           dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.all(np.isfinite(vectors)) or np.any(norms == 0):
            raise EmbedderError(f"{self.url} answered a vector of zeros or not numbers")
        self.dimensions = vectors.shape[1]
        return np.asarray(vectors / norms, dtype=np.float32)
