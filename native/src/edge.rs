//! The edge's per-event work: judge one arriving event's raw bytes and, when it is valid,
//! give what the writer needs, so that Python does none of it again.
//!
//! An event is accepted only if the Python path (`scr.schema.decode_event`, then
//! `scr.jsontext.duplicate_key`) would accept it; every other event is left to that path,
//! which says why it is refused (codes, paths, messages). The two agree on every input
//! (tests/native/test_edge_differential.py).

use blake2::digest::consts::U16;
use blake2::{Blake2b, Digest};

use crate::canonical::canonical_bytes;
use crate::event::Event;
use crate::event_rules::keeps_the_rules;
use crate::json;

/// `scr.schema.MAX_EVENT_BYTES`.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// The digest compared on duplicates: BLAKE2b with a 16-byte output (`hashlib.blake2b(...,
/// digest_size=16)`).
pub type EventDigest = [u8; 16];

/// An accepted event: what the edge hands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub event_id: String,
    pub tenant: String,
    pub session_id: String,
    pub model: String,
    pub canonical: Vec<u8>,
    pub digest: EventDigest,
}

/// BLAKE2b-128 of `bytes`.
pub fn digest(bytes: &[u8]) -> EventDigest {
    Blake2b::<U16>::digest(bytes).into()
}

/// `raw` accepted (valid schema v1.2, no repeated key, its times no later than `latest_us`),
/// or `None`: refused, or not certain to be accepted, for the Python path to judge.
pub fn check_event(raw: &[u8], latest_us: i64) -> Option<Accepted> {
    if raw.len() > MAX_EVENT_BYTES {
        return None;
    }
    let value = json::parse(raw)?;
    let event = Event::read(&value)?;
    if !keeps_the_rules(&event, latest_us) {
        return None;
    }
    let canonical = canonical_bytes(&event);
    Some(Accepted {
        event_id: event.event_id.clone().into_owned(),
        tenant: event.tenant().to_owned(),
        session_id: event.session.session_id.clone().into_owned(),
        model: event.usage.model.clone().into_owned(),
        digest: digest(&canonical),
        canonical,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATEST_US: i64 = 1_800_000_000_000_000; // 2027-01-15
    const EVENT: &str = r#"{"event_type":"session.completed","event_id":"evt_1","timestamp":"2026-11-25T10:00:05Z",
        "session":{"session_id":"s_1","session_type":"chat","start_time":"2026-11-25T09:58:00+01:00",
        "end_time":"2026-11-25T09:00:00.5z","duration_ms":120500},
        "user":{"user_id":"user_42","organization_id":"org_acme","tier":"pro"},
        "usage":{"input_tokens":1200,"output_tokens":300,"total_tokens":1500,"model":"gpt-4o",
        "estimated_cost_usd":0.0075,"provider":null},
        "outcome":{"status":"success","final_message":"caf\u00e9","error_code":null},
        "metadata":{"source_ip":"::1","custom_tags":{"b":"1","a":"2"}}}"#;

    fn with(from: &str, to: &str) -> String {
        assert!(EVENT.contains(from), "{from}");
        EVENT.replacen(from, to, 1)
    }

    #[test]
    fn a_valid_event_is_accepted_with_its_canonical_bytes() {
        let accepted = check_event(EVENT.as_bytes(), LATEST_US).unwrap();
        assert_eq!(accepted.event_id, "evt_1");
        assert_eq!(accepted.tenant, "org_acme");
        let expected = concat!(
            r#"{"event_id":"evt_1","event_type":"session.completed","metadata":{"custom_tags":{"a":"2","b":"1"},"source_ip":"::1"},"#,
            r#""outcome":{"final_message":"café","status":"success"},"#,
            r#""session":{"duration_ms":120500,"end_time":"2026-11-25T09:00:00.500000Z","session_id":"s_1","session_type":"chat","start_time":"2026-11-25T09:58:00+01:00"},"#,
            r#""timestamp":"2026-11-25T10:00:05Z","usage":{"estimated_cost_usd":"0.0075","input_tokens":1200,"model":"gpt-4o","output_tokens":300,"total_tokens":1500},"#,
            r#""user":{"organization_id":"org_acme","tier":"pro","user_id":"user_42"}}"#
        );
        assert_eq!(
            String::from_utf8(accepted.canonical.clone()).unwrap(),
            expected
        );
        assert_eq!(accepted.digest, digest(expected.as_bytes()));
    }

    #[test]
    fn each_broken_rule_leaves_the_event_to_the_reference() {
        let broken = [
            ("\"total_tokens\":1500", "\"total_tokens\":1501"),
            ("\"total_tokens\":1500", "\"total_tokens\":1500.0"),
            ("\"duration_ms\":120500", "\"duration_ms\":122000"),
            ("\"2026-11-25T10:00:05Z\"", "\"2026-11-25 10:00:05Z\""),
            ("\"2026-11-25T10:00:05Z\"", "\"1999-12-31T23:59:59Z\""),
            ("\"2026-11-25T10:00:05Z\"", "\"2027-11-25T10:00:05Z\""),
            ("T09:00:00.5z", "T08:00:00.5z"),
            ("\"source_ip\":\"::1\"", "\"source_ip\":\"::1::\""),
            ("0.0075", "-0.0075"),
            ("0.0075", "\"7.5e-3 \""),
            ("\"tier\":\"pro\"", "\"tier\":\"Pro\""),
            ("\"evt_1\"", "\"evt 1\""),
            ("\"b\":\"1\"", "\"a\":\"1\""),
            ("\"provider\":null", "\"provider\":null,\"extra\":1"),
            ("\"session_id\":\"s_1\",", ""),
        ];
        for (from, to) in broken {
            assert_eq!(
                check_event(with(from, to).as_bytes(), LATEST_US),
                None,
                "{to}"
            );
        }
        let huge = format!("{}{}", EVENT, " ".repeat(MAX_EVENT_BYTES));
        assert_eq!(check_event(huge.as_bytes(), LATEST_US), None);
    }

    #[test]
    fn the_digest_is_blake2b_128() {
        // hashlib.blake2b(b"abc", digest_size=16).hexdigest()
        let expected = "cf4ab791c62b8d2b2109c90275287816";
        let hex: String = digest(b"abc").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
    }
}
