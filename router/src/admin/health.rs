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

/// The node serves; `degraded` when a store it depends on does not answer
/// (then cached routes keep serving, and what needs the store fails with
/// 503). Always 200 while the process runs: taking every node out of a
/// load balancer because a shared store is away would turn a partial
/// outage into a full one.
pub(crate) async fn readyz(node: &Node) -> Result<Response<Body>, ApiError> {
    let (control, kv, db, limits) = tokio::join!(
        node.store.projects(None, 1),
        node.runtime.kv().ping(),
        node.runtime.db().ping(),
        node.limiter.ping(),
    );
    let mut checks = serde_json::Map::new();
    let mut degraded = false;
    let mut check = |name: &str, outcome: Result<(), String>| {
        let state = match outcome {
            Ok(()) => "ok".to_owned(),
            Err(detail) => {
                degraded = true;
                tracing::warn!(store = name, error = %detail, "readiness check failed");
                "unavailable".to_owned()
            }
        };
        checks.insert(name.to_owned(), serde_json::Value::String(state));
    };
    check("control", control.map(drop).map_err(|e| e.to_string()));
    check("kv", kv.map_err(|e| e.to_string()));
    check("db", db.map_err(|e| format!("{e:?}")));
    check("rateLimits", limits);
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "ok": true, "data": { "ready": true, "degraded": degraded, "checks": checks } }),
    ))
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
