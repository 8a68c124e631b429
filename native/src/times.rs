//! An event's times in UTC, as `scr.route.transforms.rfc3339_utc` writes them.
//!
//! The input is a time as msgspec writes an aware `datetime`: `YYYY-MM-DDTHH:MM:SS`, then
//! `.ffffff` (six digits) unless the microseconds are zero, then `Z` or `±HH:MM`. The output
//! is the same instant in UTC, the fraction kept as it is and `Z` appended. Anything else, or
//! an instant outside the years 1-9999 (which Python's `datetime` refuses), is `None`: the
//! caller falls back to the Python reference.

use std::borrow::Cow;

use crate::datetime;

/// `time` in UTC, `Z`-suffixed; `None` if it is not a time as msgspec writes one.
pub fn rfc3339_utc(time: &str) -> Option<Cow<'_, str>> {
    let moment = datetime::parse(time)?;
    if moment.text() != time {
        return None; // another spelling of the time: the reference reads it as Python does
    }
    let utc = moment.in_utc()?;
    if utc == moment {
        return Some(Cow::Borrowed(time)); // in UTC already, written as the output is
    }
    Some(Cow::Owned(utc.text()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_utc_time_is_kept_as_it_is() {
        assert_eq!(
            rfc3339_utc("2026-11-25T10:00:05Z").as_deref(),
            Some("2026-11-25T10:00:05Z")
        );
        assert_eq!(
            rfc3339_utc("2026-11-25T10:00:05.000010Z").as_deref(),
            Some("2026-11-25T10:00:05.000010Z")
        );
    }

    #[test]
    fn an_offset_is_taken_off_across_days_months_and_years() {
        assert_eq!(
            rfc3339_utc("2026-11-25T11:30:05.123456+01:30").as_deref(),
            Some("2026-11-25T10:00:05.123456Z")
        );
        assert_eq!(
            rfc3339_utc("2000-01-01T00:30:00+01:00").as_deref(),
            Some("1999-12-31T23:30:00Z")
        );
        assert_eq!(
            rfc3339_utc("2024-02-28T23:00:00-02:00").as_deref(),
            Some("2024-02-29T01:00:00Z")
        );
        assert_eq!(
            rfc3339_utc("2100-02-28T23:00:00-02:00").as_deref(),
            Some("2100-03-01T01:00:00Z")
        );
    }

    #[test]
    fn what_msgspec_never_writes_is_left_to_the_reference() {
        for odd in [
            "2026-11-25 10:00:05Z",
            "2026-11-25T10:00:05.123Z",
            "2026-11-25T10:00:05.000000Z",
            "2026-11-25T10:00:05+0100",
            "2026-02-30T10:00:05Z",
            "2026-11-25T24:00:05Z",
            "9999-12-31T23:30:00-01:00",
            "0001-01-01T00:30:00+01:00",
            "2026-11-25T10:00:05",
        ] {
            assert_eq!(rfc3339_utc(odd), None, "{odd}");
        }
    }
}
