"""One price table for SDK and server, updated without a release by ``scr prices update``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

import scr
from scr.route.price_file import PRICES_FILE, RELOAD_CHECK_S, LivePrices, install_prices
from scr.route.prices import PriceTable, default_prices
from support import ServerProcess, create_key, make_event, run_scr, wait_for

BILLING_CONFIG = """\
session_completion_runtime:
  routing:
    destinations:
      - {name: billing, type: file, path: billing.jsonl, transform: billing_v1}
"""
NEW_MODEL = "acme-llm-9"


def price_file(path: Path, version: str, **models: tuple[str, str, str]) -> Path:
    path.write_text(json.dumps({
        "version": version, "currency": "USD", "unit": "per 1M tokens",
        "models": {name: {"input": i, "cached_input": c, "output": o}
                   for name, (i, c, o) in models.items()},
    }))
    return path


@pytest.fixture
def billing_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    config = tmp_path / "scr.yaml"
    config.write_text(BILLING_CONFIG)
    data = tmp_path / "data"
    key = create_key(data)
    server = ServerProcess(data, config).start()
    yield server, key
    server.stop()


def billed(data: Path, count: int) -> list[dict[str, Any]]:
    path = data / "billing.jsonl"

    def lines() -> list[dict[str, Any]] | None:
        found = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in found] if len(found) >= count else None

    result: list[dict[str, Any]] = wait_for(lines, what=f"{count} billing deliveries")
    return result


def unpriced_metric(server: ServerProcess) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f'scr_events_unpriced_model_total{{model="{NEW_MODEL}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def post(server: ServerProcess, key: str, event: dict[str, Any]) -> None:
    answer = httpx.post(f"{server.url}/v1/events", json=event, timeout=10,
                        headers={"authorization": f"Bearer {key}"})
    assert answer.status_code == 202, answer.text


def test_an_invalid_table_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    good = price_file(tmp_path / "good.json", "v-good", m=("1", "0.5", "2"))
    run_scr("prices", "update", str(good), "--data", str(data))
    bad = price_file(tmp_path / "bad.json", "v-bad", m=("-1", "0.5", "2"))
    result = run_scr("prices", "update", str(bad), "--data", str(data), check=False)
    assert result.returncode == 2
    assert "models.m.input" in result.stderr
    assert PriceTable.load(data / PRICES_FILE).version == "v-good"
    (tmp_path / "broken.json").write_text("{not json")
    assert run_scr("prices", "update", str(tmp_path / "broken.json"), "--data", str(data),
                   check=False).returncode == 2
    shown = run_scr("prices", "show", "--data", str(data)).stdout
    assert "v-good" in shown and "m: 1 / 0.5 / 2" in shown


def test_a_price_outside_the_money_bound_is_refused_naming_each(tmp_path: Path) -> None:
    # A price per 1M tokens is an amount like any other (scr.money): < 10^9 USD, at most 18
    # fractional digits, a JSON number or a decimal string spelled like one.
    data = tmp_path / "data"
    run_scr("prices", "update", str(price_file(tmp_path / "good.json", "v-good", m=("1", "0.5", "2"))),
            "--data", str(data))
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"version": "v-bad", "currency": "USD", "unit": "per 1M tokens", "models": {'
        '"a": {"input": "1e999999999", "cached_input": 1e-19, "output": "1_000"},'
        '"b": {"input": 1e100000, "cached_input": "0.5", "output": "999999999.999999999999999999"}}}'
    )
    result = run_scr("prices", "update", str(bad), "--data", str(data), check=False)
    assert result.returncode == 2, result.stdout
    for path in ("models.a.input", "models.a.cached_input", "models.a.output", "models.b.input"):
        assert path in result.stderr, (path, result.stderr)
    assert "models.b.output" not in result.stderr  # the largest amount in bounds is a price
    assert PriceTable.load(data / PRICES_FILE).version == "v-good"


def test_an_unknown_model_is_flagged_then_priced_after_an_update_without_restart(
    billing_server: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    server, key = billing_server
    post(server, key, make_event("evt_unpriced", **{"usage.model": NEW_MODEL}))
    first = billed(server.data, 1)[0]
    assert (first["cost_usd"], first["model_priced"]) == (None, False)
    assert unpriced_metric(server) == 1
    table = price_file(tmp_path / "prices.json", "2026-12-01", **{NEW_MODEL: ("3", "0.3", "12")})
    result = run_scr("prices", "update", str(table), "--data", str(server.data))
    assert "2026-12-01" in result.stdout
    # The running server picks the new table up within its reload check, without a restart.
    time.sleep(RELOAD_CHECK_S * 1.5)
    post(server, key, make_event("evt_priced", **{"usage.model": NEW_MODEL}))
    second = billed(server.data, 2)[-1]
    assert second["price_table_version"] == "2026-12-01"
    # 1200 input × 3 + 300 output × 12 per 1M tokens, exactly.
    assert Decimal(second["cost_usd"]) == Decimal("0.0072")
    assert unpriced_metric(server) == 1  # only the event before the update
    # The SDK costs an event with the same table and the same rule as the server's billing.
    client = scr.Client(server.url, key, organization_id="org_acme",
                        prices=PriceTable.load(server.data / PRICES_FILE))
    captured = client.normalize("sess_sdk", NEW_MODEL, input_tokens=1200, output_tokens=300)
    assert captured.model_priced and captured.event.usage.estimated_cost_usd == Decimal("0.0072")
    client.close(timeout_s=1)


def test_a_hand_broken_file_keeps_the_table_in_use(tmp_path: Path) -> None:
    data = tmp_path / "data"
    install_prices(price_file(tmp_path / "v1.json", "v1", m=("1", "1", "1")), data)
    live = LivePrices(data, check_every_s=0)
    assert live.current().version == "v1"
    (data / PRICES_FILE).write_text("{broken")
    assert live.current().version == "v1"
    install_prices(price_file(tmp_path / "v2.json", "v2", m=("2", "2", "2")), data)
    assert live.current().version == "v2"
    (data / PRICES_FILE).unlink()
    assert live.current().version == default_prices().version
