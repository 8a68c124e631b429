"""The price table: exact cost with cached tokens, snapshot lookup, loading and its errors."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scr.errors import ConfigError
from scr.route.prices import ModelPrice, PriceTable, default_prices, format_usd
from scr.schema import Usage

MAX_TOKENS = 2**53


def usage(model: str = "gpt-4o", input_tokens: int = 1000, output_tokens: int = 500, **more: Any) -> Usage:
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        model=model,
        estimated_cost_usd=Decimal("0.01"),
        **more,
    )


def test_cached_input_tokens_are_billed_at_the_cached_rate() -> None:
    prices = default_prices()
    # gpt-4o list: 2.50 input, 1.25 cached input, 10.00 output per 1M tokens.
    cost = prices.cost(usage(input_tokens=1000, output_tokens=500, cache_read_tokens=400))
    assert cost == Decimal("0.0070000000")  # (400*1.25 + 600*2.50 + 500*10) / 1e6
    assert format_usd(cost) == "0.0070000000"
    assert prices.cost(usage(input_tokens=1000, output_tokens=500)) == Decimal("0.0075")


def test_reasoning_tokens_are_part_of_output_and_not_billed_twice() -> None:
    prices = default_prices()
    plain = prices.cost(usage(model="o3"))
    assert plain is not None
    assert prices.cost(usage(model="o3", reasoning_tokens=400)) == plain


def test_cache_writes_are_billed_as_input() -> None:
    prices = default_prices()
    assert prices.cost(usage(cache_write_tokens=1000)) == prices.cost(usage())


def test_more_cache_reads_than_input_are_capped_at_input() -> None:
    prices = default_prices()
    capped = prices.cost(usage(input_tokens=100, output_tokens=0, cache_read_tokens=1_000_000))
    assert capped == Decimal("0.000125")  # all 100 input tokens at the cached 1.25


def test_cost_is_quantized_to_ten_places_half_even() -> None:
    table = PriceTable("t", {"m": ModelPrice(Decimal("0.00005"), Decimal(0), Decimal(0))})
    # 0.5e-10 rounds to the even 0; 1.5e-10 and 2.5e-10 both round to the even 2e-10.
    assert table.cost(usage("m", input_tokens=1, output_tokens=0)) == Decimal(0)
    assert table.cost(usage("m", input_tokens=3, output_tokens=0)) == Decimal("2E-10")
    assert table.cost(usage("m", input_tokens=5, output_tokens=0)) == Decimal("2E-10")
    zero = table.cost(usage("m", input_tokens=0, output_tokens=0))
    assert zero is not None and format_usd(zero) == "0.0000000000"


@given(
    input_tokens=st.integers(0, MAX_TOKENS),
    output_tokens=st.integers(0, MAX_TOKENS),
    cached=st.integers(0, MAX_TOKENS),
    rates=st.tuples(*[st.decimals(0, 1000, places=6)] * 3),
)
def test_cost_matches_exact_rational_arithmetic(
    input_tokens: int, output_tokens: int, cached: int, rates: tuple[Decimal, Decimal, Decimal]
) -> None:
    table = PriceTable("t", {"m": ModelPrice(*rates)})
    cost = table.cost(usage("m", input_tokens, output_tokens, cache_read_tokens=cached))
    in_rate, out_rate, cached_rate = (Fraction(r) for r in rates)
    billed_cached = min(cached, input_tokens)
    exact = (
        billed_cached * cached_rate + (input_tokens - billed_cached) * in_rate + output_tokens * out_rate
    ) / 1_000_000
    # Round half to even at 10 places, by hand on the rational value.
    scaled = exact * 10**10
    floor = scaled.numerator // scaled.denominator
    remainder = scaled - floor
    half = Fraction(1, 2)
    rounded = floor + (1 if remainder > half or (remainder == half and floor % 2) else 0)
    expected = Decimal(rounded).scaleb(-10)
    assert cost == expected
    assert cost is not None and cost.as_tuple().exponent == -10


@pytest.mark.parametrize(
    ("model", "priced_as"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("GPT-4o", "gpt-4o"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o3-pro-2025-06-10", "o3-pro"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),
        ("gemini-1.5-pro-002", "gemini-1.5-pro"),
    ],
)
def test_model_lookup_is_exact_else_longest_snapshot_prefix(model: str, priced_as: str) -> None:
    prices = default_prices()
    assert prices.price(model) is not None
    assert prices.price(model) == prices.price(priced_as)


@pytest.mark.parametrize("model", ["llama-3-70b", "gpt-4oz", "gpt-4.5-preview", "", "-", "my-gpt-4o"])
def test_unknown_model_has_no_price_and_no_cost(model: str) -> None:
    prices = default_prices()
    assert prices.price(model) is None
    assert prices.cost(usage(model=model or "x-unknown")) is None


def test_longest_prefix_wins_over_a_shorter_one() -> None:
    table = PriceTable(
        "t",
        {
            "a": ModelPrice(Decimal(1), Decimal(1), Decimal(1)),
            "a-b": ModelPrice(Decimal(2), Decimal(2), Decimal(2)),
        },
    )
    assert table.price("a-b-2025") == ModelPrice(Decimal(2), Decimal(2), Decimal(2))
    assert table.price("a-c") == ModelPrice(Decimal(1), Decimal(1), Decimal(1))


def test_bundled_table_is_versioned_and_sane() -> None:
    prices = default_prices()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", prices.version)
    assert default_prices() is prices  # read once
    assert len(prices) >= 30
    for model in ("gpt-4o", "gpt-4.1", "o3", "claude-sonnet-4-5", "claude-3-5-haiku", "gemini-2.5-pro"):
        price = prices.price(model)
        assert price is not None
        assert 0 <= price.cached_input_per_mtok <= price.input_per_mtok <= price.output_per_mtok


def write_table(path: Path, models: dict[str, Any], **top: Any) -> Path:
    document = {"version": "2027-01-01", "currency": "USD", "unit": "per 1M tokens", "models": models}
    document.update(top)
    path.write_text(json.dumps(document))
    return path


def test_load_reads_a_table_of_the_same_shape(tmp_path: Path) -> None:
    path = write_table(
        tmp_path / "p.json", {"house-model": {"input": "1", "output": 2, "cached_input": "0.5"}}
    )
    table = PriceTable.load(path)
    assert table.version == "2027-01-01"
    assert table.price("house-model-v2") == ModelPrice(Decimal(1), Decimal(2), Decimal("0.5"))
    assert table.price("gpt-4o") is None
    assert PriceTable.load(str(path)).version == "2027-01-01"


@pytest.mark.parametrize(
    ("models", "top", "needle"),
    [
        ({"m": {"input": "-1", "output": "1", "cached_input": "0"}}, {}, "models.m.input"),
        ({"m": {"input": "NaN", "output": "1", "cached_input": "0"}}, {}, "models.m.input"),
        ({"m": {"input": "1", "output": "1"}}, {}, "cached_input"),
        ({"m": {"input": "1", "output": "1", "cached_input": "0", "cache": 1}}, {}, "cache"),
        ({"m": {"input": "1", "output": "one", "cached_input": "0"}}, {}, "output"),
        ({}, {"currency": "EUR"}, "currency"),
        ({}, {"version": ""}, "version"),
    ],
)
def test_load_rejects_an_unusable_table_naming_the_problem(
    tmp_path: Path, models: dict[str, Any], top: dict[str, Any], needle: str
) -> None:
    path = write_table(tmp_path / "p.json", models, **top)
    with pytest.raises(ConfigError) as caught:
        PriceTable.load(path)
    located = caught.value.message + " " + " ".join(d.path for d in caught.value.details)
    assert needle in located


def test_load_rejects_names_that_collide_ignoring_case(tmp_path: Path) -> None:
    row = {"input": "1", "output": "1", "cached_input": "1"}
    with pytest.raises(ConfigError, match="invalid entries"):
        PriceTable.load(write_table(tmp_path / "p.json", {"M": row, "m": row}))


def test_load_of_a_missing_or_malformed_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read price table"):
        PriceTable.load(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid"):
        PriceTable.load(tmp_path / "bad.json")
