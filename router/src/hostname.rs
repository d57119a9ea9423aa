//! Hostnames, normalised one way everywhere: lowercase, no port, no trailing
//! dot. Whatever arrives (a Host header, an SNI name, an admin request), it
//! goes through [`normalize`] before it is compared or stored.

use std::fmt;

/// Why a hostname is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hostname: {0}")]
pub struct InvalidHostname(pub &'static str);

/// Lowercases `raw`, strips a `:port` and one trailing dot. Does not
/// validate: a Host header that fails [`Hostname::parse`] afterwards simply
/// matches no route.
pub fn normalize(raw: &str) -> String {
    let without_port = match raw.rsplit_once(':') {
        // An IPv6 literal (`[::1]:80`) keeps its brackets; nothing routes to
        // IP literals anyway.
        Some((host, port)) if !host.ends_with(']') || raw.starts_with('[') => {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                host
            } else {
                raw
            }
        }
        _ => raw,
    };
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    trimmed.to_ascii_lowercase()
}

/// A validated, normalised hostname, possibly a wildcard (`*.example.com`,
/// which matches any one label in place of the `*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Hostname(String);

impl Hostname {
    /// Validates `raw` after normalising it: RFC 1123 labels (letters,
    /// digits, inner hyphens, 1–63 chars each), at least two labels, at most
    /// 253 chars, not an IP literal. A leading `*.` makes it a wildcard.
    pub fn parse(raw: &str) -> Result<Self, InvalidHostname> {
        let name = normalize(raw);
        let rest = name.strip_prefix("*.").unwrap_or(&name);
        if name.is_empty() {
            return Err(InvalidHostname("empty"));
        }
        if name.len() > 253 {
            return Err(InvalidHostname("longer than 253 characters"));
        }
        if rest.starts_with('[') || rest.parse::<std::net::Ipv4Addr>().is_ok() {
            return Err(InvalidHostname("IP addresses are not hostnames"));
        }
        let labels: Vec<&str> = rest.split('.').collect();
        if labels.len() < 2 {
            return Err(InvalidHostname(
                "needs at least two labels, like example.com",
            ));
        }
        for label in &labels {
            if label.is_empty() || label.len() > 63 {
                return Err(InvalidHostname("each label must be 1 to 63 characters"));
            }
            let bytes = label.as_bytes();
            if !bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            {
                return Err(InvalidHostname(
                    "labels may contain only letters, digits and hyphens (use punycode for IDNs)",
                ));
            }
            if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
                return Err(InvalidHostname("labels may not start or end with a hyphen"));
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(InvalidHostname("the last label may not be numeric"));
        }
        Ok(Hostname(name))
    }

    /// Whether this is a `*.` wildcard.
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this name is `domain` or under it (`a.b.domain`).
    pub fn is_within(&self, domain: &str) -> bool {
        let rest = self.0.strip_prefix("*.").unwrap_or(&self.0);
        rest == domain || rest.ends_with(&format!(".{domain}"))
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The wildcard that would match `host`: `a.example.com` → `*.example.com`.
pub fn wildcard_for(host: &str) -> Option<String> {
    let (_, parent) = host.split_once('.')?;
    parent.contains('.').then(|| format!("*.{parent}"))
}

/// The project label `host` names under `base_domain`: `shop` for
/// `shop.<base_domain>`, `None` for the base domain itself, deeper names and
/// names elsewhere. Both are expected normalised.
pub fn project_label<'h>(host: &'h str, base_domain: &str) -> Option<&'h str> {
    let label = host.strip_suffix(base_domain)?.strip_suffix('.')?;
    (!label.is_empty() && !label.contains('.')).then_some(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_port_and_trailing_dot() {
        assert_eq!(normalize("Shop.Example.COM"), "shop.example.com");
        assert_eq!(normalize("shop.example.com:8080"), "shop.example.com");
        assert_eq!(normalize("shop.example.com."), "shop.example.com");
        assert_eq!(normalize("shop.example.com.:443"), "shop.example.com");
        assert_eq!(normalize("[::1]:8080"), "[::1]");
        assert_eq!(normalize("host:notaport"), "host:notaport");
    }

    #[test]
    fn accepts_valid_names_and_wildcards() {
        for ok in [
            "example.com",
            "a-b.example.co.uk",
            "xn--bcher-kva.example",
            "*.example.com",
            "EXAMPLE.com.",
        ] {
            assert!(Hostname::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            Hostname::parse("EXAMPLE.com.").unwrap().as_str(),
            "example.com"
        );
        assert!(Hostname::parse("*.example.com").unwrap().is_wildcard());
    }

    #[test]
    fn refuses_invalid_names() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        for bad in [
            "",
            "localhost",
            "-a.com",
            "a-.com",
            "a..com",
            "a_b.com",
            "a b.com",
            "127.0.0.1",
            "[::1]",
            "example.123",
            "*.com",
            "a.*.com",
            "ex/ample.com",
            &long_label,
            &long_name,
        ] {
            assert!(Hostname::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wildcards_and_domains() {
        assert_eq!(
            wildcard_for("a.example.com").as_deref(),
            Some("*.example.com")
        );
        assert_eq!(wildcard_for("example.com"), None);
        let h = Hostname::parse("shop.example.com").unwrap();
        assert!(h.is_within("example.com"));
        assert!(!h.is_within("ample.com"));
        assert!(
            Hostname::parse("example.com")
                .unwrap()
                .is_within("example.com")
        );
    }
}
