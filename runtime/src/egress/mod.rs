//! Outgoing HTTP for guests (`wasi:http/outgoing-handler`), denied by
//! default.
//!
//! A request leaves the host only if all of these hold, checked in order:
//!
//! 1. the incoming request has not used up its subrequest budget
//!    ([`crate::Limits::subrequests`]);
//! 2. its scheme, host and port match a rule of the build's
//!    [`EgressAllowlist`] (from `[egress] allow` in `switchyard.toml`);
//! 3. the host resolves to at least one address outside every
//!    special-purpose range (loopback, private, link-local and metadata,
//!    IPv4-mapped IPv6, …) or inside a range the operator allowed
//!    ([`EgressConfig::allow_ranges`]). Only such addresses are dialled: the
//!    check runs on what DNS answered, right before connecting, so DNS
//!    rebinding cannot slip past it, and redirects are not followed (the
//!    guest sees the 3xx and any new request is checked afresh).
//!
//! The `Host` header sent is always the request's own authority, never one
//! the guest set nor the incoming request's. Every attempt is logged to the
//! project's log and to `switchyard::egress`, and counted in
//! `switchyard_egress_requests_total{project, result}`.

mod address;
mod allowlist;
mod client;
mod policy;

pub use address::IpRange;
pub use allowlist::{EgressAllowlist, EgressRuleError, MAX_EGRESS_RULES};
pub(crate) use policy::OutboundPolicy;

use crate::error::StartError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Operator settings for guests' outgoing requests (the allowlists
/// themselves belong to each build).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressConfig {
    /// Special-purpose ranges guests may reach anyway, in CIDR notation
    /// (`10.20.0.0/16` for an internal API). Every build still needs an
    /// allowlist rule naming the host. Default none.
    pub allow_ranges: Vec<IpRange>,
    /// Longest wait for DNS, the TCP connection and the TLS handshake
    /// together, in milliseconds. A guest may ask for less. Default 5000.
    pub connect_timeout_ms: u64,
    /// Longest wait for the response head, and between two chunks of its
    /// body, in milliseconds. A guest may ask for less. Default 30 000.
    pub response_timeout_ms: u64,
    /// A PEM file of extra root certificates to trust for `https` besides
    /// the system's (an internal CA). Default none.
    pub ca_file: Option<PathBuf>,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            allow_ranges: Vec::new(),
            connect_timeout_ms: 5_000,
            response_timeout_ms: 30_000,
            ca_file: None,
        }
    }
}

/// What every build's outgoing requests share: the operator's settings and
/// one TLS client configuration.
pub(crate) struct Egress {
    allow_ranges: Vec<IpRange>,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// The protocol settings and the operator's own roots (`ca_file`),
    /// checked when the node starts.
    tls_base: TlsBase,
    /// The TLS client configuration with the system's root certificates,
    /// built on the first `https` request: reading and parsing the system's
    /// roots takes about 5 ms, which every start would otherwise wait for,
    /// and most nodes' guests never make an `https` request.
    tls: OnceLock<Arc<rustls::ClientConfig>>,
}

struct TlsBase {
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>,
    operator_roots: rustls::RootCertStore,
}

impl Egress {
    pub(crate) fn new(config: &EgressConfig) -> Result<Self, StartError> {
        let invalid = |detail: String| StartError::Config(format!("egress: {detail}"));
        if config.connect_timeout_ms == 0 || config.response_timeout_ms == 0 {
            return Err(invalid("timeouts must be at least 1 ms".into()));
        }
        let mut operator_roots = rustls::RootCertStore::empty();
        if let Some(path) = &config.ca_file {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| invalid(format!("cannot read ca_file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(invalid(format!(
                    "ca_file {} holds no certificate",
                    path.display()
                )));
            }
            for cert in certs {
                operator_roots
                    .add(cert)
                    .map_err(|e| invalid(format!("ca_file {}: {e}", path.display())))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Egress {
            allow_ranges: config.allow_ranges.clone(),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            response_timeout: Duration::from_millis(config.response_timeout_ms),
            tls_base: TlsBase {
                builder,
                operator_roots,
            },
            tls: OnceLock::new(),
        })
    }

    /// The TLS client configuration, built on first use (a few ms, once per
    /// process; concurrent first users wait for the one build).
    fn tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls
            .get_or_init(|| {
                let TlsBase {
                    builder,
                    operator_roots,
                } = &self.tls_base;
                let mut roots = operator_roots.clone();
                let system = rustls_native_certs::load_native_certs();
                for error in &system.errors {
                    tracing::warn!(%error, "egress: skipping part of the system's root certificates");
                }
                let (added, _) = roots.add_parsable_certificates(system.certs);
                if added == 0 && operator_roots.is_empty() {
                    tracing::warn!(
                        "egress: no system root certificates found; https requests will fail"
                    );
                }
                let mut tls = builder
                    .clone()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                tls.alpn_protocols = vec![b"http/1.1".to_vec()];
                Arc::new(tls)
            })
            .clone()
    }

    /// Why `ip` may not be dialled, if it may not.
    fn refusal(&self, ip: std::net::IpAddr) -> Option<&'static str> {
        let range = address::special_range(ip)?;
        (!self.allow_ranges.iter().any(|r| r.contains(ip))).then_some(range)
    }
}
