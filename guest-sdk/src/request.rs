//! The incoming HTTP request, read into plain Rust values.

use crate::percent;
use crate::response::{HeaderList, find_header, iter_headers};
use std::fmt;

/// An HTTP method.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `PATCH`
    Patch,
    /// `OPTIONS`
    Options,
    /// `CONNECT`
    Connect,
    /// `TRACE`
    Trace,
    /// Any other method, as sent.
    Other(String),
}

impl Method {
    /// The method as it appears on the wire, e.g. `"GET"`.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Connect => "CONNECT",
            Method::Trace => "TRACE",
            Method::Other(m) => m,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Method {
    fn from(s: &str) -> Self {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            "CONNECT" => Method::Connect,
            "TRACE" => Method::Trace,
            other => Method::Other(other.to_string()),
        }
    }
}

/// An HTTP request with its body already read.
///
/// The host caps request bodies (5 MB by default), so reading the body up
/// front is bounded.
#[derive(Clone, Debug)]
pub struct Request {
    method: Method,
    path: String,
    query: String,
    headers: HeaderList,
    body: Vec<u8>,
}

impl Request {
    /// A request for `path_and_query` (e.g. `"/items?page=2"`), with no headers
    /// and an empty body. Useful to test handlers and routers on the host.
    pub fn new(method: Method, path_and_query: &str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, query),
            None => (path_and_query, ""),
        };
        let path = if path.is_empty() { "/" } else { path };
        Request {
            method,
            path: path.to_string(),
            query: query.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header (names are case-insensitive and stored lowercased).
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path, still percent-encoded, always starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query string, without the leading `?` (empty if none).
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The first value of query parameter `name`, percent-decoded (`+` is a
    /// space). `None` if the parameter is absent.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// Every `key=value` pair of the query string, percent-decoded, in order.
    pub fn query_pairs(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent::decode(key, true), percent::decode(value, true))
            })
    }

    /// The first value of header `name` (case-insensitive), if it is valid
    /// UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every header as (lowercase name, raw value), in the order received.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        iter_headers(&self.headers)
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// Reads a `wasi:http` incoming request, body included. [`crate::export!`]
    /// does this for you; it is public for `export!(raw …)` handlers.
    pub fn read(incoming: crate::wasi::http::types::IncomingRequest) -> Result<Self, ReadError> {
        use crate::wasi::http::types::Method as WasiMethod;

        let method = match incoming.method() {
            WasiMethod::Get => Method::Get,
            WasiMethod::Head => Method::Head,
            WasiMethod::Post => Method::Post,
            WasiMethod::Put => Method::Put,
            WasiMethod::Delete => Method::Delete,
            WasiMethod::Patch => Method::Patch,
            WasiMethod::Options => Method::Options,
            WasiMethod::Connect => Method::Connect,
            WasiMethod::Trace => Method::Trace,
            WasiMethod::Other(other) => Method::Other(other),
        };
        let mut request = Request::new(method, &incoming.path_with_query().unwrap_or_default());
        request.headers = incoming
            .headers()
            .entries()
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        request.body = read_body(incoming)?;
        Ok(request)
    }
}

/// The request body could not be read completely: the client went away, or
/// the body was larger than the host allows. Never a silently short body.
#[derive(Debug)]
pub struct ReadError;

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request body could not be read completely")
    }
}

impl std::error::Error for ReadError {}

fn read_body(incoming: crate::wasi::http::types::IncomingRequest) -> Result<Vec<u8>, ReadError> {
    use crate::wasi::http::types::IncomingBody;
    use crate::wasi::io::streams::StreamError;

    let body = incoming.consume().map_err(|()| ReadError)?;
    let stream = body.stream().map_err(|()| ReadError)?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(_)) => return Err(ReadError),
        }
    }
    drop(stream);
    drop(IncomingBody::finish(body));
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_path_and_query() {
        let req = Request::new(Method::Get, "/a/b?x=1&y=two%20words&flag&z=a+b");
        assert_eq!(req.path(), "/a/b");
        assert_eq!(req.query(), "x=1&y=two%20words&flag&z=a+b");
        assert_eq!(req.query_param("x").as_deref(), Some("1"));
        assert_eq!(req.query_param("y").as_deref(), Some("two words"));
        assert_eq!(req.query_param("flag").as_deref(), Some(""));
        assert_eq!(req.query_param("z").as_deref(), Some("a b"));
        assert_eq!(req.query_param("missing"), None);
    }

    #[test]
    fn empty_path_is_root() {
        assert_eq!(Request::new(Method::Get, "").path(), "/");
        assert_eq!(Request::new(Method::Get, "?q=1").path(), "/");
    }

    #[test]
    fn headers_are_case_insensitive() {
        let req = Request::new(Method::Post, "/")
            .with_header("Content-Type", "application/json")
            .with_header("X-Raw", vec![0xff, 0xfe]);
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.header("CONTENT-TYPE"), Some("application/json"));
        assert_eq!(req.header("x-raw"), None, "non-UTF-8 values are not text");
        assert_eq!(req.headers().count(), 2);
    }

    #[test]
    fn body_as_text_and_json() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Item {
            name: String,
        }
        let req = Request::new(Method::Post, "/").with_body(r#"{"name":"lamp"}"#);
        assert_eq!(req.text(), r#"{"name":"lamp"}"#);
        assert_eq!(
            req.json::<Item>().ok(),
            Some(Item {
                name: "lamp".into()
            })
        );
        assert!(
            Request::new(Method::Post, "/")
                .with_body("nope")
                .json::<Item>()
                .is_err()
        );
    }

    #[test]
    fn methods_round_trip() {
        for m in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "PURGE",
        ] {
            assert_eq!(Method::from(m).as_str(), m);
        }
        assert_eq!(Method::from("PURGE"), Method::Other("PURGE".into()));
    }
}
