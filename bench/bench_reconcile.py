"""Reconciliation benchmark (usage issue): ``POST /v1/usage/reconcile`` of a month's export.

A SQLite ledger of ``SCR_BENCH_RECONCILE_EVENTS_PER_PAIR`` events for each (day, model,
provider) of 30 UTC days × 50 models × {openai, anthropic} (a bench price table prices the
50 models) is committed by the in-process app in 1,000-event batches and counted by the
usage reader (``UsageReader.catch_up``, as ``scr: usage`` does). One destination's cursor is
moved to the ledger's head and a share of its events are given dead delivery rows, written
straight through the store (the deliveries a destination process would have written).

Each format's export (openai-costs, openai-usage, focus: the openai events; anthropic-cost:
the anthropic ones) is made from the aggregates, so it agrees pair for pair but for a few
planted differences, then reconciled through the real route (Starlette's test client,
in-process): the time end to end (read the body, parse, compare, delivery section), beside
two baselines measured in the same run: parsing the export alone (``read_export``), and
``GET /v1/usage`` for the same month by day, model and provider (what the comparison reads).
Runs in well under a minute on the 2-core machine.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from starlette.testclient import TestClient

from bench.ingest import TEMPLATE
from scr.config import parse_config
from scr.metrics import Metrics
from scr.route.price_file import install_prices, live_prices
from scr.runtime import Runtime
from scr.security.auth import create_key
from scr.security.keys import Role
from scr.serve.writes import AddUsage, add_usage
from scr.server import create_app
from scr.store.records import USAGE_COUNT_COLUMNS, DeliveryRow, DurationRow, UsageRow
from scr.usage.exports import FORMATS, read_export
from scr.usage.reader import UsageReader

EVENTS_PER_PAIR = int(os.environ.get("SCR_BENCH_RECONCILE_EVENTS_PER_PAIR", "10"))
RUNS = int(os.environ.get("SCR_BENCH_RECONCILE_RUNS", "5"))
TARGET_S = 2.0
DAYS = 30
MODELS = [f"bench-model-{n:02d}" for n in range(50)]
PROVIDERS = ("openai", "anthropic")
FIRST_DAY = datetime(2026, 10, 1, tzinfo=UTC)
TENANT = "org_bench"
DESTINATION = "billing_system"
BATCH_EVENTS = 1000
DEAD_SHARE = 0.01  # of the destination's events: given a dead delivery row
PLANTED = 3  # pairs changed in each export (a real reconciliation finds a few)
# one destination, which filters every event out (its endpoint is never called): the
# delivery section counts it like any other
CONFIG = f"""session_completion_runtime:
  routing:
    destinations:
      - {{name: {DESTINATION}, endpoint: "http://127.0.0.1:9/never", filter: {{tenant: [org_nobody]}}}}
"""
_INPUT, _OUTPUT = USAGE_COUNT_COLUMNS.index("input_tokens"), USAGE_COUNT_COLUMNS.index("output_tokens")


def main() -> dict[str, Any]:
    pick = random.Random(17)
    with tempfile.TemporaryDirectory(prefix="scr-bench-reconcile-") as folder:
        data = Path(folder) / "data"
        install_prices(_price_file(Path(folder)), data)
        app = create_app(parse_config(CONFIG), data)
        with TestClient(app) as client:
            runtime: Runtime = app.state.runtime
            key = create_key(runtime.committer, TENANT, Role.ADMIN).key
            headers = {"authorization": f"Bearer {key}"}
            started = time.perf_counter()
            events = _ingest(client, headers, pick)
            ingest_s = time.perf_counter() - started
            _count(runtime)
            _deliveries(runtime, pick)
            pairs = _pairs(client, headers)
            figures: dict[str, Any] = {
                "events": events, "ingest_and_count_s": round(time.perf_counter() - started, 1),
                "ingest_s": round(ingest_s, 1), "runs": RUNS, "target_s": TARGET_S,
                "get_usage_month_by_day_model_provider_s": _median_s(RUNS, lambda: _month(client, headers)),
            }
            for form in FORMATS:
                body = _export(form, pairs, pick)
                figures[form] = _time_format(client, headers, form, body)
    return figures


def _price_file(folder: Path) -> Path:
    path = folder / "bench-prices.json"
    models = {model: {"input": f"{1 + n % 7}.25", "output": f"{4 + n % 11}.5", "cached_input": "0.1"}
              for n, model in enumerate(MODELS)}
    path.write_text(json.dumps({"version": "bench", "currency": "USD", "unit": "per 1M tokens",
                                "models": models}))
    return path


def _ingest(client: TestClient, headers: dict[str, str], pick: random.Random) -> int:
    """Every (day, model, provider)'s events, posted in 1,000-event batches."""
    template = _template()
    batch: list[dict[str, Any]] = []
    count = 0
    for day in range(DAYS):
        for model in MODELS:
            for provider in PROVIDERS:
                for _ in range(EVENTS_PER_PAIR):
                    batch.append(_event(template, count, day, model, provider, pick))
                    count += 1
                    if len(batch) == BATCH_EVENTS:
                        _post(client, headers, batch)
                        batch = []
    if batch:
        _post(client, headers, batch)
    return count


def _template() -> dict[str, Any]:
    event: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(TEMPLATE))
    event["user"]["organization_id"] = TENANT
    return event


def _event(template: dict[str, Any], number: int, day: int, model: str, provider: str,
           pick: random.Random) -> dict[str, Any]:
    event: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(template))
    at = FIRST_DAY + timedelta(days=day, seconds=pick.randrange(86_400))
    inputs, outputs = pick.randrange(1, 20_000), pick.randrange(1, 4_000)
    event["event_id"] = f"evt_{number}"
    event["timestamp"] = at.isoformat().replace("+00:00", "Z")
    event["session"].update(session_id=f"sess_{number}",
                            start_time=(at - timedelta(seconds=10)).isoformat().replace("+00:00", "Z"),
                            end_time=at.isoformat().replace("+00:00", "Z"), duration_ms=10_000)
    event["user"]["user_id"] = f"user_{number % 300}"
    event["usage"].update(model=model, provider=provider, input_tokens=inputs, output_tokens=outputs,
                          total_tokens=inputs + outputs)
    for optional in ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens"):
        event["usage"].pop(optional, None)
    return event


def _post(client: TestClient, headers: dict[str, str], batch: list[dict[str, Any]]) -> None:
    posted = client.post("/v1/events", json=batch, headers=headers)
    assert posted.status_code == 202, posted.text


def _count(runtime: Runtime) -> None:
    """The usage reader over the whole ledger, writing through the in-process committer."""

    async def write(rows: list[UsageRow], after_seq: int, seq: int, alerts: list[dict[str, Any]],
                    durations: list[DurationRow], judged: int) -> bool:
        operation = AddUsage(rows, after_seq, seq, alerts, durations, judged)
        return bool(await runtime.committer.run(lambda tx: add_usage(runtime.committer, tx, operation),
                                                durable=False))

    reader = UsageReader(runtime.store, live_prices(runtime.data_dir), write, Metrics())
    reader.load()
    asyncio.run(reader.catch_up(runtime.store.last_seq()))


def _deliveries(runtime: Runtime, pick: random.Random) -> None:
    """The destination's cursor at the head, and dead rows for ``DEAD_SHARE`` of its events."""
    store = runtime.store
    head = store.last_seq()
    dead = [DeliveryRow(DESTINATION, seq, TENANT, f"evt_{seq}", 0, f"msg_{seq}", "dead", 4, 0, 500,
                        "HTTP 500", "2026-11-02T00:00:00Z")
            for seq in range(1, head + 1) if pick.random() < DEAD_SHARE]

    async def write() -> None:
        await runtime.committer.run(lambda tx: store.set_cursor(tx, DESTINATION, head))
        await runtime.committer.run(lambda tx: store.upsert_deliveries(tx, dead))

    asyncio.run(write())


def _month_params() -> dict[str, str]:
    end = FIRST_DAY + timedelta(days=DAYS)
    return {"from": FIRST_DAY.isoformat().replace("+00:00", "Z"),
            "to": end.isoformat().replace("+00:00", "Z"), "window": "day",
            "group_by": "model,provider"}


def _month(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    answer = client.get("/v1/usage", params=_month_params(), headers=headers)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _pairs(client: TestClient, headers: dict[str, str]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The aggregates per (day, model, provider): what an agreeing export says."""
    return {(row["window_start"][:10], row["model"], row["provider"]): row
            for row in _month(client, headers)["rows"]}


def _export(form: str, pairs: dict[tuple[str, str, str], dict[str, Any]], pick: random.Random) -> bytes:
    """The export of ``form`` for the month, agreeing with the ledger but on ``PLANTED`` pairs."""
    provider = "anthropic" if form == "anthropic-cost" else "openai"
    mine = {(day, model): row for (day, model, named), row in pairs.items() if named == provider}
    planted = set(pick.sample(sorted(mine), PLANTED))
    lines = []
    for (day, model), row in sorted(mine.items()):
        cost = Decimal(row["cost_usd"]) + (Decimal("0.5") if (day, model) in planted else 0)
        inputs = row["input_tokens"] + (7 if (day, model) in planted else 0)
        lines.append((day, model, cost, inputs, row["output_tokens"]))
    return _WRITERS[form](lines)


def _unix(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())


Line = tuple[str, str, Decimal, int, int]  # day, model, cost, input tokens, output tokens


def _openai_page(lines: list[Line], result: Callable[[Line], dict[str, Any]]) -> bytes:
    days: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        days.setdefault(line[0], []).append(result(line))
    page = {"object": "page", "has_more": False, "next_page": None, "data": [
        {"object": "bucket", "start_time": _unix(day), "end_time": _unix(day) + 86_400,
         "results": results} for day, results in days.items()]}
    return _AS_NUMBERS.encode(page)  # amounts as JSON numbers with every digit, as OpenAI writes


_AS_NUMBERS = msgspec.json.Encoder(decimal_format="number")


def _openai_costs(lines: list[Line]) -> bytes:
    return _openai_page(lines, lambda line: {
        "object": "organization.costs.result", "amount": {"value": line[2], "currency": "usd"},
        "line_item": f"{line[1]}, input", "project_id": None})


def _openai_usage(lines: list[Line]) -> bytes:
    return _openai_page(lines, lambda line: {
        "object": "organization.usage.completions.result", "input_tokens": line[3],
        "output_tokens": line[4], "num_model_requests": EVENTS_PER_PAIR, "project_id": None,
        "user_id": None, "api_key_id": None, "model": line[1], "batch": None})


def _anthropic_cost(lines: list[Line]) -> bytes:
    days: dict[str, list[dict[str, Any]]] = {}
    for day, model, cost, _, _ in lines:
        days.setdefault(day, []).append({
            "currency": "USD", "amount": format(cost.scaleb(2), "f"), "workspace_id": None,
            "description": f"{model} Usage", "cost_type": "tokens", "model": model,
            "service_tier": "standard", "token_type": "uncached_input_tokens"})
    page = {"has_more": False, "next_page": None, "data": [
        {"starting_at": f"{day}T00:00:00Z", "ending_at": f"{day}T23:59:59Z", "results": results}
        for day, results in days.items()]}
    return json.dumps(page).encode()


def _focus(lines: list[Line]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["BillingAccountId", "ChargeCategory", "ChargePeriodStart", "ChargePeriodEnd",
                     "BilledCost", "BillingCurrency", "ConsumedQuantity", "ConsumedUnit",
                     "ProviderName", "ServiceName", "SkuId", "x_Model"])
    for day, model, cost, inputs, outputs in lines:
        start, end = f"{day}T00:00:00Z", f"{day}T23:59:59Z"
        writer.writerow(["org-bench", "Usage", start, end, format(cost, "f"), "USD", inputs,
                         "Input Tokens", "OpenAI", "OpenAI API", f"{model}-input", model])
        writer.writerow(["org-bench", "Usage", start, end, "0", "USD", outputs, "Output Tokens",
                         "OpenAI", "OpenAI API", f"{model}-output", model])
    return out.getvalue().encode()


_WRITERS: dict[str, Callable[[list[Line]], bytes]] = {
    "openai-costs": _openai_costs, "openai-usage": _openai_usage,
    "anthropic-cost": _anthropic_cost, "focus": _focus,
}


def _time_format(client: TestClient, headers: dict[str, str], form: str, body: bytes) -> dict[str, Any]:
    """Median seconds of ``RUNS`` reconciliations through the route, and of parsing alone."""
    answer: dict[str, Any] = {}

    def reconcile() -> None:
        nonlocal answer
        posted = client.post("/v1/usage/reconcile", params={"format": form}, content=body,
                             headers={**headers, "content-type": "application/octet-stream"})
        assert posted.status_code == 200, posted.text
        answer = posted.json()

    end_to_end = _median_s(RUNS, reconcile)
    parse = _median_s(RUNS, lambda: read_export(body, form))
    explained = sorted({d["explanation"] for d in answer["differences"]})
    delivery = answer["delivery"]
    return {
        "export_bytes": len(body), "pairs": answer["matched"] + len(answer["differences"]),
        "matched": answer["matched"], "differences": len(answer["differences"]),
        "explanations": explained, "committed": delivery["committed"],
        "destination": delivery["destinations"].get(DESTINATION),
        "reconcile_end_to_end_s": end_to_end, "parse_only_s": parse,
        "within_target": end_to_end <= TARGET_S,
    }


def _median_s(runs: int, action: Callable[[], object]) -> float:
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        took.append(time.perf_counter() - started)
    return round(statistics.median(took), 4)


if __name__ == "__main__":
    print(msgspec.json.format(msgspec.json.encode(main()), indent=2).decode())
