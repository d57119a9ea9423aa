//! The server's configuration: one validated [`Config`].
//!
//! Sources, later ones winning: built-in defaults, a TOML file, environment
//! variables, command-line flags. An environment variable
//! `SWITCHYARD__SECTION__FIELD=value` sets `section.field` (the value is read
//! as TOML if it parses, else as a string), so every field can be set without
//! a file. Unknown keys are refused wherever they come from.

use crate::hostname::Hostname;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use switchyard_runtime::RuntimeConfig;

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "SWITCHYARD__";

/// Everything `switchyard serve` needs. `Config::default()` is the zero-config
/// setup: data in `./switchyard-data`, public HTTP on 127.0.0.1:8080, admin on
/// 127.0.0.1:8081, `<project>.localhost` hostnames.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where everything is kept: control store, objects, kv, compiled
    /// artifacts, the generated admin token. Default `./switchyard-data`.
    pub data_dir: PathBuf,
    /// Projects answer at `<project>.<base_domain>`. Default `localhost`.
    pub base_domain: String,
    /// Listening addresses.
    pub listen: ListenConfig,
    /// HTTP limits and timeouts of every listener (the admin listener has
    /// its own cap of 1024 connections).
    pub http: HttpConfig,
    /// TLS certificates read from files (more can be uploaded through the
    /// admin API).
    pub tls: TlsConfig,
    /// The admin API.
    pub admin: AdminConfig,
    /// Limits on what a deploy may contain, and how deploys are processed.
    pub deploy: DeployConfig,
    /// Default per-project request limits (overridable per project).
    pub tenants: TenantDefaults,
    /// Static asset serving.
    pub assets: AssetConfig,
    /// Log output.
    pub log: LogOutputConfig,
    /// Where shared state lives: embedded in `data_dir` unless URLs say
    /// otherwise (see docs/CLUSTER.md).
    pub storage: StorageConfig,
    /// The sandbox (see `switchyard-runtime`). Its `artifact_dir` defaults to
    /// `<data_dir>/artifacts`.
    pub runtime: RuntimeConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./switchyard-data"),
            base_domain: "localhost".into(),
            listen: ListenConfig::default(),
            http: HttpConfig::default(),
            tls: TlsConfig::default(),
            admin: AdminConfig::default(),
            deploy: DeployConfig::default(),
            tenants: TenantDefaults::default(),
            assets: AssetConfig::default(),
            log: LogOutputConfig::default(),
            storage: StorageConfig::default(),
            runtime: RuntimeConfig {
                // Replaced by `<data_dir>/artifacts` in `Config::finish`
                // unless set explicitly.
                artifact_dir: PathBuf::new(),
                ..RuntimeConfig::default()
            },
        }
    }
}

/// Listening addresses.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// Plain HTTP (HTTP/1.1 and h2c) for tenants' hostnames. Default
    /// `127.0.0.1:8080`.
    pub public: SocketAddr,
    /// HTTPS (HTTP/1.1 and h2 by ALPN) for tenants' hostnames; off unless
    /// set.
    pub public_tls: Option<SocketAddr>,
    /// The admin API, metrics and health checks. Default `127.0.0.1:8081`;
    /// keep it off public interfaces.
    pub admin: SocketAddr,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            public: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_tls: None,
            admin: SocketAddr::from(([127, 0, 0, 1], 8081)),
        }
    }
}

/// HTTP limits and timeouts of every listener.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Time allowed to receive a request's headers, in ms (also the time an
    /// idle HTTP/1.1 keep-alive connection waits for its next request).
    /// Default 10 000.
    pub header_read_timeout_ms: u64,
    /// In ms: a connection is closed once it has had no request in flight
    /// for this long (bytes such as HTTP/2 pings do not count), or, while a
    /// response is being sent, once no byte has moved for this long. A
    /// running handler never makes it idle. Default 60 000.
    pub idle_timeout_ms: u64,
    /// Most headers in a request; more gets 431. Default 100.
    pub max_headers: usize,
    /// Largest header section of a request, in bytes; larger gets 431.
    /// Default 16 KiB.
    pub max_header_bytes: usize,
    /// Longest request target (path and query, or an absolute URI), in
    /// bytes; longer gets 414. A target too long to fit
    /// `max_header_bytes` gets 431 before it can be measured. Default 8192.
    pub max_uri_bytes: usize,
    /// Ceiling on every app's `request_body_bytes` (a sandbox limit, 5 MB by
    /// default): no project may accept larger request bodies; larger gets
    /// 413. Default 10 MB.
    pub max_body_bytes: u64,
    /// Open connections across the public listeners; further clients wait
    /// in the accept backlog. Default 10 000.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection. Default 200.
    pub h2_max_concurrent_streams: u32,
    /// On shutdown, how long in-flight requests may take to finish, in ms.
    /// Default 10 000.
    pub shutdown_grace_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_headers: 100,
            max_header_bytes: 16 * 1024,
            max_uri_bytes: 8192,
            max_body_bytes: 10_000_000,
            max_connections: 10_000,
            h2_max_concurrent_streams: 200,
            shutdown_grace_ms: 10_000,
        }
    }
}

/// TLS certificates from files.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificates chosen by SNI, each for the `hostnames` it lists.
    pub certificates: Vec<CertFiles>,
    /// Served when no certificate matches the SNI name (or there is none).
    pub default: Option<CertFiles>,
}

/// A PEM certificate chain and its private key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The SNI names it is served for (`*.example.com` allowed); the
    /// certificate must be valid for each. Ignored for `tls.default`.
    #[serde(default)]
    pub hostnames: Vec<String>,
}

/// The admin API.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The admin bearer token. If unset (and there is no `token_file`), one is
    /// generated on first start and kept in `<data_dir>/admin-token` (0600).
    pub token: Option<String>,
    /// A file holding the admin token.
    pub token_file: Option<PathBuf>,
    /// Largest deployment bundle accepted, in bytes. Default 150 MB.
    pub max_upload_bytes: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            token: None,
            token_file: None,
            max_upload_bytes: 150_000_000,
        }
    }
}

/// What a deploy may contain and how deploys run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeployConfig {
    /// Most static assets in one deploy. Default 2000.
    pub max_assets: usize,
    /// Largest single asset, in bytes. Default 10 MB.
    pub max_asset_bytes: u64,
    /// All assets of a deploy together, in bytes. Default 100 MB.
    pub max_total_asset_bytes: u64,
    /// Largest component, in bytes. Default 20 MiB.
    pub max_component_bytes: u64,
    /// Components compiled at once; further deploys queue. Default 2.
    pub compile_concurrency: usize,
    /// Builds kept per project for rollback (the active one always is).
    /// Default 10.
    pub retained_builds: usize,
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            max_assets: 2000,
            max_asset_bytes: 10_000_000,
            max_total_asset_bytes: 100_000_000,
            max_component_bytes: 20 * 1024 * 1024,
            compile_concurrency: 2,
            retained_builds: 10,
        }
    }
}

/// Request limits every project starts with.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantDefaults {
    /// Sustained requests per minute per project. Default 6000.
    pub requests_per_minute: u32,
    /// Requests a project may make in a burst above that rate. Default 300.
    pub burst: u32,
    /// Requests per project per UTC day; 0 means no quota. Default 0.
    pub daily_requests: u64,
}

impl Default for TenantDefaults {
    fn default() -> Self {
        TenantDefaults {
            requests_per_minute: 6000,
            burst: 300,
            daily_requests: 0,
        }
    }
}

/// Static asset serving.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssetConfig {
    /// Memory for hot small assets, in bytes. Default 64 MiB.
    pub memory_cache_bytes: u64,
    /// Largest asset kept in memory, in bytes. Default 1 MiB.
    pub max_cached_asset_bytes: u64,
}

impl Default for AssetConfig {
    fn default() -> Self {
        AssetConfig {
            memory_cache_bytes: 64 * 1024 * 1024,
            max_cached_asset_bytes: 1024 * 1024,
        }
    }
}

/// Where each kind of shared state lives, by URL. Unset means embedded,
/// under `data_dir`. Every node of a cluster must use the same URLs for
/// all of them (see docs/CLUSTER.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Projects, hostnames, builds, tokens, keys, certificates:
    /// `sqlite://` (default `<data_dir>/control.sqlite`, or
    /// `sqlite:///abs/path`) or `redis://[user:password@]host[:port][/db]`.
    pub control: Option<String>,
    /// Guests' kv data: `sqlite://` (default `<data_dir>/kv.sqlite`) or
    /// `redis://…`.
    pub kv: Option<String>,
    /// Projects' gateway databases: `sqlite://` (default: one file per
    /// project in `<data_dir>/db`, or `sqlite:///abs/dir`) or
    /// `postgres://user[:password]@host[:port]/database` (a schema per
    /// project).
    pub db: Option<String>,
    /// Assets and components: `file://` (default `<data_dir>/objects`, or
    /// `file:///abs/dir`) or `s3://<bucket>[/<prefix>][?endpoint=…&region=…]`
    /// with credentials from `AWS_*` environment variables.
    pub objects: Option<String>,
    /// Request rate limits and daily quotas: `local` (default: this node's
    /// memory) or `redis://…` (shared by every node).
    pub rate_limits: Option<String>,
    /// Prefix of every Redis key, so several deployments can share one
    /// Redis. Default `switchyard`.
    pub redis_prefix: String,
    /// Deadline of every Redis call, in ms (kv calls also obey the
    /// sandbox's `kv_timeout_ms`). Default 500.
    pub redis_timeout_ms: u64,
    /// When the shared rate limiter cannot reach Redis: refuse requests
    /// with 503 (`false`, the default) or admit them unlimited (`true`).
    pub rate_limits_fail_open: bool,
    /// Deadline of one object store request (with its retries), and of the
    /// first response of an asset read, in ms. Default 30000.
    pub objects_timeout_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            control: None,
            kv: None,
            db: None,
            objects: None,
            rate_limits: None,
            redis_prefix: "switchyard".into(),
            redis_timeout_ms: 500,
            objects_timeout_ms: 30_000,
            rate_limits_fail_open: false,
        }
    }
}

/// Log output.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogOutputConfig {
    /// `text` or `json`. Default `text`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `switchyard=debug`. Default `info`.
    pub filter: String,
}

impl Default for LogOutputConfig {
    fn default() -> Self {
        LogOutputConfig {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML (file and overrides together) does not fit the schema.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads the configuration: defaults, then `file` (if any), then
    /// `SWITCHYARD__*` variables from `env`, then validation.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::from_sources(file, env)?.finish()
    }

    /// Defaults, `file`, then `env`, not yet validated: the caller may apply
    /// command-line flags before calling [`Config::finish`].
    pub fn from_sources(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            if let Some(path) = name.strip_prefix(ENV_PREFIX) {
                set_path(&mut table, path, &value)?;
            }
        }
        let artifact_dir_set = table
            .get("runtime")
            .and_then(toml::Value::as_table)
            .is_some_and(|runtime| runtime.contains_key("artifact_dir"));
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        if !artifact_dir_set {
            // A `[runtime]` section brings the sandbox's own default
            // (`./switchyard-data/artifacts`), which ignores `data_dir`:
            // leave it unset so `finish` derives it from `data_dir`.
            config.runtime.artifact_dir = PathBuf::new();
        }
        Ok(config)
    }

    /// Fills derived defaults and validates.
    pub fn finish(mut self) -> Result<Config, ConfigError> {
        if self.runtime.artifact_dir.as_os_str().is_empty() {
            self.runtime.artifact_dir = self.data_dir.join("artifacts");
        }
        self.base_domain = crate::hostname::normalize(&self.base_domain);
        self.validate()?;
        Ok(self)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if self.base_domain != "localhost" && Hostname::parse(&self.base_domain).is_err() {
            return invalid(format!(
                "base_domain `{}` is not a valid hostname",
                self.base_domain
            ));
        }
        let positive = [
            (
                "http.header_read_timeout_ms",
                self.http.header_read_timeout_ms,
            ),
            ("http.idle_timeout_ms", self.http.idle_timeout_ms),
            ("http.max_headers", self.http.max_headers as u64),
            ("http.max_connections", self.http.max_connections as u64),
            (
                "http.h2_max_concurrent_streams",
                u64::from(self.http.h2_max_concurrent_streams),
            ),
            ("deploy.max_assets", self.deploy.max_assets as u64),
            ("deploy.max_asset_bytes", self.deploy.max_asset_bytes),
            (
                "deploy.max_total_asset_bytes",
                self.deploy.max_total_asset_bytes,
            ),
            (
                "deploy.max_component_bytes",
                self.deploy.max_component_bytes,
            ),
            (
                "deploy.compile_concurrency",
                self.deploy.compile_concurrency as u64,
            ),
            ("deploy.retained_builds", self.deploy.retained_builds as u64),
            (
                "tenants.requests_per_minute",
                u64::from(self.tenants.requests_per_minute),
            ),
            ("admin.max_upload_bytes", self.admin.max_upload_bytes),
        ];
        for (name, value) in positive {
            if value == 0 {
                return invalid(format!("{name} must be at least 1"));
            }
        }
        if self.http.max_header_bytes < 8192 {
            return invalid("http.max_header_bytes must be at least 8192".into());
        }
        if self.http.max_uri_bytes < 256 {
            return invalid("http.max_uri_bytes must be at least 256".into());
        }
        if self.deploy.max_component_bytes > self.runtime.max_component_bytes {
            return invalid(format!(
                "deploy.max_component_bytes ({}) is above runtime.max_component_bytes ({})",
                self.deploy.max_component_bytes, self.runtime.max_component_bytes
            ));
        }
        let clash = |a: SocketAddr| a == self.listen.admin && a.port() != 0;
        if clash(self.listen.public) || self.listen.public_tls.is_some_and(clash) {
            return invalid("the admin listener must have its own address".into());
        }
        if self.listen.public_tls.is_some()
            && self.tls.default.is_none()
            && self.tls.certificates.is_empty()
        {
            tracing::warn!(
                "listen.public_tls is set but no certificate files are configured; only certificates uploaded through the admin API will be served"
            );
        }
        self.runtime
            .limits
            .validate(&self.runtime.pool)
            .map_err(|e| ConfigError::Invalid(format!("runtime.limits: {e}")))?;
        crate::storage::StoragePlan::new(self).map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// Scratch space for deploys in progress.
    pub fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }
}

/// Sets `a__b__c` (lowercased) in `table` to `value`.
fn set_path(table: &mut toml::Table, path: &str, value: &str) -> Result<(), ConfigError> {
    let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    if keys.iter().any(String::is_empty) {
        return Err(ConfigError::Parse(format!(
            "malformed variable {ENV_PREFIX}{path}"
        )));
    }
    let (last, parents) = keys
        .split_last()
        .ok_or_else(|| ConfigError::Parse(format!("malformed variable {ENV_PREFIX}{path}")))?;
    let mut node = table;
    for key in parents {
        let entry = node
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(ConfigError::Parse(format!(
                    "{ENV_PREFIX}{path}: `{key}` is not a section"
                )));
            }
        };
    }
    // `8080` is a number, `true` a bool, `[1, 2]` an array; anything else
    // (paths, addresses, hostnames) a string.
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    node.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, toml).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load(Some(&path), env)
    }

    #[test]
    fn zero_config_works() {
        let config = Config::load(None, Vec::new()).unwrap();
        assert_eq!(config.listen.public.to_string(), "127.0.0.1:8080");
        assert_eq!(config.listen.admin.to_string(), "127.0.0.1:8081");
        assert_eq!(config.base_domain, "localhost");
        assert_eq!(
            config.runtime.artifact_dir,
            PathBuf::from("./switchyard-data/artifacts")
        );
    }

    #[test]
    fn file_then_env_then_validation() {
        let config = load(
            "base_domain = \"Apps.Example.com\"\n[deploy]\nmax_assets = 5\n",
            &[
                ("SWITCHYARD__DEPLOY__MAX_ASSETS", "7"),
                ("SWITCHYARD__LISTEN__PUBLIC", "127.0.0.1:9000"),
                ("SWITCHYARD__LOG__FORMAT", "json"),
                ("SWITCHYARD__RUNTIME__LIMITS__WALL_CLOCK_MS", "500"),
                ("UNRELATED", "x"),
                ("SWITCHYARD_URL", "not config"),
            ],
        )
        .unwrap();
        assert_eq!(config.base_domain, "apps.example.com");
        assert_eq!(config.deploy.max_assets, 7);
        assert_eq!(config.listen.public.port(), 9000);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.runtime.limits.wall_clock_ms, 500);
    }

    #[test]
    fn artifact_dir_follows_data_dir_unless_set() {
        let config = load(
            "data_dir = \"/srv/switchyard\"\n[runtime]\nepoch_tick_ms = 5\n",
            &[("SWITCHYARD__RUNTIME__POOL__TOTAL_MEMORIES", "64")],
        )
        .unwrap();
        assert_eq!(
            config.runtime.artifact_dir,
            PathBuf::from("/srv/switchyard/artifacts")
        );
        let config = load("[runtime]\nartifact_dir = \"/fast/cache\"\n", &[]).unwrap();
        assert_eq!(config.runtime.artifact_dir, PathBuf::from("/fast/cache"));
    }

    #[test]
    fn unknown_keys_are_refused_from_file_and_env() {
        let err = load("bogus = 1\n", &[]).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = load("", &[("SWITCHYARD__DEPLOY__MAX_ASSET", "1")]).unwrap_err();
        assert!(err.to_string().contains("max_asset"), "{err}");
        let err = load("[http]\ntimeout = 3\n", &[]).unwrap_err();
        assert!(err.to_string().contains("timeout"), "{err}");
    }

    #[test]
    fn invalid_values_are_refused() {
        assert!(load("", &[("SWITCHYARD__DEPLOY__MAX_ASSETS", "0")]).is_err());
        assert!(load("base_domain = \"not a domain\"\n", &[]).is_err());
        assert!(
            load(
                "[listen]\npublic = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:1\"\n",
                &[]
            )
            .is_err()
        );
        assert!(load("[runtime.limits]\nmemory_bytes = 99999999999\n", &[]).is_err());
    }
}
