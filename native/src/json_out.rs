//! JSON text written exactly as msgspec writes it (`msgspec.json.encode`): keys in the order
//! given, no whitespace, UTF-8 passed through (U+2028 and DEL too), and only `"`, `\` and the
//! control characters escaped: `\b \t \n \f \r` by name, the others as `\u00xx`.

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `text` as a JSON string, quotes included.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    write_escaped(out, text);
    out.push(b'"');
}

/// Which bytes a JSON string escapes: `"`, `\\` and the control characters.
const ESCAPED: [bool; 256] = {
    let mut escaped = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        escaped[byte] = true;
        byte += 1;
    }
    escaped[b'"' as usize] = true;
    escaped[b'\\' as usize] = true;
    escaped
};

/// The characters of `text` as a JSON string holds them (escaped where they must be). Most
/// text has nothing to escape: it is found by a table look-up a byte and copied in runs.
fn write_escaped(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut plain_from = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        if !ESCAPED[usize::from(byte)] {
            continue;
        }
        out.extend_from_slice(&bytes[plain_from..index]);
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX_DIGITS[usize::from(byte >> 4)]);
                out.push(HEX_DIGITS[usize::from(byte & 0x0f)]);
            }
        }
        plain_from = index + 1;
    }
    out.extend_from_slice(&bytes[plain_from..]);
}

/// One JSON object, written member by member in the order of the calls.
pub struct JsonObject {
    out: Vec<u8>,
    empty: bool,
}

impl JsonObject {
    /// An object whose text is expected to take about `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity);
        out.push(b'{');
        JsonObject { out, empty: true }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_str(&mut self.out, key);
        self.out.push(b':');
    }

    /// A member whose value is JSON text already (written as it is).
    pub fn raw(&mut self, key: &str, json: &[u8]) -> &mut Self {
        self.key(key);
        self.out.extend_from_slice(json);
        self
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        write_str(&mut self.out, value);
        self
    }

    /// A string, or `null` for `None`.
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(text) => self.str(key, text),
            None => self.raw(key, b"null"),
        }
    }

    pub fn uint(&mut self, key: &str, value: u64) -> &mut Self {
        self.raw(key, itoa::Buffer::new().format(value).as_bytes())
    }

    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        self.raw(key, itoa::Buffer::new().format(value).as_bytes())
    }

    /// A string member whose key is `prefix` followed by `key` (a tag's column).
    pub fn prefixed_str(&mut self, prefix: &str, key: &str, value: &str) -> &mut Self {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        write_escaped(&mut self.out, prefix);
        write_escaped(&mut self.out, key);
        self.out.extend_from_slice(b"\":");
        write_str(&mut self.out, value);
        self
    }

    /// A string member of lower-case hex digits of `bytes`.
    pub fn hex(&mut self, key: &str, bytes: &[u8]) -> &mut Self {
        self.key(key);
        self.out.push(b'"');
        for byte in bytes {
            self.out.push(HEX_DIGITS[usize::from(byte >> 4)]);
            self.out.push(HEX_DIGITS[usize::from(byte & 0x0f)]);
        }
        self.out.push(b'"');
        self
    }

    /// An integer, or `null` for `None`.
    pub fn opt_uint(&mut self, key: &str, value: Option<u64>) -> &mut Self {
        match value {
            Some(number) => self.uint(key, number),
            None => self.raw(key, b"null"),
        }
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.raw(key, if value { b"true" } else { b"false" })
    }

    /// The object's text, closed.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(b'}');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(text: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_msgspec_escapes_them() {
        assert_eq!(quoted("plain"), "\"plain\"");
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quoted("\u{8}\t\n\u{c}\r"), "\"\\b\\t\\n\\f\\r\"");
        assert_eq!(quoted("\u{0}\u{1b}\u{1f}"), "\"\\u0000\\u001b\\u001f\"");
        // DEL, line and paragraph separators and other non-ASCII pass through as UTF-8
        assert_eq!(
            quoted("\u{7f}\u{2028}\u{2029}é😀"),
            "\"\u{7f}\u{2028}\u{2029}é😀\""
        );
    }

    #[test]
    fn an_object_keeps_the_order_of_its_members() {
        let mut object = JsonObject::with_capacity(64);
        object
            .str("a", "x")
            .opt_str("b", None)
            .uint("c", 9_007_199_254_740_992)
            .int("d", -1)
            .opt_uint("e", Some(0))
            .bool("f", false)
            .raw("g", b"{\"h\":1}")
            .prefixed_str("tag_", "k\"", "v")
            .hex("i", &[0x00, 0xab, 0x0f]);
        assert_eq!(
            String::from_utf8(object.finish()).unwrap(),
            "{\"a\":\"x\",\"b\":null,\"c\":9007199254740992,\"d\":-1,\"e\":0,\"f\":false,\"g\":{\"h\":1},\"tag_k\\\"\":\"v\",\"i\":\"00ab0f\"}"
        );
        assert_eq!(JsonObject::with_capacity(2).finish(), b"{}");
    }
}
