//! The runtime's errors, each with a stable code, and the one mapping from a
//! failed request to an HTTP response.
//!
//! What a client sees is the code, a fixed message and the request id. The
//! detail (a trap message, a wasmtime error) is for the project's own log and
//! the operator's tracing output, never for the response body.

use crate::body::ResponseBody;
use crate::ids::{ComponentId, InvalidId};
use crate::limits::LimitsError;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

/// Why a request to an app did not produce a complete response.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The request ran past its wall-clock deadline.
    #[error("the app did not finish in time")]
    Timeout,
    /// The request used up its fuel (CPU budget).
    #[error("the app used up its CPU budget")]
    CpuExhausted,
    /// The request ran into its memory or table limit.
    #[error("the app ran out of memory")]
    Memory {
        /// What was exhausted, for the log.
        detail: String,
    },
    /// The guest trapped (a panic, an abort, a stack overflow, …).
    #[error("the app crashed")]
    Trap {
        /// The trap, for the log.
        detail: String,
    },
    /// The guest returned without setting a response.
    #[error("the app did not send a response")]
    NoResponse,
    /// The guest sent something that is not a valid response.
    #[error("the app sent an invalid response")]
    BadResponse {
        /// What was wrong, for the log.
        detail: String,
    },
    /// The response is larger than the project's response body limit.
    #[error("the app's response is too large")]
    ResponseTooLarge,
    /// The request body is larger than the project's request body limit.
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// Every instance slot on this node, or every slot the app may use, is
    /// busy.
    #[error("the server is at capacity; try again shortly")]
    Capacity,
    /// The request cannot be given to a guest (no authority, a Host header
    /// that is not text).
    #[error("the request is malformed")]
    BadRequest {
        /// What was wrong, for the log.
        detail: String,
    },
    /// The host failed; not the guest's fault.
    #[error("internal error")]
    Internal {
        /// What failed, for the operator's log.
        detail: String,
    },
}

impl DispatchError {
    /// The stable code, e.g. `GUEST_TIMEOUT`.
    pub fn code(&self) -> &'static str {
        match self {
            DispatchError::Timeout => "GUEST_TIMEOUT",
            DispatchError::CpuExhausted => "GUEST_CPU_EXHAUSTED",
            DispatchError::Memory { .. } => "GUEST_MEMORY",
            DispatchError::Trap { .. } => "GUEST_TRAP",
            DispatchError::NoResponse => "GUEST_NO_RESPONSE",
            DispatchError::BadResponse { .. } => "GUEST_BAD_RESPONSE",
            DispatchError::ResponseTooLarge => "RESPONSE_TOO_LARGE",
            DispatchError::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            DispatchError::Capacity => "CAPACITY",
            DispatchError::BadRequest { .. } => "BAD_REQUEST",
            DispatchError::Internal { .. } => "INTERNAL",
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            DispatchError::Timeout | DispatchError::CpuExhausted | DispatchError::Capacity => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            DispatchError::Memory { .. }
            | DispatchError::Trap { .. }
            | DispatchError::NoResponse
            | DispatchError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            DispatchError::BadResponse { .. } | DispatchError::ResponseTooLarge => {
                StatusCode::BAD_GATEWAY
            }
            DispatchError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            DispatchError::BadRequest { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// The detail behind the error, for logs only.
    pub fn detail(&self) -> Option<&str> {
        match self {
            DispatchError::Memory { detail }
            | DispatchError::Trap { detail }
            | DispatchError::BadResponse { detail }
            | DispatchError::BadRequest { detail }
            | DispatchError::Internal { detail } => Some(detail),
            _ => None,
        }
    }

    /// The platform's error response: the JSON envelope with this error's
    /// code, its fixed message and the request id.
    pub fn to_response(&self, request_id: &str) -> http::Response<ResponseBody> {
        let mut response =
            error_response(self.status(), self.code(), &self.to_string(), request_id);
        if matches!(self, DispatchError::Capacity) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Builds `{"ok":false,"error":{"code","message","requestId"}}` with `status`.
/// The one shape of every error the platform itself answers.
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> http::Response<ResponseBody> {
    let body = serde_json::json!({
        "ok": false,
        "error": { "code": code, "message": message, "requestId": request_id },
    });
    let mut response = http::Response::new(ResponseBody::full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Why a component could not be accepted or loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The component is bigger than the runtime accepts.
    #[error("the component is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly binary")]
    NotWasm,
    /// A core module was given where a component is needed.
    #[error(
        "this is a core WebAssembly module, not a component; build for \
         `wasm32-wasip2` or wrap it with `wasm-tools component new`"
    )]
    CoreModule,
    /// The component imports something the host does not provide.
    #[error("the component imports `{0}`, which Switchyard does not provide")]
    ImportNotAllowed(String),
    /// The component failed validation or compilation.
    #[error("the component is invalid: {0}")]
    Invalid(String),
    /// The component does not export an HTTP handler.
    #[error("the component does not export `wasi:http/incoming-handler@0.2.x`: {0}")]
    NoHandler(String),
    /// An allowed import has a type the host does not match.
    #[error("the component's imports do not match the host: {0}")]
    Link(String),
    /// The compiled artifact is not in this node's cache (compile it first).
    #[error("component {0} has not been compiled on this node")]
    ArtifactMissing(ComponentId),
    /// The app's identifiers or limits are invalid.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    /// The app's limits are out of range.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// An environment variable name is invalid or reserved.
    #[error(
        "invalid environment variable `{0}`: names must match [A-Z][A-Z0-9_]{{0,63}} and not start with SWITCHYARD_"
    )]
    InvalidEnv(String),
    /// Reading or writing the artifact cache failed.
    #[error("artifact cache I/O failed: {0}")]
    Io(String),
    /// The disk holding the artifact cache is full. The detail is for the
    /// operator's log.
    #[error("the server is out of storage space")]
    StorageFull(String),
    /// A host-side failure (a panicked compile task, a corrupt artifact).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<std::io::Error> for LoadError {
    fn from(e: std::io::Error) -> Self {
        if crate::disk::is_full(&e) {
            LoadError::StorageFull(e.to_string())
        } else {
            LoadError::Io(e.to_string())
        }
    }
}

impl LoadError {
    /// The stable code, e.g. `COMPONENT_IMPORT_NOT_ALLOWED`.
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::TooLarge { .. } => "COMPONENT_TOO_LARGE",
            LoadError::NotWasm | LoadError::CoreModule | LoadError::Invalid(_) => {
                "COMPONENT_INVALID"
            }
            LoadError::ImportNotAllowed(_) => "COMPONENT_IMPORT_NOT_ALLOWED",
            LoadError::NoHandler(_) => "COMPONENT_NO_HANDLER",
            LoadError::Link(_) => "COMPONENT_LINK_FAILED",
            LoadError::ArtifactMissing(_) => "ARTIFACT_MISSING",
            LoadError::InvalidId(_) | LoadError::Limits(_) | LoadError::InvalidEnv(_) => {
                "INVALID_APP_SPEC"
            }
            LoadError::StorageFull(_) => "STORAGE_FULL",
            LoadError::Io(_) | LoadError::Internal(_) => "INTERNAL",
        }
    }

    /// Whether the error is the deployer's to fix (a 4xx), as opposed to the
    /// host's (a 5xx).
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            LoadError::ArtifactMissing(_)
                | LoadError::Io(_)
                | LoadError::StorageFull(_)
                | LoadError::Internal(_)
        )
    }
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The engine rejected the configuration.
    #[error("invalid engine configuration: {0}")]
    Engine(String),
    /// The default limits are out of range for the configured pool.
    #[error("invalid default limits: {0}")]
    Limits(#[from] LimitsError),
    /// A setting is out of range.
    #[error("invalid runtime configuration: {0}")]
    Config(String),
    /// A storage backend could not be opened.
    #[error("cannot open the {what}: {detail}")]
    Backend {
        /// Which backend.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// The artifact directory could not be prepared.
    #[error("cannot use artifact directory {path}: {source}")]
    ArtifactDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn error_responses_carry_code_message_and_request_id_only() {
        let err = DispatchError::Trap {
            detail: "wasm trap at /home/secret/path".into(),
        };
        let response = err.to_response("req-1");
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"ok": false, "error": {
                "code": "GUEST_TRAP", "message": "the app crashed", "requestId": "req-1"}})
        );
        assert!(!String::from_utf8_lossy(&body).contains("secret"));
    }

    #[test]
    fn codes_and_statuses_are_stable() {
        let cases = [
            (DispatchError::Timeout, "GUEST_TIMEOUT", 503),
            (DispatchError::CpuExhausted, "GUEST_CPU_EXHAUSTED", 503),
            (
                DispatchError::Memory {
                    detail: String::new(),
                },
                "GUEST_MEMORY",
                500,
            ),
            (
                DispatchError::Trap {
                    detail: String::new(),
                },
                "GUEST_TRAP",
                500,
            ),
            (DispatchError::NoResponse, "GUEST_NO_RESPONSE", 500),
            (
                DispatchError::BadResponse {
                    detail: String::new(),
                },
                "GUEST_BAD_RESPONSE",
                502,
            ),
            (DispatchError::ResponseTooLarge, "RESPONSE_TOO_LARGE", 502),
            (DispatchError::PayloadTooLarge, "PAYLOAD_TOO_LARGE", 413),
            (DispatchError::Capacity, "CAPACITY", 503),
            (
                DispatchError::BadRequest {
                    detail: String::new(),
                },
                "BAD_REQUEST",
                400,
            ),
        ];
        for (err, code, status) in cases {
            assert_eq!(err.code(), code);
            assert_eq!(err.status().as_u16(), status, "{code}");
        }
        assert_eq!(
            DispatchError::Capacity.to_response("r").headers()[header::RETRY_AFTER],
            "1"
        );
    }
}
