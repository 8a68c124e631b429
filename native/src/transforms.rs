//! The built-in transforms of `scr.route.transforms` (`billing_v1`, `analytics_v2`,
//! `audit_v1`, `raw_v1`), a batch of events at a time.
//!
//! The events arrive as JSON lines, one event a line as msgspec writes an `Event`, its members
//! in any order (the ledger's canonical bytes sort them): `raw_v1` is each line with its
//! members in the declared order (`event_order`), and `audit_v1` wraps that. Each output is the JSON `encode_output(transform(event, entry))` gives, byte for byte.
//! An event this module cannot shape exactly as Python does (a time or an address in a form
//! msgspec never writes, a model name only Python's case folding can look up) has no output
//! here: the caller shapes that one with the Python reference.

use std::fmt;

use crate::event_order::{in_declared_order, in_declared_order_with_id};
use crate::event_view::{json_lines, EventView, Text};
use crate::ip_prefix::ip_prefix;
use crate::json_out::JsonObject;
use crate::prices::{Cost, PriceTable};
use crate::times::rfc3339_utc;

const TAG_COLUMN_PREFIX: &str = "tag_";
/// About the size of one output, to allocate it once.
const OUTPUT_CAPACITY_BYTES: usize = 768;

/// A built-in transform.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transform {
    Billing,
    Analytics,
    Audit,
    Raw,
}

impl Transform {
    /// The transform a destination names; `None` for a name that is not built in.
    pub fn named(name: &str) -> Option<Transform> {
        match name {
            "billing_v1" => Some(Transform::Billing),
            "analytics_v2" => Some(Transform::Analytics),
            "audit_v1" => Some(Transform::Audit),
            "raw_v1" => Some(Transform::Raw),
            _ => None,
        }
    }
}

/// The ledger facts of the entry an event was committed as (`EntryRef`).
#[derive(Clone, Copy, Debug)]
pub struct EntryFacts<'a> {
    pub seq: i64,
    pub tenant_seq: i64,
    pub entry_hash: &'a [u8],
}

/// Why a batch cannot be transformed at all.
#[derive(Debug, PartialEq)]
pub enum BatchError {
    NotJsonLines(String),
    Mismatch { events: usize, entries: usize },
    NoPriceTable,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::NotJsonLines(why) => write!(f, "the events are not JSON lines: {why}"),
            BatchError::Mismatch { events, entries } => {
                write!(
                    f,
                    "{events} events but {entries} ledger entries: the lengths differ"
                )
            }
            BatchError::NoPriceTable => write!(f, "billing_v1 needs a price table"),
        }
    }
}

impl std::error::Error for BatchError {}

/// Each event's output (`None`: shape it with the Python reference).
pub fn transform_events(
    transform: Transform,
    prices: Option<&PriceTable>,
    events: &[u8],
    entries: &[EntryFacts<'_>],
) -> Result<Vec<Option<Vec<u8>>>, BatchError> {
    let text =
        std::str::from_utf8(events).map_err(|error| BatchError::NotJsonLines(error.to_string()))?;
    let items = json_lines(text).ok_or_else(|| BatchError::NotJsonLines("an empty line".into()))?;
    if items.len() != entries.len() {
        return Err(BatchError::Mismatch {
            events: items.len(),
            entries: entries.len(),
        });
    }
    if transform == Transform::Billing && prices.is_none() {
        return Err(BatchError::NoPriceTable);
    }
    Ok(items
        .iter()
        .zip(entries)
        .map(|(&event, entry)| match (transform, prices) {
            (Transform::Billing, Some(table)) => billing_v1(&parsed(event)?, table),
            (Transform::Analytics, _) => analytics_v2(&parsed(event)?),
            (Transform::Audit, _) => audit_v1(event, entry),
            _ => raw_v1(event),
        })
        .collect())
}

fn parsed(event: &str) -> Option<EventView<'_>> {
    serde_json::from_str(event).ok()
}

/// `billing_v1`: what a billing system reconciles, costed with `prices`.
fn billing_v1(event: &EventView<'_>, prices: &PriceTable) -> Option<Vec<u8>> {
    let (usage, session) = (&event.usage, &event.session);
    let tokens = usage.tokens();
    let cost = match prices.cost(&usage.model.0, tokens) {
        Cost::Usd(text) => Some(text),
        Cost::Unpriced => None,
        Cost::Undecided => return None,
    };
    let mut row = JsonObject::with_capacity(OUTPUT_CAPACITY_BYTES);
    row.str("schema", "billing_v1")
        .str("event_id", &event.event_id.0)
        .str("tenant_id", &event.user.organization_id.0)
        .str("user_id", &event.user.user_id.0)
        .str("session_id", &session.session_id.0)
        .str("session_type", &session.session_type.0)
        .str("model", &usage.model.0)
        .opt_str("provider", text(&usage.provider))
        .uint("input_tokens", usage.input_tokens)
        .uint("output_tokens", usage.output_tokens)
        .uint("total_tokens", usage.total_tokens)
        .uint("cache_read_tokens", usage.cache_read_tokens.unwrap_or(0))
        .uint("cache_write_tokens", usage.cache_write_tokens.unwrap_or(0))
        .uint("reasoning_tokens", usage.reasoning_tokens.unwrap_or(0))
        .opt_str("cost_usd", cost.as_deref())
        .str("price_table_version", &prices.version)
        .bool("model_priced", cost.is_some())
        .str("estimated_cost_usd", &usage.estimated_cost_usd.0)
        .str("outcome_status", &event.outcome.status.0)
        .str("start_time", &rfc3339_utc(&session.start_time.0)?)
        .str("end_time", &rfc3339_utc(&session.end_time.0)?)
        .str("timestamp", &rfc3339_utc(&event.timestamp.0)?);
    Some(row.finish())
}

/// `analytics_v2`: one flat row, the source IP reduced to its network, a column per tag.
fn analytics_v2(event: &EventView<'_>) -> Option<Vec<u8>> {
    let (usage, session, metadata) = (&event.usage, &event.session, &event.metadata);
    let source_ip_prefix = match &metadata.source_ip {
        Some(address) => Some(ip_prefix(&address.0)?),
        None => None,
    };
    let mut row = JsonObject::with_capacity(OUTPUT_CAPACITY_BYTES);
    row.str("schema", "analytics_v2")
        .str("event_id", &event.event_id.0)
        .str("tenant_id", &event.user.organization_id.0)
        .str("user_id", &event.user.user_id.0)
        .str("tier", &event.user.tier.0)
        .str("session_id", &session.session_id.0)
        .str("session_type", &session.session_type.0)
        .str("start_time", &rfc3339_utc(&session.start_time.0)?)
        .str("end_time", &rfc3339_utc(&session.end_time.0)?)
        .uint("duration_ms", session.duration_ms)
        .str("model", &usage.model.0)
        .opt_str("provider", text(&usage.provider))
        .uint("input_tokens", usage.input_tokens)
        .uint("output_tokens", usage.output_tokens)
        .uint("total_tokens", usage.total_tokens)
        .opt_uint("cache_read_tokens", usage.cache_read_tokens)
        .opt_uint("reasoning_tokens", usage.reasoning_tokens)
        .str("estimated_cost_usd", &usage.estimated_cost_usd.0)
        .str("outcome_status", &event.outcome.status.0)
        .opt_str("error_code", text(&event.outcome.error_code))
        .opt_str("client_version", text(&metadata.client_version))
        .opt_str("source_ip_prefix", source_ip_prefix.as_deref());
    for (key, value) in &metadata.custom_tags.0 {
        row.prefixed_str(TAG_COLUMN_PREFIX, &key.0, &value.0);
    }
    Some(row.finish())
}

/// `audit_v1`: the whole event with its ledger position and hash.
fn audit_v1(event: &str, entry: &EntryFacts<'_>) -> Option<Vec<u8>> {
    let (event_id, ordered) = in_declared_order_with_id(event)?;
    let event_id: Text<'_> = serde_json::from_str(event_id).ok()?;
    let mut row = JsonObject::with_capacity(event.len() + OUTPUT_CAPACITY_BYTES / 4);
    row.str("schema", "audit_v1")
        .str("event_id", &event_id.0)
        .int("ledger_seq", entry.seq)
        .int("tenant_seq", entry.tenant_seq)
        .hex("entry_hash", entry.entry_hash)
        .raw("event", &ordered);
    Some(row.finish())
}

/// `raw_v1`: the whole event.
fn raw_v1(event: &str) -> Option<Vec<u8>> {
    in_declared_order(event)
}

fn text<'t>(value: &'t Option<Text<'_>>) -> Option<&'t str> {
    value.as_ref().map(|t| t.0.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = concat!(
        r#"{"event_type":"session.completed","event_id":"evt_1","timestamp":"2026-11-25T11:00:05.000100+01:00","#,
        r#""session":{"session_id":"s_1","session_type":"chat","start_time":"2026-11-25T09:58:00Z","#,
        r#""end_time":"2026-11-25T10:00:00Z","duration_ms":120000},"#,
        r#""user":{"user_id":"user_\"42\"","organization_id":"org_a","tier":"pro"},"#,
        r#""usage":{"input_tokens":1200,"output_tokens":300,"total_tokens":1500,"model":"gpt-4o-2024","#,
        r#""estimated_cost_usd":"0.0075","provider":"openai","cache_read_tokens":200},"#,
        r#""outcome":{"status":"success","final_message":"hi"},"#,
        r#""metadata":{"source_ip":"::ffff:203.0.113.77","custom_tags":{"z":"1","a":"\u0001"}}}"#
    );
    const ENTRY: EntryFacts<'static> = EntryFacts {
        seq: 7,
        tenant_seq: 3,
        entry_hash: &[0xab, 0x01],
    };

    fn one(transform: Transform, event: &str) -> Option<String> {
        let table = PriceTable::new(
            "2026-11".into(),
            &[("gpt-4o".into(), "2.5".into(), "10".into(), "1.25".into())],
        );
        let batch = format!("{event}\n");
        let mut outputs =
            transform_events(transform, Some(&table), batch.as_bytes(), &[ENTRY]).unwrap();
        outputs
            .pop()
            .unwrap()
            .map(|o| String::from_utf8(o).unwrap())
    }

    #[test]
    fn billing_v1_costs_the_event_and_normalizes_its_times() {
        assert_eq!(
            one(Transform::Billing, EVENT).unwrap(),
            concat!(
                r#"{"schema":"billing_v1","event_id":"evt_1","tenant_id":"org_a","user_id":"user_\"42\"","#,
                r#""session_id":"s_1","session_type":"chat","model":"gpt-4o-2024","provider":"openai","#,
                r#""input_tokens":1200,"output_tokens":300,"total_tokens":1500,"cache_read_tokens":200,"#,
                r#""cache_write_tokens":0,"reasoning_tokens":0,"cost_usd":"0.0057500000","#,
                r#""price_table_version":"2026-11","model_priced":true,"estimated_cost_usd":"0.0075","#,
                r#""outcome_status":"success","start_time":"2026-11-25T09:58:00Z","#,
                r#""end_time":"2026-11-25T10:00:00Z","timestamp":"2026-11-25T10:00:05.000100Z"}"#
            )
        );
    }

    #[test]
    fn analytics_v2_writes_nulls_the_prefix_and_a_column_per_tag_in_order() {
        assert_eq!(
            one(Transform::Analytics, EVENT).unwrap(),
            concat!(
                r#"{"schema":"analytics_v2","event_id":"evt_1","tenant_id":"org_a","user_id":"user_\"42\"","#,
                r#""tier":"pro","session_id":"s_1","session_type":"chat","start_time":"2026-11-25T09:58:00Z","#,
                r#""end_time":"2026-11-25T10:00:00Z","duration_ms":120000,"model":"gpt-4o-2024","#,
                r#""provider":"openai","input_tokens":1200,"output_tokens":300,"total_tokens":1500,"#,
                r#""cache_read_tokens":200,"reasoning_tokens":null,"estimated_cost_usd":"0.0075","#,
                r#""outcome_status":"success","error_code":null,"client_version":null,"#,
                r#""source_ip_prefix":"203.0.113.0/24","tag_z":"1","tag_a":"\u0001"}"#
            )
        );
    }

    #[test]
    fn audit_v1_and_raw_v1_carry_the_event_in_its_declared_order() {
        let audited = format!(
            r#"{{"schema":"audit_v1","event_id":"evt_1","ledger_seq":7,"tenant_seq":3,"entry_hash":"ab01","event":{EVENT}}}"#
        );
        assert_eq!(one(Transform::Audit, EVENT).unwrap(), audited);
        assert_eq!(one(Transform::Raw, EVENT).unwrap(), EVENT);
        // as the ledger holds it: the user's members sorted
        let sorted = EVENT.replace(
            r#""user":{"user_id":"user_\"42\"","organization_id":"org_a","tier":"pro"}"#,
            r#""user":{"organization_id":"org_a","tier":"pro","user_id":"user_\"42\""}"#,
        );
        assert_ne!(sorted, EVENT);
        assert_eq!(one(Transform::Audit, &sorted).unwrap(), audited);
        assert_eq!(one(Transform::Raw, &sorted).unwrap(), EVENT);
        assert_eq!(one(Transform::Raw, "[1]"), None);
    }

    #[test]
    fn an_event_only_python_can_shape_has_no_output() {
        let zoned = EVENT.replace("::ffff:203.0.113.77", "fe80::1%eth0");
        assert_eq!(one(Transform::Analytics, &zoned), None);
        let folded = EVENT.replace("gpt-4o-2024", "gpt-4\u{212a}");
        assert_eq!(one(Transform::Billing, &folded), None);
        assert_eq!(one(Transform::Billing, r#"{"event_id":"x"}"#), None);
    }

    #[test]
    fn a_batch_that_is_not_one_is_refused() {
        let refused = |events: &[u8], entries: &[EntryFacts<'_>], prices| {
            transform_events(Transform::Billing, prices, events, entries).unwrap_err()
        };
        assert!(matches!(
            refused(b"1\n\n", &[], None),
            BatchError::NotJsonLines(_)
        ));
        assert!(matches!(
            refused(b"\xff", &[], None),
            BatchError::NotJsonLines(_)
        ));
        assert_eq!(
            refused(b"", &[ENTRY], None),
            BatchError::Mismatch {
                events: 0,
                entries: 1
            }
        );
        assert_eq!(refused(b"", &[], None), BatchError::NoPriceTable);
        assert_eq!(Transform::named("raw_v1"), Some(Transform::Raw));
        assert_eq!(Transform::named("mypkg:shape"), None);
    }
}
