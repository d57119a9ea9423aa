//! A build's egress allowlist: the origins its guest may send requests to.
//!
//! A rule is `scheme://host[:port]`: `https://api.example.com`,
//! `http://10.0.0.5:8080`, `https://*.example.com` (any subdomain, at any
//! depth, but not `example.com` itself). The port defaults to the scheme's.
//! Nothing else (paths, credentials, queries) may appear: a rule names an
//! origin, and a request matches it only on all three of scheme, host and
//! port.

use std::fmt;
use std::net::IpAddr;

/// Most rules one build may declare.
pub const MAX_EGRESS_RULES: usize = 100;

/// Longest host name, per DNS.
const MAX_HOST_BYTES: usize = 253;

/// The origins a build may reach. Empty (the default) refuses everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressAllowlist {
    rules: Vec<Rule>,
}

/// A rule that cannot be parsed, with why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("egress rule `{rule}`: {reason}")]
pub struct EgressRuleError {
    /// The rule as written (cut to 200 characters).
    pub rule: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub(crate) fn parse(text: &str) -> Option<Scheme> {
        match text {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    pub(crate) fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A normalised host: a lowercase DNS name without a trailing dot, or an IP
/// address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// Parses the host part of an authority: `Example.COM.`, `10.0.0.1`,
    /// `[::1]`. Refuses anything that is neither a DNS name of letters,
    /// digits and hyphens nor an IP literal.
    pub(crate) fn parse(text: &str) -> Option<Host> {
        if let Some(v6) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            return v6.parse().ok().map(Host::Ip);
        }
        if let Ok(ip) = text.parse::<std::net::Ipv4Addr>() {
            return Some(Host::Ip(IpAddr::V4(ip)));
        }
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        is_dns_name(&name).then_some(Host::Name(name))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HOST_BYTES
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    Exact(Host),
    /// `*.example.com`, stored as `.example.com`.
    Subdomains(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    scheme: Scheme,
    host: HostPattern,
    port: u16,
}

impl Rule {
    fn parse(text: &str) -> Result<Rule, &'static str> {
        let (scheme, authority) = text
            .split_once("://")
            .ok_or("write it as scheme://host[:port]")?;
        let scheme = Scheme::parse(scheme).ok_or("the scheme must be http or https")?;
        if authority.contains(['/', '?', '#', '@', '\\'])
            || authority.chars().any(char::is_whitespace)
        {
            return Err("a rule names an origin only: no path, query or credentials");
        }
        let (host, port) =
            split_port(authority).ok_or("the port must be a number from 1 to 65535")?;
        let host = if let Some(parent) = host.strip_prefix("*.") {
            match Host::parse(parent) {
                Some(Host::Name(name)) if name.contains('.') => {
                    HostPattern::Subdomains(format!(".{name}"))
                }
                _ => {
                    return Err(
                        "a wildcard covers the subdomains of a name with a dot, as in *.example.com",
                    );
                }
            }
        } else {
            HostPattern::Exact(
                Host::parse(host).ok_or("the host must be a DNS name or an IP address")?,
            )
        };
        Ok(Rule {
            port: port.unwrap_or(scheme.default_port()),
            scheme,
            host,
        })
    }

    fn matches(&self, scheme: Scheme, host: &Host, port: u16) -> bool {
        self.scheme == scheme
            && self.port == port
            && match (&self.host, host) {
                (HostPattern::Exact(allowed), host) => allowed == host,
                (HostPattern::Subdomains(suffix), Host::Name(name)) => {
                    name.len() > suffix.len() && name.ends_with(suffix.as_str())
                }
                (HostPattern::Subdomains(_), Host::Ip(_)) => false,
            }
    }
}

/// Splits `host[:port]` (with `[v6]` hosts); `None` for a bad port.
pub(crate) fn split_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let port_at = match authority.rfind(':') {
        // A bare IPv6 literal's colons are inside brackets.
        Some(i) if !authority[i..].contains(']') => i,
        _ => return Some((authority, None)),
    };
    let port: u16 = authority[port_at + 1..].parse().ok().filter(|p| *p != 0)?;
    Some((&authority[..port_at], Some(port)))
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        match &self.host {
            HostPattern::Exact(host) => write!(f, "{host}")?,
            HostPattern::Subdomains(suffix) => write!(f, "*{suffix}")?,
        }
        write!(f, ":{}", self.port)
    }
}

impl EgressAllowlist {
    /// Parses a build's rules; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Self, EgressRuleError> {
        if rules.len() > MAX_EGRESS_RULES {
            return Err(EgressRuleError {
                rule: format!("{} rules", rules.len()),
                reason: "a build may declare at most 100 egress rules",
            });
        }
        let rules = rules
            .iter()
            .map(|text| {
                let text = text.as_ref();
                Rule::parse(text).map_err(|reason| EgressRuleError {
                    rule: text.chars().take(200).collect(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(EgressAllowlist { rules })
    }

    /// Whether no origin is allowed.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub(crate) fn allows(&self, scheme: Scheme, host: &Host, port: u16) -> bool {
        self.rules.iter().any(|r| r.matches(scheme, host, port))
    }
}

impl fmt::Display for EgressAllowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{rule}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(rules: &[&str], scheme: Scheme, host: &str, port: u16) -> bool {
        let list = EgressAllowlist::parse(rules).unwrap();
        list.allows(scheme, &Host::parse(host).unwrap(), port)
    }

    #[test]
    fn exact_rules_match_scheme_host_and_port() {
        let rules = ["https://api.example.com"];
        assert!(allows(&rules, Scheme::Https, "api.example.com", 443));
        assert!(allows(&rules, Scheme::Https, "API.Example.COM.", 443));
        assert!(!allows(&rules, Scheme::Http, "api.example.com", 80));
        assert!(!allows(&rules, Scheme::Https, "api.example.com", 8443));
        assert!(!allows(&rules, Scheme::Https, "example.com", 443));
        assert!(!allows(&rules, Scheme::Https, "x.api.example.com", 443));
        assert!(!allows(
            &rules,
            Scheme::Https,
            "api.example.com.evil.net",
            443
        ));
        let rules = ["http://127.0.0.1:8080", "https://[::1]:9443"];
        assert!(allows(&rules, Scheme::Http, "127.0.0.1", 8080));
        assert!(allows(&rules, Scheme::Https, "[::1]", 9443));
        assert!(!allows(&rules, Scheme::Http, "127.0.0.1", 80));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let rules = ["https://*.example.com"];
        assert!(allows(&rules, Scheme::Https, "a.example.com", 443));
        assert!(allows(&rules, Scheme::Https, "a.b.example.com", 443));
        assert!(!allows(&rules, Scheme::Https, "example.com", 443));
        assert!(!allows(&rules, Scheme::Https, "badexample.com", 443));
        assert!(!allows(
            &rules,
            Scheme::Https,
            "a.example.com.evil.net",
            443
        ));
        assert!(!allows(&rules, Scheme::Https, "1.2.3.4", 443));
    }

    #[test]
    fn the_empty_list_allows_nothing() {
        let list = EgressAllowlist::default();
        assert!(list.is_empty());
        assert!(!list.allows(Scheme::Https, &Host::parse("example.com").unwrap(), 443));
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        for bad in [
            "example.com",
            "ftp://example.com",
            "https://example.com/path",
            "https://user@example.com",
            "https://example.com?x",
            "https://example.com:0",
            "https://example.com:65536",
            "https://example.com:x",
            "https://",
            "https://*.com",
            "https://*",
            "https://a.*.example.com",
            "https://exa mple.com",
            "https://-bad.example.com",
            "https://[::1",
            "https://ex_ample.com",
            "https://éxample.com",
        ] {
            let err = EgressAllowlist::parse(&[bad]).unwrap_err();
            assert_eq!(err.rule, bad);
        }
        let many: Vec<String> = (0..=MAX_EGRESS_RULES)
            .map(|i| format!("https://h{i}.example"))
            .collect();
        assert!(EgressAllowlist::parse(&many).is_err());
    }

    #[test]
    fn rules_display_normalised() {
        let list =
            EgressAllowlist::parse(&["https://API.example.com.", "http://*.Example.org:8080"])
                .unwrap();
        assert_eq!(
            list.to_string(),
            "https://api.example.com:443, http://*.example.org:8080"
        );
    }
}
