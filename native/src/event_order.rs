//! An event's JSON with its members in the order `scr.schema` declares them, which is how
//! msgspec writes an `Event` (the order `audit_v1` and `raw_v1` deliver).
//!
//! The ledger holds each event's canonical bytes, its keys sorted; `audit_v1` and `raw_v1`
//! deliver the event as the output encoder writes the decoded `Event`. Both were written by
//! msgspec from the same value, so they differ only in the order of the members of each
//! declared object: this module moves them, copying every value's text as it is (a tag
//! object keeps its members in the order written, as a decoded dict does). A member the
//! schema does not declare, a repeated one or a value of the wrong kind gives `None`: the
//! caller then lets the Python reference shape that event.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json_out::JsonObject;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventParts<'a> {
    #[serde(borrow)]
    event_type: &'a RawValue,
    #[serde(borrow)]
    event_id: &'a RawValue,
    #[serde(borrow)]
    timestamp: &'a RawValue,
    #[serde(borrow)]
    session: SessionParts<'a>,
    #[serde(borrow)]
    user: UserParts<'a>,
    #[serde(borrow)]
    usage: UsageParts<'a>,
    #[serde(borrow)]
    outcome: OutcomeParts<'a>,
    #[serde(borrow, default)]
    metadata: Option<MetadataParts<'a>>,
    #[serde(borrow, default)]
    content: Option<ContentParts<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionParts<'a> {
    #[serde(borrow)]
    session_id: &'a RawValue,
    #[serde(borrow)]
    session_type: &'a RawValue,
    #[serde(borrow)]
    start_time: &'a RawValue,
    #[serde(borrow)]
    end_time: &'a RawValue,
    #[serde(borrow)]
    duration_ms: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserParts<'a> {
    #[serde(borrow)]
    user_id: &'a RawValue,
    #[serde(borrow)]
    organization_id: &'a RawValue,
    #[serde(borrow)]
    tier: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageParts<'a> {
    #[serde(borrow)]
    input_tokens: &'a RawValue,
    #[serde(borrow)]
    output_tokens: &'a RawValue,
    #[serde(borrow)]
    total_tokens: &'a RawValue,
    #[serde(borrow)]
    model: &'a RawValue,
    #[serde(borrow)]
    estimated_cost_usd: &'a RawValue,
    #[serde(borrow, default)]
    provider: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cache_read_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cache_write_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reasoning_tokens: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeParts<'a> {
    #[serde(borrow)]
    status: &'a RawValue,
    #[serde(borrow, default)]
    final_message: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error_code: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataParts<'a> {
    #[serde(borrow, default)]
    client_version: Option<&'a RawValue>,
    #[serde(borrow, default)]
    source_ip: Option<&'a RawValue>,
    #[serde(borrow, default)]
    custom_tags: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContentParts<'a> {
    #[serde(borrow, default)]
    user_request: Option<&'a RawValue>,
    #[serde(borrow, default)]
    summary: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_outputs: Option<&'a RawValue>,
}

/// The members of one object, each written if present.
fn object(members: &[(&str, Option<&RawValue>)]) -> Vec<u8> {
    let mut row = JsonObject::with_capacity(members.len() * 32);
    for (name, value) in members {
        if let Some(value) = value {
            row.raw(name, value.get().as_bytes());
        }
    }
    row.finish()
}

/// The event `line` (JSON as msgspec writes an `Event`, its members in any order) with the
/// members of each declared object in their declared order; `None` when it is not one.
/// JSON `null` for an optional member is left out, as msgspec leaves out a default.
pub fn in_declared_order(line: &str) -> Option<Vec<u8>> {
    in_declared_order_with_id(line).map(|(_, ordered)| ordered)
}

/// `in_declared_order`, and the event's `event_id` as it is written in the line (JSON).
pub fn in_declared_order_with_id(line: &str) -> Option<(&str, Vec<u8>)> {
    let event: EventParts<'_> = serde_json::from_str(line).ok()?;
    Some((event.event_id.get(), written(&event, line.len())))
}

fn written(event: &EventParts<'_>, size: usize) -> Vec<u8> {
    let (session, user, usage, outcome) =
        (&event.session, &event.user, &event.usage, &event.outcome);
    let session = object(&[
        ("session_id", Some(session.session_id)),
        ("session_type", Some(session.session_type)),
        ("start_time", Some(session.start_time)),
        ("end_time", Some(session.end_time)),
        ("duration_ms", Some(session.duration_ms)),
    ]);
    let user = object(&[
        ("user_id", Some(user.user_id)),
        ("organization_id", Some(user.organization_id)),
        ("tier", Some(user.tier)),
    ]);
    let usage = object(&[
        ("input_tokens", Some(usage.input_tokens)),
        ("output_tokens", Some(usage.output_tokens)),
        ("total_tokens", Some(usage.total_tokens)),
        ("model", Some(usage.model)),
        ("estimated_cost_usd", Some(usage.estimated_cost_usd)),
        ("provider", usage.provider),
        ("cache_read_tokens", usage.cache_read_tokens),
        ("cache_write_tokens", usage.cache_write_tokens),
        ("reasoning_tokens", usage.reasoning_tokens),
    ]);
    let outcome = object(&[
        ("status", Some(outcome.status)),
        ("final_message", outcome.final_message),
        ("error_code", outcome.error_code),
    ]);
    let mut row = JsonObject::with_capacity(size + 16);
    row.raw("event_type", event.event_type.get().as_bytes())
        .raw("event_id", event.event_id.get().as_bytes())
        .raw("timestamp", event.timestamp.get().as_bytes())
        .raw("session", &session)
        .raw("user", &user)
        .raw("usage", &usage)
        .raw("outcome", &outcome);
    if let Some(metadata) = &event.metadata {
        row.raw(
            "metadata",
            &object(&[
                ("client_version", metadata.client_version),
                ("source_ip", metadata.source_ip),
                ("custom_tags", metadata.custom_tags),
            ]),
        );
    }
    if let Some(content) = &event.content {
        row.raw(
            "content",
            &object(&[
                ("user_request", content.user_request),
                ("summary", content.summary),
                ("tool_outputs", content.tool_outputs),
            ]),
        );
    }
    row.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECLARED: &str = concat!(
        r#"{"event_type":"session.completed","event_id":"evt_\"1\"","timestamp":"2026-11-25T10:00:05Z","#,
        r#""session":{"session_id":"s_1","session_type":"chat","start_time":"2026-11-25T09:58:00Z","#,
        r#""end_time":"2026-11-25T10:00:00Z","duration_ms":120000},"#,
        r#""user":{"user_id":"u","organization_id":"org_a","tier":"pro"},"#,
        r#""usage":{"input_tokens":1,"output_tokens":2,"total_tokens":3,"model":"m","#,
        r#""estimated_cost_usd":"0.0075","provider":"openai","reasoning_tokens":0},"#,
        r#""outcome":{"status":"success","final_message":"a\nb"},"#,
        r#""metadata":{"source_ip":"203.0.113.7","custom_tags":{"z":"1","a":"2"}},"#,
        r#""content":{"user_request":"q","tool_outputs":["x",""]}}"#
    );
    const SORTED: &str = concat!(
        r#"{"content":{"tool_outputs":["x",""],"user_request":"q"},"event_id":"evt_\"1\"","#,
        r#""event_type":"session.completed","metadata":{"custom_tags":{"z":"1","a":"2"},"#,
        r#""source_ip":"203.0.113.7"},"outcome":{"final_message":"a\nb","status":"success"},"#,
        r#""session":{"duration_ms":120000,"end_time":"2026-11-25T10:00:00Z","session_id":"s_1","#,
        r#""session_type":"chat","start_time":"2026-11-25T09:58:00Z"},"#,
        r#""timestamp":"2026-11-25T10:00:05Z","#,
        r#""usage":{"estimated_cost_usd":"0.0075","input_tokens":1,"model":"m","output_tokens":2,"#,
        r#""provider":"openai","reasoning_tokens":0,"total_tokens":3},"#,
        r#""user":{"organization_id":"org_a","tier":"pro","user_id":"u"}}"#
    );

    fn ordered(line: &str) -> Option<String> {
        in_declared_order(line).map(|out| String::from_utf8(out).unwrap())
    }

    #[test]
    fn sorted_members_move_to_the_declared_order_and_values_stay_as_written() {
        assert_eq!(ordered(SORTED).unwrap(), DECLARED);
        assert_eq!(ordered(DECLARED).unwrap(), DECLARED);
    }

    #[test]
    fn absent_and_null_optional_members_are_left_out() {
        let bare = DECLARED
            .replace(
                r#","metadata":{"source_ip":"203.0.113.7","custom_tags":{"z":"1","a":"2"}}"#,
                "",
            )
            .replace(
                r#","content":{"user_request":"q","tool_outputs":["x",""]}"#,
                "",
            );
        assert_eq!(ordered(&bare).unwrap(), bare);
        let nulled = bare.replace(r#""provider":"openai""#, r#""provider":null"#);
        assert_eq!(
            ordered(&nulled).unwrap(),
            bare.replace(r#","provider":"openai""#, "")
        );
    }

    #[test]
    fn what_the_schema_does_not_declare_is_left_to_python() {
        assert_eq!(ordered(&DECLARED.replace("\"tier\"", "\"grade\"")), None);
        assert_eq!(
            ordered(&DECLARED.replace("{\"event_type\"", "{\"extra\":1,\"event_type\"")),
            None
        );
        let repeated = DECLARED.replace("{\"event_type\"", "{\"event_id\":\"x\",\"event_type\"");
        assert_eq!(ordered(&repeated), None);
        assert_eq!(ordered(r#"{"event_id":"x"}"#), None);
        assert_eq!(ordered("[1]"), None);
        assert_eq!(ordered(&DECLARED[..40]), None);
    }
}
