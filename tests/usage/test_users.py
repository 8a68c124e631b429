"""``GET /v1/usage/users``: per-user analytics equal to a full recount of the ledger, medians
within their documented 1%, the top list's order and cut, each tenant its own users, every
bad parameter a 400, user ids shown with encryption on."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from privacy.test_encryption import USER, personal_event, sealed_config

from conftest import Client
from scr.answers import UsersReport
from scr.privacy.master import write_master_key
from scr.usage.durations import bucket_of, median_ms
from support import make_event
from usage import recount as reference
from usage.test_usage import assert_400_naming, count_to_head, post, runtime_of, varied_events

pytestmark = pytest.mark.every_store

TENANT = "org_acme"
MONTH = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
SESSION_END = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
LONGEST_MS = 2 * 3600 * 1000


def lasting(event: dict[str, Any], duration_ms: int) -> dict[str, Any]:
    """The event with a session of ``duration_ms`` (start and end times agreeing with it to
    within the schema's tolerance: whole seconds below it)."""
    start = SESSION_END - timedelta(seconds=duration_ms // 1000)
    event["session"].update(start_time=start.isoformat().replace("+00:00", "Z"),
                            end_time=SESSION_END.isoformat().replace("+00:00", "Z"),
                            duration_ms=duration_ms)
    return event


def random_duration(pick: random.Random) -> int:
    """Log-uniform from 1 ms to two hours (every bucket size the histograms use in practice)."""
    return int(math.exp(pick.uniform(0, math.log(LONGEST_MS))))


def users_of(client: Client, headers: dict[str, str], **params: str) -> Any:
    answer = client.get("/v1/usage/users", params={**MONTH, **params}, headers=headers)
    assert answer.status_code == 200, answer.text
    msgspec.json.decode(answer.content, type=UsersReport)  # the documented shape, no more
    return answer.json()


def lower_median(durations: list[int]) -> int:
    return sorted(durations)[(len(durations) - 1) // 2]


def within_one_percent(estimate: int, exact: int) -> bool:
    return 100 * abs(estimate - exact) <= exact


def expected_line(counted: dict[str, Any]) -> dict[str, Any]:
    """A user's line as the recount says it must read (the median: see the test)."""
    events, sessions, cost = counted["events"], counted["sessions"], counted["cost_usd"]
    per_session = (cost / sessions).quantize(Decimal("1E-10"), ROUND_HALF_EVEN) if sessions else None
    rate = Decimal(events - counted["errors"]) / events
    return {
        "sessions": sessions, "events": events, "errors": counted["errors"],
        "success_rate": float(rate.quantize(Decimal("1E-4"), ROUND_HALF_EVEN)),
        "total_tokens": counted["total_tokens"], "cost_usd": cost,
        "cost_per_session_usd": per_session,
    }


def as_compared(line: dict[str, Any]) -> dict[str, Any]:
    per_session = line["cost_per_session_usd"]
    return {**{name: line[name] for name in ("sessions", "events", "errors", "success_rate",
                                             "total_tokens")},
            "cost_usd": Decimal(line["cost_usd"]),
            "cost_per_session_usd": None if per_session is None else Decimal(per_session)}


def test_users_equal_a_full_recount_of_the_ledger(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client = serve()
    pick = random.Random(11)
    events = [lasting(event, random_duration(pick)) for event in varied_events(400, seed=9)]
    post(client, events[:150])
    post(client, varied_events(40, seed=10, tenant="org_other"), tenant="org_other")
    monkeypatch.setattr("scr.usage.reader.FETCH_ENTRIES", 23)  # sessions spread over rounds
    count_to_head(client)
    post(client, events[150:])  # a second pass from the durable cursor
    count_to_head(client)
    answer = users_of(client, client.key(TENANT, "read"), limit="1000", order_by="events")
    runtime = runtime_of(client)
    start, end = (datetime.fromisoformat(MONTH[name].replace("Z", "+00:00")) for name in ("from", "to"))
    expected = reference.recount_users(runtime.store, runtime.data_dir, TENANT, start, end)
    assert {line["user_id"]: as_compared(line) for line in answer["users"]} == {
        user_id: expected_line(counted) for user_id, counted in expected.items()}
    every = [d for counted in expected.values() for d in counted["durations"]]
    for line in [*answer["users"], answer["totals"]]:
        durations = expected[line["user_id"]]["durations"] if "user_id" in line else every
        # the store's histograms hold exactly the recount's sessions...
        assert line["median_duration_ms"] == median_ms((bucket_of(d), 1) for d in durations)
        # ...so the median is within its documented 1% of the exact one
        assert within_one_percent(line["median_duration_ms"], lower_median(durations))
    totals = answer["totals"]
    assert totals["users"] == len(expected) == 5
    assert totals["events"] == len(events) and 0 < totals["sessions"] < len(events)
    assert Decimal(totals["cost_usd"]) == sum(c["cost_usd"] for c in expected.values())
    assert [line["events"] for line in answer["users"]] == sorted(
        (line["events"] for line in answer["users"]), reverse=True)


def test_the_median_is_within_one_percent_over_many_random_durations(serve: Any) -> None:
    client = serve()
    pick = random.Random(20261205)
    durations = [random_duration(pick) for _ in range(1501)] + [0, 0, 1, 2, 3, LONGEST_MS]
    events = [lasting(make_event(f"evt_d{n}", **{"session.session_id": f"sess_d{n}"}), duration)
              for n, duration in enumerate(durations)]
    for start in range(0, len(events), 500):
        post(client, events[start:start + 500])
    count_to_head(client)
    answer = users_of(client, client.key(TENANT, "read"))
    [line] = answer["users"]
    exact = lower_median(durations)
    assert line["sessions"] == len(durations)
    assert within_one_percent(line["median_duration_ms"], exact), (line["median_duration_ms"], exact)
    assert answer["totals"]["median_duration_ms"] == line["median_duration_ms"]


def test_the_median_stays_within_one_percent_for_every_rank_and_size() -> None:
    """The histogram on its own, over many random sets (sizes odd and even, repeats, zeros)."""
    pick = random.Random(5)
    for size in [*range(1, 40), 1000, 1001]:
        durations = [random_duration(pick) if pick.random() < 0.95 else 0 for _ in range(size)]
        estimate = median_ms((bucket_of(d), 1) for d in durations)
        assert estimate is not None and within_one_percent(estimate, lower_median(durations))
    for duration in [*range(0, 3000), 10**6, 10**9, 2**62]:  # each value alone is its own median
        estimate = median_ms([(bucket_of(duration), 1)])
        assert estimate is not None and within_one_percent(estimate, duration), duration
    assert median_ms([]) is None


def spent(user: str, sessions: int, events_each: int, errors: int, tokens: int) -> list[dict[str, Any]]:
    """``sessions`` sessions of ``events_each`` events each for ``user``; the first ``errors``
    events fail; every event has ``tokens`` tokens (priced gpt-4o: cost follows tokens)."""
    events = []
    for n in range(sessions * events_each):
        events.append(make_event(f"evt_{user}_{n}", **{
            "user.user_id": user, "session.session_id": f"sess_{user}_{n // events_each}",
            "usage.input_tokens": tokens, "usage.output_tokens": 0, "usage.total_tokens": tokens,
            "outcome.status": "error" if n < errors else "success",
        }))
    return events


def test_order_by_and_limit_cut_a_top_list_with_ties_by_user_id(serve: Any) -> None:
    client = serve()
    post(client, [*spent("user_c", 1, 4, 0, 100), *spent("user_a", 2, 1, 1, 100),
                  *spent("user_b", 2, 1, 2, 300), *spent("user_d", 1, 1, 0, 50)])
    count_to_head(client)
    reader = client.key(TENANT, "read")

    def ranked(order_by: str, limit: str = "10") -> list[str]:
        answer = users_of(client, reader, order_by=order_by, limit=limit)
        assert answer["order_by"] == order_by and answer["limit"] == int(limit)
        assert answer["totals"]["users"] == 4  # the totals count every user, listed or not
        return [line["user_id"] for line in answer["users"]]

    assert ranked("events") == ["user_c", "user_a", "user_b", "user_d"]  # a and b tie: by id
    assert ranked("sessions") == ["user_a", "user_b", "user_c", "user_d"]
    assert ranked("errors") == ["user_b", "user_a", "user_c", "user_d"]  # c and d tie at 0
    assert ranked("total_tokens") == ["user_b", "user_c", "user_a", "user_d"]
    assert ranked("cost_usd", "2") == ["user_b", "user_c"]
    assert ranked("events", "1") == ["user_c"]
    default = users_of(client, reader)
    assert (default["order_by"], default["limit"], default["tz"]) == ("cost_usd", 10, "UTC")
    line = {line["user_id"]: line for line in default["users"]}["user_a"]
    assert (line["success_rate"], line["sessions"]) == (0.5, 2)
    assert within_one_percent(line["median_duration_ms"], 120000)  # make_event's sessions
    assert Decimal(line["cost_per_session_usd"]) * 2 == Decimal(line["cost_usd"])


def test_success_rate_and_cost_per_session_round_half_even(serve: Any) -> None:
    client = serve()
    # 3 events, 1 error: 2/3 = 0.6667; 3 sessions
    post(client, spent("user_r", 3, 1, 1, 1))
    # a user with no session in the range: its only session began in October
    october = make_event("evt_oct", **{"user.user_id": "user_s", "session.session_id": "sess_s",
                                       "timestamp": "2026-10-31T23:59:00Z"})
    november = make_event("evt_nov", **{"user.user_id": "user_s", "session.session_id": "sess_s"})
    post(client, [october, november])
    count_to_head(client)
    lines = {line["user_id"]: line for line in users_of(client, client.key(TENANT, "read"))["users"]}
    assert lines["user_r"]["success_rate"] == 0.6667
    cost = Decimal(lines["user_r"]["cost_usd"])
    assert Decimal(lines["user_r"]["cost_per_session_usd"]) == (cost / 3).quantize(
        Decimal("1E-10"), ROUND_HALF_EVEN)
    alone = lines["user_s"]
    assert (alone["events"], alone["sessions"], alone["cost_per_session_usd"],
            alone["median_duration_ms"], alone["success_rate"]) == (1, 0, None, None, 1.0)


def test_each_key_sees_its_own_tenant_only(serve: Any) -> None:
    client = serve()
    post(client, spent("user_mine", 2, 1, 0, 10))
    post(client, [make_event(f"evt_o{n}", **{"user.organization_id": "org_other",
                                             "user.user_id": "user_theirs",
                                             "session.session_id": f"sess_o{n}"}) for n in range(3)],
         tenant="org_other")
    count_to_head(client)
    mine = users_of(client, client.key(TENANT, "admin"), tenant="org_other")  # ignored
    assert [line["user_id"] for line in mine["users"]] == ["user_mine"]
    platform = client.key(TENANT, "platform")
    theirs = users_of(client, platform, tenant="org_other")
    assert [(line["user_id"], line["events"]) for line in theirs["users"]] == [("user_theirs", 3)]
    unnamed = client.get("/v1/usage/users", params=MONTH, headers=platform)
    assert unnamed.status_code == 400 and unnamed.json()["error"]["details"][0]["path"] == "tenant"
    ingest = client.get("/v1/usage/users", params=MONTH, headers=client.key(TENANT, "ingest"))
    assert ingest.status_code == 403, ingest.text
    assert client.get("/v1/usage/users", params=MONTH).status_code == 401


BAD_PARAMETERS = [
    ({"order_by": "colour"}, "order_by"),
    ({"order_by": ""}, "order_by"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"limit": "-1"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"limit": " 5"}, "limit"),
    ({"limit": "\u0663"}, "limit"),  # an Arabic-Indic three: a digit, not an ASCII one
    ({"limit": "9" * 5000}, "limit"),
    ({"tz": "Mars/Olympus_Mons"}, "tz"),
    ({"from": None}, "from"),
    ({"to": None}, "to"),
    ({"from": "yesterday"}, "from"),
    ({"from": "2026-11-01T00:00:00"}, "from"),  # no offset
    ({"from": "2026-11-01T10:30:00Z"}, "from"),  # not the start of an hour
    ({"to": "2026-11-02T00:00:01Z"}, "to"),
    ({"tz": "Asia/Kathmandu"}, "from"),  # UTC midnight is 05:45 there
    ({"to": "2026-11-01T00:00:00Z"}, "to"),  # empty range
    ({"to": "2026-10-01T00:00:00Z"}, "to"),  # backwards
    ({"from": "2025-01-01T00:00:00Z", "to": "2026-02-06T00:00:00Z"}, "to"),  # 401 days
    # Amsterdam's local mean time (+00:19:32): a local hour start, not a quarter hour in UTC
    ({"from": "1890-01-01T00:40:28Z", "to": "1890-01-01T01:40:28Z", "tz": "Europe/Amsterdam"}, "from"),
]


@pytest.mark.parametrize(("changes", "parameter"), BAD_PARAMETERS)
def test_a_bad_parameter_is_400_naming_it(serve: Any, changes: dict[str, str | None], parameter: str) -> None:
    assert_400_naming(serve(), "/v1/usage/users", {**MONTH, **changes}, parameter)


def test_hour_starts_of_any_zone_and_400_days_are_accepted(serve: Any) -> None:
    client = serve()
    post(client, spent("user_k", 1, 1, 0, 10))  # at 2026-11-25T10:00:05Z: 15:45 in Kathmandu
    count_to_head(client)
    reader = client.key(TENANT, "read")
    kathmandu = users_of(client, reader, tz="Asia/Kathmandu", **{
        "from": "2026-11-25T15:00:00+05:45", "to": "2026-11-25T16:00:00+05:45"})
    assert kathmandu["tz"] == "Asia/Kathmandu" and kathmandu["totals"]["events"] == 1
    assert kathmandu["from"] == "2026-11-25T15:00:00+05:45"
    long = users_of(client, reader, **{"from": "2025-11-01T00:00:00Z", "to": "2026-12-06T00:00:00Z"})
    assert long["totals"]["events"] == 1
    before = users_of(client, reader, **{"from": "2026-11-25T09:00:00Z", "to": "2026-11-25T10:00:00Z"})
    assert before["users"] == [] and before["totals"]["users"] == 0
    assert before["totals"]["median_duration_ms"] is None and before["totals"]["success_rate"] is None


def test_with_encryption_on_users_are_shown_by_user_id(serve: Callable[..., Client], tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    write_master_key(key_file)
    client = serve(sealed_config(key_file))
    post(client, [personal_event(f"evt_sealed_{n}") for n in range(3)])
    count_to_head(client)
    answer = users_of(client, client.key(TENANT, "admin"))
    assert [(line["user_id"], line["events"]) for line in answer["users"]] == [(USER, 3)]
    assert within_one_percent(answer["users"][0]["median_duration_ms"], 120000)
