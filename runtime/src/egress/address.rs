//! Which addresses a guest's outgoing request may connect to.
//!
//! Checked on the addresses a host name resolved to, right before the
//! connection is made, so neither DNS (rebinding, a public name pointing
//! inside) nor a redirect (the guest must send a new request, checked again)
//! can reach what the allowlist's names were never meant to.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why an address is refused: the special-purpose range it falls in.
pub(crate) fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

/// IPv4 ranges that are not the public internet (IANA special-purpose
/// registry, plus multicast and the reserved block).
fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u8, &str)] = &[
        ([0, 0, 0, 0], 8, "this network"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared address space"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local (cloud metadata)"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "IETF protocol assignments"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "6to4 relay"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    let bits = u32::from(ip);
    RANGES.iter().find_map(|(base, len, what)| {
        let mask = u32::MAX << (32 - u32::from(*len));
        (bits & mask == u32::from_be_bytes(*base)).then_some(*what)
    })
}

/// IPv6 ranges that are not the public internet, including every form that
/// embeds an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo): those
/// would reach IPv4 hosts without the IPv4 checks.
fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    const RANGES: &[(u128, u8, &str)] = &[
        (0, 128, "unspecified"),
        (1, 128, "loopback"),
        (0xffff_0000_0000, 96, "IPv4-mapped"),
        (0, 96, "IPv4-compatible"),
        (0x0064_ff9b << 96, 96, "NAT64"),
        (0x0064_ff9b_0001 << 80, 48, "NAT64 (local)"),
        (0x0100 << 112, 64, "discard"),
        (0x2001 << 112, 23, "IETF protocol assignments (Teredo)"),
        (0x2001_0db8 << 96, 32, "documentation"),
        (0x2002 << 112, 16, "6to4"),
        (0x3fff << 112, 20, "documentation"),
        (0xfc00 << 112, 7, "unique local (private)"),
        (0xfe80 << 112, 10, "link-local"),
        (0xfec0 << 112, 10, "site-local"),
        (0xff00 << 112, 8, "multicast"),
    ];
    let bits = u128::from(ip);
    RANGES.iter().find_map(|(base, len, what)| {
        let mask = u128::MAX << (128 - u32::from(*len));
        (bits & mask == *base).then_some(*what)
    })
}

/// An address range in CIDR notation (`10.1.0.0/16`, `fd00::/8`), as an
/// operator writes it to let guests reach a special-purpose range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    base: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Whether `ip` is in the range. An IPv4 range does not match an
    /// IPv4-mapped IPv6 address: allowing `10.0.0.0/8` does not allow
    /// `::ffff:10.0.0.1` (allow `::ffff:10.0.0.0/104` for that).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, ip) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix));
                let mask = mask.unwrap_or(0);
                u32::from(ip) & mask == u32::from(base)
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix));
                let mask = mask.unwrap_or(0);
                u128::from(ip) & mask == u128::from(base)
            }
            _ => false,
        }
    }
}

impl FromStr for IpRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not an address range such as 10.1.0.0/16 or fd00::/8");
        let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
        let base: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let width = if base.is_ipv4() { 32 } else { 128 };
        if prefix > width {
            return Err(bad());
        }
        let range = IpRange { base, prefix };
        // Host bits set (10.1.2.3/16) usually mean a typo: refuse rather
        // than guess which range was meant.
        if range.masked() != base {
            return Err(format!(
                "`{text}` has host bits set; the range starts at {}/{prefix}",
                range.masked()
            ));
        }
        Ok(range)
    }
}

impl IpRange {
    fn masked(&self) -> IpAddr {
        match self.base {
            IpAddr::V4(base) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix));
                IpAddr::V4(Ipv4Addr::from(u32::from(base) & mask.unwrap_or(0)))
            }
            IpAddr::V6(base) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix));
                IpAddr::V6(Ipv6Addr::from(u128::from(base) & mask.unwrap_or(0)))
            }
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl Serialize for IpRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn special(ip: &str) -> Option<&'static str> {
        special_range(ip.parse().unwrap())
    }

    #[test]
    fn special_purpose_addresses_are_refused() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.100.100.200",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.170",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "3fff::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(special(ip).is_some(), "{ip} must be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450::1",
            "2001:4860:4860::8888",
        ] {
            assert_eq!(special(ip), None, "{ip} is public");
        }
    }

    #[test]
    fn ranges_parse_and_match() {
        let r: IpRange = "127.0.0.0/8".parse().unwrap();
        assert!(r.contains("127.0.0.1".parse().unwrap()));
        assert!(!r.contains("128.0.0.1".parse().unwrap()));
        assert!(!r.contains("::ffff:127.0.0.1".parse().unwrap()));
        let all: IpRange = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("10.0.0.1".parse().unwrap()));
        let one: IpRange = "::1/128".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        assert_eq!(one.to_string(), "::1/128");
        for bad in [
            "127.0.0.1",
            "10.0.0.0/33",
            "::/129",
            "10.1.2.3/16",
            "x/8",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
    }
}
