"""Budgets: a tenant's exact cost crossing shares of its limit ledgers one BUDGET_ALERT per
threshold and period, delivered signed to the budget's destinations, never again after a
restart, a replay or a SIGKILL of ``scr: usage``."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from serve.test_supervisor import USAGE, Stream, child, kill_and_see_it_restart

from conftest import Client, StoreAt, config_text
from scr.config import parse_config
from scr.errors import ConfigError
from scr.log.entry import Kind, decode_entry
from scr.route.price_file import install_prices
from scr.route.signing import verify
from scr.serve.writes import AddUsage, add_usage
from scr.store.protocol import Store
from scr.store.records import USAGE_CURSOR
from scr.store.sqlite import DATABASE_FILE
from scr.usage.budgets import key_of
from scr.usage.reader import BUDGET_GAUGES_EVERY_S, UsageReader
from support import Receiver, ServerProcess, create_key, make_event, run_scr, wait_for
from usage import recount as reference
from usage.test_usage import post, runtime_of

pytestmark = pytest.mark.every_store

DAY_S = 24 * 3600
SECRET = "whsec_" + base64.b64encode(b"b" * 32).decode()
# 10^8 input tokens at 2.500000000001 per million: 250.0000000001 USD an event, exactly
PRICES = ('{"version": "exact-12", "currency": "USD", "unit": "per 1M tokens", "models": '
          '{"budget-model": {"input": "2.500000000001", "output": "9.999999999999", '
          '"cached_input": "0.000000000001"}, '
          '"gpt-4o": {"input": "1", "output": "1", "cached_input": "1"}}}')
INPUT_TOKENS = 10**8
# 80% of it is 4 events exactly, 100% 5 events exactly
ACME_LIMIT = "1250.0000000005"
# 10^-18 more (written as a YAML number): 5 events are 80% of it, never 100%; read or
# compared as a float, it would be ACME_LIMIT, and 5 events would reach it
BETA_LIMIT = "1250.000000000500000001"


def budgets_config(url: str, *budgets: str) -> str:
    # alerts only: budget alerts go to the destinations they name whatever their filter
    destinations = (f'      - {{name: alerts, endpoint: "{url}", secret: "{SECRET}", '
                    f'backoff_base_ms: 20, backoff_max_ms: 100, filter: {{tenant: [org_nobody]}}}}')
    return config_text(destinations) + "  usage:\n    budgets:\n" + "".join(
        f"      - {budget}\n" for budget in budgets)


def events_on(day: str, count: int, tenant: str, first: int = 0) -> list[dict[str, Any]]:
    return [
        make_event(f"evt_{tenant}_{day}_{first + n}", **{
            "timestamp": f"2026-11-{day}T10:00:05Z", "session.start_time": f"2026-11-{day}T09:58:00Z",
            "session.end_time": f"2026-11-{day}T10:00:00Z", "user.organization_id": tenant,
            "usage.model": "budget-model", "usage.input_tokens": INPUT_TOKENS, "usage.output_tokens": 0,
            "usage.total_tokens": INPUT_TOKENS,
        })
        for n in range(count)
    ]


def ledgered_alerts(store: Store, tenant: str) -> list[dict[str, Any]]:
    return [decode_entry(stored.entry).payload
            for stored in store.tenant_entries_of_kinds(tenant, [Kind.BUDGET_ALERT.value], 0)]


def delivered_everything(store: Store) -> bool:
    return store.cursor("alerts") == store.last_seq()


def signed(request: Any) -> bool:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    return verify(key, request.headers["webhook-id"], request.headers["webhook-timestamp"],
                  request.body, request.headers["webhook-signature"])


def test_crossing_80_and_100_percent_delivers_two_signed_alerts_once_per_day(
    serve: Any, receivers: Any, data_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "prices.json").write_text(PRICES)
    install_prices(tmp_path / "prices.json", data_dir)
    hook: Receiver = receivers()
    client: Client = serve(budgets_config(
        hook.url,
        f'{{tenant: org_acme, period: day, limit_usd: "{ACME_LIMIT}", destinations: [alerts]}}',
        f"{{tenant: org_beta, period: month, limit_usd: {BETA_LIMIT}, destinations: [alerts]}}",
    ))
    store = runtime_of(client).store
    post(client, events_on("25", 4, "org_acme"))
    reference.count_to_head(runtime_of(client))
    assert [a["data"]["threshold"] for a in ledgered_alerts(store, "org_acme")] == ["0.8"]
    post(client, events_on("25", 1, "org_acme", first=4))
    reference.count_to_head(runtime_of(client))
    # a restart of the reader (a new one loads what was ledgered) and more spending: nothing new
    post(client, events_on("25", 3, "org_acme", first=5))
    reference.count_to_head(runtime_of(client))
    assert [a["data"]["threshold"] for a in ledgered_alerts(store, "org_acme")] == ["0.8", "1.0"]
    wait_for(lambda: delivered_everything(store), what="the destination at the ledger's head")
    assert len(hook.received) == 2
    assert all(signed(request) for request in hook.received)
    assert len({request.headers["webhook-id"] for request in hook.received}) == 2
    first, second = (request.json() for request in hook.received)
    assert first == {"type": "budget.threshold_crossed", "timestamp": first["timestamp"], "data": {
        "tenant": "org_acme", "period": "day", "period_start": "2026-11-25T00:00:00Z",
        "threshold": 0.8, "spent_usd": "1000.0000000004", "limit_usd": ACME_LIMIT,
    }}
    assert b'"threshold":0.8' in hook.received[0].body and b'"threshold":1.0' in hook.received[1].body
    assert second["data"]["spent_usd"] == "1250.0000000005" and second["data"]["threshold"] == 1.0

    # a new day alerts again; the other tenant's limit, 10^-18 higher, only at 80%
    post(client, events_on("26", 5, "org_acme"))
    post(client, events_on("25", 5, "org_beta"), tenant="org_beta")
    reference.count_to_head(runtime_of(client))
    wait_for(lambda: delivered_everything(store), what="the destination at the ledger's head")
    days = [(r.json()["data"]["tenant"], r.json()["data"]["period_start"], r.json()["data"]["threshold"])
            for r in hook.received]
    assert sorted(days[2:]) == [("org_acme", "2026-11-26T00:00:00Z", 0.8),
                                ("org_acme", "2026-11-26T00:00:00Z", 1.0),
                                ("org_beta", "2026-11-01T00:00:00Z", 0.8)]
    beta = ledgered_alerts(store, "org_beta")[0]["data"]
    assert Decimal(beta["spent_usd"]) == 5 * Decimal("250.0000000001") < Decimal(BETA_LIMIT)


def test_a_destination_that_takes_every_event_also_gets_the_alerts_naming_it(
    serve: Any, receivers: Any, data_dir: Path, tmp_path: Path
) -> None:
    """Without a filter or sampling a destination picks its entries by kind alone: each event,
    and each budget alert that names it (another destination's alert is not its)."""
    (tmp_path / "prices.json").write_text(PRICES)
    install_prices(tmp_path / "prices.json", data_dir)
    hook: Receiver = receivers()
    other: Receiver = receivers()
    destinations = (f'      - {{name: alerts, endpoint: "{hook.url}", secret: "{SECRET}"}}\n'
                    f'      - {{name: others, endpoint: "{other.url}", secret: "{SECRET}"}}')
    client: Client = serve(config_text(destinations) + "  usage:\n    budgets:\n" + (
        f'      - {{tenant: org_acme, period: day, limit_usd: "{ACME_LIMIT}", destinations: [alerts]}}\n'))
    store = runtime_of(client).store
    post(client, events_on("25", 4, "org_acme"))
    reference.count_to_head(runtime_of(client))
    wait_for(lambda: delivered_everything(store) and store.cursor("others") == store.last_seq(),
             what="both destinations at the ledger's head")
    kinds = [request.json().get("type", "event") for request in hook.received]
    assert sorted(kinds) == ["budget.threshold_crossed", "event", "event", "event", "event"]
    assert [request.json().get("type", "event") for request in other.received] == ["event"] * 4


def test_the_budget_use_gauge_shows_the_current_period(serve: Any, receivers: Any, data_dir: Path,
                                                        tmp_path: Path) -> None:
    (tmp_path / "prices.json").write_text(PRICES)
    install_prices(tmp_path / "prices.json", data_dir)
    client: Client = serve(budgets_config(
        receivers().url,
        f'{{tenant: org_acme, period: day, limit_usd: "{ACME_LIMIT}", destinations: [alerts]}}',
        "{tenant: org_acme, period: month, limit_usd: 5000, destinations: [alerts]}",
    ))
    post(client, events_on("25", 4, "org_acme"))
    post(client, events_on("24", 2, "org_acme", first=4))
    on_the_25th = datetime(2026, 11, 25, 12, tzinfo=UTC).timestamp()
    reader = reference.count_to_head(runtime_of(client), clock=lambda: on_the_25th)
    month = float(6 * Decimal("250.0000000001") / 5000)  # the 24th and the 25th
    assert budget_use(reader) == {("org_acme", "day"): 0.8, ("org_acme", "month"): month}
    # a new day without traffic: once the gauges are due again, the day's use is 0
    reader.clock = lambda: on_the_25th + DAY_S + BUDGET_GAUGES_EVERY_S
    asyncio.run(reader.catch_up(runtime_of(client).store.last_seq()))
    assert budget_use(reader) == {("org_acme", "day"): 0.0, ("org_acme", "month"): month}


def budget_use(reader: UsageReader) -> dict[tuple[str, str], float]:
    """The reader's ``scr_usage_budget_used_ratio`` samples, by (tenant, period)."""
    return {(sample.labels["tenant"], sample.labels["period"]): sample.value
            for family in reader.metrics.registry.collect() if family.name == "scr_usage_budget_used_ratio"
            for sample in family.samples}


def test_the_write_ledgers_an_alert_identity_once(serve: Any, receivers: Any, data_dir: Path,
                                                  tmp_path: Path) -> None:
    (tmp_path / "prices.json").write_text(PRICES)
    install_prices(tmp_path / "prices.json", data_dir)
    hook: Receiver = receivers()
    client: Client = serve(budgets_config(
        hook.url, f'{{tenant: org_acme, period: day, limit_usd: "{ACME_LIMIT}", destinations: [alerts]}}'))
    runtime = runtime_of(client)
    post(client, events_on("25", 5, "org_acme"))
    reference.count_to_head(runtime)
    alerts = ledgered_alerts(runtime.store, "org_acme")
    assert len(alerts) == 2
    # a replayed round that raises the same alerts again (a reader that missed its answer)
    cursor = runtime.store.cursor(USAGE_CURSOR) or 0
    again = AddUsage([], cursor, cursor, [{**alerts[1], "timestamp": "2026-12-01T00:00:00Z"}])
    taken = asyncio.run(runtime.committer.run(lambda tx: add_usage(runtime.committer, tx, again)))
    assert taken == 1
    assert [key_of(a) for a in ledgered_alerts(runtime.store, "org_acme")] == [key_of(a) for a in alerts]


def test_a_failed_alert_delivery_is_retried_with_the_same_webhook_id(
    serve: Any, receivers: Any, data_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "prices.json").write_text(PRICES)
    install_prices(tmp_path / "prices.json", data_dir)
    hook: Receiver = receivers(script=[503])
    client: Client = serve(budgets_config(
        hook.url, f'{{tenant: org_acme, period: month, limit_usd: "{ACME_LIMIT}", alert_at: [1], '
                  f'destinations: [alerts]}}'))
    post(client, events_on("25", 5, "org_acme"))
    reference.count_to_head(runtime_of(client))
    wait_for(lambda: len(hook.received) == 2, what="a failed attempt, then its retry")
    first, retry = hook.received
    assert first.headers["webhook-id"] == retry.headers["webhook-id"] and first.body == retry.body
    assert signed(retry) and retry.json()["data"]["threshold"] == 1
    reader = client.key(role="read")
    wait_for(lambda: client.get("/v1/deliveries?status=delivered", headers=reader).json()["deliveries"],
             what="the alert's delivery recorded as delivered")


@pytest.mark.parametrize(("budget", "path", "message"), [
    ("{tenant: org_acme, period: week, limit_usd: 5, destinations: [alerts]}",
     "budgets[0].period", "period must be one of day, month"),
    ("{tenant: org_acme, period: day, limit_usd: -5, destinations: [alerts]}",
     "budgets[0].limit_usd", "limit_usd must be a decimal"),
    ("{tenant: org_acme, period: day, limit_usd: 0, destinations: [alerts]}",
     "budgets[0].limit_usd", "limit_usd must be more than 0"),
    ("{tenant: org_acme, period: day, limit_usd: 5, destinations: [elsewhere]}",
     "budgets[0].destinations[0]", "budget destination `elsewhere` is not in routing.destinations"),
    ("{tenant: org_acme, period: day, limit_usd: 5, destinations: []}",
     "budgets[0].destinations", "destinations must list at least one item"),
    ("{tenant: org_acme, period: day, limit_usd: 5, alert_at: [0.5, 0.50], destinations: [alerts]}",
     "budgets[0].alert_at[1]", "alert_at[1] (0.50) is listed twice"),
    ("{tenant: org_acme, period: day, limit_usd: 5, alert_at: [11], destinations: [alerts]}",
     "budgets[0].alert_at[0]", "must be more than 0 and at most 10"),
    ("{tenant: org_acme, period: day, limit_usd: 5, destinations: [alerts], color: red}",
     "budgets[0].color", "color"),
])
def test_bad_budgets_are_refused_naming_key_and_line(budget: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(budgets_config("http://127.0.0.1:9/hook", budget))
    (detail,) = refused.value.details
    assert detail.path == f"session_completion_runtime.usage.{path}"
    assert "line 7:" in detail.message and message in detail.message


def test_a_duplicate_budget_and_an_exact_limit() -> None:
    duplicate = ["{tenant: t, period: day, limit_usd: 1, destinations: [alerts]}"] * 2
    with pytest.raises(ConfigError) as refused:
        parse_config(budgets_config("http://127.0.0.1:9/hook", *duplicate))
    assert "tenant `t` already has a day budget: budgets[0]" in refused.value.details[0].message
    exact = parse_config(budgets_config(
        "http://127.0.0.1:9/hook", "{tenant: t, period: day, limit_usd: 0.100000000000000001, "
        "destinations: [alerts]}"))
    (budget,) = exact.usage.budgets
    assert budget.limit == Decimal("0.100000000000000001") and budget.alert_at == ["0.8", "1.0"]


def test_scr_serve_refuses_a_budget_naming_an_unknown_destination(tmp_path: Path) -> None:
    config = tmp_path / "scr.yaml"
    config.write_text(budgets_config(
        "http://127.0.0.1:9/hook", "{tenant: org_acme, period: day, limit_usd: 5, destinations: [nope]}"))
    checked = run_scr("config", "check", str(config), check=False)
    assert checked.returncode == 1
    assert "line 7" in checked.stderr and "budget destination `nope` is not in routing.destinations" \
        in checked.stderr
    served = run_scr("serve", "--data", str(tmp_path / "data"), "--config", str(config), "--port", "0",
                     check=False)
    assert served.returncode != 0 and "budget destination `nope`" in served.stderr
    assert not (tmp_path / "data" / DATABASE_FILE).exists()  # refused before anything is written


# ----- scr serve: SIGKILL of the usage process mid-stream -------------------------------------

SHARES = [f"0.{n}" for n in range(1, 10)] + ["1.0"]
# gpt-4o at 1 USD per million tokens: 0.0015 USD an event; the limit is 3,000 events' cost
STREAM_LIMIT = "4.5"
LIMIT_EVENTS = 3000


def test_sigkill_of_the_usage_process_mid_stream_alerts_each_threshold_once(
    tmp_path: Path, store_at: StoreAt
) -> None:
    data, uri = store_at.data, store_at.uri
    data.mkdir(parents=True)
    (tmp_path / "prices.json").write_text(PRICES)
    install_prices(tmp_path / "prices.json", data)
    hook = Receiver()
    config = tmp_path / "scr.yaml"
    config.write_text(budgets_config(
        hook.url, f"{{tenant: org_acme, period: day, limit_usd: {STREAM_LIMIT}, "
                  f"alert_at: [{', '.join(SHARES)}], destinations: [alerts]}}"))
    key = create_key(data, store=uri)
    reader = create_key(data, role="read", store=uri)
    server = ServerProcess(data, config=config, store=uri).start()
    load = Stream(server, key)

    def counted() -> int:
        answer = httpx.get(f"{server.url}/v1/usage", headers={"authorization": f"Bearer {reader}"},
                           params={"from": "2026-11-25T00:00:00Z", "to": "2026-11-26T00:00:00Z"})
        assert answer.status_code == 200, answer.text
        events: int = answer.json()["totals"]["events"]
        return events

    try:
        wait_for(lambda: counted() >= 600, timeout_s=30, what="usage counted under way")
        kill_and_see_it_restart(server, USAGE)
        wait_for(lambda: counted() >= LIMIT_EVENTS + 600, timeout_s=60, what="past the limit")
        acknowledged = load.stop()
        wait_for(lambda: counted() == len(acknowledged), timeout_s=60, what="every event counted")
        store = store_at.open()
        try:
            wait_for(lambda: delivered_everything(store), timeout_s=30, what="every alert delivered")
            alerts = ledgered_alerts(store, "org_acme")
        finally:
            store.close()
        assert child(server, USAGE)["last_exit"] == "killed by SIGKILL"
    finally:
        load.stop()
        server.stop()
        hook.close()
    assert sorted(Decimal(a["data"]["threshold"]) for a in alerts) == [Decimal(s) for s in SHARES]
    assert len({key_of(a) for a in alerts}) == len(SHARES)
    delivered = [msgspec.json.decode(r.body) for r in hook.received]
    assert len({r.headers["webhook-id"] for r in hook.received}) == len(SHARES)
    assert sorted({d["data"]["threshold"] for d in delivered}) == sorted(float(s) for s in SHARES)
    assert all(signed(request) for request in hook.received)
    for alert in alerts:  # each alert's spending had reached its share when it was raised
        data_of = alert["data"]
        assert Decimal(data_of["spent_usd"]) >= Decimal(STREAM_LIMIT) * Decimal(data_of["threshold"])
