//! Liveness, readiness, metrics and the API description: no token needed.

use crate::error::{ApiError, Body, full, json_response};
use crate::node::Node;
use http::{HeaderValue, Response, StatusCode, header};

/// The OpenAPI description of this API.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

/// The process is up.
pub(crate) fn livez(node: &Node) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &serde_json::json!({ "ok": true, "data": { "uptimeSeconds": node.started.elapsed().as_secs() } }),
    )
}

/// The node can serve: its control store answers.
pub(crate) async fn readyz(node: &Node) -> Result<Response<Body>, ApiError> {
    match node.store.projects(None, 1).await {
        Ok(_) => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({ "ok": true, "data": { "ready": true } }),
        )),
        Err(e) => Err(ApiError::Unavailable(format!("control store: {e}"))),
    }
}

/// Prometheus text format.
pub(crate) fn metrics() -> Response<Body> {
    let text = crate::metrics::handle()
        .map(|h| h.render())
        .unwrap_or_default();
    let mut response = Response::new(full(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// The OpenAPI document.
pub(crate) fn openapi() -> Response<Body> {
    let mut response = Response::new(full(OPENAPI));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
