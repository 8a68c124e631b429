//! The analytics network of a source IP, as `scr.route.transforms.ip_prefix` gives it.
//!
//! IPv4 truncated to /24; IPv6 to /48, written as Python's `ipaddress` writes it (lower-case
//! hex, the first longest run of two or more zero groups as `::`); an IPv6 address embedding
//! an IPv4 one (IPv4-mapped `::ffff:0:0/96`, then 6to4 `2002::/16`) reduced to that IPv4
//! address's /24. Text that is not an address as Rust reads one (a zone index `%eth0`, say)
//! is `None`: the caller falls back to the Python reference.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const IPV4_PREFIX_BITS: u32 = 24;
const IPV6_PREFIX_BITS: u32 = 48;
const IPV4_MAPPED_PREFIX: u128 = 0xffff; // the address >> 32
const SIXTOFOUR_PREFIX: u128 = 0x2002; // the address >> 112

/// The network of `address` (`"203.0.113.0/24"`, `"2001:db8:85a3::/48"`); `None` if Rust does
/// not read it as an address.
pub fn ip_prefix(address: &str) -> Option<String> {
    match address.parse::<IpAddr>().ok()? {
        IpAddr::V4(ip) => Some(ipv4_network(ip)),
        IpAddr::V6(ip) => Some(match embedded_ipv4(ip) {
            Some(embedded) => ipv4_network(embedded),
            None => ipv6_network(ip),
        }),
    }
}

/// The IPv4 address an IPv6 one embeds: IPv4-mapped first, then 6to4 (Python's
/// `ip.ipv4_mapped or ip.sixtofour`).
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    if bits >> 32 == IPV4_MAPPED_PREFIX {
        return Some(Ipv4Addr::from((bits & 0xffff_ffff) as u32));
    }
    if bits >> 112 == SIXTOFOUR_PREFIX {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    None
}

fn ipv4_network(ip: Ipv4Addr) -> String {
    let network = Ipv4Addr::from(u32::from(ip) & (u32::MAX << (32 - IPV4_PREFIX_BITS)));
    format!("{network}/{IPV4_PREFIX_BITS}")
}

fn ipv6_network(ip: Ipv6Addr) -> String {
    let network = Ipv6Addr::from(u128::from(ip) & (u128::MAX << (128 - IPV6_PREFIX_BITS)));
    format!("{}/{IPV6_PREFIX_BITS}", compressed(network))
}

/// An IPv6 address as Python's `ipaddress` writes it (`_compress_hextets`).
fn compressed(ip: Ipv6Addr) -> String {
    let groups = ip.segments();
    let (mut best_start, mut best_len) = (0, 0);
    let (mut run_start, mut run_len) = (0, 0);
    for (index, &group) in groups.iter().enumerate() {
        if group == 0 {
            if run_len == 0 {
                run_start = index;
            }
            run_len += 1;
            if run_len > best_len {
                (best_start, best_len) = (run_start, run_len);
            }
        } else {
            run_len = 0;
        }
    }
    let hex = |part: &[u16]| {
        part.iter()
            .map(|group| format!("{group:x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    if best_len < 2 {
        return hex(&groups);
    }
    format!(
        "{}::{}",
        hex(&groups[..best_start]),
        hex(&groups[best_start + best_len..])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(address: &str) -> Option<String> {
        ip_prefix(address)
    }

    #[test]
    fn ipv4_is_cut_to_its_slash_24() {
        assert_eq!(prefix("203.0.113.77").as_deref(), Some("203.0.113.0/24"));
        assert_eq!(prefix("0.0.0.0").as_deref(), Some("0.0.0.0/24"));
    }

    #[test]
    fn ipv6_is_cut_to_its_slash_48_and_compressed_as_python_does() {
        assert_eq!(
            prefix("2001:db8:85a3::8a2e:370:7334").as_deref(),
            Some("2001:db8:85a3::/48")
        );
        assert_eq!(
            prefix("2001:0:85a3::1").as_deref(),
            Some("2001:0:85a3::/48")
        );
        assert_eq!(prefix("::1").as_deref(), Some("::/48"));
        assert_eq!(prefix("0:0:1::").as_deref(), Some("0:0:1::/48"));
    }

    #[test]
    fn an_embedded_ipv4_address_gives_its_slash_24() {
        assert_eq!(
            prefix("::ffff:198.51.100.9").as_deref(),
            Some("198.51.100.0/24")
        );
        assert_eq!(prefix("::ffff:0.0.0.0").as_deref(), Some("0.0.0.0/24"));
        assert_eq!(
            prefix("2002:c633:6409::1").as_deref(),
            Some("198.51.100.0/24")
        );
    }

    #[test]
    fn what_rust_does_not_read_is_left_to_the_reference() {
        for odd in ["fe80::1%eth0", "01.2.3.4", "1.2.3", "not an address", ""] {
            assert_eq!(prefix(odd), None, "{odd}");
        }
    }

    #[test]
    fn compression_takes_the_first_longest_run_of_zero_groups() {
        let ip: Ipv6Addr = "1:0:0:2:0:0:3:4".parse().unwrap();
        assert_eq!(compressed(ip), "1::2:0:0:3:4");
        let ip: Ipv6Addr = "1:0:2:3:4:5:6:7".parse().unwrap();
        assert_eq!(compressed(ip), "1:0:2:3:4:5:6:7");
        assert_eq!(compressed(Ipv6Addr::UNSPECIFIED), "::");
    }
}
