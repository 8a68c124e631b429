"""The embedders' protocol (the enrich/embed branch brings the embedders)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    kind: str
    model: str
    dimensions: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class EmbedderError(Exception):
    pass


def open_embedder(kind: str, model: str | None, url: str | None, api_key_env: str | None) -> Embedder:
    raise ValueError("no embedder yet")
