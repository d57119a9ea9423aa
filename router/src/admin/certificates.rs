//! TLS certificates for hostnames, served by SNI on the HTTPS listener.
//! The operator's to manage; private keys are never returned.

use super::{Call, ok};
use crate::error::{ApiError, Body};
use crate::hostname::Hostname;
use crate::store::{CertificateRecord, now_ms};
use crate::tls::{CertError, certified_key};
use http::{Response, StatusCode};
use serde::Deserialize;

pub(crate) async fn list(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    call.principal.require_admin()?;
    let items = call
        .node
        .store
        .certificates()
        .await?
        .iter()
        .map(|c| serde_json::json!({ "hostname": c.hostname, "createdAt": c.created_at }))
        .collect();
    ok(StatusCode::OK, serde_json::Value::Array(items))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PutCertificate {
    hostname: String,
    certificate_pem: String,
    private_key_pem: String,
}

pub(crate) async fn put(mut call: Call<'_>) -> Result<Response<Body>, ApiError> {
    call.principal.require_admin()?;
    let body: PutCertificate = call.json().await?;
    let hostname = Hostname::parse(&body.hostname).map_err(|e| ApiError::Invalid {
        code: "INVALID_HOSTNAME",
        message: e.to_string(),
    })?;
    certified_key(
        &body.certificate_pem,
        &body.private_key_pem,
        Some(&hostname),
    )
    .map_err(|e| match e {
        CertError::Invalid(message) => ApiError::Invalid {
            code: "INVALID_CERTIFICATE",
            message,
        },
        CertError::WrongName(_) => ApiError::Invalid {
            code: "CERTIFICATE_NAME_MISMATCH",
            message: e.to_string(),
        },
        CertError::Store(detail) => ApiError::Unavailable(detail),
    })?;
    let record = CertificateRecord {
        hostname,
        cert_pem: body.certificate_pem,
        key_pem: body.private_key_pem,
        created_at: now_ms(),
    };
    call.node.store.put_certificate(&record).await?;
    ok(
        StatusCode::CREATED,
        serde_json::json!({ "hostname": record.hostname, "createdAt": record.created_at }),
    )
}

pub(crate) async fn delete(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    call.principal.require_admin()?;
    let hostname =
        Hostname::parse(&call.params[0]).map_err(|_| ApiError::NotFound("certificate"))?;
    if !call.node.store.delete_certificate(&hostname).await? {
        return Err(ApiError::NotFound("certificate"));
    }
    ok(
        StatusCode::OK,
        serde_json::json!({ "hostname": hostname, "deleted": true }),
    )
}
