//! The errors the platform itself answers with, their stable codes and
//! statuses, and the response bodies every listener uses.
//!
//! Errors: `{"ok":false,"error":{"code","message","requestId"}}`. Admin API
//! successes: `{"ok":true,"data":…,"meta":{…}}`. Messages are fixed or built
//! from the caller's own input; details (paths, SQL, another tenant's names)
//! go to the operator's log only.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full};
use std::borrow::Cow;
use switchyard_runtime::backend::db::DbError;
use switchyard_runtime::{DispatchError, LoadError};

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body the router sends.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// Why the platform refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No project answers at this hostname.
    #[error("no app is served at this hostname")]
    HostNotFound,
    /// The project exists but has nothing deployed.
    #[error("nothing is deployed here yet")]
    NotDeployed,
    /// The Host does not match the TLS server name of this connection.
    #[error("this connection is for another hostname")]
    Misdirected,
    /// A malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// A request input failed validation; `code` names the rule.
    #[error("{message}")]
    Invalid {
        /// The stable code of the rule, e.g. `INVALID_ASSET_PATH`.
        code: &'static str,
        /// What was wrong.
        message: String,
    },
    /// Something the request needs exists already or is busy.
    #[error("{message}")]
    Conflict {
        /// The stable code, e.g. `HOSTNAME_TAKEN`.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// No valid credentials.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// Valid credentials that may not do this.
    #[error("this token may not do that")]
    Forbidden,
    /// A resource that does not exist (or that the caller may not see).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A route that does not exist in the admin API.
    #[error("no such endpoint")]
    NoRoute,
    /// A route that exists, with another method.
    #[error("this endpoint does not take that method")]
    MethodNotAllowed,
    /// The project has been suspended by the operator.
    #[error("this app is suspended")]
    Suspended,
    /// The project's rate limit is exhausted for now.
    #[error("too many requests; retry after {retry_after} s")]
    RateLimited {
        /// Seconds until a request would be accepted.
        retry_after: u64,
    },
    /// The project's daily request quota is used up.
    #[error("the daily request quota is used up; retry after {retry_after} s")]
    QuotaExceeded {
        /// Seconds until the quota resets.
        retry_after: u64,
    },
    /// A request body over a limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A request target longer than `http.max_uri_bytes`.
    #[error("the request target is longer than {0} bytes")]
    UriTooLong(usize),
    /// The sandbox refused or failed the request.
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// The component was refused at deploy.
    #[error(transparent)]
    Load(LoadError),
    /// The disk holding the server's data is full, so a write was refused.
    /// The detail is for the operator's log.
    #[error("the server is out of storage space")]
    StorageFull(String),
    /// A backend is down or slow; retrying later may work.
    #[error("a backend is unavailable; try again shortly")]
    Unavailable(String),
    /// A gateway database call failed; `batch_index` says which query of a
    /// batch.
    #[error("{}{error}", batch_index.map(|i| format!("query {i}: ")).unwrap_or_default())]
    Db {
        /// What failed.
        error: DbError,
        /// The failing query's position, for batches.
        batch_index: Option<usize>,
    },
    /// A bug or an unexpected failure.
    #[error("internal error")]
    Internal(String),
}

impl From<LoadError> for ApiError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::StorageFull(detail) => ApiError::StorageFull(detail),
            e => ApiError::Load(e),
        }
    }
}

impl ApiError {
    /// A failed file operation on the server's own data: `STORAGE_FULL`
    /// when the disk is full, otherwise a bug or a broken host.
    pub fn io(context: &str, e: &std::io::Error) -> Self {
        let detail = format!("{context}: {e}");
        if switchyard_runtime::disk::is_full(e) {
            ApiError::StorageFull(detail)
        } else {
            ApiError::Internal(detail)
        }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::HostNotFound => "HOST_NOT_FOUND",
            ApiError::NotDeployed => "NOT_DEPLOYED",
            ApiError::Misdirected => "MISDIRECTED_REQUEST",
            ApiError::BadRequest(_) => "BAD_REQUEST",
            ApiError::Invalid { code, .. } | ApiError::Conflict { code, .. } => code,
            ApiError::Unauthorized => "UNAUTHORIZED",
            ApiError::Forbidden => "FORBIDDEN",
            ApiError::NotFound(_) | ApiError::NoRoute => "NOT_FOUND",
            ApiError::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ApiError::Suspended => "PROJECT_SUSPENDED",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::QuotaExceeded { .. } => "QUOTA_EXCEEDED",
            ApiError::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            ApiError::UriTooLong(_) => "URI_TOO_LONG",
            ApiError::Dispatch(e) => e.code(),
            ApiError::Load(e) => e.code(),
            ApiError::Unavailable(_) => "UNAVAILABLE",
            ApiError::StorageFull(_) => "STORAGE_FULL",
            ApiError::Db { error, .. } => error.code(),
            ApiError::Internal(_) => "INTERNAL",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::HostNotFound
            | ApiError::NotDeployed
            | ApiError::NotFound(_)
            | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadRequest(_) | ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::Suspended | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited { .. } | ApiError::QuotaExceeded { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Db { error, .. } => match error {
                DbError::Query(_) => StatusCode::BAD_REQUEST,
                DbError::ConstraintViolation(_) => StatusCode::CONFLICT,
                DbError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                DbError::QuotaExceeded => StatusCode::INSUFFICIENT_STORAGE,
                DbError::Busy | DbError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            },
            ApiError::Dispatch(e) => e.status(),
            ApiError::Load(e) if e.is_client_error() => StatusCode::BAD_REQUEST,
            ApiError::Load(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What to log beyond the public message, if anything.
    pub fn detail(&self) -> Option<Cow<'_, str>> {
        match self {
            ApiError::Unavailable(d) | ApiError::StorageFull(d) | ApiError::Internal(d) => {
                Some(d.into())
            }
            ApiError::Db {
                error: DbError::Unavailable { detail },
                ..
            } => Some(detail.into()),
            ApiError::Dispatch(e) => e.detail().map(Cow::Borrowed),
            ApiError::Load(e) if !e.is_client_error() => Some(e.to_string().into()),
            _ => None,
        }
    }

    /// The message the caller sees: fixed for internal and backend
    /// failures, whose text may name the host's files or services.
    fn public_message(&self) -> String {
        match self {
            ApiError::Load(e) if !e.is_client_error() => {
                "the component could not be loaded on this server".into()
            }
            _ => self.to_string(),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after } | ApiError::QuotaExceeded { retry_after } => {
                Some(*retry_after)
            }
            ApiError::Suspended
            | ApiError::Unavailable(_)
            | ApiError::Db {
                error: DbError::Busy | DbError::Unavailable { .. },
                ..
            }
            | ApiError::Dispatch(DispatchError::Capacity) => Some(1),
            _ => None,
        }
    }

    /// The error envelope, with `Retry-After` where it applies.
    pub fn to_response(&self, request_id: &str) -> http::Response<Body> {
        // Internal and backend failures have a fixed public message; their
        // detail is only in `detail()`, for the operator's log.
        let mut response = switchyard_runtime::error_response(
            self.status(),
            self.code(),
            &self.public_message(),
            request_id,
        )
        .map(|body| body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync());
        if let Some(seconds) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> http::Response<Body> {
    let mut response = http::Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The admin API's success envelope.
pub fn ok(
    status: StatusCode,
    data: serde_json::Value,
    meta: Option<serde_json::Value>,
) -> http::Response<Body> {
    let mut body = serde_json::json!({ "ok": true, "data": data });
    if let Some(meta) = meta {
        body["meta"] = meta;
    }
    json_response(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(response: http::Response<Body>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn error_envelope_has_code_message_request_id_and_retry_after() {
        let response = ApiError::RateLimited { retry_after: 7 }.to_response("r1");
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        assert_eq!(
            body_json(response).await,
            serde_json::json!({"ok": false, "error": {
                "code": "RATE_LIMITED", "message": "too many requests; retry after 7 s", "requestId": "r1"}})
        );
    }

    #[tokio::test]
    async fn internal_details_never_reach_the_body() {
        let response =
            ApiError::Internal("/var/lib/secret.sqlite: disk I/O error".into()).to_response("r2");
        assert_eq!(response.status(), 500);
        let json = body_json(response).await;
        assert_eq!(json["error"]["message"], "internal error");
        assert!(!json.to_string().contains("secret"));

        // The same for the host's side of loading a component.
        let error = ApiError::Load(LoadError::Io(
            "/var/lib/switchyard/artifacts/ab.cwasm: permission denied".into(),
        ));
        assert!(error.detail().unwrap().contains("artifacts"));
        let response = error.to_response("r3");
        assert_eq!(response.status(), 500);
        let json = body_json(response).await;
        assert_eq!(json["error"]["code"], "INTERNAL");
        assert!(!json.to_string().contains("artifacts"), "{json}");
        // A deployer's own mistake keeps its explanation.
        let json =
            body_json(ApiError::Load(LoadError::NoHandler("x".into())).to_response("r4")).await;
        assert_eq!(json["error"]["code"], "COMPONENT_NO_HANDLER");
        assert!(json["error"]["message"].as_str().unwrap().contains('x'));
    }

    #[tokio::test]
    async fn a_full_disk_is_507_storage_full_without_the_path() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let error = ApiError::io("cannot write /var/lib/switchyard/scratch/bundle", &full);
        assert_eq!(
            (error.code(), error.status().as_u16()),
            ("STORAGE_FULL", 507)
        );
        assert!(error.detail().unwrap().contains("/var/lib"));
        let json = body_json(error.to_response("r5")).await;
        assert!(!json.to_string().contains("/var/lib"), "{json}");
        let other = std::io::Error::other("an I/O error");
        assert_eq!(ApiError::io("x", &other).code(), "INTERNAL");
        // Through the artifact cache, too.
        let error = ApiError::from(LoadError::from(full));
        assert_eq!(
            (error.code(), error.status().as_u16()),
            ("STORAGE_FULL", 507)
        );
    }

    #[test]
    fn sandbox_and_load_errors_keep_their_codes() {
        let e = ApiError::from(DispatchError::Capacity);
        assert_eq!((e.code(), e.status().as_u16()), ("CAPACITY", 503));
        let e = ApiError::from(LoadError::CoreModule);
        assert_eq!((e.code(), e.status().as_u16()), ("COMPONENT_INVALID", 400));
        let e = ApiError::from(LoadError::Internal("x".into()));
        assert_eq!(e.status().as_u16(), 500);
    }

    #[tokio::test]
    async fn success_envelope() {
        let response = ok(
            StatusCode::CREATED,
            serde_json::json!({"id": "p"}),
            Some(serde_json::json!({"cursor": null})),
        );
        assert_eq!(response.status(), 201);
        assert_eq!(
            body_json(response).await,
            serde_json::json!({"ok": true, "data": {"id": "p"}, "meta": {"cursor": null}})
        );
    }
}
