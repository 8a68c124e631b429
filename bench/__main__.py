"""``python -m bench``: run every benchmark once, print the figures, write them as JSON."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

# Each module has main() -> dict of figures. Later issues add theirs here.
BENCHMARKS = [
    "bench.ingest", "bench.bench_store", "bench.bench_ledger", "bench.bench_proofs", "bench.bench_decide",
    "bench.bench_sdk", "bench.bench_cluster", "bench.bench_file_destinations", "bench.bench_processes",
    "bench.bench_memory", "bench.bench_privacy", "bench.bench_usage", "bench.bench_reconcile",
    "bench.bench_anomalies", "bench.bench_dashboard", "bench.bench_native", "bench.bench_enrich",
    "bench.bench_enrich_index", "bench.bench_retention", "bench.bench_layout", "bench.bench_growth",
]
RESULTS = Path(__file__).parent / "results"


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True)
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def main(names: list[str]) -> None:
    RESULTS.mkdir(exist_ok=True)
    for name in names or BENCHMARKS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            print(f"{name}: not present, skipped")
            continue
        figures: dict[str, Any] = {"commit": commit(), **module.main()}
        text = json.dumps(figures, indent=2, default=str)
        print(f"== {name}\n{text}")
        (RESULTS / f"{name.split('.')[-1]}.json").write_text(text + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
