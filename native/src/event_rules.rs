//! The rules `scr.schema._event_problems` and `_spelling_problems` add to the declarations:
//! token totals, the times' window and order, the duration, the source address, and how
//! times are spelled. (Money's bounds and spelling, and content's byte limit, are checked
//! where those values are read.)

use crate::address::is_ip_address;
use crate::datetime::spelled_as_rfc3339;
use crate::event::{Event, Session, Usage};

/// `scr.schema.EARLIEST_EVENT_TIME`, 2000-01-01T00:00:00Z, in microseconds since 1970.
pub const EARLIEST_EVENT_TIME_US: i64 = 946_684_800_000_000;
/// `scr.schema.DURATION_TOLERANCE_MS`.
const DURATION_TOLERANCE_MS: f64 = 1000.0;
const US_PER_SECOND: f64 = 1e6;
const MS_PER_SECOND: f64 = 1e3;

/// Whether `event` keeps every rule, its times no later than `latest_us` (the server's clock
/// plus a day, in microseconds since 1970).
pub fn keeps_the_rules(event: &Event<'_>, latest_us: i64) -> bool {
    tokens_add_up(&event.usage)
        && times_in_window(event, latest_us)
        && duration_agrees(&event.session)
        && event
            .metadata
            .source_ip
            .as_deref()
            .map_or(true, is_ip_address)
        && times_spelled_as_rfc3339(event)
}

fn tokens_add_up(usage: &Usage<'_>) -> bool {
    usage.input_tokens + usage.output_tokens == usage.total_tokens
}

fn times_in_window(event: &Event<'_>, latest_us: i64) -> bool {
    [
        &event.timestamp,
        &event.session.start_time,
        &event.session.end_time,
    ]
    .iter()
    .all(|time| (EARLIEST_EVENT_TIME_US..=latest_us).contains(&time.moment.epoch_us()))
}

/// `end_time >= start_time`, and `duration_ms` within the tolerance of their difference,
/// computed in floating point exactly as Python does (`timedelta.total_seconds() * 1000`).
fn duration_agrees(session: &Session<'_>) -> bool {
    let elapsed_us = session.end_time.moment.epoch_us() - session.start_time.moment.epoch_us();
    if elapsed_us < 0 {
        return false;
    }
    let elapsed_ms = elapsed_us as f64 / US_PER_SECOND * MS_PER_SECOND;
    (elapsed_ms - session.duration_ms as f64).abs() <= DURATION_TOLERANCE_MS
}

fn times_spelled_as_rfc3339(event: &Event<'_>) -> bool {
    [
        &event.timestamp,
        &event.session.start_time,
        &event.session.end_time,
    ]
    .iter()
    .all(|time| spelled_as_rfc3339(&time.written))
}
