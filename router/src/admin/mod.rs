//! The admin API (`/v1/…`), health checks and metrics, on the admin listener.
//!
//! Successes are `{"ok":true,"data":…,"meta":{…}}`, errors the platform's
//! error envelope; every response carries `X-Request-Id` and `API-Version`.
//! Lists page with `?cursor=…&limit=…` (`meta.cursor` is the next page's).
//! Everything under `/v1` except the OpenAPI document needs a bearer token;
//! `/livez`, `/readyz` and `/metrics` do not.

mod certificates;
mod deployments;
mod health;
mod keys;
mod logs;
mod projects;
mod tokens;

use crate::assets::percent_decode;
use crate::auth::Principal;
use crate::dispatch::{ConnInfo, new_request_id};
use crate::error::{ApiError, Body};
use crate::node::Node;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::net::SocketAddr;
use switchyard_runtime::ProjectId;

/// The admin API's version, sent as `API-Version`.
pub const API_VERSION: &str = "1";

/// Largest JSON request body, in bytes.
const MAX_JSON_BYTES: u64 = 1024 * 1024;

/// Most items one page of a list may ask for.
const MAX_PAGE: u32 = 200;

/// Every endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Livez,
    Readyz,
    Metrics,
    OpenApi,
    ListProjects,
    CreateProject,
    GetProject,
    DeleteProject,
    Deploy,
    ListDeployments,
    GetDeployment,
    Rollback,
    ListHostnames,
    AddHostname,
    RemoveHostname,
    GetEnv,
    SetEnv,
    UnsetEnv,
    GetLimits,
    SetLimits,
    Suspend,
    Resume,
    ListTokens,
    CreateToken,
    RevokeToken,
    ListKeys,
    CreateKey,
    RevokeKey,
    Logs,
    ListCertificates,
    PutCertificate,
    DeleteCertificate,
}

/// The route table: method, path template (`{name}` is one segment), and
/// endpoint. The OpenAPI document lists exactly these (checked by a test).
pub(crate) const ROUTES: &[(Method, &str, Endpoint)] = &[
    (Method::GET, "/livez", Endpoint::Livez),
    (Method::GET, "/readyz", Endpoint::Readyz),
    (Method::GET, "/metrics", Endpoint::Metrics),
    (Method::GET, "/v1/openapi.json", Endpoint::OpenApi),
    (Method::GET, "/v1/projects", Endpoint::ListProjects),
    (Method::POST, "/v1/projects", Endpoint::CreateProject),
    (Method::GET, "/v1/projects/{project}", Endpoint::GetProject),
    (
        Method::DELETE,
        "/v1/projects/{project}",
        Endpoint::DeleteProject,
    ),
    (
        Method::POST,
        "/v1/projects/{project}/deployments",
        Endpoint::Deploy,
    ),
    (
        Method::GET,
        "/v1/projects/{project}/deployments",
        Endpoint::ListDeployments,
    ),
    (
        Method::GET,
        "/v1/projects/{project}/deployments/{build}",
        Endpoint::GetDeployment,
    ),
    (
        Method::POST,
        "/v1/projects/{project}/rollback",
        Endpoint::Rollback,
    ),
    (
        Method::GET,
        "/v1/projects/{project}/hostnames",
        Endpoint::ListHostnames,
    ),
    (
        Method::POST,
        "/v1/projects/{project}/hostnames",
        Endpoint::AddHostname,
    ),
    (
        Method::DELETE,
        "/v1/projects/{project}/hostnames/{hostname}",
        Endpoint::RemoveHostname,
    ),
    (Method::GET, "/v1/projects/{project}/env", Endpoint::GetEnv),
    (Method::PUT, "/v1/projects/{project}/env", Endpoint::SetEnv),
    (
        Method::DELETE,
        "/v1/projects/{project}/env/{name}",
        Endpoint::UnsetEnv,
    ),
    (
        Method::GET,
        "/v1/projects/{project}/limits",
        Endpoint::GetLimits,
    ),
    (
        Method::PUT,
        "/v1/projects/{project}/limits",
        Endpoint::SetLimits,
    ),
    (
        Method::POST,
        "/v1/projects/{project}/suspend",
        Endpoint::Suspend,
    ),
    (
        Method::POST,
        "/v1/projects/{project}/resume",
        Endpoint::Resume,
    ),
    (
        Method::GET,
        "/v1/projects/{project}/tokens",
        Endpoint::ListTokens,
    ),
    (
        Method::POST,
        "/v1/projects/{project}/tokens",
        Endpoint::CreateToken,
    ),
    (
        Method::DELETE,
        "/v1/projects/{project}/tokens/{token}",
        Endpoint::RevokeToken,
    ),
    (
        Method::GET,
        "/v1/projects/{project}/keys",
        Endpoint::ListKeys,
    ),
    (
        Method::POST,
        "/v1/projects/{project}/keys",
        Endpoint::CreateKey,
    ),
    (
        Method::DELETE,
        "/v1/projects/{project}/keys/{key}",
        Endpoint::RevokeKey,
    ),
    (Method::GET, "/v1/projects/{project}/logs", Endpoint::Logs),
    (Method::GET, "/v1/certificates", Endpoint::ListCertificates),
    (Method::POST, "/v1/certificates", Endpoint::PutCertificate),
    (
        Method::DELETE,
        "/v1/certificates/{hostname}",
        Endpoint::DeleteCertificate,
    ),
];

/// One admin request, as the handlers see it.
pub(crate) struct Call<'a> {
    pub node: &'a Node,
    pub principal: Principal,
    pub params: Vec<String>,
    pub query: HashMap<String, String>,
    /// The request body, until a handler takes it.
    pub body: Option<Incoming>,
    pub public_addr: SocketAddr,
}

impl Call<'_> {
    /// Path parameter `i` as a project the caller may act on. An id that is
    /// not even valid is simply a project that does not exist.
    pub fn project(&self, i: usize) -> Result<ProjectId, ApiError> {
        let id = ProjectId::new(&self.params[i]).map_err(|_| ApiError::NotFound("project"))?;
        self.principal.require_project(&id)?;
        Ok(id)
    }

    /// The body as JSON of type `T` (at most 1 MiB).
    pub async fn json<T: DeserializeOwned>(&mut self) -> Result<T, ApiError> {
        let body = self.take_body()?;
        let limited = http_body_util::Limited::new(body, MAX_JSON_BYTES as usize);
        let collected = tokio::time::timeout(crate::idle::BODY_STALL_TIMEOUT, limited.collect())
            .await
            .map_err(|_| ApiError::BadRequest("the request body stalled".into()))?;
        let bytes = collected
            .map_err(|e| {
                ApiError::PayloadTooLarge(format!(
                    "the JSON body is over {MAX_JSON_BYTES} bytes or broken: {e}"
                ))
            })?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Invalid {
            code: "INVALID_JSON",
            message: format!("invalid request body: {e}"),
        })
    }

    /// The request body (once).
    pub fn take_body(&mut self) -> Result<Incoming, ApiError> {
        self.body
            .take()
            .ok_or_else(|| ApiError::Internal("the request body was read twice".into()))
    }

    /// `?cursor` and `?limit` (default 50, at most 200).
    pub fn page(&self) -> Result<(Option<String>, u32), ApiError> {
        let limit = match self.query.get("limit") {
            None => 50,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("limit must be between 1 and {MAX_PAGE}"))
                })?,
        };
        Ok((self.query.get("cursor").cloned(), limit))
    }
}

/// Handles one request on the admin listener.
pub async fn handle(
    node: &Node,
    request: Request<Incoming>,
    _conn: &ConnInfo,
    public_addr: SocketAddr,
) -> Response<Body> {
    let request_id = new_request_id();
    // A refusal may come before the body is read (an upload to a project
    // that does not exist): the connection cannot carry another request.
    let unread_body = request.version() < http::Version::HTTP_2 && has_body(request.headers());
    let mut response = match route(node, request, public_addr).await {
        Ok(response) => response,
        Err(error) => {
            if let Some(detail) = error.detail() {
                tracing::warn!(
                    request_id,
                    code = error.code(),
                    detail = %detail,
                    "admin request failed"
                );
            }
            let mut response = error.to_response(&request_id);
            if unread_body {
                response
                    .headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("x-request-id", value);
    }
    headers.insert("api-version", HeaderValue::from_static(API_VERSION));
    response
}

async fn route(
    node: &Node,
    request: Request<Incoming>,
    public_addr: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let (endpoint, params) = find_route(request.method(), request.uri().path())?;
    match endpoint {
        Endpoint::Livez => return Ok(health::livez(node)),
        Endpoint::Readyz => return health::readyz(node).await,
        Endpoint::Metrics => return Ok(health::metrics()),
        Endpoint::OpenApi => return Ok(health::openapi()),
        _ => {}
    }
    let principal = node.auth.authenticate(request.headers()).await?;
    let query = parse_query(request.uri().query().unwrap_or(""));
    let call = Call {
        node,
        principal,
        params,
        query,
        body: Some(request.into_body()),
        public_addr,
    };
    match endpoint {
        Endpoint::ListProjects => projects::list(call).await,
        Endpoint::CreateProject => projects::create(call).await,
        Endpoint::GetProject => projects::get(call).await,
        Endpoint::DeleteProject => projects::delete(call).await,
        Endpoint::GetEnv => projects::get_env(call).await,
        Endpoint::SetEnv => projects::set_env(call).await,
        Endpoint::UnsetEnv => projects::unset_env(call).await,
        Endpoint::GetLimits => projects::get_limits(call).await,
        Endpoint::SetLimits => projects::set_limits(call).await,
        Endpoint::Suspend => projects::suspend(call, true).await,
        Endpoint::Resume => projects::suspend(call, false).await,
        Endpoint::ListHostnames => projects::hostnames(call).await,
        Endpoint::AddHostname => projects::add_hostname(call).await,
        Endpoint::RemoveHostname => projects::remove_hostname(call).await,
        Endpoint::Deploy => deployments::deploy(call).await,
        Endpoint::ListDeployments => deployments::list(call).await,
        Endpoint::GetDeployment => deployments::get(call).await,
        Endpoint::Rollback => deployments::rollback(call).await,
        Endpoint::ListTokens => tokens::list(call).await,
        Endpoint::CreateToken => tokens::create(call).await,
        Endpoint::RevokeToken => tokens::revoke(call).await,
        Endpoint::ListKeys => keys::list(call).await,
        Endpoint::CreateKey => keys::create(call).await,
        Endpoint::RevokeKey => keys::revoke(call).await,
        Endpoint::Logs => logs::read(call).await,
        Endpoint::ListCertificates => certificates::list(call).await,
        Endpoint::PutCertificate => certificates::put(call).await,
        Endpoint::DeleteCertificate => certificates::delete(call).await,
        Endpoint::Livez | Endpoint::Readyz | Endpoint::Metrics | Endpoint::OpenApi => {
            Err(ApiError::NoRoute)
        }
    }
}

fn has_body(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// The endpoint for `method` and `path`, with its decoded path parameters.
fn find_route(method: &Method, path: &str) -> Result<(Endpoint, Vec<String>), ApiError> {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut path_known = false;
    for (route_method, template, endpoint) in ROUTES {
        let Some(params) = match_template(template, &segments) else {
            continue;
        };
        if route_method == method {
            return Ok((*endpoint, params));
        }
        path_known = true;
    }
    Err(if path_known {
        ApiError::MethodNotAllowed
    } else {
        ApiError::NoRoute
    })
}

fn match_template(template: &str, segments: &[&str]) -> Option<Vec<String>> {
    let parts: Vec<&str> = template.split('/').skip(1).collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (part, segment) in parts.iter().zip(segments) {
        if part.starts_with('{') {
            if segment.is_empty() {
                return None;
            }
            params.push(percent_decode(segment)?);
        } else if part != segment {
            return None;
        }
    }
    Some(params)
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((
                percent_decode(&k.replace('+', " "))?,
                percent_decode(&v.replace('+', " "))?,
            ))
        })
        .collect()
}

/// The project `id`, or 404.
pub(crate) async fn existing_project(
    node: &Node,
    id: &ProjectId,
) -> Result<crate::store::Project, ApiError> {
    node.store
        .project(id)
        .await?
        .ok_or(ApiError::NotFound("project"))
}

/// `201 Created` or `200 OK` with the success envelope.
pub(crate) fn ok(status: StatusCode, data: serde_json::Value) -> Result<Response<Body>, ApiError> {
    Ok(crate::error::ok(status, data, None))
}

/// A page of a list with its cursor.
pub(crate) fn page(
    items: Vec<serde_json::Value>,
    next: Option<String>,
) -> Result<Response<Body>, ApiError> {
    Ok(crate::error::ok(
        StatusCode::OK,
        serde_json::Value::Array(items),
        Some(serde_json::json!({ "cursor": next })),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_with_decoded_params() {
        let (endpoint, params) = find_route(
            &Method::DELETE,
            "/v1/projects/shop/hostnames/www.example.com",
        )
        .unwrap();
        assert_eq!(endpoint, Endpoint::RemoveHostname);
        assert_eq!(params, ["shop", "www.example.com"]);
        let (_, params) = find_route(&Method::DELETE, "/v1/certificates/%2A.example.com").unwrap();
        assert_eq!(params, ["*.example.com"]);
        assert!(matches!(
            find_route(&Method::PATCH, "/v1/projects"),
            Err(ApiError::MethodNotAllowed)
        ));
        assert!(matches!(
            find_route(&Method::GET, "/v1/nothing"),
            Err(ApiError::NoRoute)
        ));
        assert!(matches!(
            find_route(&Method::GET, "/v1/projects//env"),
            Err(ApiError::NoRoute)
        ));
    }

    #[test]
    fn every_route_is_in_the_openapi_document_and_nothing_else() {
        let doc: serde_json::Value = serde_json::from_str(health::OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let mut documented = Vec::new();
        for (path, item) in paths {
            for method in item.as_object().unwrap().keys() {
                documented.push(format!("{} {path}", method.to_uppercase()));
            }
        }
        let mut routed: Vec<String> = ROUTES.iter().map(|(m, p, _)| format!("{m} {p}")).collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed);
    }

    #[test]
    fn queries_are_decoded() {
        let q = parse_query("cursor=a%2Fb&limit=5&follow&x=a+b");
        assert_eq!(q["cursor"], "a/b");
        assert_eq!(q["limit"], "5");
        assert_eq!(q["follow"], "");
        assert_eq!(q["x"], "a b");
    }
}
