"""``GET /v1/usage`` over the usage reader's aggregates: equal to a full recount of the
ledger, exact with huge numbers, windows across DST changes, every bad parameter a 400."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from conftest import Client
from scr.route.price_file import install_prices
from scr.runtime import Runtime
from support import make_event
from usage import recount as reference

pytestmark = pytest.mark.every_store

MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "a-model-nobody-prices"]
STATUSES = ["success", "success", "error", "timeout", "user_terminated"]
TENANT = "org_acme"


def varied_events(count: int, seed: int, tenant: str = TENANT) -> list[dict[str, Any]]:
    """Events over a few days of November 2026 (a month, weeks, days and hours apart), with
    sessions that repeat, unknown models, missing providers and 18-decimal estimates."""
    pick = random.Random(seed)
    events = []
    for n in range(count):
        inputs, outputs = pick.randrange(0, 50_000), pick.randrange(0, 5_000)
        changes: dict[str, Any] = {
            "timestamp": f"2026-11-{pick.randrange(20, 30):02d}T{pick.randrange(24):02d}:"
                         f"{pick.randrange(60):02d}:{pick.randrange(60):02d}Z",
            "user.organization_id": tenant,
            "user.user_id": f"user_{pick.randrange(5)}",
            "user.tier": pick.choice(["free", "pro", "enterprise"]),
            "session.session_id": f"sess_{pick.randrange(count // 2)}",
            "session.session_type": pick.choice(["chat", "api", "autonomous"]),
            "usage.model": pick.choice(MODELS),
            "usage.input_tokens": inputs,
            "usage.output_tokens": outputs,
            "usage.total_tokens": inputs + outputs,
            "usage.cache_read_tokens": pick.randrange(0, inputs + 1),
            "usage.reasoning_tokens": pick.randrange(0, outputs + 1),
            "usage.estimated_cost_usd": f"0.{pick.randrange(10**18):018d}",
            "outcome.status": pick.choice(STATUSES),
        }
        if pick.random() < 0.3:
            changes["usage.provider"] = None
        events.append(make_event(f"evt_{seed}_{n}", **changes))
    for event in events:
        if event["usage"]["provider"] is None:
            del event["usage"]["provider"]
    return events


def post(client: Client, events: list[dict[str, Any]], tenant: str = TENANT) -> None:
    answer = client.post("/v1/events", json=events, headers=client.key(tenant))
    assert answer.status_code == 202, answer.text


def runtime_of(client: Client) -> Runtime:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return runtime


def usage(client: Client, headers: dict[str, str], **params: str) -> Any:
    answer = client.get("/v1/usage", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize(("window", "tz", "group_by", "start", "end"), [
    ("day", "UTC", ["model"], "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"),
    ("hour", "Asia/Kolkata", ["user_id", "status"], "2026-11-20T00:00:00+05:30", "2026-12-01T00:00:00+05:30"),
    ("day", "Asia/Kolkata", ["model"], "2026-11-20T00:00:00+05:30", "2026-12-01T00:00:00+05:30"),  # quarters
    ("week", "America/New_York", ["session_type", "tier", "provider"], "2026-11-16T00:00:00-05:00",
     "2026-11-30T00:00:00-05:00"),
    ("month", "Europe/Paris", [], "2026-11-01T00:00:00+01:00", "2026-12-01T00:00:00+01:00"),
])
def test_usage_equals_a_full_recount_of_the_ledger(
    serve: Any, monkeypatch: pytest.MonkeyPatch, window: str, tz: str, group_by: list[str], start: str,
    end: str,
) -> None:
    client = serve()
    events = varied_events(300, seed=7)
    post(client, events[:120])
    post(client, varied_events(40, seed=8, tenant="org_other"), tenant="org_other")
    monkeypatch.setattr("scr.usage.reader.FETCH_ENTRIES", 17)  # many rounds, sessions across them
    reader = count_to_head(client)
    post(client, events[120:])  # a second pass from the durable cursor
    reader = count_to_head(client)
    assert reader.cursor == runtime_of(client).store.last_seq()
    answer = usage(client, client.key(TENANT, "read"), window=window, tz=tz, group_by=",".join(group_by),
                   **{"from": start, "to": end})
    assert answer["window"] == window and answer["tz"] == tz and answer["group_by"] == group_by
    runtime = runtime_of(client)
    expected = reference.recount(runtime.store, runtime.data_dir, TENANT, window, tz, group_by)
    assert reference.as_compared(answer, group_by) == expected
    assert answer["totals"]["events"] == len(events)
    assert 0 < answer["totals"]["sessions"] < len(events)  # sessions repeat
    assert 0 < answer["totals"]["unpriced_events"] < len(events)


def count_to_head(client: Client) -> Any:
    return reference.count_to_head(runtime_of(client))


def test_sums_stay_exact_with_huge_token_counts_and_12_decimal_prices(
    serve: Any, data_dir: Path, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(
        '{"version": "exact-12", "currency": "USD", "unit": "per 1M tokens", "models": '
        '{"big-model": {"input": "2.500000000001", "output": "9.999999999999", '
        '"cached_input": "0.000000000001"}}}'
    )
    install_prices(prices, data_dir)  # in force before the first event
    client = serve()
    tera = 10**12
    events = [
        make_event(f"evt_big_{n}", **{
            "usage.model": "big-model", "usage.input_tokens": tera, "usage.output_tokens": tera - n,
            "usage.total_tokens": 2 * tera - n, "usage.cache_read_tokens": n,
            "usage.estimated_cost_usd": "999999999.999999999999999999",
        })
        for n in range(3)
    ]
    post(client, events)
    count_to_head(client)
    answer = usage(client, client.key(TENANT, "read"), **{"from": "2026-11-01T00:00:00Z",
                                                            "to": "2026-12-01T00:00:00Z"})
    totals = answer["totals"]
    assert totals["total_tokens"] == 3 * 2 * tera - 3
    # by hand: per event (cached·0.000000000001 + (10^12 − cached)·2.500000000001
    # + (10^12 − n)·9.999999999999) / 10^6, each rounded half-even to 10 places
    per_event = [
        ((Decimal(n) * Decimal("0.000000000001") + (tera - n) * Decimal("2.500000000001")
          + (tera - n) * Decimal("9.999999999999")) / 10**6).quantize(Decimal("1E-10"))
        for n in range(3)
    ]
    assert Decimal(totals["cost_usd"]) == sum(per_event)
    assert totals["cost_usd"] == "37499999.9999625000"
    assert totals["estimated_cost_usd"] == "2999999999.999999999999999997"


def test_day_and_hour_windows_follow_dst_changes(serve: Any) -> None:
    """New York: 8 March 2026 has 23 hours, 1 November 25 (its 01:00 comes twice)."""
    client = serve()
    times = {
        "evt_mar_7_late": "2026-03-08T04:30:00Z",  # 23:30 EST, 7 March
        "evt_mar_8_early": "2026-03-08T05:00:00Z",  # 00:00 EST, 8 March
        "evt_mar_8_late": "2026-03-09T03:30:00Z",  # 23:30 EDT, 8 March
        "evt_mar_9": "2026-03-09T04:00:00Z",  # 00:00 EDT, 9 March
        "evt_nov_1_first_1am": "2026-11-01T05:10:00Z",  # 01:10 EDT
        "evt_nov_1_second_1am": "2026-11-01T06:10:00Z",  # 01:10 EST
        "evt_nov_1_late": "2026-11-02T04:59:00Z",  # 23:59 EST, 1 November
    }
    post(client, [make_event(event_id, timestamp=at, **{"session.session_id": event_id})
                  for event_id, at in times.items()])
    count_to_head(client)
    reader = client.key(TENANT, "read")
    days = usage(client, reader, window="day", tz="America/New_York",
                 **{"from": "2026-03-07T00:00:00-05:00", "to": "2026-03-10T00:00:00-04:00"})
    assert [(r["window_start"], r["events"]) for r in days["rows"]] == [
        ("2026-03-07T00:00:00-05:00", 1), ("2026-03-08T00:00:00-05:00", 2),
        ("2026-03-09T00:00:00-04:00", 1),
    ]
    hours = usage(client, reader, window="hour", tz="America/New_York",
                  **{"from": "2026-11-01T00:00:00-04:00", "to": "2026-11-02T00:00:00-05:00"})
    assert [(r["window_start"], r["events"]) for r in hours["rows"]] == [
        ("2026-11-01T01:00:00-04:00", 1), ("2026-11-01T01:00:00-05:00", 1),
        ("2026-11-01T23:00:00-05:00", 1),
    ]
    weeks = usage(client, reader, window="week", tz="America/New_York",
                  **{"from": "2026-10-26T00:00:00-04:00", "to": "2026-11-02T00:00:00-05:00"})
    assert [(r["window_start"], r["events"]) for r in weeks["rows"]] == [("2026-10-26T00:00:00-04:00", 3)]
    assert weeks["totals"]["events"] == 3


BAD_PARAMETERS = [
    ({"window": "fortnight"}, "window"),
    ({"tz": "Mars/Olympus_Mons"}, "tz"),
    ({"tz": "../../etc/passwd"}, "tz"),
    ({"group_by": "model,colour"}, "group_by"),
    ({"from": None}, "from"),
    ({"to": None}, "to"),
    ({"from": "yesterday"}, "from"),
    ({"from": "2026-11-01T00:00:00"}, "from"),  # no offset
    ({"from": "2026-11-01T10:00:00Z"}, "from"),  # not the start of a day
    ({"to": "2026-11-02T00:30:00Z"}, "to"),
    ({"window": "week", "from": "2026-11-01T00:00:00Z", "to": "2026-11-09T00:00:00Z"}, "from"),  # a Sunday
    ({"window": "month", "to": "2026-11-15T00:00:00Z"}, "to"),
    ({"tz": "America/New_York"}, "from"),  # UTC midnight is not New York's
    ({"to": "2026-11-01T00:00:00Z"}, "to"),  # empty range
    ({"to": "2026-10-01T00:00:00Z"}, "to"),  # backwards
    ({"from": "2025-01-01T00:00:00Z", "to": "2026-02-06T00:00:00Z"}, "to"),  # 401 days
]


@pytest.mark.parametrize(("changes", "parameter"), BAD_PARAMETERS)
def test_a_bad_parameter_is_400_naming_it(serve: Any, changes: dict[str, str | None], parameter: str) -> None:
    assert_400_naming(serve(), "/v1/usage", {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z",
                                             "window": "day", **changes}, parameter)


def assert_400_naming(client: Client, path: str, params: dict[str, str | None], parameter: str) -> None:
    """GET ``path`` with ``params`` (None: left out) is a 400 naming ``parameter``; the
    service stays up."""
    answer = client.get(path, params={k: v for k, v in params.items() if v is not None},
                        headers=client.key(TENANT, "read"))
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "bad_request"
    assert [d["path"] for d in error["details"]] == [parameter]
    assert error["message"].startswith(f"{parameter}: ")
    assert client.get("/healthz").status_code == 200


def test_400_days_is_the_longest_range(serve: Any) -> None:
    client = serve()
    answer = usage(client, client.key(TENANT, "read"),
                   **{"from": "2025-01-01T00:00:00Z", "to": "2026-02-05T00:00:00Z"})
    assert answer["rows"] == [] and answer["totals"]["events"] == 0


def test_each_key_sees_its_own_tenant_only(serve: Any) -> None:
    client = serve()
    post(client, varied_events(20, seed=3))
    post(client, varied_events(30, seed=4, tenant="org_other"), tenant="org_other")
    count_to_head(client)
    month = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "window": "month"}
    mine = usage(client, client.key(TENANT, "read"), **month, tenant="org_other")  # ignored
    assert mine["totals"]["events"] == 20
    assert usage(client, client.key("org_other", "admin"), **month)["totals"]["events"] == 30
    platform = client.key("org_acme", "platform")
    assert usage(client, platform, **month, tenant="org_other")["totals"]["events"] == 30
    spans = client.get("/v1/usage", params=month, headers=platform)
    assert spans.status_code == 400 and "tenant" in spans.json()["error"]["message"]
    assert client.get("/v1/usage", params=month, headers=client.key(TENANT, "ingest")).status_code == 403
    assert client.get("/v1/usage", params=month).status_code == 401
    assert client.get("/v1/usage", params=month, headers={"authorization": "Bearer nope"}).status_code == 401
