//! TLS for the public HTTPS listener: one certificate per hostname, chosen by
//! the client's SNI name (exact, then the wildcard one label up), else the
//! default certificate if there is one. Certificates come from files in the
//! config and from the admin API; the set is rebuilt whenever the store
//! announces a change.

use crate::config::{CertFiles, TlsConfig};
use crate::hostname::{Hostname, wildcard_for};
use crate::store::ControlStore;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// Why a certificate was refused.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The PEM does not hold a usable chain or key.
    #[error("{0}")]
    Invalid(String),
    /// The certificate is not valid for the hostname it is meant for.
    #[error("the certificate is not valid for `{0}`")]
    WrongName(String),
    /// The stored certificates could not be read.
    #[error("cannot read certificates from the control store: {0}")]
    Store(String),
}

/// Parses a PEM chain and key, checks the key belongs to the certificate and
/// that the certificate covers `hostname`.
pub fn certified_key(
    cert_pem: &str,
    key_pem: &str,
    hostname: Option<&Hostname>,
) -> Result<CertifiedKey, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Invalid(format!("certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(CertError::Invalid("no certificate in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| CertError::Invalid(format!("private key PEM: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| CertError::Invalid(format!("certificate and key: {e}")))?;
    if let Some(hostname) = hostname {
        let leaf = webpki::EndEntityCert::try_from(&certified.cert[0])
            .map_err(|e| CertError::Invalid(format!("certificate: {e}")))?;
        // A wildcard entry is checked with a name it must cover.
        let probe = match hostname.as_str().strip_prefix("*.") {
            Some(parent) => format!("switchyard-probe.{parent}"),
            None => hostname.to_string(),
        };
        let name =
            ServerName::try_from(probe).map_err(|_| CertError::WrongName(hostname.to_string()))?;
        leaf.verify_is_valid_for_subject_name(&name)
            .map_err(|_| CertError::WrongName(hostname.to_string()))?;
    }
    Ok(certified)
}

fn read_files(files: &CertFiles) -> Result<(String, String), CertError> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map_err(|e| CertError::Invalid(format!("{}: {e}", path.display())))
    };
    Ok((read(&files.cert)?, read(&files.key)?))
}

/// The certificates the HTTPS listener serves.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: RwLock<Certs>,
}

#[derive(Debug, Default)]
struct Certs {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertResolver {
    /// Rebuilds the set from the config's files and the store. A file that
    /// fails is an error (the operator's config is wrong), and so is a
    /// control store that cannot be read (the current set stays); a stored
    /// certificate that fails is skipped with a warning.
    pub async fn reload(
        &self,
        config: &TlsConfig,
        store: &dyn ControlStore,
    ) -> Result<(), CertError> {
        let mut certs = Certs::default();
        for files in &config.certificates {
            let (cert, key) = read_files(files)?;
            for name in &files.hostnames {
                let hostname = Hostname::parse(name)
                    .map_err(|e| CertError::Invalid(format!("{name}: {e}")))?;
                let key = certified_key(&cert, &key, Some(&hostname))?;
                certs.by_name.insert(hostname.to_string(), Arc::new(key));
            }
        }
        if let Some(files) = &config.default {
            let (cert, key) = read_files(files)?;
            certs.default = Some(Arc::new(certified_key(&cert, &key, None)?));
        }
        // Without the stored set, keep serving the current one rather than
        // dropping every uploaded certificate.
        let stored = store
            .certificates()
            .await
            .map_err(|e| CertError::Store(e.to_string()))?;
        for record in stored {
            match certified_key(&record.cert_pem, &record.key_pem, Some(&record.hostname)) {
                Ok(key) => {
                    certs
                        .by_name
                        .insert(record.hostname.to_string(), Arc::new(key));
                }
                Err(e) => {
                    tracing::warn!(hostname = %record.hostname, error = %e, "skipping a stored certificate")
                }
            }
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = certs;
        Ok(())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.current.read().unwrap_or_else(PoisonError::into_inner);
        let Some(name) = hello.server_name() else {
            return certs.default.clone();
        };
        let name = name.to_ascii_lowercase();
        certs
            .by_name
            .get(&name)
            .or_else(|| wildcard_for(&name).and_then(|w| certs.by_name.get(&w)))
            .or(certs.default.as_ref())
            .cloned()
    }
}

/// The rustls configuration of the HTTPS listener: certificates from
/// `resolver`, ALPN `h2` then `http/1.1`.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<rustls::ServerConfig, CertError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Invalid(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::generate_simple_self_signed(names).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn checks_keys_and_names() {
        let (cert, key) = self_signed(&["shop.example.com"]);
        let host = Hostname::parse("shop.example.com").unwrap();
        assert!(certified_key(&cert, &key, Some(&host)).is_ok());
        let other = Hostname::parse("blog.example.com").unwrap();
        assert!(matches!(
            certified_key(&cert, &key, Some(&other)),
            Err(CertError::WrongName(_))
        ));
        let (_, other_key) = self_signed(&["shop.example.com"]);
        assert!(matches!(
            certified_key(&cert, &other_key, Some(&host)),
            Err(CertError::Invalid(_))
        ));
        assert!(matches!(
            certified_key("junk", &key, None),
            Err(CertError::Invalid(_))
        ));

        let (wild, wild_key) = self_signed(&["*.example.com"]);
        let wildcard = Hostname::parse("*.example.com").unwrap();
        assert!(certified_key(&wild, &wild_key, Some(&wildcard)).is_ok());
    }
}
