//! IP addresses as `inet_pton` (glibc's, which Python's `socket.inet_pton` calls) accepts
//! them: dotted-quad IPv4 without leading zeros, and IPv6 with at most one `::` and an
//! optional IPv4 tail. No zone ids, no brackets.

const IPV4_BYTES: usize = 4;
const IPV6_BYTES: usize = 16;
const GROUP_BYTES: usize = 2;

/// Whether `text` is an IPv4 or an IPv6 address (`scr.schema._is_ip_address`).
pub fn is_ip_address(text: &str) -> bool {
    is_ipv4(text.as_bytes()) || is_ipv6(text.as_bytes())
}

/// glibc's `inet_pton4`: four decimal octets of at most 255, no leading zero.
fn is_ipv4(text: &[u8]) -> bool {
    let mut octets = 0;
    let mut value: u32 = 0;
    let mut saw_digit = false;
    for &byte in text {
        if byte.is_ascii_digit() {
            if saw_digit && value == 0 {
                return false;
            }
            value = value * 10 + u32::from(byte - b'0');
            if value > 255 {
                return false;
            }
            if !saw_digit {
                octets += 1;
                if octets > IPV4_BYTES {
                    return false;
                }
                saw_digit = true;
            }
        } else if byte == b'.' && saw_digit {
            if octets == IPV4_BYTES {
                return false;
            }
            value = 0;
            saw_digit = false;
        } else {
            return false;
        }
    }
    octets >= IPV4_BYTES
}

/// glibc's `inet_pton6`, counting the bytes it would write.
fn is_ipv6(text: &[u8]) -> bool {
    let mut at = 0;
    if text.is_empty() {
        return false;
    }
    if text[0] == b':' {
        at = 1;
        if text.get(1) != Some(&b':') {
            return false;
        }
    }
    let mut written = 0; // bytes of the address written so far
    let mut gap: Option<usize> = None; // where `::` stands
    let mut token_start = at;
    let mut hex_digits = 0;
    while at < text.len() {
        let byte = text[at];
        at += 1;
        if byte.is_ascii_hexdigit() {
            if hex_digits == 4 {
                return false;
            }
            hex_digits += 1;
            continue;
        }
        if byte == b':' {
            token_start = at;
            if hex_digits == 0 {
                if gap.is_some() {
                    return false;
                }
                gap = Some(written);
                continue;
            } else if at == text.len() {
                return false;
            }
            if written + GROUP_BYTES > IPV6_BYTES {
                return false;
            }
            written += GROUP_BYTES;
            hex_digits = 0;
            continue;
        }
        if byte == b'.' && written + IPV4_BYTES <= IPV6_BYTES && is_ipv4(&text[token_start..]) {
            written += IPV4_BYTES;
            hex_digits = 0;
            break;
        }
        return false;
    }
    if hex_digits > 0 {
        if written + GROUP_BYTES > IPV6_BYTES {
            return false;
        }
        written += GROUP_BYTES;
    }
    match gap {
        Some(_) => written != IPV6_BYTES,
        None => written == IPV6_BYTES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_inet_pton_accepts() {
        for text in [
            "203.0.113.77",
            "0.0.0.0",
            "255.255.255.255",
            "::",
            "::1",
            "1::",
            "2001:db8::8a2e:370:7334",
            "1:2:3:4:5:6:7:8",
            "::ffff:192.0.2.1",
            "1:2:3:4:5:6:1.2.3.4",
            "ABCD:ef01::",
            "1::2:3:4:5:6:7",
        ] {
            assert!(is_ip_address(text), "{text}");
        }
    }

    #[test]
    fn refuses_what_inet_pton_refuses() {
        for text in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "256.1.1.1",
            "1.2.3.4.",
            ".1.2.3.4",
            "1..2.3",
            ":",
            ":1",
            "1:",
            "1:::2",
            "1::2::3",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7:8::",
            "::1:2:3:4:5:6:7:8",
            "12345::",
            "fe80::1%eth0",
            "[::1]",
            "1:2:3:4:5:6:7:1.2.3.4",
            "::1.2.3",
            "g::",
            " ::1",
            "1.2.3.4 ",
        ] {
            assert!(!is_ip_address(text), "{text}");
        }
    }
}
