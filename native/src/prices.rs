//! A price table and the cost rule of `scr.route.prices.PriceTable.cost`, in exact integers.
//!
//! Python computes `(cached * cached_input + (input - cached) * input + output * output)
//! / 10**6` with 60 significant digits (never rounding: a 2**64 token count times a price
//! below 10**9 with 18 fractional digits has fewer) and quantizes it to 10 decimal places,
//! half to even. Here each price is an integer number of 10**-18 USD, split at 10**14 so
//! that every product fits in a `u128`: the cost in units of 10**-10 USD is
//! `high + low / 10**14`, rounded half to even.

use std::collections::HashMap;

/// How many digits a price holds after the point (`scr.money`'s bound).
const PRICE_FRACTION_DIGITS: i32 = 18;
const COST_FRACTION_DIGITS: usize = 10;
/// Prices are per 10**6 tokens: 10**18 * 10**6 / 10**10 splits a product into whole cost
/// units and a remainder.
const SPLIT: u128 = 100_000_000_000_000; // 10**14
const MAX_SCALED_PRICE: u128 = 1_000_000_000 * 1_000_000_000_000_000_000; // 10**9 USD
const COST_UNITS_PER_USD: u128 = 10_000_000_000; // 10**10
const SNAPSHOT_SEPARATORS: &[u8] = b"-_@:";

/// One price: an integer number of 10**-18 USD; `-0` is kept (Python's `Decimal` keeps its sign).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    scaled: u128,
    negative_zero: bool,
}

impl Price {
    /// A price as `str(Decimal)` writes it (`"2.5"`, `"1.25E-7"`, `"0E-20"`, `"-0"`); `None`
    /// if it is not on the 10**-18 grid, negative, or not below 10**9.
    pub fn parse(text: &str) -> Option<Price> {
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match unsigned.find(['E', 'e']) {
            Some(at) => (&unsigned[..at], unsigned[at + 1..].parse::<i32>().ok()?),
            None => (unsigned, 0),
        };
        let (integer, fraction) = match mantissa.split_once('.') {
            Some((_, "")) => return None,
            Some(parts) => parts,
            None => (mantissa, ""),
        };
        let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if integer.is_empty() || !all_digits(integer) || !all_digits(fraction) {
            return None;
        }
        let digits = format!("{integer}{fraction}");
        let digits = digits.trim_start_matches('0');
        let shift = exponent
            .checked_sub(i32::try_from(fraction.len()).ok()?)?
            .checked_add(PRICE_FRACTION_DIGITS)?;
        let scaled = if digits.is_empty() {
            0
        } else if shift >= 0 {
            let value: u128 = digits.parse().ok()?;
            value.checked_mul(10u128.checked_pow(u32::try_from(shift).ok()?)?)?
        } else {
            // finer than 10**-18: only trailing zeros may be dropped
            let dropped = usize::try_from(-shift).ok()?;
            let kept = digits.len().checked_sub(dropped)?;
            if !digits[kept..].bytes().all(|b| b == b'0') {
                return None;
            }
            if kept == 0 {
                0
            } else {
                digits[..kept].parse().ok()?
            }
        };
        if scaled >= MAX_SCALED_PRICE || (negative && scaled != 0) {
            return None;
        }
        Some(Price {
            scaled,
            negative_zero: negative,
        })
    }
}

/// USD per 10**6 tokens of each kind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelPrice {
    pub input: Price,
    pub output: Price,
    pub cached_input: Price,
}

impl ModelPrice {
    /// The three prices of a row; `None` if one is not a `Price`.
    fn parse(input: &str, output: &str, cached_input: &str) -> Option<ModelPrice> {
        Some(ModelPrice {
            input: Price::parse(input)?,
            output: Price::parse(output)?,
            cached_input: Price::parse(cached_input)?,
        })
    }
}

/// A token count as the cost rule reads it.
#[derive(Clone, Copy, Debug)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
}

/// What the table says a model's usage cost.
#[derive(Debug, PartialEq)]
pub enum Cost {
    /// The exact cost, formatted as `format_usd` writes it (10 decimal places).
    Usd(String),
    /// The table does not know the model (`cost_usd: null`).
    Unpriced,
    /// The model or its price is one only the Python reference decides (a non-ASCII name,
    /// whose case folding is Python's; a price off the 10**-18 grid).
    Undecided,
}

/// A cost only the Python reference decides (see `Cost::Undecided`).
#[derive(Debug, PartialEq)]
pub struct Undecided;

/// A named version of per-model prices, keyed by case-folded name.
pub struct PriceTable {
    pub version: String,
    models: HashMap<String, Option<ModelPrice>>,
}

impl PriceTable {
    /// A table of `(case-folded name, input, output, cached input)` rows, prices as
    /// `str(Decimal)` writes them.
    pub fn new(version: String, rows: &[(String, String, String, String)]) -> PriceTable {
        let models = rows
            .iter()
            .map(|(name, input, output, cached_input)| {
                (name.clone(), ModelPrice::parse(input, output, cached_input))
            })
            .collect();
        PriceTable { version, models }
    }

    /// The price of `model`: its exact name, else its longest known snapshot prefix (ending
    /// where the model has a separator); `Err` for a non-ASCII name.
    fn price(&self, model: &str) -> Result<Option<&Option<ModelPrice>>, ()> {
        if !model.is_ascii() {
            return Err(()); // Python's casefold maps some non-ASCII letters to ASCII ones
        }
        let name = model.to_ascii_lowercase();
        if let Some(found) = self.models.get(&name) {
            return Ok(Some(found));
        }
        let bytes = name.as_bytes();
        for end in (1..bytes.len()).rev() {
            if SNAPSHOT_SEPARATORS.contains(&bytes[end]) {
                if let Some(found) = self.models.get(&name[..end]) {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// The cost of `tokens` of `model`.
    pub fn cost(&self, model: &str, tokens: Tokens) -> Cost {
        match self.priced(model, tokens, cost_usd) {
            Ok(Some(text)) => Cost::Usd(text),
            Ok(None) => Cost::Unpriced,
            Err(Undecided) => Cost::Undecided,
        }
    }

    /// The cost of `tokens` of `model` as an integer number of 10**-10 USD (what
    /// `scr.usage.aggregate` adds up); `Ok(None)` for a model the table does not know.
    pub fn cost_units(&self, model: &str, tokens: Tokens) -> Result<Option<u128>, Undecided> {
        self.priced(model, tokens, |price, tokens| {
            cost_in_units(price, tokens).map(|(units, _)| units)
        })
    }

    fn priced<T>(
        &self,
        model: &str,
        tokens: Tokens,
        rule: impl Fn(&ModelPrice, Tokens) -> Option<T>,
    ) -> Result<Option<T>, Undecided> {
        match self.price(model) {
            Err(()) | Ok(Some(None)) => Err(Undecided),
            Ok(None) => Ok(None),
            Ok(Some(Some(price))) => rule(price, tokens).map(Some).ok_or(Undecided),
        }
    }
}

/// The cost rule, formatted; `None` on an overflow (beyond any valid event).
fn cost_usd(price: &ModelPrice, tokens: Tokens) -> Option<String> {
    let (units, sign) = cost_in_units(price, tokens)?;
    Some(format!(
        "{sign}{}.{:0width$}",
        units / COST_UNITS_PER_USD,
        units % COST_UNITS_PER_USD,
        width = COST_FRACTION_DIGITS
    ))
}

/// The cost rule in 10**-10 USD, and the sign `Decimal` writes it with (`-` for a `-0`);
/// `None` on an overflow.
fn cost_in_units(price: &ModelPrice, tokens: Tokens) -> Option<(u128, &'static str)> {
    let cached = tokens.cache_read.min(tokens.input);
    let terms = [
        (cached, price.cached_input.scaled),
        (tokens.input - cached, price.input.scaled),
        (tokens.output, price.output.scaled),
    ];
    let (mut whole, mut rest) = (0u128, 0u128);
    for (count, scaled) in terms {
        let count = u128::from(count);
        whole = whole.checked_add(count.checked_mul(scaled / SPLIT)?)?;
        rest = rest.checked_add(count.checked_mul(scaled % SPLIT)?)?;
    }
    let mut units = whole.checked_add(rest / SPLIT)?;
    let remainder = rest % SPLIT;
    let half = SPLIT / 2;
    if remainder > half || (remainder == half && units % 2 == 1) {
        units += 1;
    }
    // Decimal's sum of three zeros is -0 only when all three are -0
    let all_negative_zero = [price.input, price.output, price.cached_input]
        .iter()
        .all(|p| p.negative_zero);
    let sign = if all_negative_zero { "-" } else { "" };
    Some((units, sign))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        name: &str,
        input: &str,
        output: &str,
        cached: &str,
    ) -> (String, String, String, String) {
        (name.into(), input.into(), output.into(), cached.into())
    }

    fn table() -> PriceTable {
        PriceTable::new(
            "2026-11".into(),
            &[
                row("gpt-4o", "2.5", "10", "1.25"),
                row("gpt-4", "30", "60", "30"),
                row("odd", "1E-19", "1", "1"),
                row("zero", "-0", "-0", "-0"),
            ],
        )
    }

    fn tokens(input: u64, output: u64, cache_read: u64) -> Tokens {
        Tokens {
            input,
            output,
            cache_read,
        }
    }

    #[test]
    fn prices_are_read_on_the_grid_of_ten_to_the_minus_18() {
        let scaled = |text: &str| Price::parse(text).map(|p| p.scaled);
        assert_eq!(scaled("2.5"), Some(2_500_000_000_000_000_000));
        assert_eq!(scaled("1.25E-7"), Some(125_000_000_000));
        assert_eq!(scaled("1E+2"), Some(100_000_000_000_000_000_000));
        assert_eq!(scaled("0E-20"), Some(0));
        assert_eq!(
            scaled("1.000000000000000000000"),
            Some(1_000_000_000_000_000_000)
        );
        assert_eq!(scaled("1E-18"), Some(1));
        for off_grid in ["1E-19", "-1", "1E+9", "NaN", "Infinity", "", "1.", ".5"] {
            assert_eq!(scaled(off_grid), None, "{off_grid}");
        }
        assert!(Price::parse("-0").unwrap().negative_zero);
    }

    #[test]
    fn the_cost_rule_is_pythons() {
        let prices = table();
        let cost = |model, t| prices.cost(model, t);
        // 1200 in (200 of them cached) and 300 out of gpt-4o
        assert_eq!(
            cost("gpt-4o", tokens(1200, 300, 200)),
            Cost::Usd("0.0057500000".into())
        );
        // cache reads are capped at the input count
        assert_eq!(
            cost("gpt-4o", tokens(10, 0, 99)),
            Cost::Usd("0.0000125000".into())
        );
        assert_eq!(
            cost("gpt-4o", tokens(0, 0, 0)),
            Cost::Usd("0.0000000000".into())
        );
        assert_eq!(
            cost("zero", tokens(5, 5, 0)),
            Cost::Usd("-0.0000000000".into())
        );
    }

    #[test]
    fn rounding_is_half_to_even_at_ten_places() {
        let prices = PriceTable::new("v".into(), &[row("m", "0.00005", "0.00015", "0")]);
        // 1 token at 0.00005/1M = 5E-11: a half, rounded to the even 0
        assert_eq!(
            prices.cost("m", tokens(1, 0, 0)),
            Cost::Usd("0.0000000000".into())
        );
        // 1 token at 0.00015/1M = 1.5E-10: rounded to the even 2E-10
        assert_eq!(
            prices.cost("m", tokens(0, 1, 0)),
            Cost::Usd("0.0000000002".into())
        );
        assert_eq!(
            prices.cost("m", tokens(3, 0, 0)),
            Cost::Usd("0.0000000002".into())
        );
    }

    #[test]
    fn the_largest_counts_stay_exact() {
        let prices = PriceTable::new(
            "v".into(),
            &[row(
                "m",
                "999999999.999999999999999999",
                "999999999.999999999999999999",
                "0",
            )],
        );
        let most = 1u64 << 53;
        assert_eq!(
            prices.cost("m", tokens(most, most, 0)),
            Cost::Usd("18014398509481983999.9999999820".into())
        );
    }

    #[test]
    fn models_are_found_by_name_or_snapshot_prefix() {
        let prices = table();
        assert_eq!(
            prices.cost("GPT-4o", tokens(1, 0, 0)),
            Cost::Usd("0.0000025000".into())
        );
        assert_eq!(
            prices.cost("gpt-4o-2024-08-06", tokens(1, 0, 0)),
            Cost::Usd("0.0000025000".into())
        );
        assert_eq!(
            prices.cost("gpt-4o@x:y", tokens(1, 0, 0)),
            Cost::Usd("0.0000025000".into())
        );
        assert_eq!(prices.cost("gpt-4omni", tokens(1, 0, 0)), Cost::Unpriced);
        assert_eq!(prices.cost("claude", tokens(1, 0, 0)), Cost::Unpriced);
        assert_eq!(prices.cost("odd", tokens(1, 0, 0)), Cost::Undecided);
        assert_eq!(
            prices.cost("gpt-4o-\u{212a}", tokens(1, 0, 0)),
            Cost::Undecided
        );
    }
}
