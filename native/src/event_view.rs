//! Events' JSON as the native readers take it (`transforms`, `usage`): JSON lines split at
//! each newline, each string borrowed from the input unless it had escapes, only the fields
//! they read, the rest skipped without being built.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::prices::Tokens;

/// A JSON string, borrowed from the input unless it had escapes.
#[derive(Debug)]
pub(crate) struct Text<'a>(pub(crate) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(value))
            }
            fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(value.to_owned()))
            }
        }
        deserializer.deserialize_str(TextVisitor).map(Text)
    }
}

/// An object of strings, its members in the order written (Python's dict order).
#[derive(Debug, Default)]
pub(crate) struct Tags<'a>(pub(crate) Vec<(Text<'a>, Text<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Tags<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TagsVisitor;
        impl<'de> Visitor<'de> for TagsVisitor {
            type Value = Tags<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(pair) = map.next_entry::<Text<'de>, Text<'de>>()? {
                    pairs.push(pair);
                }
                Ok(Tags(pairs))
            }
        }
        deserializer.deserialize_map(TagsVisitor)
    }
}

#[derive(Deserialize)]
pub(crate) struct EventView<'a> {
    #[serde(borrow)]
    pub(crate) event_id: Text<'a>,
    #[serde(borrow)]
    pub(crate) timestamp: Text<'a>,
    #[serde(borrow)]
    pub(crate) session: SessionView<'a>,
    #[serde(borrow)]
    pub(crate) user: UserView<'a>,
    #[serde(borrow)]
    pub(crate) usage: UsageView<'a>,
    #[serde(borrow)]
    pub(crate) outcome: OutcomeView<'a>,
    #[serde(borrow, default)]
    pub(crate) metadata: MetadataView<'a>,
}

#[derive(Deserialize)]
pub(crate) struct SessionView<'a> {
    #[serde(borrow)]
    pub(crate) session_id: Text<'a>,
    #[serde(borrow)]
    pub(crate) session_type: Text<'a>,
    #[serde(borrow)]
    pub(crate) start_time: Text<'a>,
    #[serde(borrow)]
    pub(crate) end_time: Text<'a>,
    pub(crate) duration_ms: u64,
}

#[derive(Deserialize)]
pub(crate) struct UserView<'a> {
    #[serde(borrow)]
    pub(crate) user_id: Text<'a>,
    #[serde(borrow)]
    pub(crate) organization_id: Text<'a>,
    #[serde(borrow)]
    pub(crate) tier: Text<'a>,
}

#[derive(Deserialize)]
pub(crate) struct UsageView<'a> {
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) total_tokens: u64,
    #[serde(borrow)]
    pub(crate) model: Text<'a>,
    #[serde(borrow)]
    pub(crate) estimated_cost_usd: Text<'a>, // a decimal string, as str(Decimal) writes it
    #[serde(borrow, default)]
    pub(crate) provider: Option<Text<'a>>,
    #[serde(default)]
    pub(crate) cache_read_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) cache_write_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) reasoning_tokens: Option<u64>,
}

impl UsageView<'_> {
    /// The token counts the cost rule reads.
    pub(crate) fn tokens(&self) -> Tokens {
        Tokens {
            input: self.input_tokens,
            output: self.output_tokens,
            cache_read: self.cache_read_tokens.unwrap_or(0),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct OutcomeView<'a> {
    #[serde(borrow)]
    pub(crate) status: Text<'a>,
    #[serde(borrow, default)]
    pub(crate) error_code: Option<Text<'a>>,
}

#[derive(Deserialize, Default)]
pub(crate) struct MetadataView<'a> {
    #[serde(borrow, default)]
    pub(crate) client_version: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub(crate) source_ip: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub(crate) custom_tags: Tags<'a>,
}

/// Each line of JSON lines; `None` if a line is empty. A newline never appears inside a JSON
/// value as msgspec writes it (it escapes every control character), so splitting at each one
/// (memchr's speed) finds the values without reading them: each is read, and so checked, by
/// its reader.
pub(crate) fn json_lines(text: &str) -> Option<Vec<&str>> {
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    if lines.iter().any(|line| line.is_empty()) {
        return None;
    }
    Some(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_split_at_each_newline() {
        assert_eq!(json_lines(""), Some(vec![]));
        assert_eq!(
            json_lines("{\"a\":\"x\\ny\"}\n[1]\n"),
            Some(vec!["{\"a\":\"x\\ny\"}", "[1]"])
        );
        assert_eq!(json_lines("1\n2"), Some(vec!["1", "2"]));
        assert_eq!(json_lines("1\n\n2\n"), None);
    }
}
