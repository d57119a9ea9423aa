//! `switchyard.toml`, the app's manifest, shared by the CLI (how to build)
//! and the server (how to serve). Everything in it is validated before a
//! deploy writes anything.
//!
//! ```toml
//! project = "shop"                  # default project for `switchyard deploy`
//! spa_fallback = "/index.html"      # asset-only builds: serve this for unknown paths
//! not_found = "/404.html"           # served with 404 for unknown paths
//!
//! [build]                           # for `switchyard build`; all optional
//! command = "cargo build --release --target wasm32-wasip2"
//! component = "target/wasm32-wasip2/release/shop.wasm"
//! assets = "public"
//!
//! [env]
//! API_BASE = "https://api.example.com"
//!
//! [[headers]]
//! pattern = "/**"
//! set = { "x-frame-options" = "DENY" }
//!
//! [[cache]]
//! pattern = "/assets/**"
//! cache_control = "public, max-age=31536000, immutable"
//!
//! [limits]                          # may only lower the project's limits
//! wall_clock_ms = 2000
//!
//! allow_destructive_migrations = false  # true: a deploy may drop tables and columns
//!
//! [egress]                          # outgoing HTTP; without it the guest reaches nothing
//! allow = ["https://api.example.com", "https://*.stripe.com"]
//!
//! [[tables]]                        # the gateway database (see `switchyard_runtime::db::schema`)
//! name = "todos"
//! columns = [
//!   { name = "id", type = "integer", primary_key = true, client_read = true },
//!   { name = "title", type = "text", client_read = true, client_write = true },
//! ]
//! ```

use crate::build::{CacheRule, HeaderRule};
use crate::error::ApiError;
use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use switchyard_runtime::db::schema::{Schema, Table};
use switchyard_runtime::{EgressAllowlist, LimitsOverride};

/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Most environment variables in a manifest.
pub const MAX_ENV_VARS: usize = 256;
/// Largest environment value, in bytes.
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
/// Most header and cache rules, each.
pub const MAX_RULES: usize = 100;

/// Response headers a rule may not set: they belong to the connection or to
/// the platform.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "content-encoding",
    "content-range",
    "content-type",
    "etag",
    "keep-alive",
    "proxy-authenticate",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-request-id",
];

/// The parsed manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppManifest {
    /// The project `switchyard deploy` targets when none is given.
    pub project: Option<String>,
    /// For builds without a component: served (200) for unknown GET paths.
    pub spa_fallback: Option<String>,
    /// Served with 404 for unknown paths.
    pub not_found: Option<String>,
    /// How `switchyard build` builds the app.
    pub build: BuildSection,
    /// Environment variables (values visible to anyone who can read the
    /// manifest; keep secrets in the project env).
    pub env: BTreeMap<String, String>,
    /// Extra response headers.
    pub headers: Vec<HeaderRule>,
    /// `Cache-Control` rules.
    pub cache: Vec<CacheRule>,
    /// Lower limits for this build.
    pub limits: LimitsOverride,
    /// Lets this deploy drop the tables and columns it no longer declares,
    /// with their data. Without it such a deploy is refused.
    pub allow_destructive_migrations: bool,
    /// The gateway database's tables.
    pub tables: Vec<Table>,
    /// Outgoing HTTP the guest may make.
    pub egress: EgressSection,
}

/// `[egress]`: where the guest may send HTTP requests. Without it, nowhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressSection {
    /// Origins, `scheme://host[:port]`; `*.example.com` covers subdomains.
    pub allow: Vec<String>,
}

/// How `switchyard build` produces the bundle. Ignored by the server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuildSection {
    /// A shell command to run first. Default: `cargo build --release
    /// --target wasm32-wasip2` if there is a `Cargo.toml`, else nothing.
    pub command: Option<String>,
    /// The component to deploy. Default: the cdylib `cargo` built, if any.
    pub component: Option<String>,
    /// The directory of static assets. Default `assets`, if it exists.
    pub assets: Option<String>,
}

impl AppManifest {
    /// Parses and validates manifest text (not yet against the bundle's
    /// assets: see [`AppManifest::check_paths`]).
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(invalid(format!(
                "switchyard.toml is larger than {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        let manifest: AppManifest = toml::from_str(text)
            .map_err(|e| invalid(format!("switchyard.toml: {}", e.message())))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The declared tables as a schema.
    pub fn schema(&self) -> Result<Schema, ApiError> {
        Schema::new(self.tables.clone()).map_err(|e| ApiError::Invalid {
            code: e.code(),
            message: format!("tables: {e}"),
        })
    }

    fn validate(&self) -> Result<(), ApiError> {
        self.schema()?;
        EgressAllowlist::parse(&self.egress.allow).map_err(|e| ApiError::Invalid {
            code: "INVALID_EGRESS_RULE",
            message: e.to_string(),
        })?;
        if self.env.len() > MAX_ENV_VARS {
            return Err(invalid(format!("at most {MAX_ENV_VARS} env variables")));
        }
        for (name, value) in &self.env {
            check_env_name(name)?;
            if value.len() > MAX_ENV_VALUE_BYTES {
                return Err(invalid(format!(
                    "env {name}: value longer than {MAX_ENV_VALUE_BYTES} bytes"
                )));
            }
        }
        if self.headers.len() > MAX_RULES || self.cache.len() > MAX_RULES {
            return Err(invalid(format!(
                "at most {MAX_RULES} header rules and {MAX_RULES} cache rules"
            )));
        }
        for rule in &self.headers {
            check_pattern(&rule.pattern)?;
            for (name, value) in &rule.set {
                let header = HeaderName::try_from(name.as_str())
                    .map_err(|_| rule_error(format!("`{name}` is not a header name")))?;
                if RESERVED_HEADERS.contains(&header.as_str()) {
                    return Err(rule_error(format!(
                        "`{name}` is set by the platform and cannot be overridden"
                    )));
                }
                HeaderValue::try_from(value.as_str()).map_err(|_| {
                    rule_error(format!("the value of `{name}` is not a valid header value"))
                })?;
            }
        }
        for rule in &self.cache {
            check_pattern(&rule.pattern)?;
            HeaderValue::try_from(rule.cache_control.as_str()).map_err(|_| {
                rule_error(format!(
                    "`{}` is not a valid Cache-Control value",
                    rule.cache_control
                ))
            })?;
        }
        for path in [&self.spa_fallback, &self.not_found].into_iter().flatten() {
            check_asset_path(path)?;
        }
        Ok(())
    }

    /// Checks that the pages the manifest names are among the assets.
    pub fn check_paths(&self, has_asset: impl Fn(&str) -> bool) -> Result<(), ApiError> {
        for (key, path) in [
            ("spa_fallback", &self.spa_fallback),
            ("not_found", &self.not_found),
        ] {
            if let Some(path) = path
                && !has_asset(path)
            {
                return Err(invalid(format!(
                    "{key} `{path}` is not among the deployed assets"
                )));
            }
        }
        Ok(())
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::Invalid {
        code: "INVALID_MANIFEST",
        message,
    }
}

fn rule_error(message: String) -> ApiError {
    ApiError::Invalid {
        code: "INVALID_HEADER_RULE",
        message,
    }
}

fn check_pattern(pattern: &str) -> Result<(), ApiError> {
    if !pattern.starts_with('/') && !pattern.starts_with('*') {
        return Err(invalid(format!(
            "pattern `{pattern}` must start with `/` or `*`"
        )));
    }
    globset::Glob::new(pattern)
        .map(drop)
        .map_err(|e| invalid(format!("pattern `{pattern}`: {}", e.kind())))
}

/// `^[A-Z][A-Z0-9_]{0,63}$` and not `SWITCHYARD_*`.
pub fn check_env_name(name: &str) -> Result<(), ApiError> {
    let bytes = name.as_bytes();
    let shape = matches!(bytes.first(), Some(b'A'..=b'Z'))
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_');
    if !shape || name.starts_with("SWITCHYARD_") {
        let shown: String = name.chars().take(80).collect();
        return Err(ApiError::Invalid {
            code: "INVALID_ENV_NAME",
            message: format!(
                "`{shown}`: env names must match [A-Z][A-Z0-9_]{{0,63}} and not start with SWITCHYARD_"
            ),
        });
    }
    Ok(())
}

/// Longest asset path, in bytes.
pub const MAX_ASSET_PATH: usize = 500;

/// An asset path: starts with `/`, at most 500 bytes, no `.` or `..` segment, no
/// `\`, no control characters, no `//`.
pub fn check_asset_path(path: &str) -> Result<(), ApiError> {
    let why = if !path.starts_with('/') {
        Some("must start with /")
    } else if path.len() > MAX_ASSET_PATH {
        Some("is longer than 500 bytes")
    } else if path
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
    {
        Some("may not contain `.` or `..` segments")
    } else if path.contains('\\') {
        Some("may not contain `\\`")
    } else if path.chars().any(char::is_control) {
        Some("may not contain control characters")
    } else if path.contains("//") {
        Some("may not contain `//`")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => {
            let shown: String = path
                .chars()
                .take(100)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            Err(ApiError::Invalid {
                code: "INVALID_ASSET_PATH",
                message: format!("asset path `{shown}` {why}"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = r#"
project = "shop"
spa_fallback = "/index.html"
not_found = "/404.html"
[build]
command = "make"
assets = "public"
[env]
API_BASE = "https://api.example.com"
[[headers]]
pattern = "/**"
set = { "x-frame-options" = "DENY" }
[[cache]]
pattern = "/assets/**"
cache_control = "public, max-age=31536000, immutable"
[limits]
wall_clock_ms = 2000
"#;
        let m = AppManifest::parse(text).unwrap();
        assert_eq!(m.project.as_deref(), Some("shop"));
        assert_eq!(m.env["API_BASE"], "https://api.example.com");
        assert_eq!(m.headers[0].set["x-frame-options"], "DENY");
        assert_eq!(m.limits.wall_clock_ms, Some(2000));
        assert!(
            m.check_paths(|p| p == "/index.html" || p == "/404.html")
                .is_ok()
        );
        assert!(m.check_paths(|p| p == "/index.html").is_err());
    }

    fn code(result: Result<AppManifest, ApiError>) -> &'static str {
        result.unwrap_err().code()
    }

    #[test]
    fn refuses_bad_manifests_with_specific_codes() {
        assert_eq!(code(AppManifest::parse("bogus = 1")), "INVALID_MANIFEST");
        assert_eq!(
            code(AppManifest::parse("[env]\nlower = \"x\"")),
            "INVALID_ENV_NAME"
        );
        assert_eq!(
            code(AppManifest::parse("[env]\nSWITCHYARD_PROJECT = \"x\"")),
            "INVALID_ENV_NAME"
        );
        assert_eq!(
            code(AppManifest::parse("[limits]\nfuell = 1")),
            "INVALID_MANIFEST"
        );
        let reserved = "[[headers]]\npattern = \"/**\"\nset = { \"content-type\" = \"x\" }";
        assert_eq!(code(AppManifest::parse(reserved)), "INVALID_HEADER_RULE");
        let bad_value = "[[headers]]\npattern = \"/**\"\nset = { \"x-a\" = \"a\\nb\" }";
        assert_eq!(code(AppManifest::parse(bad_value)), "INVALID_HEADER_RULE");
        let bad_glob = "[[cache]]\npattern = \"/a/[\"\ncache_control = \"no-store\"";
        assert_eq!(code(AppManifest::parse(bad_glob)), "INVALID_MANIFEST");
        assert_eq!(
            code(AppManifest::parse("spa_fallback = \"index.html\"")),
            "INVALID_ASSET_PATH"
        );
        // Valid TOML, refused for its size alone.
        let padded = format!("# {}\n", "x".repeat(MAX_MANIFEST_BYTES));
        assert!(AppManifest::parse(&padded[..MAX_MANIFEST_BYTES - 1]).is_ok());
        let err = AppManifest::parse(&padded).unwrap_err();
        assert_eq!(err.code(), "INVALID_MANIFEST");
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    #[test]
    fn asset_path_rules() {
        for ok in [
            "/",
            "/index.html",
            "/a/b.c/d-e_f.txt",
            "/ünïcode.txt",
            "/a..b",
        ] {
            assert!(check_asset_path(ok).is_ok(), "{ok}");
        }
        let long = format!("/{}", "a".repeat(500));
        for bad in [
            "index.html",
            "/a/../b",
            "/..",
            "/a\\b",
            "/a\u{0}b",
            "/a\nb",
            "/a//b",
            &long,
        ] {
            assert_eq!(
                check_asset_path(bad).unwrap_err().code(),
                "INVALID_ASSET_PATH",
                "{bad:?}"
            );
        }
    }
}
