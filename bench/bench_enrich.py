"""Enrichment benchmark (enrichment issue): the local embedder's quality and speed, and what
the enricher costs ingest.

(a) Quality: ``bench/data/intents.json`` (320 user requests, 32 intents, 10 paraphrases
each). Leave-one-out precision@5: for each text, the share of its 5 nearest others (cosine)
that have its intent; the local model (all-MiniLM-L6-v2) against a bag-of-words baseline
(TF-IDF over lower-cased words, cosine) measured in the same run.

(b) Speed on one core (a child process with BLAS on one thread, as ``scr: enrich`` runs):
sessions embedded per second for the labelled requests (short: 5-20 words) and for longer
session texts (a request and two tool outputs: 60-160 words), and CPU ms per session.

(c) Ingest with enrichment on and off: ``scr serve`` with three batched destinations takes
``SCR_BENCH_ENRICH_BATCHES`` batches of 1,000 events, every event with a ``content`` text
(the worst case: each one is to be embedded), alternated ``SCR_BENCH_ENRICH_PAIRS`` times;
events/s each way, and the enricher's backlog when the last batch was acknowledged.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np

from bench.ingest import TEMPLATE, post_all, scr_and_receivers

INTENTS = Path(__file__).parent / "data" / "intents.json"
BATCHES = int(os.environ.get("SCR_BENCH_ENRICH_BATCHES", "100"))
PAIRS = int(os.environ.get("SCR_BENCH_ENRICH_PAIRS", "2"))
SPEED_SESSIONS = int(os.environ.get("SCR_BENCH_ENRICH_SESSIONS", "320"))
BATCH_EVENTS = 1000
K = 5
ENRICHMENT = "  enrichment: {embedder: {kind: local}}\n"


def labelled() -> tuple[list[str], list[str]]:
    intents = json.loads(INTENTS.read_text())
    intents.pop("_about")
    texts, labels = [], []
    for intent, paraphrases in intents.items():
        texts += paraphrases
        labels += [intent] * len(paraphrases)
    return texts, labels


def precision_at_k(vectors: np.ndarray, labels: list[str]) -> float:
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1)[:, :K]
    hits = sum(labels[j] == labels[i] for i, row in enumerate(nearest) for j in row)
    return round(hits / (K * len(labels)), 3)


def tf_idf(texts: list[str]) -> np.ndarray:
    words = [[w.strip(".,?!'\"()-:;") for w in text.lower().split()] for text in texts]
    vocabulary = {w: n for n, w in enumerate(sorted({w for ws in words for w in ws if w}))}
    counts = np.zeros((len(texts), len(vocabulary)), dtype=np.float32)
    for row, ws in enumerate(words):
        for w in ws:
            if w:
                counts[row, vocabulary[w]] += 1
    idf = np.log(len(texts) / (1 + (counts > 0).sum(axis=0))) + 1
    weighted = counts * idf
    return np.asarray(weighted / np.maximum(np.linalg.norm(weighted, axis=1, keepdims=True), 1e-9))


def quality() -> dict[str, Any]:
    from scr.enrich.minilm import MiniLM

    texts, labels = labelled()
    return {"texts": len(texts), "intents": len(set(labels)),
            "precision_at_5_local": precision_at_k(MiniLM().embed(texts), labels),
            "precision_at_5_bag_of_words": precision_at_k(tf_idf(texts), labels)}


def session_texts(count: int, pick: random.Random) -> list[str]:
    texts, _ = labelled()
    words = " ".join(texts).split()
    return [f"{pick.choice(texts)}\n" + "\n".join(" ".join(pick.choices(words, k=pick.randint(25, 70)))
                                                   for _ in range(2)) for _ in range(count)]


SPEED_CHILD = """
import json, sys, time
from threadpoolctl import threadpool_limits
from scr.enrich.minilm import MiniLM
threadpool_limits(1)
model = MiniLM()
texts = json.load(sys.stdin)
model.embed(texts[:8])
started, cpu = time.perf_counter(), time.process_time()
model.embed(texts)
wall, cpu = time.perf_counter() - started, time.process_time() - cpu
print(json.dumps({"sessions_per_s": round(len(texts) / wall, 1),
                  "cpu_ms_per_session": round(cpu * 1000 / len(texts), 2)}))
"""


def speed_of(texts: list[str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", SPEED_CHILD], input=json.dumps(texts), text=True,
                          capture_output=True, check=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def speed(pick: random.Random) -> dict[str, Any]:
    texts, _ = labelled()
    return {"requests_5_to_20_words": speed_of(texts[:SPEED_SESSIONS]),
            "sessions_60_to_160_words": speed_of(session_texts(SPEED_SESSIONS, pick))}


def batch(number: int, texts: list[str], pick: random.Random) -> list[dict[str, Any]]:
    events = []
    for n in range(BATCH_EVENTS):
        event = copy.deepcopy(TEMPLATE)
        event["event_id"] = event["session"]["session_id"] = f"evt_{number}_{n}"  # type: ignore[index]
        event["content"] = {"user_request": pick.choice(texts)}
        events.append(event)
    return events


def ingest_once(bodies: list[bytes], folder: Path, enriched: bool) -> dict[str, Any]:
    extra = ENRICHMENT if enriched else ""
    with scr_and_receivers(folder, "enrich", BATCH_EVENTS, more_config=extra) as setup:
        sent = asyncio.run(post_all(f"{setup.url}/v1/events", bodies, setup.headers))
        result = {"events_per_s": sent["events_per_s"]}
        if enriched:
            status = httpx.get(f"{setup.url}/v1/enrichment", headers=setup.headers, timeout=10).json()
            result["enricher_backlog_entries"] = status["lag"]
            result["indexed_sessions"] = status["indexed"]
        return result


def ingest_cost(pick: random.Random) -> dict[str, Any]:
    texts, _ = labelled()
    bodies = [msgspec.json.encode(batch(number, texts, pick)) for number in range(BATCHES)]
    runs: dict[str, list[dict[str, Any]]] = {"enrichment_off": [], "enrichment_on": []}
    with tempfile.TemporaryDirectory(prefix="scr-bench-enrich-") as tmp:
        for pair in range(PAIRS):
            for mode in runs:
                folder = Path(tmp) / f"{mode}-{pair}"
                folder.mkdir()
                runs[mode].append(ingest_once(bodies, folder, enriched=mode == "enrichment_on"))
                time.sleep(1)
    rates = {mode: [run["events_per_s"] for run in done] for mode, done in runs.items()}
    best = {mode: max(values) for mode, values in rates.items()}
    return {**runs, "events_per_s_range": {mode: [min(v), max(v)] for mode, v in rates.items()},
            "on_over_off": round(best["enrichment_on"] / best["enrichment_off"], 3)}


def main() -> dict[str, Any]:
    pick = random.Random(15)
    return {"quality": quality(), "speed_one_core": speed(pick), "ingest": ingest_cost(pick)}
