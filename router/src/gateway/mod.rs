//! The gateway database over HTTP, for a project's browser (and server)
//! clients: the same structured contract guests use, as JSON, on every
//! hostname of the project.
//!
//! - `POST /_switchyard/db/query`: one query → `{"columns", "rows", "affected"}`;
//! - `POST /_switchyard/db/batch`: `{"queries": […]}` in one transaction →
//!   `{"results": […]}`;
//! - `GET /_switchyard/db/schema`: the tables and columns the key may read.
//!
//! Every call needs a project API key (`Authorization: Bearer sypk_…` or
//! `sysk_…`): a public key obeys the columns' `client_read` /
//! `client_write` flags and never sees a sensitive column; a server key has
//! the project's own access. A key opens its own project only. Requests
//! count against the project's rate limit (checked before this module).
//! Browsers on other origins need the project's `cors_origins`.
//!
//! The whole `/_switchyard/` path prefix belongs to the platform: a guest
//! never sees requests for it.
//!
//! - [`json`]: the wire format; [`cors`]: allowed origins.

pub mod cors;
pub mod json;

use crate::auth::check_api_key;
use crate::error::{ApiError, Body, json_response};
use crate::node::Node;
use crate::routing::{LiveBuild, Route};
use crate::store::KeyKind;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::time::Duration;
use switchyard_runtime::backend::db::{Call, CallError, CallLimits};
use switchyard_runtime::db::schema::Schema;
use switchyard_runtime::db::sql::{Access, QueryLimits};

/// The platform's own path prefix on project hostnames.
pub const PREFIX: &str = "/_switchyard/";

/// Largest request body, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Most queries in one batch.
pub const MAX_BATCH: usize = 100;

/// Which platform endpoint `raw_path` is, if it is under [`PREFIX`]
/// (decoded, so no spelling of the prefix reaches the guest).
pub fn endpoint(raw_path: &str) -> Option<Endpoint> {
    // Called for every request: only a path that starts with `/_` or with
    // an escape can spell the prefix, so any other costs nothing.
    if !(raw_path.starts_with("/_") || raw_path.starts_with("/%")) {
        return None;
    }
    // A path that does not decode (invalid UTF-8) is matched with only
    // its `_` escapes undone, so no spelling of the prefix slips through.
    let decoded = crate::assets::percent_decode(raw_path)
        .unwrap_or_else(|| raw_path.replace("%5F", "_").replace("%5f", "_"));
    let path = decoded.as_str();
    let endpoint = match path {
        "/_switchyard/db/query" => Endpoint::Query,
        "/_switchyard/db/batch" => Endpoint::Batch,
        "/_switchyard/db/schema" => Endpoint::Schema,
        _ => Endpoint::Unknown,
    };
    path.starts_with(PREFIX).then_some(endpoint)
}

/// Serves a request for a platform `endpoint` of `route`'s project.
pub async fn serve(
    node: &Node,
    route: &Route,
    build: &LiveBuild,
    endpoint: Endpoint,
    request: Request<Incoming>,
    request_id: &str,
) -> Result<Response<Body>, ApiError> {
    if endpoint == Endpoint::Unknown {
        return Err(ApiError::NoRoute);
    }
    let origins = &route.project.settings.cors_origins;
    let origin = cors::allowed_origin(origins, request.headers()).cloned();
    if request.method() == Method::OPTIONS {
        let mut response = Response::new(crate::error::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        cors::preflight(response.headers_mut(), origin.as_ref());
        return Ok(response);
    }
    let mut response = match answer(node, route, build, endpoint, request).await {
        Ok(response) => response,
        // Errors get the CORS headers too, so a page can read them.
        Err(error) => {
            if let Some(detail) = error.detail() {
                tracing::warn!(
                    request_id,
                    code = error.code(),
                    detail = %detail,
                    "database gateway call failed"
                );
            }
            let mut response = error.to_response(request_id);
            if matches!(error, ApiError::Unauthorized) {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
            }
            response
        }
    };
    cors::allow(response.headers_mut(), origin.as_ref());
    Ok(response)
}

/// The platform's endpoints on project hostnames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /_switchyard/db/query`.
    Query,
    /// `POST /_switchyard/db/batch`.
    Batch,
    /// `GET /_switchyard/db/schema`.
    Schema,
    /// Anything else under the prefix: 404.
    Unknown,
}

async fn answer(
    node: &Node,
    route: &Route,
    build: &LiveBuild,
    endpoint: Endpoint,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method_ok = match endpoint {
        Endpoint::Query | Endpoint::Batch => request.method() == Method::POST,
        Endpoint::Schema => matches!(*request.method(), Method::GET | Method::HEAD),
        Endpoint::Unknown => return Err(ApiError::NoRoute),
    };
    if !method_ok {
        return Err(ApiError::MethodNotAllowed);
    }
    let access = match authenticate(route, request.headers()) {
        Some(KeyKind::Public) => Access::Public,
        Some(KeyKind::Server) => Access::Server,
        None => return Err(ApiError::Unauthorized),
    };
    if endpoint == Endpoint::Schema {
        return Ok(json_response(
            StatusCode::OK,
            &visible_schema(&build.schema, access),
        ));
    }
    let body = read_json(request.into_body()).await?;
    let (queries, batch) = match endpoint {
        Endpoint::Batch => (json::batch(&body, MAX_BATCH).map_err(invalid)?, true),
        _ => (vec![json::query(&body).map_err(invalid)?], false),
    };
    // The project's limits, as the build's `[limits]` lowered them.
    let mut limits = node.routes.project_limits(&route.project);
    if let Some(spec) = &build.spec {
        limits = limits.with_overrides(&spec.limits);
    }
    let call = Call {
        schema: build.schema.clone(),
        access,
        queries,
        limits: CallLimits {
            query: QueryLimits::default(),
            timeout: Duration::from_millis(limits.db_timeout_ms),
            quota_bytes: limits.db_quota_bytes,
            result_bytes: limits.db_result_bytes,
        },
    };
    let results = node
        .runtime
        .db()
        .call(&route.project.id, call)
        .await
        .map_err(|CallError { index, error }| ApiError::Db {
            error,
            batch_index: index.filter(|_| batch),
        })?;
    let mut results = results.into_iter().map(json::rows);
    let body = if batch {
        serde_json::json!({ "results": results.collect::<Vec<_>>() })
    } else {
        results.next().unwrap_or_default()
    };
    Ok(json_response(StatusCode::OK, &body))
}

fn invalid(e: json::JsonError) -> ApiError {
    ApiError::Invalid {
        code: e.code(),
        message: e.to_string(),
    }
}

/// The key's kind, if the request carries a valid key of this project.
fn authenticate(route: &Route, headers: &HeaderMap) -> Option<KeyKind> {
    let key = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    check_api_key(&route.keys, key)
}

async fn read_json(body: Incoming) -> Result<serde_json::Value, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    let collected = tokio::time::timeout(crate::idle::BODY_STALL_TIMEOUT, limited.collect())
        .await
        .map_err(|_| ApiError::BadRequest("the request body stalled".into()))?
        .map_err(|_| ApiError::PayloadTooLarge(format!("the body is over {MAX_BODY_BYTES} bytes")))?
        .to_bytes();
    serde_json::from_slice(&collected).map_err(|e| ApiError::Invalid {
        code: "INVALID_JSON",
        message: format!("invalid request body: {e}"),
    })
}

/// The tables and columns `access` may read, each with whether it may
/// write it too: for a public key, only `client_read` columns (never
/// sensitive ones), and only tables with at least one.
fn visible_schema(schema: &Schema, access: Access) -> serde_json::Value {
    let tables: Vec<serde_json::Value> = schema
        .tables()
        .iter()
        .filter_map(|table| {
            let columns: Vec<serde_json::Value> = table
                .columns
                .iter()
                .filter_map(|c| {
                    let (read, write) = match access {
                        Access::Server => (true, true),
                        Access::Public if c.sensitive => (false, false),
                        Access::Public => (c.client_read, c.client_write),
                    };
                    read.then(|| {
                        serde_json::json!({
                            "name": c.name,
                            "type": c.ty.name(),
                            "nullable": c.nullable,
                            "primaryKey": c.primary_key,
                            "write": write,
                        })
                    })
                })
                .collect();
            (!columns.is_empty())
                .then(|| serde_json::json!({ "name": table.name, "columns": columns }))
        })
        .collect();
    serde_json::json!({ "tables": tables })
}
