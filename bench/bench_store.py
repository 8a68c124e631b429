"""Store benchmark (scale-out issue): one ``scr serve`` on PostgreSQL against one on SQLite.

Same run, same client, same bodies: each server is started fresh (no destinations, so the
store is what differs), then takes (a) 1,000-event batches over 4 connections and (b) single
events over 32 connections (many small writes per group commit). PostgreSQL is a real server
from ``pgserver`` in a temporary folder, on its Unix socket; the figures are PostgreSQL's
events/s as a ratio of SQLite's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

import msgspec

from bench.ingest import (
    BATCH_EVENTS,
    ROOT,
    event,
    free_port,
    make_batches,
    post_all,
    start,
    stop,
    wait_ready,
)

BATCHES = int(os.environ.get("SCR_BENCH_STORE_BATCHES", "60"))
SINGLE_EVENTS = int(os.environ.get("SCR_BENCH_STORE_SINGLES", "4000"))
SINGLE_CONNECTIONS = 32


def create_key(where: list[str], role: str = "ingest") -> str:
    """``scr keys create`` for org_bench in ``where`` (``--data DIR`` or ``--store URI``)."""
    out = subprocess.run(
        [sys.executable, "-m", "scr", "keys", "create", *where, "--tenant", "org_bench",
         "--role", role], capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout.strip().splitlines()[-1]


def run_server(name: str, where: list[str], folder: Path, batches: list[bytes],
               singles: list[bytes]) -> dict[str, Any]:
    """Start ``scr serve`` on one store, load it, stop it."""
    key = create_key(where)
    port = free_port()
    server = start(["-m", "scr", "serve", *where, "--port", str(port), "--log-level", "warning"],
                   folder / f"serve-{name}.log")
    url = f"http://127.0.0.1:{port}/v1/events"
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    try:
        wait_ready(url)
        result = {"batches": asyncio.run(post_all(url, batches, headers)),
                  "single_events": asyncio.run(post_all(url, singles, headers, SINGLE_CONNECTIONS, 1))}
    finally:
        stop(server)
    return result


def main() -> dict[str, Any]:
    with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pgserver
    folder = Path(tempfile.mkdtemp(prefix="scr-bench-store-"))
    folder.chmod(0o755)  # as root, pgserver runs postgres as its own user
    postgres = pgserver.get_server(folder / "pgdata", cleanup_mode="stop")
    try:
        print(f"preparing {BATCHES} batches of {BATCH_EVENTS} and {SINGLE_EVENTS} single events …",
              flush=True)
        batches = make_batches(BATCHES)
        singles = [msgspec.json.encode(event(uuid.uuid4().hex)) for _ in range(SINGLE_EVENTS)]
        postgres.psql("CREATE DATABASE scr_bench;")
        uri = postgres.get_uri("scr_bench")
        results: dict[str, Any] = {"postgres_version": postgres.psql("SHOW server_version;").split()[2]}
        print("SQLite store …", flush=True)
        results["sqlite"] = run_server("sqlite", ["--data", str(folder / "data")], folder, batches, singles)
        print("PostgreSQL store …", flush=True)
        results["postgresql"] = run_server("postgresql", ["--store", uri], folder, batches, singles)
    finally:
        postgres.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    pg, lite = results["postgresql"], results["sqlite"]
    results["ratios"] = {
        "postgresql_vs_sqlite_batches": round(
            pg["batches"]["events_per_s"] / lite["batches"]["events_per_s"], 3),
        "postgresql_vs_sqlite_single_events": round(
            pg["single_events"]["events_per_s"] / lite["single_events"]["events_per_s"], 3),
    }
    return results
