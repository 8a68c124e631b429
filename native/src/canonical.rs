//! The canonical bytes of an accepted event, as `scr.schema.canonical_bytes` writes them:
//! msgspec's `Encoder(order="sorted", decimal_format="string")` of the Event Struct. Fields
//! in name order, no whitespace, UTF-8; absent optional fields and empty `custom_tags` left
//! out (`omit_defaults`), `metadata` always written, times and money re-written as msgspec
//! writes a `datetime` and a `Decimal`.

use crate::event::{Content, Event, Metadata, Outcome, Session, Usage, User};
use crate::json_out::write_str;

/// A JSON object being written, its members given in name order.
struct Object<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> Object<'o> {
    fn open(out: &'o mut Vec<u8>) -> Object<'o> {
        out.push(b'{');
        Object { out, first: true }
    }

    fn key(&mut self, name: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_str(self.out, name);
        self.out.push(b':');
        self.out
    }

    fn text(&mut self, name: &str, value: &str) {
        let out = self.key(name);
        write_str(out, value);
    }

    fn optional_text(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.text(name, value);
        }
    }

    fn integer(&mut self, name: &str, value: u64) {
        let out = self.key(name);
        write_integer(out, value);
    }

    fn optional_integer(&mut self, name: &str, value: Option<u64>) {
        if let Some(value) = value {
            self.integer(name, value);
        }
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// Appends `value` in decimal.
fn write_integer(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = value;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// The canonical bytes of `event`.
pub fn canonical_bytes(event: &Event<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let mut object = Object::open(&mut out);
    if let Some(content) = &event.content {
        write_content(object.key("content"), content);
    }
    object.text("event_id", &event.event_id);
    object.text("event_type", crate::event::EVENT_TYPE);
    write_metadata(object.key("metadata"), &event.metadata);
    write_outcome(object.key("outcome"), &event.outcome);
    write_session(object.key("session"), &event.session);
    event.timestamp.moment.write_quoted(object.key("timestamp"));
    write_usage(object.key("usage"), &event.usage);
    write_user(object.key("user"), &event.user);
    object.close();
    out
}

fn write_content(out: &mut Vec<u8>, content: &Content<'_>) {
    let mut object = Object::open(out);
    object.optional_text("summary", content.summary.as_deref());
    if let Some(outputs) = &content.tool_outputs {
        let out = object.key("tool_outputs");
        out.push(b'[');
        for (n, output) in outputs.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            write_str(out, output);
        }
        out.push(b']');
    }
    object.optional_text("user_request", content.user_request.as_deref());
    object.close();
}

fn write_metadata(out: &mut Vec<u8>, metadata: &Metadata<'_>) {
    let mut object = Object::open(out);
    object.optional_text("client_version", metadata.client_version.as_deref());
    if !metadata.custom_tags.is_empty() {
        let mut tags: Vec<&(_, _)> = metadata.custom_tags.iter().collect();
        // Python orders str keys by code point, which UTF-8's byte order keeps
        tags.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut inner = Object::open(object.key("custom_tags"));
        for (key, value) in tags {
            inner.text(key, value);
        }
        inner.close();
    }
    object.optional_text("source_ip", metadata.source_ip.as_deref());
    object.close();
}

fn write_outcome(out: &mut Vec<u8>, outcome: &Outcome<'_>) {
    let mut object = Object::open(out);
    object.optional_text("error_code", outcome.error_code.as_deref());
    object.optional_text("final_message", outcome.final_message.as_deref());
    object.text("status", &outcome.status);
    object.close();
}

fn write_session(out: &mut Vec<u8>, session: &Session<'_>) {
    let mut object = Object::open(out);
    object.integer("duration_ms", session.duration_ms);
    session.end_time.moment.write_quoted(object.key("end_time"));
    object.text("session_id", &session.session_id);
    object.text("session_type", &session.session_type);
    session
        .start_time
        .moment
        .write_quoted(object.key("start_time"));
    object.close();
}

fn write_usage(out: &mut Vec<u8>, usage: &Usage<'_>) {
    let mut object = Object::open(out);
    object.optional_integer("cache_read_tokens", usage.cache_read_tokens);
    object.optional_integer("cache_write_tokens", usage.cache_write_tokens);
    let cost = object.key("estimated_cost_usd");
    cost.push(b'"');
    usage.estimated_cost_usd.write(cost);
    cost.push(b'"');
    object.integer("input_tokens", usage.input_tokens);
    object.text("model", &usage.model);
    object.integer("output_tokens", usage.output_tokens);
    object.optional_text("provider", usage.provider.as_deref());
    object.optional_integer("reasoning_tokens", usage.reasoning_tokens);
    object.integer("total_tokens", usage.total_tokens);
    object.close();
}

fn write_user(out: &mut Vec<u8>, user: &User<'_>) {
    let mut object = Object::open(out);
    object.text("organization_id", &user.organization_id);
    object.text("tier", &user.tier);
    object.text("user_id", &user.user_id);
    object.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_written_in_decimal() {
        for value in [0, 7, 10, 1500, 1 << 53, u64::MAX] {
            let mut out = Vec::new();
            write_integer(&mut out, value);
            assert_eq!(out, value.to_string().into_bytes());
        }
    }
}
