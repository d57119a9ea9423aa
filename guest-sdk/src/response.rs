//! The outgoing HTTP response, built as plain Rust values and sent by the
//! handler glue once the app returns it.

use std::fmt;

/// Headers as (lowercase name, raw value) pairs, in order.
pub(crate) type HeaderList = Vec<(String, Vec<u8>)>;

/// The first value of `name` (case-insensitive) in `headers`, if UTF-8.
pub(crate) fn find_header<'a>(headers: &'a HeaderList, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .and_then(|(_, value)| std::str::from_utf8(value).ok())
}

/// Every header as (name, raw value).
pub(crate) fn iter_headers(headers: &HeaderList) -> impl Iterator<Item = (&str, &[u8])> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_slice()))
}

/// An HTTP response: status, headers and a body held in memory.
///
/// The host caps response bodies (5 MB by default); for larger or streamed
/// bodies use the raw [`crate::wasi`] bindings.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: HeaderList,
    body: Vec<u8>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `200 OK` with a `text/plain; charset=utf-8` body.
    pub fn text(body: impl Into<String>) -> Self {
        Response::new(200)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(body.into())
    }

    /// `200 OK` with a `text/html; charset=utf-8` body.
    pub fn html(body: impl Into<String>) -> Self {
        Response::new(200)
            .with_header("content-type", "text/html; charset=utf-8")
            .with_body(body.into())
    }

    /// `200 OK` with `value` serialised as JSON. If it cannot be serialised
    /// (a map with non-string keys, for example) the response is a 500 that
    /// says so.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(200)
                .with_header("content-type", "application/json")
                .with_body(body),
            Err(e) => {
                Response::text(format!("could not serialise the response: {e}\n")).with_status(500)
            }
        }
    }

    /// `200 OK` with raw bytes and the given content type.
    pub fn bytes(content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Response::new(200)
            .with_header("content-type", content_type)
            .with_body(body)
    }

    /// Replaces the status code.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Adds a header. Headers that HTTP reserves for the connection
    /// (`connection`, `transfer-encoding`, …) are dropped by the host.
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every header as (lowercase name, raw value).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        iter_headers(&self.headers)
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub(crate) fn into_parts(self) -> (u16, HeaderList, Vec<u8>) {
        (self.status, self.headers, self.body)
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers.len())
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

/// Anything a handler may return.
pub trait IntoResponse {
    /// Converts `self` into a response.
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl IntoResponse for &str {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl IntoResponse for Vec<u8> {
    fn into_response(self) -> Response {
        Response::bytes("application/octet-stream", self)
    }
}

impl IntoResponse for (u16, String) {
    fn into_response(self) -> Response {
        Response::text(self.1).with_status(self.0)
    }
}

impl<R: IntoResponse, E: IntoResponse> IntoResponse for Result<R, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(r) => r.into_response(),
            Err(e) => e.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_set_status_headers_and_body() {
        let r = Response::text("hi")
            .with_status(201)
            .with_header("X-Id", "7");
        assert_eq!(r.status(), 201);
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(r.header("x-id"), Some("7"));
        assert_eq!(r.body(), b"hi");
    }

    #[test]
    fn json_serialises_or_explains() {
        let r = Response::json(&serde_json::json!({"a": 1}));
        assert_eq!(r.status(), 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body(), br#"{"a":1}"#);

        let mut bad = std::collections::HashMap::new();
        bad.insert(vec![1u8], 1);
        let r = Response::json(&bad);
        assert_eq!(r.status(), 500);
    }

    #[test]
    fn into_response_conversions() {
        assert_eq!("x".into_response().status(), 200);
        assert_eq!(String::from("x").into_response().body(), b"x");
        assert_eq!((404, "gone".to_string()).into_response().status(), 404);
        let failed: Result<Response, (u16, String)> = Err((503, "later".into()));
        assert_eq!(failed.into_response().status(), 503);
        assert_eq!(
            vec![1u8, 2].into_response().header("content-type"),
            Some("application/octet-stream")
        );
    }
}
