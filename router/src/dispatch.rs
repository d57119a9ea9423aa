//! The public request path, in order:
//!
//! 0. an HTTP/1 request whose body length is ambiguous (a transfer coding
//!    other than one `chunked`): 400 `BAD_REQUEST`, and the connection is
//!    closed;
//! 1. the host: from `Host` / `:authority` (one, agreeing), normalised, and
//!    equal to the TLS server name if there is one;
//! 2. the route for the host (cached), else 404 `HOST_NOT_FOUND`;
//! 3. a suspended project: 503 `PROJECT_SUSPENDED`;
//! 4. the project's rate and daily quota: 429 with `Retry-After`;
//!    then, with nothing deployed, 404 `NOT_DEPLOYED`;
//! 5. `/_switchyard/…`: the platform's own endpoints (the database
//!    gateway), never the guest;
//! 6. GET/HEAD of a path in the build's assets: the asset;
//! 7. a build with a component: the sandbox;
//! 8. GET/HEAD with an SPA fallback: the fallback page;
//! 9. else the build's not-found page, or 404.
//!
//! Every response gets `X-Request-Id`; every request an access-log event
//! (request id, host, project, build, method, path, status, duration) and
//! metrics, and a `request` span at debug level around its handling.

use crate::error::{ApiError, Body};
use crate::hostname::normalize;
use crate::metrics::RequestMeters;
use crate::node::Node;
use crate::routing::Route;
use crate::tenant::Refusal;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use switchyard_runtime::RequestContext;
use tracing::Instrument;

/// What the connection knows about a request.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The client.
    pub peer: SocketAddr,
    /// Whether it arrived over TLS.
    pub tls: bool,
    /// The TLS server name it asked for.
    pub sni: Option<String>,
}

/// Headers that describe one hop, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A new request id: 128 random bits, hex.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// What routing learnt about a request, for its access-log line and
/// metrics.
#[derive(Default)]
struct Seen {
    host: Option<String>,
    route: Option<Arc<Route>>,
}

/// Handles one request on a public listener.
///
/// Every request gets one access-log event (`switchyard::access`, at info)
/// carrying all it needs. The `request` span around the handling, which
/// gives events inside it their request's id, host, project and build, is
/// at debug: creating and filling a span per request costs about as much
/// as the rest of a static file's path, so it is there for debugging
/// (`log.filter = "info,switchyard::dispatch=debug"`), not by default.
pub async fn handle(node: &Node, request: Request<Incoming>, conn: &ConnInfo) -> Response<Body> {
    let started = Instant::now();
    let request_id = new_request_id();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut seen = Seen::default();
    let span = tracing::debug_span!(
        "request",
        request_id = %request_id,
        host = tracing::field::Empty,
        project = tracing::field::Empty,
        build = tracing::field::Empty,
    );
    let unsure_framing = ambiguous_framing(&request);
    let max_uri = node.config.http.max_uri_bytes;
    let served = match unsure_framing {
        Some(reason) => Err(ApiError::BadRequest(reason.into())),
        None if target_len(request.uri()) > max_uri => Err(ApiError::UriTooLong(max_uri)),
        None => {
            route_and_serve(node, request, conn, &request_id, &mut seen)
                .instrument(span.clone())
                .await
        }
    };
    let _entered = span.enter();
    let mut response = match served {
        Ok(response) => response,
        Err(error) => {
            if let Some(detail) = error.detail() {
                tracing::warn!(request_id, code = error.code(), detail = %detail, "request failed");
            }
            error.to_response(&request_id)
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    if unsure_framing.is_some() {
        // Where this request ends is a guess, so nothing after it on the
        // connection is read as a request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let route = seen.route.as_deref();
    tracing::info!(
        target: "switchyard::access",
        request_id,
        host = seen.host.as_deref().unwrap_or("-"),
        project = route.map_or("-", |r| r.project.id.as_str()),
        build = route
            .and_then(|r| r.build.as_deref())
            .map_or("-", |b| b.record.id.as_str()),
        method = method.as_str(),
        path,
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
    );
    let meters = match route {
        Some(route) => &route.meters,
        None => RequestMeters::unrouted(),
    };
    meters.responded(status);
    crate::metrics::request_duration_histogram().record(elapsed);
    // Counted as the body is sent: streamed bodies have no Content-Length.
    let bytes_out = meters.bytes_out();
    response.map(|body| Counted { body, bytes_out }.boxed_unsync())
}

/// A response body that counts its data bytes as they are written, and
/// keeps the body's size hint (so a known length is still sent as
/// `Content-Length`).
struct Counted {
    body: Body,
    bytes_out: metrics::Counter,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = crate::error::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &frame
            && let Some(data) = frame.data_ref()
        {
            this.bytes_out.increment(data.len() as u64);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

async fn route_and_serve(
    node: &Node,
    mut request: Request<Incoming>,
    conn: &ConnInfo,
    request_id: &str,
    seen: &mut Seen,
) -> Result<Response<Body>, ApiError> {
    let host = request_host(request.headers(), request.uri(), conn)?;
    let span = tracing::Span::current();
    span.record("host", host.as_str());
    let host = seen.host.insert(host);
    let route: Arc<Route> = node
        .routes
        .resolve(host)
        .await?
        .ok_or(ApiError::HostNotFound)?;
    seen.route = Some(route.clone());
    span.record("project", route.project.id.as_str());
    if route.project.suspended {
        return Err(ApiError::Suspended);
    }
    node.limiter
        .admit(&route.project.id, route.rate)
        .await
        .map_err(|refusal| match refusal {
            Refusal::RateLimited { retry_after } => ApiError::RateLimited { retry_after },
            Refusal::QuotaExceeded { retry_after } => ApiError::QuotaExceeded { retry_after },
            Refusal::Unavailable { .. } => {
                ApiError::Unavailable("the shared rate limiter is unavailable".into())
            }
        })?;
    let build = route.build.clone().ok_or(ApiError::NotDeployed)?;
    span.record("build", build.record.id.as_str());
    if let Some(endpoint) = crate::gateway::endpoint(request.uri().path()) {
        return crate::gateway::serve(node, &route, &build, endpoint, request, request_id).await;
    }
    let manifest = &build.record.manifest;
    let readable = matches!(*request.method(), Method::GET | Method::HEAD);

    if readable && let Some((path, asset)) = crate::assets::find(manifest, request.uri().path()) {
        let (method, headers) = (request.method(), request.headers());
        return node
            .assets
            .serve(method, headers, &build, &path, asset, StatusCode::OK)
            .await;
    }

    if let Some(spec) = &build.spec {
        let app = node.app(spec).await?;
        prepare_for_guest(&mut request, host, conn);
        // Rules match the decoded path, as for assets: `/%61dmin` is `/admin`.
        let raw = request.uri().path();
        let path = crate::assets::percent_decode(raw).unwrap_or_else(|| raw.to_owned());
        let ctx = RequestContext {
            request_id: Arc::from(request_id),
            tls: conn.tls,
        };
        let response = app.handle(request, ctx).await?;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        for (name, value) in build.headers_for(&path) {
            parts.headers.insert(name.clone(), value.clone());
        }
        let body = body
            .map_err(|e| -> crate::error::BoxError { Box::new(e) })
            .boxed_unsync();
        return Ok(Response::from_parts(parts, body));
    }

    let fallback = if readable {
        manifest.spa_fallback.as_ref()
    } else {
        None
    };
    let (page, status) = match (fallback, &manifest.not_found) {
        (Some(page), _) => (page, StatusCode::OK),
        (None, Some(page)) => (page, StatusCode::NOT_FOUND),
        (None, None) => return Err(ApiError::NotFound("page")),
    };
    let asset = manifest.assets.get(page).ok_or_else(|| {
        ApiError::Internal(format!("build {} lacks its page {page}", build.record.id))
    })?;
    let method = if *request.method() == Method::HEAD {
        Method::HEAD
    } else {
        Method::GET
    };
    node.assets
        .serve(&method, request.headers(), &build, page, asset, status)
        .await
}

/// Why an HTTP/1 request's body length is ambiguous, if it is: a transfer
/// coding other than exactly one `chunked` (repeated or stacked codings;
/// hyper itself refuses unknown ones), or both `Content-Length` and
/// `Transfer-Encoding`. hyper frames such requests by `Transfer-Encoding`,
/// but a proxy in front may have framed them differently: the bytes after
/// this request could be another request it never saw (request
/// smuggling), so the request is refused and its connection closed. (For
/// both lengths hyper has already dropped `Content-Length` and closes the
/// connection after the response itself; the check is for other parsers.)
fn ambiguous_framing<B>(request: &Request<B>) -> Option<&'static str> {
    if request.version() > http::Version::HTTP_11 {
        return None;
    }
    let headers = request.headers();
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let first = codings.next()?;
    if headers.contains_key(header::CONTENT_LENGTH) {
        return Some("the request has both Content-Length and Transfer-Encoding");
    }
    let only_chunked = codings.next().is_none()
        && first
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
    if !only_chunked {
        return Some("the only Transfer-Encoding accepted is a single `chunked`");
    }
    None
}

/// The length of the request target as the client sent it (for HTTP/2,
/// `:path` plus the authority).
fn target_len(uri: &http::Uri) -> usize {
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let path = uri.path_and_query().map_or(0, |p| p.as_str().len());
    authority + path
}

/// The request's host, normalised. One `Host`; an authority in the URI
/// (HTTP/2's `:authority`, or an absolute-form target) must agree with it;
/// over TLS it must be the name the client asked the certificate for.
pub fn request_host(
    headers: &HeaderMap,
    uri: &http::Uri,
    conn: &ConnInfo,
) -> Result<String, ApiError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let header_host = hosts.next();
    if hosts.next().is_some() {
        return Err(ApiError::BadRequest("more than one Host header".into()));
    }
    let header_host = header_host
        .map(|v| v.to_str().map(normalize))
        .transpose()
        .map_err(|_| ApiError::BadRequest("the Host header is not text".into()))?;
    let uri_host = uri.authority().map(|a| normalize(a.as_str()));
    let host = match (uri_host, header_host) {
        (Some(a), Some(h)) if a != h => {
            return Err(ApiError::BadRequest(
                "the Host header and the request authority disagree".into(),
            ));
        }
        (Some(host), _) | (None, Some(host)) => host,
        (None, None) => return Err(ApiError::BadRequest("the request names no host".into())),
    };
    if host.is_empty() || host.contains('@') {
        return Err(ApiError::BadRequest("the host is malformed".into()));
    }
    if let Some(sni) = &conn.sni
        && normalize(sni) != host
    {
        return Err(ApiError::Misdirected);
    }
    Ok(host)
}

/// Removes hop-by-hop headers, including those the `Connection` header
/// names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// What the guest sees: no hop-by-hop headers, and `X-Forwarded-*` set by
/// us (whatever the client sent under those names is dropped).
fn prepare_for_guest(request: &mut Request<Incoming>, host: &str, conn: &ConnInfo) {
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    // Every client-sent claim about the connection goes, not only the three
    // names set below (`X-Forwarded-Port`, `-Prefix`, `X-Real-IP`, …).
    let claims: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            name.starts_with("x-forwarded-") || name == "forwarded" || name == "x-real-ip"
        })
        .cloned()
        .collect();
    for name in claims {
        headers.remove(name);
    }
    if let Ok(value) = HeaderValue::from_str(&conn.peer.ip().to_string()) {
        headers.insert("x-forwarded-for", value);
    }
    let proto = if conn.tls { "https" } else { "http" };
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    if let Ok(value) = HeaderValue::from_str(host) {
        headers.insert("x-forwarded-host", value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(sni: Option<&str>) -> ConnInfo {
        ConnInfo {
            peer: "127.0.0.1:5000".parse().unwrap(),
            tls: sni.is_some(),
            sni: sni.map(str::to_owned),
        }
    }

    fn host(pairs: &[(&str, &str)], uri: &str, sni: Option<&str>) -> Result<String, &'static str> {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        request_host(&headers, &uri.parse().unwrap(), &conn(sni)).map_err(|e| e.code())
    }

    #[test]
    fn host_comes_from_one_agreeing_source() {
        assert_eq!(
            host(&[("host", "Shop.Localhost:8080")], "/", None),
            Ok("shop.localhost".into())
        );
        assert_eq!(
            host(&[], "http://shop.localhost/x", None),
            Ok("shop.localhost".into())
        );
        assert_eq!(
            host(
                &[("host", "shop.localhost")],
                "http://SHOP.localhost:80/x",
                None
            ),
            Ok("shop.localhost".into())
        );
        assert_eq!(
            host(
                &[("host", "a.localhost"), ("host", "b.localhost")],
                "/",
                None
            ),
            Err("BAD_REQUEST")
        );
        assert_eq!(
            host(&[("host", "a.localhost")], "http://b.localhost/", None),
            Err("BAD_REQUEST")
        );
        assert_eq!(host(&[], "/", None), Err("BAD_REQUEST"));
        assert_eq!(
            host(&[("host", "user@a.localhost")], "/", None),
            Err("BAD_REQUEST")
        );
    }

    #[test]
    fn host_must_match_the_tls_server_name() {
        assert_eq!(
            host(&[("host", "a.example.com")], "/", Some("a.example.com")),
            Ok("a.example.com".into())
        );
        assert_eq!(
            host(&[("host", "b.example.com")], "/", Some("a.example.com")),
            Err("MISDIRECTED_REQUEST")
        );
    }

    #[test]
    fn framing_must_be_unambiguous() {
        let framing = |version, pairs: &[(&str, &str)]| {
            let mut request = Request::post("/").version(version);
            for (k, v) in pairs {
                request = request.header(*k, *v);
            }
            ambiguous_framing(&request.body(()).unwrap()).is_some()
        };
        let v11 = http::Version::HTTP_11;
        assert!(!framing(v11, &[("content-length", "5")]));
        assert!(!framing(v11, &[("transfer-encoding", "chunked")]));
        assert!(!framing(v11, &[("transfer-encoding", " Chunked ")]));
        for bad in [
            &[("transfer-encoding", "chunked"), ("content-length", "5")][..],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            &[("transfer-encoding", "chunked, chunked")],
            &[("transfer-encoding", "gzip, chunked")],
            &[("transfer-encoding", "xchunked")],
            &[("transfer-encoding", "identity")],
        ] {
            assert!(framing(v11, bad), "{bad:?}");
        }
        // HTTP/2 frames bodies itself and forbids Transfer-Encoding.
        assert!(!framing(http::Version::HTTP_2, &[("content-length", "5")]));
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("close, x-private"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }
}
