//! Times as msgspec reads and writes them (`datetime` with a time zone), and the spelling
//! `scr.schema._spelled_as_rfc3339` requires on top.
//!
//! msgspec reads `YYYY-MM-DD`, `T`/`t`/space, `HH:MM:SS`, an optional fraction of any length
//! (rounded to the microsecond: half up on the seventh digit, carrying into the date), then
//! `Z`/`z` or `±HH:MM`/`±HHMM`. It writes `YYYY-MM-DDTHH:MM:SS[.ffffff]` and `Z` for a zero
//! offset, else `±HH:MM`.

/// Microseconds per second, minute and day.
const SECOND_US: i64 = 1_000_000;
const MINUTE_US: i64 = 60 * SECOND_US;
const DAY_US: i64 = 86_400 * SECOND_US;
/// The largest year a Python `datetime` holds.
const MAX_YEAR: i32 = 9999;

/// A local date and time with its offset from UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    microsecond: u32,
    offset_minutes: i32,
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `width` ASCII digits at `at`, as a number.
fn fixint(text: &[u8], at: usize, width: usize) -> Option<u32> {
    let digits = text.get(at..at + width)?;
    digits.iter().try_fold(0u32, |value, &byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + u32::from(byte - b'0'))
    })
}

/// The time `text` writes, read as msgspec reads a `datetime` that must carry a time zone;
/// `None` where msgspec refuses it (or reads it without a zone).
pub fn parse(text: &str) -> Option<Moment> {
    let bytes = text.as_bytes();
    if bytes.len() < 19
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let mut moment = Moment {
        year: fixint(bytes, 0, 4)? as i32,
        month: fixint(bytes, 5, 2)?,
        day: fixint(bytes, 8, 2)?,
        hour: fixint(bytes, 11, 2)?,
        minute: fixint(bytes, 14, 2)?,
        second: fixint(bytes, 17, 2)?,
        microsecond: 0,
        offset_minutes: 0,
    };
    let mut at = 19;
    let mut round_up = false;
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while at < start + 6 && bytes.get(at).is_some_and(u8::is_ascii_digit) {
            moment.microsecond = moment.microsecond * 10 + u32::from(bytes[at] - b'0');
            at += 1;
        }
        let read = at - start;
        if read == 0 {
            return None;
        }
        moment.microsecond *= 10u32.pow((6 - read) as u32);
        if read == 6 && bytes.get(at).is_some_and(u8::is_ascii_digit) {
            round_up = bytes[at] >= b'5';
            while bytes.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
        }
    }
    moment.offset_minutes = offset(&bytes[at..])?;
    let valid = moment.year != 0
        && (1..=12).contains(&moment.month)
        && moment.day >= 1
        && moment.day <= days_in_month(moment.year, moment.month)
        && moment.hour <= 23
        && moment.minute <= 59
        && moment.second <= 59;
    if !valid {
        return None;
    }
    if round_up {
        moment.add_one_microsecond()?;
    }
    Some(moment)
}

/// The offset in minutes a zone suffix writes (`Z`, `z`, `±HH:MM`, `±HHMM`); `None` for
/// anything else, an absent zone included.
fn offset(zone: &[u8]) -> Option<i32> {
    let sign = match zone.first()? {
        b'Z' | b'z' => return (zone.len() == 1).then_some(0),
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if zone.len() < 4 {
        return None;
    }
    let hours = fixint(zone, 1, 2)?;
    let minutes_at = if zone[3] == b':' { 4 } else { 3 };
    if zone.len() != minutes_at + 2 {
        return None;
    }
    let minutes = fixint(zone, minutes_at, 2)?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 60 + minutes) as i32)
}

/// Whether msgspec's reading of `text` is also RFC 3339 (`scr.schema._spelled_as_rfc3339`):
/// a `T` or `t`, and an offset with its colon.
pub fn spelled_as_rfc3339(text: &str) -> bool {
    let bytes = text.as_bytes();
    let n = bytes.len();
    n >= 11
        && matches!(bytes[10], b'T' | b't')
        && (matches!(bytes[n - 1], b'Z' | b'z') || bytes[n - 3] == b':')
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date `days` after 1970-01-01 (the inverse of `days_from_civil`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
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
    (year, month as u32, day as u32)
}

impl Moment {
    /// The same instant at offset zero; `None` outside the years 1-9999 (Python's `datetime`).
    pub fn in_utc(&self) -> Option<Moment> {
        let minutes = days_from_civil(self.year, self.month, self.day) * 1440
            + i64::from(self.hour * 60 + self.minute)
            - i64::from(self.offset_minutes);
        let (year, month, day) = civil_from_days(minutes.div_euclid(1440));
        let minute_of_day = minutes.rem_euclid(1440) as u32;
        if !(1..=i64::from(MAX_YEAR)).contains(&year) {
            return None;
        }
        Some(Moment {
            year: year as i32,
            month,
            day,
            hour: minute_of_day / 60,
            minute: minute_of_day % 60,
            offset_minutes: 0,
            ..*self
        })
    }

    /// The time as msgspec writes it.
    pub fn text(&self) -> String {
        let mut out = Vec::with_capacity(32);
        self.write(&mut out);
        String::from_utf8(out).expect("a time is written in ASCII")
    }

    /// msgspec's rounding carry, refusing a year past 9999 as it does.
    fn add_one_microsecond(&mut self) -> Option<()> {
        self.microsecond += 1;
        if self.microsecond < 1_000_000 {
            return Some(());
        }
        self.microsecond = 0;
        self.second += 1;
        if self.second < 60 {
            return Some(());
        }
        self.second = 0;
        self.minute += 1;
        if self.minute < 60 {
            return Some(());
        }
        self.minute = 0;
        self.hour += 1;
        if self.hour < 24 {
            return Some(());
        }
        self.hour = 0;
        self.day += 1;
        if self.day <= days_in_month(self.year, self.month) {
            return Some(());
        }
        self.day = 1;
        self.month += 1;
        if self.month <= 12 {
            return Some(());
        }
        self.month = 1;
        self.year += 1;
        (self.year <= MAX_YEAR).then_some(())
    }

    /// The instant, in microseconds since 1970-01-01T00:00:00Z.
    pub fn epoch_us(&self) -> i64 {
        let clock = (i64::from(self.hour) * 60 + i64::from(self.minute)) * MINUTE_US
            + i64::from(self.second) * SECOND_US
            + i64::from(self.microsecond);
        days_from_civil(self.year, self.month, self.day) * DAY_US + clock
            - i64::from(self.offset_minutes) * MINUTE_US
    }

    /// Appends the time as msgspec writes it, as a JSON string.
    pub fn write_quoted(&self, out: &mut Vec<u8>) {
        out.push(b'"');
        self.write(out);
        out.push(b'"');
    }

    /// Appends the time as msgspec writes it, without quotes.
    fn write(&self, out: &mut Vec<u8>) {
        let year = self.year as u32;
        out.extend_from_slice(&digits(year / 100));
        out.extend_from_slice(&digits(year % 100));
        for (separator, value) in [
            (b'-', self.month),
            (b'-', self.day),
            (b'T', self.hour),
            (b':', self.minute),
            (b':', self.second),
        ] {
            out.push(separator);
            out.extend_from_slice(&digits(value));
        }
        if self.microsecond != 0 {
            out.push(b'.');
            for part in [
                self.microsecond / 10_000,
                self.microsecond / 100 % 100,
                self.microsecond % 100,
            ] {
                out.extend_from_slice(&digits(part));
            }
        }
        if self.offset_minutes == 0 {
            out.push(b'Z');
        } else {
            out.push(if self.offset_minutes < 0 { b'-' } else { b'+' });
            let minutes = self.offset_minutes.unsigned_abs();
            out.extend_from_slice(&digits(minutes / 60));
            out.push(b':');
            out.extend_from_slice(&digits(minutes % 60));
        }
    }
}

/// Two decimal digits of `value` (below 100).
fn digits(value: u32) -> [u8; 2] {
    [b'0' + (value / 10) as u8, b'0' + (value % 10) as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_through_the_calendar() {
        for days in [-719_162, -1, 0, 1, 10_957, 2_932_896] {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year as i32, month, day), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }

    fn written(text: &str) -> Option<String> {
        parse(text).map(|moment| {
            let mut out = Vec::new();
            moment.write(&mut out);
            String::from_utf8(out).unwrap()
        })
    }

    #[test]
    fn reads_and_writes_as_msgspec() {
        let cases = [
            ("2026-11-25T10:00:05Z", "2026-11-25T10:00:05Z"),
            ("2026-11-25t10:00:05z", "2026-11-25T10:00:05Z"),
            ("2026-11-25 10:00:05Z", "2026-11-25T10:00:05Z"),
            ("2026-11-25T10:00:05-00:00", "2026-11-25T10:00:05Z"),
            ("2026-11-25T10:00:05+0130", "2026-11-25T10:00:05+01:30"),
            (
                "2026-11-25T10:00:05.5-23:59",
                "2026-11-25T10:00:05.500000-23:59",
            ),
            ("2026-11-25T10:00:05.000000Z", "2026-11-25T10:00:05Z"),
            (
                "2026-11-25T10:00:05.1234565Z",
                "2026-11-25T10:00:05.123457Z",
            ),
            (
                "2026-11-25T10:00:05.12345649999Z",
                "2026-11-25T10:00:05.123456Z",
            ),
            ("2024-02-29T23:59:59.9999995Z", "2024-03-01T00:00:00Z"),
            (
                "2026-12-31T23:59:59.99999999+05:00",
                "2027-01-01T00:00:00+05:00",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(written(text).as_deref(), Some(expected), "{text}");
        }
    }

    #[test]
    fn refuses_what_msgspec_refuses() {
        for text in [
            "2026-11-25T10:00Z",
            "2026-11-25T10:00:05",
            "2026-11-25T10:00:05+01",
            "2026-11-25T24:00:00Z",
            "2026-11-25T10:60:00Z",
            "2026-11-25T10:00:60Z",
            "2026-02-29T10:00:00Z",
            "0000-01-01T00:00:00Z",
            "2026-11-25T10:00:05.Z",
            "2026-11-25T10:00:05+24:00",
            "2026-11-25T10:00:05+01:60",
            "2026-11-25T10:00:05Zx",
            "2026-11-25T10:00:05+01:000",
            "9999-12-31T23:59:59.9999995Z",
            "2026-11-25X10:00:05Z",
            "2026-11-25T10:00:05\u{0}",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
    }

    #[test]
    fn spelling_and_instants() {
        assert!(spelled_as_rfc3339("2026-11-25t10:00:05+01:00"));
        assert!(!spelled_as_rfc3339("2026-11-25 10:00:05Z"));
        assert!(!spelled_as_rfc3339("2026-11-25T10:00:05+0100"));
        assert_eq!(
            parse("2000-01-01T00:00:00Z").unwrap().epoch_us(),
            946_684_800 * SECOND_US
        );
        assert_eq!(
            parse("2000-01-01T01:00:00+01:00").unwrap().epoch_us(),
            parse("1999-12-31T23:00:00-01:00").unwrap().epoch_us()
        );
    }
}
