//! Outgoing HTTP requests, to the origins the app's `switchyard.toml`
//! allows:
//!
//! ```toml
//! [egress]
//! allow = ["https://api.example.com"]
//! ```
//!
//! ```no_run
//! use switchyard_sdk::outbound;
//!
//! # fn demo() -> Result<(), outbound::Error> {
//! let response = outbound::Request::get("https://api.example.com/v1/rates")
//!     .header("accept", "application/json")
//!     .send()?;
//! if response.status() == 200 {
//!     let rates: serde_json::Value = response.json()?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Requests block until the response and its whole body have arrived (up to
//! [`Request::max_body_bytes`]). Redirects are not followed: a 3xx comes
//! back as it is. Each incoming request may make a limited number of
//! outgoing ones (16 by default); refused requests count too.

use crate::request::Method;
use crate::response::{HeaderList, find_header, iter_headers};
use crate::wasi::http::outgoing_handler;
use crate::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method as WasiMethod, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use std::fmt;

/// Default cap on a response body read into memory.
const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// An outgoing request being built.
#[derive(Clone, Debug)]
pub struct Request {
    method: Method,
    url: String,
    headers: HeaderList,
    body: Vec<u8>,
    timeout_ms: Option<u64>,
    max_body_bytes: usize,
}

/// A response, body read in full.
#[derive(Clone, Debug)]
pub struct Response {
    status: u16,
    headers: HeaderList,
    body: Vec<u8>,
}

/// Why an outgoing request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The URL is not `http(s)://host[:port][/path]`.
    InvalidUrl(String),
    /// A header the host does not let apps set (`host`, `connection`, …), or
    /// a malformed one.
    InvalidHeader(String),
    /// Refused by the host: the origin is not in the app's egress
    /// allowlist, or this request has made all the outgoing requests it may.
    /// The project's log says which.
    Denied,
    /// The host name resolved only to addresses apps may not reach
    /// (loopback, private networks, cloud metadata, …).
    Prohibited,
    /// A timeout: connecting, or waiting for the response.
    Timeout,
    /// The request failed on the way (DNS, connection, TLS, protocol); the
    /// host's error code, for the log.
    Failed(String),
    /// The response body is larger than [`Request::max_body_bytes`].
    BodyTooLarge,
    /// The response body is not what [`Response::json`] was asked for.
    Json(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidUrl(url) => write!(f, "not an http(s) URL: {url}"),
            Error::InvalidHeader(name) => write!(f, "header `{name}` may not be sent"),
            Error::Denied => f.write_str("the request is not allowed (see the project's log)"),
            Error::Prohibited => f.write_str("the host resolves to an address apps may not reach"),
            Error::Timeout => f.write_str("the request timed out"),
            Error::Failed(code) => write!(f, "the request failed: {code}"),
            Error::BodyTooLarge => f.write_str("the response body is too large"),
            Error::Json(e) => write!(f, "the response is not the JSON expected: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::HttpRequestDenied => Error::Denied,
            ErrorCode::DestinationIpProhibited => Error::Prohibited,
            ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::HttpResponseTimeout => Error::Timeout,
            other => Error::Failed(format!("{other:?}")),
        }
    }
}

impl Request {
    /// A request with `method` to `url` (`https://host[:port]/path?query`).
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Request::new(Method::Get, url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Request::new(Method::Post, url)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Sets the body (and its `content-length`).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and `content-type: application/json`.
    pub fn json<T: serde::Serialize>(self, value: &T) -> Result<Self, Error> {
        let body = serde_json::to_vec(value).map_err(|e| Error::Json(e.to_string()))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Gives up on connecting, and on waiting for the response, after this
    /// long. The host's own limits apply either way.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// The largest response body [`Request::send`] reads into memory
    /// (default 16 MiB).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Result<Response, Error> {
        let (scheme, authority, path) = split_url(&self.url)?;
        let mut headers = self.headers;
        if !self.body.is_empty() && find_header(&headers, "content-length").is_none() {
            headers.push((
                "content-length".into(),
                self.body.len().to_string().into_bytes(),
            ));
        }
        let fields = Fields::new();
        for (name, value) in &headers {
            fields
                .append(name, value)
                .map_err(|_| Error::InvalidHeader(name.clone()))?;
        }
        let request = OutgoingRequest::new(fields);
        let invalid = || Error::InvalidUrl(self.url.clone());
        request
            .set_method(&wasi_method(&self.method))
            .map_err(|()| invalid())?;
        request.set_scheme(Some(&scheme)).map_err(|()| invalid())?;
        request
            .set_authority(Some(authority))
            .map_err(|()| invalid())?;
        request
            .set_path_with_query(Some(&path))
            .map_err(|()| invalid())?;
        let body = request
            .body()
            .map_err(|()| Error::Failed("no request body".into()))?;

        let options = self.timeout_ms.map(|ms| {
            let options = RequestOptions::new();
            let ns = ms.saturating_mul(1_000_000);
            let _ = options.set_connect_timeout(Some(ns));
            let _ = options.set_first_byte_timeout(Some(ns));
            let _ = options.set_between_bytes_timeout(Some(ns));
            options
        });
        let pending = outgoing_handler::handle(request, options)?;
        // A refused request closes the body stream: its write fails, and
        // the response below carries the reason.
        let written = self.body.is_empty() || crate::handler::write_all(&body, &self.body).is_ok();
        let finished = written && OutgoingBody::finish(body, None).is_ok();

        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(result)) => result?,
            _ => return Err(Error::Failed("no response".into())),
        };
        if !finished {
            return Err(Error::Failed("the request body could not be sent".into()));
        }
        let status = response.status();
        let headers = response.headers().entries();
        let body = response
            .consume()
            .map_err(|()| Error::Failed("no response body".into()))?;
        let body = read_all(body, self.max_body_bytes)?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (case-insensitive), if UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every header, in the order received.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        iter_headers(&self.headers)
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Json(e.to_string()))
    }
}

/// `scheme://authority[/path]` into its parts; the path defaults to `/`.
fn split_url(url: &str) -> Result<(Scheme, &str, String), Error> {
    let invalid = || Error::InvalidUrl(url.to_string());
    let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(invalid()),
    };
    let at = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(at);
    if authority.is_empty() {
        return Err(invalid());
    }
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok((scheme, authority, path))
}

fn wasi_method(method: &Method) -> WasiMethod {
    match method {
        Method::Get => WasiMethod::Get,
        Method::Head => WasiMethod::Head,
        Method::Post => WasiMethod::Post,
        Method::Put => WasiMethod::Put,
        Method::Delete => WasiMethod::Delete,
        Method::Patch => WasiMethod::Patch,
        Method::Options => WasiMethod::Options,
        Method::Connect => WasiMethod::Connect,
        Method::Trace => WasiMethod::Trace,
        Method::Other(m) => WasiMethod::Other(m.clone()),
    }
}

fn read_all(body: IncomingBody, max: usize) -> Result<Vec<u8>, Error> {
    use crate::wasi::io::streams::StreamError;

    let stream = body
        .stream()
        .map_err(|()| Error::Failed("no response body".into()))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) if bytes.len() + chunk.len() > max => return Err(Error::BodyTooLarge),
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(_)) => {
                return Err(Error::Failed("the response body was cut off".into()));
            }
        }
    }
    drop(stream);
    // A body that ended early reports it here.
    let trailers = IncomingBody::finish(body);
    trailers.subscribe().block();
    if let Some(Ok(Err(code))) = trailers.get() {
        return Err(code.into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let (s, a, p) = split_url("https://api.example.com/v1/x?y=1").unwrap();
        assert!(matches!(s, Scheme::Https));
        assert_eq!((a, p.as_str()), ("api.example.com", "/v1/x?y=1"));
        let (s, a, p) = split_url("HTTP://127.0.0.1:8080").unwrap();
        assert!(matches!(s, Scheme::Http));
        assert_eq!((a, p.as_str()), ("127.0.0.1:8080", "/"));
        let (_, a, p) = split_url("http://h?q").unwrap();
        assert_eq!((a, p.as_str()), ("h", "/?q"));
        for bad in ["api.example.com/x", "ftp://h/", "https:///x", "https://"] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }
}
