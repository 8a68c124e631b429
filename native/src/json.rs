//! A strict JSON reader for one event: what msgspec's decoder accepts, read into a small tree.
//!
//! Written by hand rather than with serde_json because the event's rules need what a general
//! parser hides: each number as it is written (an integer must be written without a fraction
//! or exponent; money keeps its digits), and a refusal of any object that repeats a key
//! (RFC 8259 leaves it undefined; msgspec would keep the last value). Anything this reader
//! refuses is judged again by the Python reference, so it may refuse more than msgspec does,
//! never less: invalid UTF-8, raw control characters, lone surrogates, bad escapes, numbers
//! outside JSON's grammar, nesting past `MAX_DEPTH`, trailing text.

use std::borrow::Cow;

/// Arrays and objects nested deeper than this are refused (`scr.jsontext.MAX_JSON_DEPTH`).
pub const MAX_DEPTH: usize = 128;
/// Objects up to this many members are checked for a repeated key pair by pair; larger ones
/// are sorted first.
const PAIRWISE_MEMBERS: usize = 16;

/// A JSON value; strings are decoded (borrowed when they hold no escape), numbers kept as
/// written.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Number(&'a str),
    String(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    Object(Vec<(Cow<'a, str>, Value<'a>)>),
}

/// The value `text` holds, or `None` if it is not strict JSON in UTF-8, nests deeper than
/// `MAX_DEPTH`, or repeats a key in any object.
pub fn parse(text: &[u8]) -> Option<Value<'_>> {
    let text = std::str::from_utf8(text).ok()?;
    let mut reader = Reader { text, at: 0 };
    let value = reader.value(0)?;
    reader.skip_whitespace();
    (reader.at == text.len()).then_some(value)
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &str, value: Value<'a>) -> Option<Value<'a>> {
        self.text[self.at..].starts_with(word).then(|| {
            self.at += word.len();
            value
        })
    }

    fn value(&mut self, depth: usize) -> Option<Value<'a>> {
        self.skip_whitespace();
        match self.peek()? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(Value::String),
            b'n' => self.literal("null", Value::Null),
            b't' => self.literal("true", Value::Bool(true)),
            b'f' => self.literal("false", Value::Bool(false)),
            _ => self.number().map(Value::Number),
        }
    }

    fn array(&mut self, depth: usize) -> Option<Value<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.at += 1;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Some(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(Value::Array(items));
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<Value<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.at += 1;
        let mut members = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Some(Value::Object(members));
        }
        loop {
            self.skip_whitespace();
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            self.skip_whitespace();
            if self.peek()? != b':' {
                return None;
            }
            self.at += 1;
            members.push((key, self.value(depth)?));
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return (!repeats_a_key(&members)).then_some(Value::Object(members));
                }
                _ => return None,
            }
        }
    }

    /// A string, the reader at its opening quote.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.at += 1;
        let start = self.at;
        let bytes = self.text.as_bytes();
        loop {
            match *bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some(Cow::Borrowed(&self.text[start..self.at - 1]));
                }
                b'\\' => break,
                byte if byte < 0x20 => return None,
                _ => self.at += 1,
            }
        }
        let mut decoded = String::from(&self.text[start..self.at]);
        loop {
            match *bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some(Cow::Owned(decoded));
                }
                b'\\' => {
                    self.at += 1;
                    decoded.push(self.escape()?);
                }
                byte if byte < 0x20 => return None,
                _ => {
                    let run = self.at;
                    while matches!(bytes.get(self.at), Some(&b) if b >= 0x20 && b != b'"' && b != b'\\')
                    {
                        self.at += 1;
                    }
                    decoded.push_str(&self.text[run..self.at]);
                }
            }
        }
    }

    /// The character an escape stands for, the reader just past its backslash.
    fn escape(&mut self) -> Option<char> {
        let letter = self.peek()?;
        self.at += 1;
        Some(match letter {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.unicode_escape(),
            _ => return None,
        })
    }

    /// `\uXXXX`, or a surrogate pair of two; a lone surrogate is refused (as msgspec does).
    fn unicode_escape(&mut self) -> Option<char> {
        let unit = self.hex4()?;
        if (0xD800..0xDC00).contains(&unit) {
            if !self.text[self.at..].starts_with("\\u") {
                return None;
            }
            self.at += 2;
            let low = self.hex4()?;
            if !(0xDC00..0xE000).contains(&low) {
                return None;
            }
            return char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00));
        }
        char::from_u32(unit)
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.text.get(self.at..self.at + 4)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.at += 4;
        u32::from_str_radix(digits, 16).ok()
    }

    /// A number in JSON's grammar, `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, as written.
    fn number(&mut self) -> Option<&'a str> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(&self.text[start..self.at])
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }
}

/// Whether two members of one object have the same (decoded) key.
fn repeats_a_key(members: &[(Cow<'_, str>, Value<'_>)]) -> bool {
    if members.len() <= PAIRWISE_MEMBERS {
        return members
            .iter()
            .enumerate()
            .any(|(i, (key, _))| members[..i].iter().any(|(seen, _)| seen == key));
    }
    let mut keys: Vec<&str> = members.iter().map(|(key, _)| key.as_ref()).collect();
    keys.sort_unstable();
    keys.windows(2).any(|pair| pair[0] == pair[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> bool {
        parse(text.as_bytes()).is_some()
    }

    #[test]
    fn reads_strict_json() {
        assert_eq!(
            parse(br#" {"a": [1, -0.5e+3, "x\u00e9\ud83d\ude00", true, null]} "#),
            Some(Value::Object(vec![(
                Cow::Borrowed("a"),
                Value::Array(vec![
                    Value::Number("1"),
                    Value::Number("-0.5e+3"),
                    Value::String(Cow::Owned("xé😀".into())),
                    Value::Bool(true),
                    Value::Null,
                ])
            )]))
        );
    }

    #[test]
    fn refuses_what_msgspec_refuses() {
        for text in [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "-",
            "+1",
            "1e",
            "NaN",
            "Infinity",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\x\"",
            "\"a\u{1}\"",
            "1 2",
            "{\"a\" 1}",
            "[1 2]",
            "\"abc",
            "tru",
        ] {
            assert!(!ok(text), "{text:?}");
        }
        assert!(parse(b"\"\xff\"").is_none());
    }

    #[test]
    fn refuses_a_repeated_key_at_any_depth() {
        assert!(!ok(r#"{"a":1,"a":2}"#));
        assert!(!ok(r#"{"a":1,"\u0061":2}"#));
        assert!(!ok(r#"[{"b":{"c":1,"c":1}}]"#));
        let many: Vec<String> = (0..40).map(|n| format!("\"k{}\":1", n % 39)).collect();
        assert!(!ok(&format!("{{{}}}", many.join(","))));
        let distinct: Vec<String> = (0..40).map(|n| format!("\"k{n}\":1")).collect();
        assert!(ok(&format!("{{{}}}", distinct.join(","))));
    }

    #[test]
    fn bounds_nesting() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(ok(&deep(MAX_DEPTH)));
        assert!(!ok(&deep(MAX_DEPTH + 1)));
    }
}
