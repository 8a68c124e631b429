"""Transforms: each output's shape, and what billing and analytics must never carry."""

from __future__ import annotations

import copy
import ipaddress
import itertools
import json
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scr.errors import ConfigError
from scr.route.prices import ModelPrice, PriceTable, default_prices
from scr.route.transforms import EntryRef, ip_prefix, resolve_transform
from scr.schema import Event, decode_event
from support import make_event as event_document

ENTRY = EntryRef(seq=41, tenant_seq=7, entry_hash=bytes(range(32)))
MESSAGE = "The quarterly summary you asked for."
IPV4 = "203.0.113.77"

# The shared test event, with the values these tests check exactly.
VALID_EVENT: dict[str, Any] = event_document("evt_0001", **{
    "timestamp": "2026-11-25T11:00:05+01:00",
    "usage.input_tokens": 1000, "usage.output_tokens": 500, "usage.total_tokens": 1500,
    "usage.model": "gpt-4o-2024-08-06", "usage.cache_read_tokens": 400,
    "outcome": {"status": "success", "final_message": MESSAGE},
    "metadata.source_ip": IPV4,
    "metadata.custom_tags": {"feature": "summarize", "team": "growth"},
})

BILLING_KEYS = {
    "schema", "event_id", "tenant_id", "user_id", "session_id", "session_type", "model",
    "provider", "input_tokens", "output_tokens", "total_tokens", "cache_read_tokens",
    "cache_write_tokens", "reasoning_tokens", "cost_usd", "price_table_version", "model_priced",
    "estimated_cost_usd", "outcome_status", "start_time", "end_time", "timestamp",
}
ANALYTICS_KEYS = {
    "schema", "event_id", "tenant_id", "user_id", "tier", "session_id", "session_type",
    "start_time", "end_time", "duration_ms", "model", "provider", "input_tokens",
    "output_tokens", "total_tokens", "cache_read_tokens", "reasoning_tokens",
    "estimated_cost_usd", "outcome_status", "error_code", "client_version", "source_ip_prefix",
}

_module_names = (f"scr_test_custom_transform_{n}" for n in itertools.count())


def make_event(**changes: Any) -> Event:
    """A valid v1.2 event; ``changes`` maps ``a__b`` paths to new values (None deletes)."""
    document = copy.deepcopy(VALID_EVENT)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = document
        for key in parents:
            target = target[key]
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return decode_event(msgspec.json.encode(document))


def as_json(output: dict[str, Any]) -> str:
    """The output as JSON with the standard library: proves it is plain JSON values only."""
    return json.dumps(output)


def test_billing_v1_shape_and_server_computed_cost() -> None:
    output = resolve_transform("billing_v1")(make_event(), ENTRY)
    as_json(output)
    assert set(output) == BILLING_KEYS
    assert output["schema"] == "billing_v1"
    assert output["event_id"] == "evt_0001"
    assert output["tenant_id"] == "org_acme"
    # gpt-4o-2024-08-06 priced as gpt-4o: (400*1.25 + 600*2.50 + 500*10.00) / 1e6
    assert output["cost_usd"] == "0.0070000000"
    assert output["model_priced"] is True
    assert output["price_table_version"] == default_prices().version
    assert output["estimated_cost_usd"] == "0.0075"
    assert (output["cache_read_tokens"], output["cache_write_tokens"], output["reasoning_tokens"]) == (
        400, 0, 0,
    )
    assert output["start_time"] == "2026-11-25T09:58:00Z"
    assert output["timestamp"] == "2026-11-25T10:00:05Z"  # normalized to UTC


def test_billing_v1_of_an_unknown_model_has_null_cost() -> None:
    output = resolve_transform("billing_v1")(make_event(usage__model="house-llm-7b"), ENTRY)
    assert output["cost_usd"] is None
    assert output["model_priced"] is False
    assert output["estimated_cost_usd"] == "0.0075"


def test_billing_v1_uses_the_price_table_it_is_given() -> None:
    table = PriceTable("contract-7", {"gpt-4o": ModelPrice(Decimal(1), Decimal(2), Decimal("0.1"))})
    output = resolve_transform("billing_v1", prices=table)(make_event(), ENTRY)
    assert output["price_table_version"] == "contract-7"
    assert output["cost_usd"] == "0.0016400000"  # (400*0.1 + 600*1 + 500*2) / 1e6


def test_billing_v1_keeps_the_clients_estimate_digit_for_digit() -> None:
    output = resolve_transform("billing_v1")(make_event(usage__estimated_cost_usd="0.10"), ENTRY)
    assert output["estimated_cost_usd"] == "0.10"


def test_analytics_v2_shape_tags_and_ip_prefix() -> None:
    output = resolve_transform("analytics_v2")(make_event(), ENTRY)
    as_json(output)
    assert set(output) == ANALYTICS_KEYS | {"tag_feature", "tag_team"}
    assert output["schema"] == "analytics_v2"
    assert output["tag_feature"] == "summarize"
    assert output["source_ip_prefix"] == "203.0.113.0/24"
    assert output["duration_ms"] == 120000
    assert output["tier"] == "pro"
    assert output["estimated_cost_usd"] == "0.0075"
    assert output["reasoning_tokens"] is None  # not reported: null, not 0
    assert output["end_time"] == "2026-11-25T10:00:00Z"


def test_analytics_v2_without_optional_fields_has_nulls() -> None:
    event = make_event(metadata__source_ip=None, metadata__client_version=None, usage__provider=None)
    output = resolve_transform("analytics_v2")(event, ENTRY)
    assert output["source_ip_prefix"] is None
    assert output["client_version"] is None
    assert output["provider"] is None
    assert output["error_code"] is None


@pytest.mark.parametrize(
    ("address", "prefix"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("10.0.0.1", "10.0.0.0/24"),
        ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::/48"),
        ("fe80::1%eth0", "fe80::/48"),
        ("::ffff:203.0.113.77", "203.0.113.0/24"),  # IPv4-mapped: its /48 would be "::/48"
        ("2002:cb00:714d::1", "203.0.113.0/24"),  # 6to4: its /48 holds the whole IPv4 address
        ("not an ip", None),
    ],
)
def test_ip_prefix(address: str, prefix: str | None) -> None:
    assert ip_prefix(address) == prefix


def test_audit_v1_carries_the_whole_event_and_ledger_facts() -> None:
    event = make_event()
    output = resolve_transform("audit_v1")(event, ENTRY)
    as_json(output)
    assert set(output) == {"schema", "event_id", "ledger_seq", "tenant_seq", "entry_hash", "event"}
    assert output["schema"] == "audit_v1"
    assert (output["ledger_seq"], output["tenant_seq"]) == (41, 7)
    assert output["entry_hash"] == bytes(range(32)).hex()
    assert output["event"] == resolve_transform("raw_v1")(event, ENTRY)
    assert output["event"]["outcome"]["final_message"] == MESSAGE


def test_raw_v1_is_the_whole_event_and_decodes_back_to_it() -> None:
    event = make_event()
    output = resolve_transform("raw_v1")(event, ENTRY)
    as_json(output)
    assert output["event_id"] == "evt_0001"
    assert output["usage"]["estimated_cost_usd"] == "0.0075"
    assert output["timestamp"] == "2026-11-25T11:00:05+01:00"  # as received
    assert output["metadata"]["source_ip"] == IPV4
    assert decode_event(msgspec.json.encode(output)) == event


# ----- custom transforms ---------------------------------------------------------------------


@dataclass(frozen=True)
class PythonSpec:
    python: str


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def write_module(directory: Path, source: str) -> str:
    name = next(_module_names)
    (directory / f"{name}.py").write_text(source)
    return name


def test_custom_transform_gets_the_event_dict_and_entry_ref(module_dir: Path) -> None:
    name = write_module(
        module_dir,
        "def to_crm(event, entry):\n"
        "    return {'event_id': event['event_id'], 'who': event['user']['user_id'],\n"
        "            'cost': event['usage']['estimated_cost_usd'], 'seq': entry.seq}\n",
    )
    transform = resolve_transform(PythonSpec(f"{name}:to_crm"))
    assert transform(make_event(), ENTRY) == {
        "event_id": "evt_0001", "who": "user_42", "cost": "0.0075", "seq": 41,
    }
    assert resolve_transform(f"{name}:to_crm")(make_event(), ENTRY)["seq"] == 41


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("return {'user': event['user']['user_id']}", "must return the event's event_id"),
        ("return {'event_id': 'evt_other'}", "must return the event's event_id"),
        ("return [event['event_id']]", "returned list, not a dict"),
    ],
)
def test_custom_transform_output_must_carry_the_event_id(
    module_dir: Path, body: str, message: str
) -> None:
    name = write_module(module_dir, f"def shape(event, entry):\n    {body}\n")
    transform = resolve_transform(PythonSpec(f"{name}:shape"))
    with pytest.raises(ValueError, match=message) as caught:
        transform(make_event(), ENTRY)
    assert f"{name}:shape" in str(caught.value)


def test_custom_transform_that_cannot_be_imported_is_a_config_error(module_dir: Path) -> None:
    broken = write_module(module_dir, "raise RuntimeError('boom at import')\n")
    plain = write_module(module_dir, "VALUE = 3\n")
    cases = [
        ("no_such_module_for_scr:f", "cannot import module"),
        (f"{broken}:f", "boom at import"),
        (f"{plain}:missing", "has no function 'missing'"),
        (f"{plain}:VALUE", "has no function 'VALUE'"),
        (":f", "module:function"),
        (f"{plain}:", "module:function"),
    ]
    for target, message in cases:
        with pytest.raises(ConfigError, match=message):
            resolve_transform(PythonSpec(target))
    assert broken not in sys.modules


@pytest.mark.parametrize("name", ["billing_v2", "", "RAW_V1", "analytics"])
def test_unknown_transform_name_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="unknown transform") as caught:
        resolve_transform(name)
    assert "billing_v1" in caught.value.details[0].message


# ----- what billing and analytics must never carry -------------------------------------------

SECRET_MARK = "zqxSECRETqxz"
letters = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12)
ips = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)


@st.composite
def events(draw: st.DrawFn) -> tuple[Event, str]:
    document = copy.deepcopy(VALID_EVENT)
    address = draw(ips)
    document["metadata"]["source_ip"] = address
    document["metadata"]["custom_tags"] = draw(st.dictionaries(letters, letters, max_size=4))
    document["outcome"] = {
        "status": draw(st.sampled_from(["success", "error", "timeout", "user_terminated"])),
        "final_message": SECRET_MARK + draw(st.text(max_size=40)),
        "error_code": draw(st.none() | letters),
    }
    tokens = draw(st.tuples(st.integers(0, 10**9), st.integers(0, 10**9)))
    document["usage"].update(
        input_tokens=tokens[0], output_tokens=tokens[1], total_tokens=sum(tokens),
        model=draw(st.sampled_from(["gpt-4o", "claude-haiku-4-5", "house-llm"])),
        estimated_cost_usd=str(draw(st.decimals(0, 10**6, places=8))),
        cache_read_tokens=draw(st.integers(0, tokens[0])),
    )
    document["session"]["session_type"] = draw(
        st.sampled_from(["chat", "api", "autonomous", "webhook", "realtime"])
    )
    return decode_event(msgspec.json.encode(document)), address


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_billing_and_analytics_never_carry_message_text_or_full_ip(
    generated: tuple[Event, str],
) -> None:
    event, address = generated
    ip = ipaddress.ip_address(address)
    for name in ("billing_v1", "analytics_v2"):
        output = resolve_transform(name)(event, ENTRY)
        text = as_json(output)
        assert output["event_id"] == event.event_id
        assert SECRET_MARK not in text
        assert "final_message" not in text
        others = json.dumps({k: v for k, v in output.items() if k != "source_ip_prefix"})
        assert address not in others
        assert ip.exploded not in others
        if name == "analytics_v2":
            # The prefix is a network that holds the address: at most its first 24 or 48 bits.
            network = ipaddress.ip_network(output["source_ip_prefix"])
            covered: ipaddress.IPv4Address | ipaddress.IPv6Address = ip
            if isinstance(ip, ipaddress.IPv6Address):
                covered = ip.ipv4_mapped or ip.sixtofour or ip
            assert network.prefixlen == (24 if covered.version == 4 else 48)
            assert covered in network
            assert all(output[f"tag_{k}"] == v for k, v in event.metadata.custom_tags.items())
        else:
            assert not any(key.startswith("tag_") for key in output)
            assert "source_ip_prefix" not in output
