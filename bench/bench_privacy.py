"""Encryption at rest (the privacy issue): what it costs ingest, and erasing a big subject.

In one run, the same load to ``scr serve`` without and with a master key:

(a) 1,000-event batches over 4 connections, 3 batched destinations, users spread over 10,000
    subjects: events/s durable, and the ratio;
(b) single events at 1,000/s with 3 per-event webhooks: ingest and capture → first attempt;
(c) a subject with ``SCR_BENCH_ERASE_EVENTS`` events (default 100,000) erased while batches
    of other users keep coming: the erasure's seconds, and ingest's events/s meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bench.ingest import BATCH_EVENTS, durable_ingest, event, latency, post_all, scr_and_receivers

BATCHES = int(os.environ.get("SCR_BENCH_PRIVACY_BATCHES", "100"))
SUBJECTS = 10_000
ERASE_EVENTS = int(os.environ.get("SCR_BENCH_ERASE_EVENTS", "100000"))
ERASED_USER = "erase.me@example.com"


def batches(count: int, user: str | None = None) -> list[bytes]:
    """Bodies of 1,000 events; each event's user one of ``SUBJECTS`` (or ``user``)."""
    bodies = []
    for _ in range(count):
        items = []
        for _ in range(BATCH_EVENTS):
            item = event(uuid.uuid4().hex)
            item["user"]["user_id"] = user or f"user_{uuid.uuid4().int % SUBJECTS}"
            items.append(item)
        bodies.append(msgspec.json.encode(items))
    return bodies


def key_env(folder: Path) -> dict[str, str]:
    """A new master key in ``folder`` (made), named as ``scr serve`` reads it."""
    from scr.privacy.master import write_master_key

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "master.key"
    write_master_key(path)
    return {"SCR_MASTER_KEY_FILE": str(path)}


def erasure(folder: Path) -> dict[str, Any]:
    """(c): fill one subject, then erase it while other users' batches keep coming."""
    env = key_env(folder / "keys")
    with scr_and_receivers(folder, "erase", BATCH_EVENTS, server_env=env) as setup:
        url, headers = f"{setup.url}/v1/events", setup.headers
        asyncio.run(post_all(url, batches(ERASE_EVENTS // BATCH_EVENTS, ERASED_USER), headers))
        others = batches(40)

        async def run() -> dict[str, Any]:
            streaming = asyncio.create_task(post_all(url, others, headers))
            await asyncio.sleep(1.0)  # ingest under way
            async with httpx.AsyncClient(timeout=120) as client:
                began = time.perf_counter()
                answer = await client.delete(f"{setup.url}/v1/subjects/{ERASED_USER}", headers=headers)
                seconds = time.perf_counter() - began
            assert answer.status_code == 202, answer.text
            during = await streaming
            return {"subject_events": answer.json()["events"], "erase_seconds": round(seconds, 2),
                    "ingest_meanwhile_events_per_s": during["events_per_s"]}

        return asyncio.run(run())


def main() -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="scr-bench-privacy-") as tmp:
        folder = Path(tmp)
        bodies = batches(BATCHES)
        for name, env in (("plain", None), ("encrypted", key_env(folder / "keys-batch"))):
            print(f"batches, {name} …", flush=True)
            (folder / f"b-{name}").mkdir()
            run = durable_ingest(bodies, folder / f"b-{name}", env)
            run.pop("lag_samples", None)
            results[f"batch_{name}"] = run
        for name, env in (("plain", None), ("encrypted", key_env(folder / "keys-single"))):
            print(f"single events, {name} …", flush=True)
            (folder / f"l-{name}").mkdir()
            results[f"single_{name}"] = latency(folder / f"l-{name}", env)
        print(f"erasing a subject of {ERASE_EVENTS} events …", flush=True)
        (folder / "erase").mkdir()
        results["erasure"] = erasure(folder / "erase")
    plain, sealed = results["batch_plain"], results["batch_encrypted"]
    results["batch_cost_of_encryption"] = round(1 - sealed["events_per_s"] / plain["events_per_s"], 3)
    return results
