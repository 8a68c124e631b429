"""Reconciliation of provider exports with the ledger: each sample agrees with a ledger filled
to match, each explanation comes from a crafted difference, a bad file is refused line by line
(400 / exit 2, nothing compared), money stays exact to the last decimal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from conftest import Client, config_text
from scr.cli import app
from scr.route.price_file import install_prices
from scr.runtime import Runtime
from scr.usage.routes import MAX_EXPORT_BYTES
from support import Receiver, ServerProcess, create_key, make_event, run_scr, wait_for
from usage import recount

pytestmark = pytest.mark.every_store  # the serve tests run on SQLite and on PostgreSQL

SAMPLES = Path(__file__).parent / "exports"
TENANT = "org_acme"
CSV_HEADER = ("ChargePeriodStart,BilledCost,BillingCurrency,ConsumedQuantity,ConsumedUnit,ProviderName,"
              "SkuId,x_Model\n")


def event(n: int, day: str, provider: str, model: str, inputs: int, outputs: int) -> dict[str, Any]:
    return make_event(f"evt_rec_{n}", **{
        "timestamp": f"2026-11-{day}T12:00:0{n % 10}Z", "usage.provider": provider, "usage.model": model,
        "usage.input_tokens": inputs, "usage.output_tokens": outputs, "usage.total_tokens": inputs + outputs,
    })


# the ledger the samples describe (tests/usage/exports/README.md)
LEDGER = [
    event(1, "20", "openai", "gpt-4o", 1000, 500),
    event(2, "20", "openai", "gpt-4o", 3000, 1500),
    event(3, "21", "openai", "gpt-4o-mini", 100_000, 20_000),
    event(4, "20", "anthropic", "claude-sonnet-4-5", 10_000, 2000),
]


def filled(client: Client, events: list[dict[str, Any]] = LEDGER) -> Client:
    answer = client.post("/v1/events", json=events, headers=client.key(TENANT))
    assert answer.status_code == 202, answer.text
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    recount.count_to_head(runtime)
    return client


def post_export(client: Client, body: bytes | str, form: str, media: str = "text/csv",
                role: str = "admin") -> Any:
    return client.post("/v1/usage/reconcile", params={"format": form}, content=body,
                       headers={**client.key(TENANT, role), "content-type": media})


def focus(*rows: str) -> str:
    return CSV_HEADER + "".join(row + "\n" for row in rows)


@pytest.mark.parametrize(("form", "file", "matched"), [
    ("openai-costs", "openai-costs.json", 2),
    ("openai-usage", "openai-usage.json", 2),
    ("anthropic-cost", "anthropic-cost.json", 1),
    ("focus", "focus.csv", 3),
])
def test_each_sample_reconciles_with_the_ledger_it_describes(
    serve: Any, form: str, file: str, matched: int
) -> None:
    client = filled(serve())
    media = "text/csv" if form == "focus" else "application/json"
    answer = post_export(client, (SAMPLES / file).read_bytes(), form, media)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["differences"] == [] and body["matched"] == matched
    assert body["period"]["from"] == "2026-11-20T00:00:00Z"
    assert body["delivery"] == {"committed": body["delivery"]["committed"], "destinations": {}}
    providers = {"openai-costs": 3, "openai-usage": 3, "anthropic-cost": 1, "focus": 4}
    assert body["delivery"]["committed"] == providers[form]


def test_each_explanation_comes_from_its_difference(serve: Any) -> None:
    client = filled(serve())
    export = focus(
        # gpt-4o on the 20th: one input token more than the ledger
        "2026-11-20T00:00:00Z,0.0100,USD,4001,Input Tokens,OpenAI,x,gpt-4o",
        "2026-11-20T00:00:00Z,0.0200,USD,2000,Output Tokens,OpenAI,x,gpt-4o",
        # gpt-4o-mini on the 21st: the tokens agree, a price a cent off (0.027 in the ledger)
        "2026-11-21T00:00:00Z,0.025,USD,100000,Input Tokens,openai,x,gpt-4o-mini",
        "2026-11-21T00:00:00Z,0.012,USD,20000,Output Tokens,openai,x,gpt-4o-mini",
        # claude on the 20th: written to the cent, 0.06 exactly in the ledger → matched
        "2026-11-20T00:00:00Z,0.06,USD,10000,Input Tokens,ANTHROPIC,claude-sonnet-4-5,",
        "2026-11-20T00:00:00Z,0,USD,2000,Output Tokens,ANTHROPIC,claude-sonnet-4-5,",
        # a model the ledger never saw
        "2026-11-21T00:00:00Z,1.5,USD,10,Input Tokens,OpenAI,o3,o3",
    )
    body = post_export(client, export, "focus").json()
    assert body["matched"] == 1
    explained = {(d["day"], d["model"]): d for d in body["differences"]}
    assert {key: d["explanation"] for key, d in explained.items()} == {
        ("2026-11-20", "gpt-4o"): "token_mismatch",
        ("2026-11-21", "gpt-4o-mini"): "price_mismatch",
        ("2026-11-21", "o3"): "missing_in_ledger",
    }
    mini = explained[("2026-11-21", "gpt-4o-mini")]
    assert mini["ours"] == {"input_tokens": 100_000, "output_tokens": 20_000, "cost_usd": "0.0270000000"}
    assert mini["provider"] == {"input_tokens": 100_000, "output_tokens": 20_000, "cost_usd": "0.037"}
    assert mini["delta"] == {"input_tokens": 0, "output_tokens": 0, "cost_usd": "0.0100000000"}
    missing = explained[("2026-11-21", "o3")]
    assert missing["ours"] == {"input_tokens": 0, "output_tokens": 0, "cost_usd": "0"}
    assert explained[("2026-11-20", "gpt-4o")]["delta"]["input_tokens"] == 1
    assert [d["day"] + d["model"] for d in body["differences"]] == sorted(
        d["day"] + d["model"] for d in body["differences"])


def test_rounding_within_the_exports_precision_and_missing_at_provider(serve: Any) -> None:
    client = filled(serve())
    export = focus(
        # 0.027 written with two decimals: within the export's precision
        "2026-11-21T00:00:00Z,0.03,USD,100000,Input Tokens,OpenAI,x,gpt-4o-mini",
        "2026-11-21T00:00:00Z,0.00,USD,20000,Output Tokens,OpenAI,x,gpt-4o-mini",
        # the 20th's gpt-4o is in the ledger and in the period, but not in this export
        "2026-11-20T00:00:00Z,0,USD,0,Requests,OpenAI,x,o3",
    )
    body = post_export(client, export, "focus").json()
    explained = {(d["day"], d["model"]): d["explanation"] for d in body["differences"]}
    assert explained == {("2026-11-21", "gpt-4o-mini"): "rounding",
                         ("2026-11-20", "gpt-4o"): "missing_at_provider",
                         ("2026-11-20", "o3"): "missing_in_ledger"}


@pytest.mark.parametrize(("rows", "explanation", "delta"), [
    # 0.03 in the ledger; three amounts written to the cent may each be (almost) a cent off
    (("0.01,USD,4000,Input Tokens", "0.03,USD,2000,Output Tokens", "0.00,USD,2,Requests"), "rounding",
     "0.0100000000"),
    # two cannot be two cents off
    (("0.05,USD,4000,Input Tokens", "0.00,USD,2000,Output Tokens"), "price_mismatch", "0.0200000000"),
])
def test_the_precision_is_one_unit_of_each_amount_written(
    serve: Any, rows: tuple[str, ...], explanation: str, delta: str
) -> None:
    client = filled(serve())
    export = focus(*(f"2026-11-20T00:00:00Z,{row},OpenAI,x,gpt-4o" for row in rows))
    body = post_export(client, export, "focus").json()
    assert [(d["model"], d["explanation"], d["delta"]["cost_usd"]) for d in body["differences"]] == [
        ("gpt-4o", explanation, delta)]


def test_money_is_exact_with_12_decimal_prices(serve: Any, data_dir: Path, tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(
        '{"version": "exact-12", "currency": "USD", "unit": "per 1M tokens", "models": '
        '{"big-model": {"input": "2.500000000001", "output": "9.999999999999", '
        '"cached_input": "0.000000000001"}}}'
    )
    install_prices(prices, data_dir)
    tera = 10**12
    client = filled(serve(), [event(1, "20", "openai", "big-model", tera, 0)])
    exact = ('{"object": "page", "data": [{"object": "bucket", "start_time": 1795132800, "results": '
             '[{"object": "organization.costs.result", "amount": {"value": %s, "currency": "usd"}, '
             '"line_item": "big-model, input"}]}]}')
    # 10**12 tokens at 2.500000000001 per million: 2500000.000001 (a float would say ...0000010002)
    body = post_export(client, exact % "2500000.000001", "openai-costs", "application/json").json()
    assert body["matched"] == 1 and body["differences"] == []
    off = post_export(client, exact % "2500000.000002", "openai-costs", "application/json").json()
    assert [(d["explanation"], d["delta"]["cost_usd"]) for d in off["differences"]] == [
        ("price_mismatch", "0.0000010000")]


def test_a_bad_file_is_refused_line_by_line(serve: Any) -> None:
    client = filled(serve())
    export = focus(
        "2026-11-20T00:00:00Z,0.01,USD,4000,Input Tokens,OpenAI,x,gpt-4o",
        "yesterday,0.01,USD,4000,Input Tokens,OpenAI,x,gpt-4o",
        "2026-11-20T00:00:00Z,1e999999999,USD,4000,Input Tokens,OpenAI,x,gpt-4o",
        "2026-11-20T00:00:00Z,0.01,USD,12.5,Output Tokens,OpenAI,x,gpt-4o",
        "2026-11-20T00:00:00Z,0.01,EUR,1,Output Tokens,OpenAI,x,gpt-4o",
        "2026-11-20T00:00:00Z,ten,USD,1,Output Tokens,OpenAI,x,gpt-4o",
    )
    answer = post_export(client, export, "focus")
    assert answer.status_code == 400
    details = answer.json()["error"]["details"]
    assert [d["path"] for d in details] == ["line 3", "line 4", "line 5", "line 6", "line 7"]
    assert "ChargePeriodStart" in details[0]["message"] and "out of range" in details[1]["message"]
    assert "whole token count" in details[2]["message"] and "EUR" in details[3]["message"]
    assert "BilledCost" in details[4]["message"]


def test_a_bad_json_export_names_the_lines_of_its_bad_results(serve: Any) -> None:
    client = serve()
    page = (SAMPLES / "openai-costs.json").read_text()
    last = '"currency": "usd"},\n          "line_item": "gpt-4o-mini, output"'
    assert last in page
    # the second result's amount is not a number, the fourth's currency not usd
    broken = page.replace('"value": 0.02', '"value": "two cents"', 1)
    broken = broken.replace(last, last.replace("usd", "eur"))
    answer = post_export(client, broken, "openai-costs", "application/json")
    assert answer.status_code == 400
    lines = page.splitlines()
    starts = [n + 1 for n, text in enumerate(lines) if text.strip() == "{" and
              '"organization.costs.result"' in lines[n + 1]]
    details = answer.json()["error"]["details"]
    assert [d["path"] for d in details] == [f"line {starts[1]}", f"line {starts[3]}"]
    assert "$.amount.value" in details[0]["message"] and "eur" in details[1]["message"]
    syntax = post_export(client, '{"object": "page",\n "data": [\n}', "openai-costs", "application/json")
    assert syntax.status_code == 400 and syntax.json()["error"]["details"][0]["path"] == "line 3"


def test_bad_requests_are_refused_and_the_service_stays_up(serve: Any) -> None:
    client = filled(serve())
    sample = (SAMPLES / "focus.csv").read_bytes()
    assert post_export(client, sample, "xlsx").status_code == 400
    empty = post_export(client, CSV_HEADER, "focus")
    assert empty.status_code == 400 and empty.json()["error"]["details"] == [
        {"path": "line 1", "message": "no charges"}]
    assert post_export(client, sample, "focus", media="image/png").status_code == 415
    assert post_export(client, sample, "focus", role="read").status_code == 403
    assert client.post("/v1/usage/reconcile?format=focus", content=sample).status_code == 401
    too_big = b"x" * (MAX_EXPORT_BYTES + 1)
    assert post_export(client, too_big, "focus").status_code == 413
    assert post_export(client, sample, "focus").json()["differences"] == []


def test_the_delivery_section_counts_what_each_destination_holds(serve: Any, receivers: Any) -> None:
    # one receiver that takes everything, one port nobody listens on without retries (dead at
    # the first refusal), one nobody listens on with a minute between attempts (pending)
    hook: Receiver = receivers()
    closed = "http://127.0.0.1:9/hook"
    client = filled(serve(config_text(
        f'      - {{name: taken, endpoint: "{hook.url}", transform: raw_v1}}\n'
        f'      - {{name: refused, endpoint: "{closed}", transform: raw_v1, retry_attempts: 0}}\n'
        f'      - {{name: waiting, endpoint: "{closed}", transform: raw_v1, retry_attempts: 10, '
        f'backoff_base_ms: 60000, backoff_max_ms: 60000}}')))
    sample = (SAMPLES / "focus.csv").read_bytes()
    expected = {"committed": 4, "destinations": {
        "taken": {"delivered": 4, "dead": 0, "pending": 0},
        "refused": {"delivered": 0, "dead": 4, "pending": 0},
        "waiting": {"delivered": 0, "dead": 0, "pending": 4},
    }}
    wait_for(lambda: post_export(client, sample, "focus").json()["delivery"] == expected,
             what="every delivery settled")


def test_the_delivery_section_counts_only_the_events_compared(serve: Any, receivers: Any) -> None:
    """The events the aggregates hold: not another day's or provider's, nor one committed
    after the usage reader's last round (it is in no ``committed`` count yet)."""
    hook: Receiver = receivers()
    client = filled(serve(config_text(
        f'      - {{name: taken, endpoint: "{hook.url}", transform: raw_v1}}\n'
        f'      - {{name: waiting, endpoint: "http://127.0.0.1:9/hook", transform: raw_v1, '
        f'retry_attempts: 10, backoff_base_ms: 60000, backoff_max_ms: 60000}}')),
        [*LEDGER, event(5, "25", "openai", "gpt-4o", 10, 10),
         event(6, "20", "google", "gemini-2.5-pro", 10, 10)])
    later = [event(7, "20", "openai", "gpt-4o", 10, 10),
             event(8, "21", "anthropic", "claude-sonnet-4-5", 1, 1)]
    assert client.post("/v1/events", json=later, headers=client.key(TENANT)).status_code == 202
    sample = (SAMPLES / "focus.csv").read_bytes()
    expected = {"committed": 4, "destinations": {
        "taken": {"delivered": 4, "dead": 0, "pending": 0},
        "waiting": {"delivered": 0, "dead": 0, "pending": 4},
    }}
    wait_for(lambda: len(hook.received) == 8, what="every event at the receiver")
    assert post_export(client, sample, "focus").json()["delivery"] == expected


def offline(data_dir: Path, store_uri: str | None) -> list[str]:
    """The CLI's arguments naming the test's store (the data folder's SQLite, or PostgreSQL)."""
    return ["--data", str(data_dir), "--tenant", TENANT, *(["--store", store_uri] if store_uri else [])]


def test_cli_exit_codes_offline(serve: Any, data_dir: Path, tmp_path: Path, store_uri: str | None) -> None:
    filled(serve())
    runner = CliRunner()

    def run(export: Path, form: str = "focus") -> Any:
        return runner.invoke(app, ["usage", "reconcile", "--export", str(export), "--format", form,
                                   *offline(data_dir, store_uri)])

    agreed = run(SAMPLES / "focus.csv")
    assert agreed.exit_code == 0, agreed.output
    assert '"matched": 3' in agreed.stdout
    rounded = tmp_path / "rounded.csv"
    rounded.write_text(focus("2026-11-21T00:00:00Z,0.03,USD,100000,Input Tokens,OpenAI,x,gpt-4o-mini",
                             "2026-11-21T00:00:00Z,0,USD,20000,Output Tokens,OpenAI,x,gpt-4o-mini"))
    assert run(rounded).exit_code == 0
    differs = tmp_path / "differs.csv"
    differs.write_text(focus("2026-11-21T00:00:00Z,0.05,USD,100000,Input Tokens,OpenAI,x,gpt-4o-mini"))
    assert run(differs).exit_code == 1
    bad = tmp_path / "bad.csv"
    bad.write_text(focus("2026-11-21T00:00:00Z,lots,USD,1,Input Tokens,OpenAI,x,gpt-4o-mini"))
    refused = run(bad)
    assert refused.exit_code == 2 and "line 2: BilledCost" in refused.stderr
    assert run(SAMPLES / "focus.csv", "pdf").exit_code == 2
    assert run(tmp_path / "absent.csv").exit_code == 2
    alone = runner.invoke(app, ["usage", "reconcile", "--export", str(bad), "--format", "focus"])
    assert alone.exit_code == 2


def test_the_readme_example_reconciles_the_example_event(
    serve: Any, data_dir: Path, tmp_path: Path, store_uri: str | None
) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("cat > focus.csv <<'CSV'\n", 1)[1].split("CSV\n", 1)[0]
    filled(serve(), [make_event("evt_readme")])  # the README's example event
    export = tmp_path / "focus.csv"
    export.write_text(example)
    result = CliRunner().invoke(app, ["usage", "reconcile", "--export", str(export), "--format", "focus",
                                      *offline(data_dir, store_uri)])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer == {"period": {"from": "2026-11-25T00:00:00Z", "to": "2026-11-26T00:00:00Z"},
                      "matched": 1, "differences": [], "delivery": {"committed": 1, "destinations": {}}}


def test_cli_asks_a_running_server_with_url_and_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ingest, admin = create_key(data), create_key(data, role="admin")
    server = ServerProcess(data).start()
    try:
        posted = httpx.post(f"{server.url}/v1/events", json=LEDGER,
                            headers={"authorization": f"Bearer {ingest}"})
        assert posted.status_code == 202, posted.text

        def reconciled(export: Path, key: str = admin) -> Any:
            return run_scr("usage", "reconcile", "--export", str(export), "--format", "focus",
                           "--url", server.url, "--key", key, check=False)

        # the usage process counts within a round or two; until then the ledger side is short
        agreed = wait_for(lambda: (r := reconciled(SAMPLES / "focus.csv")).returncode == 0 and r,
                          timeout_s=60, what="the usage process to count the events")
        assert json.loads(agreed.stdout)["matched"] == 3
        differs = tmp_path / "differs.csv"
        differs.write_text(focus("2026-11-21T00:00:00Z,0.05,USD,100000,Input Tokens,OpenAI,x,gpt-4o-mini"))
        assert reconciled(differs).returncode == 1
        bad = tmp_path / "bad.csv"
        bad.write_text(focus("2026-11-21T00:00:00Z,lots,USD,1,Input Tokens,OpenAI,x,gpt-4o-mini"))
        refused = reconciled(bad)
        assert refused.returncode == 2 and "line 2: BilledCost" in refused.stderr
        assert reconciled(SAMPLES / "focus.csv", ingest).returncode == 2  # 403: not an admin key
    finally:
        server.stop()
