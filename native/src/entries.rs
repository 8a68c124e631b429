//! A stored ledger entry's event, as the readers take it undecoded: the bytes of the entry's
//! `payload` exactly as they were ledgered (`scr.log.tail.from_store`, whose lines cross to
//! the transforms and the selection).
//!
//! An entry is one JSON object the writer made (`scr.log.entry.entry_bytes`). An entry that
//! carries a `seal` (an event whose personal fields were sealed, `scr.privacy`) is opened in
//! Python, and so is anything this reader refuses (a repeated member, text that is not
//! JSON): both give `None`, and the Python reference reads that entry.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct EntryParts<'a> {
    #[serde(borrow)]
    payload: &'a RawValue,
    #[serde(default)]
    seal: Seal,
}

/// Whether an entry has a `seal` member, whatever its value: unlike an `Option` field's,
/// a `null` counts (the reference reads any value there as a seal).
#[derive(Default)]
struct Seal {
    present: bool,
}

impl<'de> Deserialize<'de> for Seal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer).map(|_| Seal { present: true })
    }
}

/// The payload of an unsealed entry, as its bytes are stored; `None` for a sealed entry or
/// one this reader refuses.
pub fn event_line(entry: &[u8]) -> Option<&[u8]> {
    let parts: EntryParts<'_> = serde_json::from_slice(entry).ok()?;
    if parts.seal.present {
        return None;
    }
    Some(parts.payload.get().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_payload_as_stored() {
        let entry =
            br#"{"id":1,"kind":"SESSION_COMPLETION","payload":{"b":1,"a":[2, 3]},"provenance":{}}"#;
        assert_eq!(event_line(entry), Some(&br#"{"b":1,"a":[2, 3]}"#[..]));
        let spaced = br#"{ "payload" :  {"a":1}  , "id": 2 }"#;
        assert_eq!(event_line(spaced), Some(&br#"{"a":1}"#[..]));
    }

    #[test]
    fn leaves_sealed_and_unreadable_entries_to_python() {
        assert_eq!(event_line(br#"{"payload":{"a":1},"seal":{"k":"x"}}"#), None);
        assert_eq!(event_line(br#"{"payload":{"a":1},"seal":null}"#), None);
        assert_eq!(
            event_line(br#"{"payload":{"a":1},"payload":{"a":2}}"#),
            None
        );
        assert_eq!(event_line(br#"{"id":1}"#), None);
        assert_eq!(event_line(br#"{"payload":{"a":1}"#), None);
        assert_eq!(event_line(b""), None);
        assert_eq!(event_line(b"{\"payload\":\"\xff\"}"), None);
    }
}
