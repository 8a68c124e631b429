"""A destination's filter and sampling: combinations, determinism and rate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scr import native
from scr.config import DestinationConfig, FilterConfig
from scr.route.selection import filters_anything, passes_filter, sample_point, sampled_in
from scr.route.worker import reads_events
from scr.schema import Event, decode_event
from support import DELETE
from support import make_event as event_document

SAMPLE_SIZE = 10_000
RATE_TOLERANCE = 0.03

def make_event(session_type: str = "chat", status: str = "error", tier: str = "pro",
               model: str = "gpt-4o-2024-08-06", provider: str | None = "openai",
               tenant: str = "org_acme") -> Event:
    document = event_document(
        "evt_0001",
        **{"session.session_type": session_type, "outcome.status": status, "user.tier": tier,
           "usage.model": model, "user.organization_id": tenant,
           "usage.provider": DELETE if provider is None else provider},
    )
    return decode_event(msgspec.json.encode(document))


@dataclass(frozen=True)
class Filter:
    session_type: Sequence[str] | None = None
    outcome_status: Sequence[str] | None = None
    tier: Sequence[str] | None = None
    model: Sequence[str] | None = None
    provider: Sequence[str] | None = None
    tenant: Sequence[str] | None = None


EVENT = make_event()


@pytest.mark.parametrize(
    ("event_filter", "passes"),
    [
        (None, True),
        (Filter(), True),
        (Filter(outcome_status=["error"]), True),
        (Filter(outcome_status=["success", "timeout"]), False),
        (Filter(outcome_status=["success", "error"]), True),  # values OR
        (Filter(outcome_status=["error"], tier=["free"]), False),  # conditions AND
        (Filter(outcome_status=["error"], tier=["pro", "enterprise"], session_type=["chat"]), True),
        (Filter(session_type=["api"]), False),
        (Filter(tenant=["org_acme"]), True),
        (Filter(tenant=["org_other"]), False),
        (Filter(provider=["openai"]), True),
        (Filter(provider=["anthropic"]), False),
        (Filter(model=["gpt-4o-2024-08-06"]), True),
        (Filter(model=["gpt-4o"]), False),  # exact unless a wildcard is written
        (Filter(model=["gpt-4o*"]), True),
        (Filter(model=["claude-*", "gpt-*"]), True),
        (Filter(model=["claude-*"]), False),
        (Filter(model=["GPT-4o*"]), False),  # case matters
        (Filter(outcome_status=[]), True),  # an empty list is no condition
        (Filter(tenant=["org_acme"], model=["claude-*"]), False),
    ],
)
def test_filter_combinations(event_filter: Filter | None, passes: bool) -> None:
    assert passes_filter(event_filter, EVENT) is passes


def test_provider_condition_never_meets_an_event_without_a_provider() -> None:
    anonymous = make_event(provider=None)
    assert not passes_filter(Filter(provider=["openai"]), anonymous)
    assert passes_filter(Filter(tier=["pro"]), anonymous)


def test_filter_accepts_tuples_as_lists() -> None:
    assert passes_filter(Filter(outcome_status=("error",), tier=("pro",)), EVENT)


def test_sampling_is_deterministic_and_per_destination() -> None:
    ids = [f"evt_{n}" for n in range(2000)]
    first = [sampled_in(0.5, "analytics", i) for i in ids]
    assert first == [sampled_in(0.5, "analytics", i) for i in ids]
    other = [sampled_in(0.5, "warehouse", i) for i in ids]
    assert first != other  # destinations sample independently
    both = sum(a and b for a, b in zip(first, other, strict=True)) / len(ids)
    assert abs(both - 0.25) < 0.05


def test_sampling_rate_is_roughly_honoured() -> None:
    ids = [f"evt_{n:06d}" for n in range(SAMPLE_SIZE)]
    for rate in (0.01, 0.3, 0.75):
        taken = sum(sampled_in(rate, "analytics_pipeline", i) for i in ids) / SAMPLE_SIZE
        assert abs(taken - rate) <= RATE_TOLERANCE, (rate, taken)


@given(destination=st.text(max_size=20), event_id=st.text(min_size=1, max_size=40))
def test_rate_one_takes_all_and_zero_takes_none(destination: str, event_id: str) -> None:
    assert sampled_in(1.0, destination, event_id)
    assert not sampled_in(0.0, destination, event_id)
    assert 0.0 <= sample_point(destination, event_id) < 1.0


@given(event_id=st.text(min_size=1, max_size=40), low=st.floats(0, 1), high=st.floats(0, 1))
def test_a_higher_rate_keeps_every_event_a_lower_rate_keeps(event_id: str, low: float, high: float) -> None:
    low, high = min(low, high), max(low, high)
    if sampled_in(low, "d", event_id):
        assert sampled_in(high, "d", event_id)


@pytest.mark.parametrize("rate", [-0.1, 1.01, float("nan"), float("inf")])
def test_sampling_rate_outside_zero_to_one_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match=r"between 0\.0 and 1\.0"):
        sampled_in(rate, "analytics", "evt_1")


@pytest.mark.parametrize(("settings", "filters", "decoded"), [
    ({}, False, False),
    ({"transform": "audit_v1", "sampling_rate": 0.5}, False, False),  # the core samples
    ({"filter": FilterConfig()}, False, False),  # a filter without a condition passes every event
    ({"filter": FilterConfig(tier=[])}, False, False),  # so does an empty list
    ({"filter": FilterConfig(tier=["pro"], model=["gpt-*"])}, True, False),  # the core filters
    ({"personal_fields": False}, False, True),
    ({"transform": "tests.route.shapes:shape"}, False, True),  # a custom transform runs in Python
])
def test_a_destination_reads_events_decoded_only_to_redact_or_shape_them_in_python(
    settings: dict[str, object], filters: bool, decoded: bool
) -> None:
    config = DestinationConfig(name="d", endpoint="http://127.0.0.1:9/", **settings)  # type: ignore[arg-type]
    assert filters_anything(config.filter) == filters
    assert reads_events(config) == (decoded or not native.NATIVE)
