"""The decision benchmark runs end to end (briefly) and reports its figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

# bench/ is not a package on the test path: load the module from its file.
_spec = importlib.util.spec_from_file_location(
    "bench_decide", Path(__file__).resolve().parents[2] / "bench" / "bench_decide.py"
)
assert _spec is not None and _spec.loader is not None
bench_decide = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_decide)
decide_request, main = bench_decide.decide_request, bench_decide.main


def test_benchmark_request_has_twenty_candidates_with_given_features() -> None:
    request = decide_request()
    assert len(request["candidates"]) == 20
    assert all(set(c["features"]) == {"ttv_ms", "cost", "risk", "success_prob"}
               for c in request["candidates"])


def test_benchmark_measures_http_and_pure_decide() -> None:
    figures = main(http_seconds=0.2, pure_seconds=0.1, durable_seconds=0.2, floor_seconds=0.1)
    for name in (
        "http_decide", "http_decide_offloaded", "http_decide_durable_server", "pure_decide",
        "sqlite_commit_floor", "sqlite_commit_floor_at_durable_pace",
    ):
        assert figures[name]["count"] > 0
        assert 0 < figures[name]["p50_ms"] <= figures[name]["p99_ms"] <= figures[name]["max_ms"]
    assert figures["candidates"] == 20
    # the floor commits rows the size of the entry a decision really appends
    assert 5_000 < figures["decide_entry_bytes"] < 100_000
