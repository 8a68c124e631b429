//! Money as `scr.money` bounds it and msgspec reads it into a `Decimal`, written back as
//! Python's `str(Decimal)` (what `Encoder(decimal_format="string")` writes).
//!
//! An amount is `0 <= amount < 10**9` with at most 18 fractional digits (trailing zeros not
//! counted). A JSON number is read by its value (an integer literal through `int`, so `-0` is
//! `0`; any other through `Decimal(text)`, so `-0.0` keeps its sign and `1.50` its zero); a
//! string must also be spelled as `scr.money.spelling_problem` requires. A zero may carry any
//! exponent a `Decimal` holds.

/// The exclusive bound's power of ten (`scr.money.MAX_USD` = 10**9).
const MAX_USD_POWER: i128 = 9;
/// `scr.money.USD_FRACTION_DIGITS`.
const FRACTION_DIGITS: i128 = 18;
/// A nonzero string amount's exponent, as written (`scr.money.MIN_EXPONENT`, `MAX_EXPONENT`).
const MIN_WRITTEN_EXPONENT: i128 = -18;
const MAX_WRITTEN_EXPONENT: i128 = 8;
/// The exponents a zero `Decimal` may have (libmpdec's `MAX_EMAX` and `etiny` of its maximum
/// context, which `Decimal(str)` reads with): outside them `Decimal` refuses the text.
const ZERO_MAX_EXPONENT: i128 = 999_999_999_999_999_999;
const ZERO_MIN_EXPONENT: i128 = -1_999_999_999_999_999_997;
/// An exponent written with more digits than this is far outside every range above.
const EXPONENT_DIGITS_READ: usize = 30;
/// Where an exponent with too many digits is placed: past every bound, keeping its sign.
const EXPONENT_FAR: i128 = 10_i128.pow(30);

/// A decimal as Python's `Decimal` holds it: a sign, a coefficient's digits without leading
/// zeros (`"0"` for zero) and an exponent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    negative: bool,
    coefficient: String,
    exponent: i128,
}

/// The parts of a number written as `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
struct Written<'a> {
    negative: bool,
    integer: &'a str,
    fraction: &'a str,
    exponent: Option<(bool, &'a str)>, // (negative, digits)
}

fn split(text: &str) -> Option<Written<'_>> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let integer_end = rest
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    let integer = &rest[..integer_end];
    if integer.is_empty() || (integer.len() > 1 && integer.starts_with('0')) {
        return None;
    }
    let mut rest = &rest[integer_end..];
    let mut fraction = "";
    if let Some(after_dot) = rest.strip_prefix('.') {
        let end = after_dot
            .bytes()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(after_dot.len());
        if end == 0 {
            return None;
        }
        fraction = &after_dot[..end];
        rest = &after_dot[end..];
    }
    let mut exponent = None;
    if let Some(after_e) = rest.strip_prefix(['e', 'E']) {
        let (exponent_negative, digits) = match after_e.as_bytes().first() {
            Some(b'-') => (true, &after_e[1..]),
            Some(b'+') => (false, &after_e[1..]),
            _ => (false, after_e),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        exponent = Some((exponent_negative, digits));
        rest = "";
    }
    rest.is_empty().then_some(Written {
        negative,
        integer,
        fraction,
        exponent,
    })
}

/// An exponent's digits as a number; one with very many digits is placed past every bound.
fn exponent_value(negative: bool, digits: &str) -> i128 {
    let significant = digits.trim_start_matches('0');
    let magnitude = if significant.len() > EXPONENT_DIGITS_READ {
        EXPONENT_FAR
    } else {
        significant.parse::<i128>().unwrap_or(0)
    };
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

impl Written<'_> {
    fn is_zero(&self) -> bool {
        self.integer == "0" && self.fraction.bytes().all(|b| b == b'0')
    }

    /// `Decimal(text)`; `None` where it refuses the text (a zero's exponent out of range).
    fn as_decimal(&self) -> Option<Amount> {
        let written = self
            .exponent
            .map_or(0, |(negative, digits)| exponent_value(negative, digits));
        let exponent = written - self.fraction.len() as i128;
        let digits = format!("{}{}", self.integer, self.fraction);
        let significant = digits.trim_start_matches('0');
        let coefficient = if significant.is_empty() {
            "0"
        } else {
            significant
        };
        if coefficient == "0" && !(ZERO_MIN_EXPONENT..=ZERO_MAX_EXPONENT).contains(&exponent) {
            return None;
        }
        Some(Amount {
            negative: self.negative,
            coefficient: coefficient.to_owned(),
            exponent,
        })
    }
}

impl Amount {
    /// A JSON number as msgspec reads it into a `Decimal`, if it is an amount in bounds.
    pub fn from_number(literal: &str) -> Option<Amount> {
        let written = split(literal)?;
        let amount = if written.fraction.is_empty() && written.exponent.is_none() {
            // an integer literal is read as an `int` first: `-0` is `0`
            Amount {
                negative: written.negative && written.integer != "0",
                coefficient: written.integer.to_owned(),
                exponent: 0,
            }
        } else {
            written.as_decimal()?
        };
        amount.in_bounds().then_some(amount)
    }

    /// A decimal string, if it is spelled as `scr.money` requires and is an amount in bounds.
    pub fn from_text(text: &str) -> Option<Amount> {
        let written = split(text)?;
        if !written.is_zero() {
            let exponent = written
                .exponent
                .map_or(0, |(negative, digits)| exponent_value(negative, digits));
            let spelled = !written.negative
                && (MIN_WRITTEN_EXPONENT..=MAX_WRITTEN_EXPONENT).contains(&exponent);
            if !spelled {
                return None;
            }
        }
        let amount = written.as_decimal()?;
        amount.in_bounds().then_some(amount)
    }

    fn is_zero(&self) -> bool {
        self.coefficient == "0"
    }

    /// `scr.money.amount_problem(amount) is None`.
    fn in_bounds(&self) -> bool {
        if self.is_zero() {
            return true; // 0 and -0 alike, whatever the exponent
        }
        let digits = self.coefficient.len() as i128;
        let trailing_zeros =
            (self.coefficient.len() - self.coefficient.trim_end_matches('0').len()) as i128;
        !self.negative
            && self.exponent + digits - 1 < MAX_USD_POWER
            && -(self.exponent + trailing_zeros) <= FRACTION_DIGITS
    }

    /// The amount as an integer number of `10**-places` (`int(amount.scaleb(places))`, for an
    /// amount that many places hold exactly); `None` for one they do not, or a negative one.
    pub fn scaled(&self, places: i128) -> Option<u128> {
        if self.is_zero() {
            return Some(0);
        }
        if self.negative {
            return None;
        }
        let shift = self.exponent.checked_add(places)?;
        let digits = if shift >= 0 {
            self.coefficient.as_str()
        } else {
            let kept = self
                .coefficient
                .len()
                .checked_sub(usize::try_from(-shift).ok()?)?;
            let (kept_digits, dropped) = self.coefficient.split_at(kept);
            if kept == 0 || !dropped.bytes().all(|b| b == b'0') {
                return None;
            }
            kept_digits
        };
        let value: u128 = digits.parse().ok()?;
        value.checked_mul(10u128.checked_pow(u32::try_from(shift.max(0)).ok()?)?)
    }

    /// Appends Python's `str(Decimal)` of the amount (its "to-scientific-string").
    pub fn write(&self, out: &mut Vec<u8>) {
        let digits = self.coefficient.as_str();
        let count = digits.len() as i128;
        let left_digits = self.exponent + count;
        let dot = if self.exponent <= 0 && left_digits > -6 {
            left_digits
        } else {
            1
        };
        if self.negative {
            out.push(b'-');
        }
        if dot <= 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat(b'0').take((-dot) as usize));
            out.extend_from_slice(digits.as_bytes());
        } else if dot >= count {
            out.extend_from_slice(digits.as_bytes());
            out.extend(std::iter::repeat(b'0').take((dot - count) as usize));
        } else {
            out.extend_from_slice(&digits.as_bytes()[..dot as usize]);
            out.push(b'.');
            out.extend_from_slice(&digits.as_bytes()[dot as usize..]);
        }
        if left_digits != dot {
            out.extend_from_slice(format!("E{:+}", left_digits - dot).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_amount_scales_to_an_exact_integer_of_its_smallest_unit() {
        let scaled = |text: &str, places| Amount::from_number(text).unwrap().scaled(places);
        assert_eq!(scaled("0.0075", 18), Some(7_500_000_000_000_000));
        assert_eq!(scaled("1.50", 18), Some(1_500_000_000_000_000_000));
        assert_eq!(scaled("1.0E-7", 18), Some(100_000_000_000));
        assert_eq!(scaled("1E+2", 0), Some(100));
        assert_eq!(
            scaled("999999999.999999999999999999", 18),
            Some(999_999_999_999_999_999_999_999_999)
        );
        assert_eq!(scaled("0E-20", 18), Some(0));
        assert_eq!(scaled("-0", 18), Some(0));
        assert_eq!(scaled("-0.0", 18), Some(0));
        // finer than the places hold: only trailing zeros may go
        assert_eq!(scaled("0.0075", 2), None);
        assert_eq!(scaled("1.50", 1), Some(15));
    }

    fn written(amount: Option<Amount>) -> Option<String> {
        amount.map(|amount| {
            let mut out = Vec::new();
            amount.write(&mut out);
            String::from_utf8(out).unwrap()
        })
    }

    #[test]
    fn numbers_read_and_written_as_python_does() {
        let cases = [
            ("0.0075", Some("0.0075")),
            ("-0", Some("0")),
            ("-0.0e5", Some("-0E+4")),
            ("0e400", Some("0E+400")),
            ("1E-3", Some("0.001")),
            ("1.0E+2", Some("1.0E+2")),
            ("0.00000010", Some("1.0E-7")),
            ("1.5e8", Some("1.5E+8")),
            ("100", Some("100")),
            (
                "12345678.123456789012345678",
                Some("12345678.123456789012345678"),
            ),
            ("1.000000000000000000000", Some("1.000000000000000000000")),
            ("0e-1999999999999999997", Some("0E-1999999999999999997")),
            ("0.0e-1999999999999999997", None),
            ("0e1000000000000000000", None),
            ("0.0e1000000000000000000", Some("0E+999999999999999999")),
            ("1e9", None),
            (
                "999999999.999999999999999999",
                Some("999999999.999999999999999999"),
            ),
            ("0.0000000000000000001", None),
            ("-1", None),
            ("-0.5", None),
        ];
        for (literal, expected) in cases {
            assert_eq!(
                written(Amount::from_number(literal)).as_deref(),
                expected,
                "{literal}"
            );
        }
    }

    #[test]
    fn strings_must_also_be_spelled_right() {
        let cases = [
            ("0.0075", Some("0.0075")),
            ("-0", Some("-0")),
            ("7.5E-3", Some("0.0075")),
            ("1e+08", Some("1E+8")),
            ("1e9", None),
            ("1e-19", None),
            ("10000e-4", Some("1.0000")),
            ("-1", None),
            (" 1", None),
            ("1_0", None),
            ("01", None),
            ("1.", None),
            ("NaN", None),
            ("0e-99999999999999999999", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                written(Amount::from_text(text)).as_deref(),
                expected,
                "{text}"
            );
        }
    }
}
