//! Identifiers the runtime keys state by. Each is validated once, where it is
//! made, so the rest of the crate can use it as a file name or a namespace
//! without re-checking.

use std::fmt;
use std::sync::Arc;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} `{value}`: {rule}")]
pub struct InvalidId {
    kind: &'static str,
    value: String,
    rule: &'static str,
}

impl InvalidId {
    fn new(kind: &'static str, value: &str, rule: &'static str) -> Self {
        // Never echo an unbounded string back.
        let value = value.chars().take(80).collect();
        InvalidId { kind, value, rule }
    }
}

/// A project's identifier: a DNS label (`[a-z0-9]`, inner `-`, 1–63 chars),
/// since it is also the first label of the project's default hostname. It
/// scopes the project's kv namespace and logs.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectId(Arc<str>);

impl ProjectId {
    /// Validates `s` as a project id.
    pub fn new(s: &str) -> Result<Self, InvalidId> {
        const RULE: &str = "use 1-63 lowercase letters, digits and inner hyphens";
        let bytes = s.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes.first() != Some(&b'-')
            && bytes.last() != Some(&b'-');
        if valid {
            Ok(ProjectId(s.into()))
        } else {
            Err(InvalidId::new("project id", s, RULE))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A build's identifier: 1–64 ASCII letters, digits, `-` or `_`. Builds are
/// immutable; a new deploy is a new build.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BuildId(Arc<str>);

impl BuildId {
    /// Validates `s` as a build id.
    pub fn new(s: &str) -> Result<Self, InvalidId> {
        const RULE: &str = "use 1-64 ASCII letters, digits, '-' or '_'";
        let valid = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(BuildId(s.into()))
        } else {
            Err(InvalidId::new("build id", s, RULE))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A component's identity: the lowercase hex SHA-256 of its bytes. Components
/// with the same bytes share one compiled artifact, whoever deployed them.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId(Arc<str>);

impl ComponentId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        ComponentId(hex::encode(sha2::Sha256::digest(bytes)).into())
    }

    /// Parses a previously issued id (64 lowercase hex digits).
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        const RULE: &str = "expected 64 lowercase hex digits (a SHA-256)";
        let valid = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(ComponentId(s.into()))
        } else {
            Err(InvalidId::new("component id", s, RULE))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! display_as_str {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($ty), &*self.0)
            }
        }
    )*};
}
display_as_str!(ProjectId, BuildId, ComponentId);

/// Serialised as their string; deserialising validates, like the
/// constructors do.
macro_rules! serde_as_validated_str {
    ($($ty:ty => $parse:path),*) => {$(
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $parse(&s).map_err(serde::de::Error::custom)
            }
        }
    )*};
}
serde_as_validated_str!(ProjectId => ProjectId::new, BuildId => BuildId::new, ComponentId => ComponentId::parse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_are_dns_labels() {
        for ok in ["a", "shop", "my-shop-2", &"x".repeat(63)] {
            assert!(ProjectId::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Shop",
            "a.b",
            "a_b",
            "ä",
            &"x".repeat(64),
            "a/b",
            "a\0",
        ] {
            assert!(ProjectId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn build_ids() {
        assert!(BuildId::new("b1_2024-01").is_ok());
        assert!(BuildId::new("").is_err());
        assert!(BuildId::new("../x").is_err());
        assert!(BuildId::new(&"b".repeat(65)).is_err());
    }

    #[test]
    fn component_ids_are_sha256_hex() {
        let id = ComponentId::of(b"abc");
        assert_eq!(
            id.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(ComponentId::parse(id.as_str()), Ok(id));
        assert!(ComponentId::parse("../../etc/passwd").is_err());
        assert!(ComponentId::parse(&"A".repeat(64)).is_err());
    }

    #[test]
    fn serde_validates() {
        let id: ProjectId = serde_json::from_str("\"shop\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"shop\"");
        assert!(serde_json::from_str::<ProjectId>("\"Not Valid\"").is_err());
        assert!(serde_json::from_str::<ComponentId>("\"abc\"").is_err());
    }

    #[test]
    fn errors_do_not_echo_unbounded_input() {
        let err = ProjectId::new(&"Z".repeat(10_000)).unwrap_err();
        assert!(err.to_string().len() < 200);
    }
}
