//! An event's times in UTC, as `scr.route.transforms.rfc3339_utc` writes them.
//!
//! The input is a time as msgspec writes an aware `datetime`: `YYYY-MM-DDTHH:MM:SS`, then
//! `.ffffff` (six digits) unless the microseconds are zero, then `Z` or `±HH:MM`. The output
//! is the same instant in UTC, the fraction kept as it is and `Z` appended. Anything else, or
//! an instant outside the years 1-9999 (which Python's `datetime` refuses), is `None`: the
//! caller falls back to the Python reference.

use std::borrow::Cow;

const MINUTES_PER_DAY: i64 = 24 * 60;
const FRACTION_DIGITS: usize = 6;
const DATE_TIME_LEN: usize = "YYYY-MM-DDTHH:MM:SS".len();
const MAX_YEAR: i64 = 9999;

/// `time` in UTC, `Z`-suffixed; `None` if it is not a time as msgspec writes one.
pub fn rfc3339_utc(time: &str) -> Option<Cow<'_, str>> {
    let bytes = time.as_bytes();
    if bytes.len() < DATE_TIME_LEN + 1 || !time.is_ascii() {
        return None;
    }
    let (stamp, rest) = time.split_at(DATE_TIME_LEN);
    let (fraction, offset) = match rest.strip_prefix('.') {
        Some(tail) if tail.len() > FRACTION_DIGITS => tail.split_at(FRACTION_DIGITS),
        Some(_) => return None,
        None => ("", rest),
    };
    // msgspec writes no fraction for zero microseconds (and Python's output has none then)
    if !fraction.bytes().all(|b| b.is_ascii_digit()) || fraction == "000000" {
        return None;
    }
    let offset_minutes = offset_minutes(offset)?;
    let fields = DateTime::parse(stamp)?;
    if offset_minutes == 0 && offset == "Z" {
        return Some(Cow::Borrowed(time)); // in UTC already, written as the output is
    }
    let utc = fields.shifted(-offset_minutes)?;
    let dot = if fraction.is_empty() { "" } else { "." };
    Some(Cow::Owned(format!("{}{dot}{fraction}Z", utc.text())))
}

/// Minutes east of UTC of `Z` or `±HH:MM`.
fn offset_minutes(offset: &str) -> Option<i64> {
    if offset == "Z" {
        return Some(0);
    }
    let bytes = offset.as_bytes();
    if bytes.len() != 6 || bytes[3] != b':' {
        return None;
    }
    let sign = match bytes[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hours = digits(&offset[1..3])?;
    let minutes = digits(&offset[4..6])?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 60 + minutes))
}

fn digits(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[derive(Debug, PartialEq)]
struct DateTime {
    year: i64,
    month: i64,
    day: i64,
    minute_of_day: i64,
    second: i64,
}

impl DateTime {
    /// `YYYY-MM-DDTHH:MM:SS`, checked as a calendar date and a time of day.
    fn parse(text: &str) -> Option<DateTime> {
        let b = text.as_bytes();
        if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let year = digits(&text[0..4])?;
        let month = digits(&text[5..7])?;
        let day = digits(&text[8..10])?;
        let hour = digits(&text[11..13])?;
        let minute = digits(&text[14..16])?;
        let second = digits(&text[17..19])?;
        let valid_date = year >= 1 && (1..=12).contains(&month) && day >= 1;
        if !valid_date
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        Some(DateTime {
            year,
            month,
            day,
            minute_of_day: hour * 60 + minute,
            second,
        })
    }

    /// The same wall time moved by `minutes`; `None` outside the years 1-9999.
    fn shifted(&self, minutes: i64) -> Option<DateTime> {
        let total = days_from_civil(self.year, self.month, self.day) * MINUTES_PER_DAY
            + self.minute_of_day
            + minutes;
        let (year, month, day) = civil_from_days(total.div_euclid(MINUTES_PER_DAY));
        if !(1..=MAX_YEAR).contains(&year) {
            return None;
        }
        Some(DateTime {
            year,
            month,
            day,
            minute_of_day: total.rem_euclid(MINUTES_PER_DAY),
            second: self.second,
        })
    }

    fn text(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year,
            self.month,
            self.day,
            self.minute_of_day / 60,
            self.minute_of_day % 60,
            self.second
        )
    }
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date `days` after 1970-01-01 (the inverse of `days_from_civil`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
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

    #[test]
    fn days_round_trip_through_the_calendar() {
        for days in [-719_162, -1, 0, 1, 10_957, 2_932_896] {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }
}
