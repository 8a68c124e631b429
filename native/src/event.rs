//! The `session.completed` event, schema v1.2, as `scr.schema`'s Structs declare it: read
//! from a JSON tree with every declared type, enum, bound and pattern, and unknown fields
//! refused. What relates two fields is `event_rules`; how it is written back, `canonical`.
//!
//! Reading answers `None` for any event the declarations refuse: the caller then lets the
//! Python reference say why.

use std::borrow::Cow;

use crate::datetime::{self, Moment};
use crate::json::Value;
use crate::money::Amount;

/// `scr.schema` bounds, in characters unless named otherwise.
const NAME_CHARS: usize = 256;
const ID_CHARS: usize = 128;
const TEXT_CHARS: usize = 256 * 1024;
const ERROR_CODE_CHARS: usize = 256;
const CLIENT_VERSION_CHARS: usize = 128;
const IP_ADDRESS_CHARS: usize = 64;
const TAG_KEY_CHARS: usize = 128;
const TAG_VALUE_CHARS: usize = 1024;
pub const MAX_CUSTOM_TAGS: usize = 64;
pub const MAX_CONTENT_TEXT_BYTES: usize = 32 * 1024;
pub const MAX_TOOL_OUTPUTS: usize = 64;
/// `TokenCount`: `0 <= n <= 2**53`.
const MAX_TOKEN_COUNT: u64 = 1 << 53;

pub const EVENT_TYPE: &str = "session.completed";
const SESSION_TYPES: [&str; 5] = ["chat", "api", "autonomous", "webhook", "realtime"];
const TIERS: [&str; 3] = ["free", "pro", "enterprise"];
const OUTCOME_STATUSES: [&str; 4] = ["success", "error", "timeout", "user_terminated"];

type Text<'a> = Cow<'a, str>;

/// A time as the JSON wrote it and as msgspec read it.
#[derive(Debug)]
pub struct Time<'a> {
    pub written: Text<'a>,
    pub moment: Moment,
}

#[derive(Debug)]
pub struct Session<'a> {
    pub session_id: Text<'a>,
    pub session_type: Text<'a>,
    pub start_time: Time<'a>,
    pub end_time: Time<'a>,
    pub duration_ms: u64,
}

#[derive(Debug)]
pub struct User<'a> {
    pub user_id: Text<'a>,
    pub organization_id: Text<'a>,
    pub tier: Text<'a>,
}

#[derive(Debug)]
pub struct Usage<'a> {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub model: Text<'a>,
    pub estimated_cost_usd: Amount,
    pub provider: Option<Text<'a>>,
    pub cache_read_tokens: Option<u64>,
    pub cache_write_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
}

#[derive(Debug)]
pub struct Outcome<'a> {
    pub status: Text<'a>,
    pub final_message: Option<Text<'a>>,
    pub error_code: Option<Text<'a>>,
}

#[derive(Debug, Default)]
pub struct Metadata<'a> {
    pub client_version: Option<Text<'a>>,
    pub source_ip: Option<Text<'a>>,
    pub custom_tags: Vec<(Text<'a>, Text<'a>)>,
}

#[derive(Debug)]
pub struct Content<'a> {
    pub user_request: Option<Text<'a>>,
    pub summary: Option<Text<'a>>,
    pub tool_outputs: Option<Vec<Text<'a>>>,
}

#[derive(Debug)]
pub struct Event<'a> {
    pub event_id: Text<'a>,
    pub timestamp: Time<'a>,
    pub session: Session<'a>,
    pub user: User<'a>,
    pub usage: Usage<'a>,
    pub outcome: Outcome<'a>,
    pub metadata: Metadata<'a>,
    pub content: Option<Content<'a>>,
}

/// The members of an object, or `None` for any other value.
fn members<'v, 'a>(value: &'v Value<'a>) -> Option<&'v [(Cow<'a, str>, Value<'a>)]> {
    match value {
        Value::Object(members) => Some(members),
        _ => None,
    }
}

fn text<'a>(value: &Value<'a>) -> Option<Text<'a>> {
    match value {
        Value::String(text) => Some(text.clone()),
        _ => None,
    }
}

/// A string of `min..=max` characters (msgspec's `min_length`/`max_length`).
fn bounded<'a>(value: &Value<'a>, min: usize, max: usize) -> Option<Text<'a>> {
    let text = text(value)?;
    // a character is at most 4 bytes and at least 1: most strings are decided without counting
    let fits = text.len() <= max || text.chars().count() <= max;
    let enough = text.len() >= min * 4 || text.chars().count() >= min;
    (fits && enough).then_some(text)
}

/// `Name`: 1-256 characters, none of them U+0000 (`NAME_PATTERN`).
fn name<'a>(value: &Value<'a>) -> Option<Text<'a>> {
    bounded(value, 1, NAME_CHARS).filter(|text| !text.contains('\0'))
}

/// `ID_PATTERN`: 1-128 characters of `[A-Za-z0-9_.:-]`.
fn id<'a>(value: &Value<'a>) -> Option<Text<'a>> {
    let text = text(value)?;
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-');
    (!text.is_empty() && text.len() <= ID_CHARS && text.bytes().all(allowed)).then_some(text)
}

fn one_of<'a>(value: &Value<'a>, allowed: &[&str]) -> Option<Text<'a>> {
    let text = text(value)?;
    allowed.contains(&text.as_ref()).then_some(text)
}

/// `TokenCount`: an integer written without fraction or exponent (`-0` reads as 0).
fn token_count(value: &Value<'_>) -> Option<u64> {
    let Value::Number(literal) = value else {
        return None;
    };
    let (negative, digits) = match literal.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, *literal),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 16 {
        return None; // a fraction, an exponent, or more than 2**53's 16 digits
    }
    let count: u64 = digits.parse().ok()?;
    (count <= MAX_TOKEN_COUNT && !(negative && count != 0)).then_some(count)
}

/// An optional field: `null` is absent.
fn optional<'a, T>(value: &Value<'a>, read: impl Fn(&Value<'a>) -> Option<T>) -> Option<Option<T>> {
    match value {
        Value::Null => Some(None),
        _ => read(value).map(Some),
    }
}

fn time<'a>(value: &Value<'a>) -> Option<Time<'a>> {
    let written = text(value)?;
    let moment = datetime::parse(&written)?;
    Some(Time { written, moment })
}

/// `estimated_cost_usd`: a JSON number or a decimal string, in `scr.money`'s bounds.
fn cost(value: &Value<'_>) -> Option<Amount> {
    match value {
        Value::Number(literal) => Amount::from_number(literal),
        Value::String(text) => Amount::from_text(text),
        _ => None,
    }
}

/// Each member of an object given to `read` by name; `read` answers `None` for an unknown
/// name or a bad value. Keys never repeat (the JSON reader refused those).
fn each_member<'a>(
    value: &Value<'a>,
    mut read: impl FnMut(&str, &Value<'a>) -> Option<()>,
) -> Option<()> {
    members(value)?
        .iter()
        .try_for_each(|(key, member)| read(key, member))
}

impl<'a> Event<'a> {
    /// The event `value` holds, if every declaration accepts it.
    pub fn read(value: &Value<'a>) -> Option<Event<'a>> {
        let (mut event_type, mut event_id, mut timestamp, mut session, mut user) =
            (None, None, None, None, None);
        let (mut usage, mut outcome, mut metadata, mut content) = (None, None, None, None);
        each_member(value, |key, member| {
            match key {
                "event_type" => event_type = Some(one_of(member, &[EVENT_TYPE])?),
                "event_id" => event_id = Some(id(member)?),
                "timestamp" => timestamp = Some(time(member)?),
                "session" => session = Some(Session::read(member)?),
                "user" => user = Some(User::read(member)?),
                "usage" => usage = Some(Usage::read(member)?),
                "outcome" => outcome = Some(Outcome::read(member)?),
                "metadata" => metadata = Some(Metadata::read(member)?),
                "content" => content = Some(Content::read(member)?),
                _ => return None,
            }
            Some(())
        })?;
        event_type?;
        Some(Event {
            event_id: event_id?,
            timestamp: timestamp?,
            session: session?,
            user: user?,
            usage: usage?,
            outcome: outcome?,
            metadata: metadata.unwrap_or_default(),
            content,
        })
    }

    pub fn tenant(&self) -> &str {
        &self.user.organization_id
    }
}

impl<'a> Session<'a> {
    fn read(value: &Value<'a>) -> Option<Session<'a>> {
        let (mut session_id, mut session_type, mut start_time, mut end_time, mut duration_ms) =
            (None, None, None, None, None);
        each_member(value, |key, member| {
            match key {
                "session_id" => session_id = Some(name(member)?),
                "session_type" => session_type = Some(one_of(member, &SESSION_TYPES)?),
                "start_time" => start_time = Some(time(member)?),
                "end_time" => end_time = Some(time(member)?),
                "duration_ms" => duration_ms = Some(token_count(member)?),
                _ => return None,
            }
            Some(())
        })?;
        Some(Session {
            session_id: session_id?,
            session_type: session_type?,
            start_time: start_time?,
            end_time: end_time?,
            duration_ms: duration_ms?,
        })
    }
}

impl<'a> User<'a> {
    fn read(value: &Value<'a>) -> Option<User<'a>> {
        let (mut user_id, mut organization_id, mut tier) = (None, None, None);
        each_member(value, |key, member| {
            match key {
                "user_id" => user_id = Some(name(member)?),
                "organization_id" => organization_id = Some(id(member)?),
                "tier" => tier = Some(one_of(member, &TIERS)?),
                _ => return None,
            }
            Some(())
        })?;
        Some(User {
            user_id: user_id?,
            organization_id: organization_id?,
            tier: tier?,
        })
    }
}

impl<'a> Usage<'a> {
    fn read(value: &Value<'a>) -> Option<Usage<'a>> {
        let (
            mut input_tokens,
            mut output_tokens,
            mut total_tokens,
            mut model,
            mut estimated_cost_usd,
        ) = (None, None, None, None, None);
        let (mut provider, mut cache_read_tokens, mut cache_write_tokens, mut reasoning_tokens) =
            (None, None, None, None);
        each_member(value, |key, member| {
            match key {
                "input_tokens" => input_tokens = Some(token_count(member)?),
                "output_tokens" => output_tokens = Some(token_count(member)?),
                "total_tokens" => total_tokens = Some(token_count(member)?),
                "model" => model = Some(name(member)?),
                "estimated_cost_usd" => estimated_cost_usd = Some(cost(member)?),
                "provider" => provider = optional(member, name)?,
                "cache_read_tokens" => cache_read_tokens = optional(member, token_count)?,
                "cache_write_tokens" => cache_write_tokens = optional(member, token_count)?,
                "reasoning_tokens" => reasoning_tokens = optional(member, token_count)?,
                _ => return None,
            }
            Some(())
        })?;
        Some(Usage {
            input_tokens: input_tokens?,
            output_tokens: output_tokens?,
            total_tokens: total_tokens?,
            model: model?,
            estimated_cost_usd: estimated_cost_usd?,
            provider,
            cache_read_tokens,
            cache_write_tokens,
            reasoning_tokens,
        })
    }
}

impl<'a> Outcome<'a> {
    fn read(value: &Value<'a>) -> Option<Outcome<'a>> {
        let (mut status, mut final_message, mut error_code) = (None, None, None);
        each_member(value, |key, member| {
            match key {
                "status" => status = Some(one_of(member, &OUTCOME_STATUSES)?),
                "final_message" => final_message = optional(member, |v| bounded(v, 0, TEXT_CHARS))?,
                "error_code" => error_code = optional(member, |v| bounded(v, 0, ERROR_CODE_CHARS))?,
                _ => return None,
            }
            Some(())
        })?;
        Some(Outcome {
            status: status?,
            final_message,
            error_code,
        })
    }
}

impl<'a> Metadata<'a> {
    fn read(value: &Value<'a>) -> Option<Metadata<'a>> {
        let mut metadata = Metadata::default();
        each_member(value, |key, member| {
            match key {
                "client_version" => {
                    metadata.client_version =
                        optional(member, |v| bounded(v, 0, CLIENT_VERSION_CHARS))?
                }
                "source_ip" => {
                    metadata.source_ip = optional(member, |v| bounded(v, 0, IP_ADDRESS_CHARS))?
                }
                "custom_tags" => metadata.custom_tags = custom_tags(member)?,
                _ => return None,
            }
            Some(())
        })?;
        Some(metadata)
    }
}

/// `custom_tags`: at most `MAX_CUSTOM_TAGS` string → string, keys of 1-128 characters.
fn custom_tags<'a>(value: &Value<'a>) -> Option<Vec<(Text<'a>, Text<'a>)>> {
    let members = members(value)?;
    if members.len() > MAX_CUSTOM_TAGS {
        return None;
    }
    members
        .iter()
        .map(|(key, tag)| {
            let key = bounded(&Value::String(key.clone()), 1, TAG_KEY_CHARS)?;
            Some((key, bounded(tag, 0, TAG_VALUE_CHARS)?))
        })
        .collect()
}

/// A content string: at most `MAX_CONTENT_TEXT_BYTES` in UTF-8 (so as many characters too).
fn content_text<'a>(value: &Value<'a>) -> Option<Text<'a>> {
    let text = text(value)?;
    (text.len() <= MAX_CONTENT_TEXT_BYTES).then_some(text)
}

impl<'a> Content<'a> {
    fn read(value: &Value<'a>) -> Option<Content<'a>> {
        let mut content = Content {
            user_request: None,
            summary: None,
            tool_outputs: None,
        };
        each_member(value, |key, member| {
            match key {
                "user_request" => content.user_request = Some(content_text(member)?),
                "summary" => content.summary = Some(content_text(member)?),
                "tool_outputs" => {
                    let Value::Array(items) = member else {
                        return None;
                    };
                    if items.len() > MAX_TOOL_OUTPUTS {
                        return None;
                    }
                    content.tool_outputs =
                        Some(items.iter().map(content_text).collect::<Option<_>>()?);
                }
                _ => return None,
            }
            Some(())
        })?;
        Some(content)
    }
}
