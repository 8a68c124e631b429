//! Standard Webhooks v1 ids and signatures, as `scr.route.signing` defines them.
//!
//! A message id is `msg_` + lower-case unpadded base32 of SHA-256 of its parts joined by NUL;
//! a signature is `v1,` + base64 of HMAC-SHA256(key, `id.timestamp.body`).

use data_encoding::{BASE32_NOPAD, BASE64};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const MESSAGE_ID_PREFIX: &str = "msg_";
pub const SIGNATURE_VERSION: &str = "v1";
const PART_SEPARATOR: [u8; 1] = [0x00];
const BATCH_PART: &str = "batch";

/// The message id of the NUL-joined `parts`.
pub fn message_id(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            hasher.update(PART_SEPARATOR);
        }
        hasher.update(part.as_bytes());
    }
    let encoded = BASE32_NOPAD.encode(&hasher.finalize());
    MESSAGE_ID_PREFIX.to_owned() + &encoded.to_ascii_lowercase()
}

/// The `webhook-id` of one event's delivery to `destination`.
pub fn webhook_id(destination: &str, event_id: &str) -> String {
    message_id(&[destination, event_id])
}

/// The `webhook-id` of a batch spanning ledger positions `first_seq`..`last_seq` (as text).
pub fn batch_webhook_id(destination: &str, first_seq: &str, last_seq: &str) -> String {
    message_id(&[BATCH_PART, destination, first_seq, last_seq])
}

/// Base64 of HMAC-SHA256(`key`, `msg_id.timestamp.body`).
pub fn signature(key: &[u8], msg_id: &str, timestamp: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length (RFC 2104), so this never fails
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    BASE64.encode(&mac.finalize().into_bytes())
}

/// The `webhook-signature` header: one `v1,<base64>` per key, space-separated; `None`
/// without a key.
pub fn signature_header(
    keys: &[&[u8]],
    msg_id: &str,
    timestamp: &str,
    body: &[u8],
) -> Option<String> {
    if keys.is_empty() {
        return None;
    }
    let signed: Vec<String> = keys
        .iter()
        .map(|key| {
            format!(
                "{SIGNATURE_VERSION},{}",
                signature(key, msg_id, timestamp, body)
            )
        })
        .collect();
    Some(signed.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification (and of svix's libraries).
        let key = BASE64.decode(b"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature_header(&[&key], "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_owned())
        );
    }

    #[test]
    fn several_keys_give_space_separated_signatures() {
        let header = signature_header(&[b"one", b"two"], "msg_x", "1", b"{}").unwrap();
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0],
            format!("v1,{}", signature(b"one", "msg_x", "1", b"{}"))
        );
        assert_eq!(
            parts[1],
            format!("v1,{}", signature(b"two", "msg_x", "1", b"{}"))
        );
    }

    #[test]
    fn no_key_gives_no_header() {
        assert_eq!(signature_header(&[], "msg_x", "1", b""), None);
    }

    #[test]
    fn message_ids_are_prefixed_lower_case_base32_of_52_characters() {
        let id = webhook_id("billing", "evt_1");
        assert!(id.starts_with(MESSAGE_ID_PREFIX));
        let encoded = &id[MESSAGE_ID_PREFIX.len()..];
        assert_eq!(encoded.len(), 52);
        assert!(encoded
            .chars()
            .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
    }

    #[test]
    fn message_id_joins_parts_with_nul() {
        let digest = Sha256::digest(b"billing\0evt_1");
        let expected = BASE32_NOPAD.encode(&digest).to_ascii_lowercase();
        assert_eq!(webhook_id("billing", "evt_1"), format!("msg_{expected}"));
        assert_eq!(
            batch_webhook_id("billing", "1", "9"),
            message_id(&["batch", "billing", "1", "9"])
        );
    }
}
