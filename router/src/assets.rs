//! Static assets, served outside the sandbox.
//!
//! A GET or HEAD whose path (or `path/index.html`) is in the build's asset
//! map is answered here: `Content-Type`, a strong ETag (the content hash),
//! `If-None-Match` → 304, one byte `Range` → 206 (or 416), precompressed
//! `.br`/`.gz` siblings chosen by `Accept-Encoding` (with `Vary`), the
//! manifest's cache and header rules. Small hot files come from memory.

use crate::blobs::BlobStore;
use crate::build::{Asset, BuildManifest, ContentEncoding};
use crate::error::{ApiError, Body, empty, full};
use crate::routing::LiveBuild;
use bytes::Bytes;
use futures::TryStreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use std::ops::Range;
use std::sync::OnceLock;

/// `Cache-Control` when no rule matches: cache, but revalidate (ETags make
/// revalidation cheap).
const DEFAULT_CACHE_CONTROL: &str = "public, max-age=0, must-revalidate";

/// Serves assets from the blob store, with a memory cache in front.
pub struct AssetServer {
    blobs: BlobStore,
    cache: moka::future::Cache<String, Bytes>,
    max_cached: u64,
}

/// The asset a request path names, if any.
pub fn find<'m>(manifest: &'m BuildManifest, path: &str) -> Option<(String, &'m Asset)> {
    let decoded = percent_decode(path)?;
    let candidates = if decoded.ends_with('/') {
        vec![format!("{decoded}index.html")]
    } else {
        vec![decoded.clone(), format!("{decoded}/index.html")]
    };
    candidates
        .into_iter()
        .find_map(|p| manifest.assets.get(&p).map(|asset| (p, asset)))
}

/// Percent-decodes `path` (or a query component): the path as rules and the
/// asset manifest see it. `None` if an escape is malformed or the result is
/// not UTF-8.
pub fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl AssetServer {
    /// Keeps up to `memory_bytes` of assets no larger than `max_cached`.
    pub fn new(blobs: BlobStore, memory_bytes: u64, max_cached: u64) -> Self {
        AssetServer {
            blobs,
            cache: moka::future::Cache::builder()
                .max_capacity(memory_bytes)
                .weigher(|_, bytes: &Bytes| u32::try_from(bytes.len()).unwrap_or(u32::MAX))
                .build(),
            max_cached,
        }
    }

    /// Answers a GET or HEAD for `asset` (served at `path`) with `status`
    /// (200, or 404 for a custom not-found page).
    pub async fn serve(
        &self,
        method: &Method,
        request: &HeaderMap,
        build: &LiveBuild,
        path: &str,
        asset: &Asset,
        status: StatusCode,
    ) -> Result<http::Response<Body>, ApiError> {
        let chosen = choose_encoding(asset, request);
        let (hash, size) = chosen.map_or((&asset.hash, asset.size), |e| (&e.hash, e.size));
        let etag = format!("\"{hash}\"");

        let mut headers = HeaderMap::new();
        let cache_control = build
            .cache_control(path)
            .cloned()
            .unwrap_or(HeaderValue::from_static(DEFAULT_CACHE_CONTROL));
        headers.insert(header::CACHE_CONTROL, cache_control);
        headers.insert(header::ETAG, header_value(&etag)?);
        if !asset.encodings.is_empty() {
            headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        for (name, value) in build.headers_for(path) {
            headers.insert(name.clone(), value.clone());
        }

        if status == StatusCode::OK && if_none_match(request, &etag) {
            return Ok(respond(StatusCode::NOT_MODIFIED, headers, empty()));
        }

        headers.insert(header::CONTENT_TYPE, header_value(&asset.content_type)?);
        if let Some(encoded) = chosen {
            headers.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(encoded.encoding.token()),
            );
        }
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));

        let range = match (status, requested_range(request, &etag, size)) {
            (StatusCode::OK, Some(Ok(range))) => Some(range),
            (StatusCode::OK, Some(Err(()))) => {
                headers.insert(
                    header::CONTENT_RANGE,
                    header_value(&format!("bytes */{size}"))?,
                );
                return Ok(respond(StatusCode::RANGE_NOT_SATISFIABLE, headers, empty()));
            }
            _ => None,
        };
        let (status, length) = match &range {
            Some(r) => {
                let content_range = format!("bytes {}-{}/{size}", r.start, r.end - 1);
                headers.insert(header::CONTENT_RANGE, header_value(&content_range)?);
                (StatusCode::PARTIAL_CONTENT, r.end - r.start)
            }
            None => (status, size),
        };
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));

        let body = if *method == Method::HEAD {
            empty()
        } else {
            self.body(hash, size, range).await?
        };
        Ok(respond(status, headers, body))
    }

    async fn body(
        &self,
        hash: &str,
        size: u64,
        range: Option<Range<u64>>,
    ) -> Result<Body, ApiError> {
        let unavailable = |e: crate::blobs::BlobError| ApiError::Unavailable(e.to_string());
        if size <= self.max_cached {
            let bytes = match self.cache.get(hash).await {
                Some(bytes) => {
                    cache_lookups(true).increment(1);
                    bytes
                }
                None => {
                    cache_lookups(false).increment(1);
                    let bytes = self
                        .blobs
                        .get(hash, None)
                        .await
                        .map_err(unavailable)?
                        .bytes()
                        .await
                        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
                    self.cache.insert(hash.to_owned(), bytes.clone()).await;
                    bytes
                }
            };
            let bytes = match range {
                Some(r) => bytes.slice(r.start as usize..r.end as usize),
                None => bytes,
            };
            return Ok(full(bytes));
        }
        let stream = self
            .blobs
            .get(hash, range)
            .await
            .map_err(unavailable)?
            .into_stream()
            .map_ok(http_body::Frame::data)
            .map_err(|e| -> crate::error::BoxError { Box::new(e) });
        Ok(StreamBody::new(stream).boxed_unsync())
    }
}

/// The counter of memory-cache hits or misses, registered once.
fn cache_lookups(hit: bool) -> &'static metrics::Counter {
    static HIT: OnceLock<metrics::Counter> = OnceLock::new();
    static MISS: OnceLock<metrics::Counter> = OnceLock::new();
    let (cell, result) = if hit { (&HIT, "hit") } else { (&MISS, "miss") };
    cell.get_or_init(|| metrics::counter!("switchyard_asset_cache_total", "result" => result))
}

fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> http::Response<Body> {
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn header_value(s: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(s).map_err(|e| ApiError::Internal(format!("bad header value {s:?}: {e}")))
}

/// The best precompressed variant the client accepts, if any (brotli first).
fn choose_encoding<'a>(asset: &'a Asset, request: &HeaderMap) -> Option<&'a crate::build::Encoded> {
    if asset.encodings.is_empty() {
        return None;
    }
    let accepted = accepted_encodings(request);
    // A coding named explicitly decides (`br;q=0` refuses brotli even with
    // `*`); otherwise `*` does.
    let quality = |token: &str| {
        let named = accepted.iter().find(|(t, _)| t == token);
        named
            .or_else(|| accepted.iter().find(|(t, _)| t == "*"))
            .map_or(0.0, |(_, q)| *q)
    };
    [ContentEncoding::Br, ContentEncoding::Gzip]
        .into_iter()
        .filter(|e| quality(e.token()) > 0.0)
        .find_map(|e| asset.encodings.iter().find(|x| x.encoding == e))
}

/// `Accept-Encoding` as (token, q) pairs.
fn accepted_encodings(request: &HeaderMap) -> Vec<(String, f32)> {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let token = parts.next()?.trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse().ok())
                .unwrap_or(1.0);
            (!token.is_empty()).then_some((token, q))
        })
        .collect()
}

fn if_none_match(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// The byte range asked for: `None` to send everything (no `Range`, an
/// `If-Range` that no longer matches, several ranges, or syntax we ignore),
/// `Err` if unsatisfiable.
fn requested_range(request: &HeaderMap, etag: &str, size: u64) -> Option<Result<Range<u64>, ()>> {
    let value = request.get(header::RANGE)?.to_str().ok()?;
    if let Some(if_range) = request.get(header::IF_RANGE)
        && if_range.to_str().ok()? != etag
    {
        return None;
    }
    let spec = value.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let range = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            if n == 0 {
                return Some(Err(()));
            }
            size.saturating_sub(n)..size
        }
        (start, "") => start.parse().ok()?..size,
        (start, end) => {
            let (start, end): (u64, u64) = (start.parse().ok()?, end.parse().ok()?);
            if end < start {
                return None;
            }
            start..end.saturating_add(1).min(size)
        }
    };
    if range.start >= size || range.is_empty() {
        return Some(Err(()));
    }
    Some(Ok(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn ranges() {
        let none = headers(&[]);
        assert_eq!(requested_range(&none, "\"e\"", 10), None);
        let r = |v: &str| requested_range(&headers(&[("range", v)]), "\"e\"", 10);
        assert_eq!(r("bytes=0-3"), Some(Ok(0..4)));
        assert_eq!(r("bytes=5-"), Some(Ok(5..10)));
        assert_eq!(r("bytes=-3"), Some(Ok(7..10)));
        assert_eq!(r("bytes=8-100"), Some(Ok(8..10)));
        assert_eq!(r("bytes=10-"), Some(Err(())));
        assert_eq!(r("bytes=-0"), Some(Err(())));
        assert_eq!(r("bytes=0-1,3-4"), None, "multiple ranges: send everything");
        assert_eq!(r("items=0-1"), None);
        assert_eq!(r("bytes=5-2"), None);
        let stale = headers(&[("range", "bytes=0-1"), ("if-range", "\"old\"")]);
        assert_eq!(requested_range(&stale, "\"e\"", 10), None);
    }

    #[test]
    fn encoding_negotiation_respects_q_values() {
        let asset = Asset {
            hash: "a".into(),
            size: 10,
            content_type: "text/plain".into(),
            encodings: vec![
                crate::build::Encoded {
                    encoding: ContentEncoding::Gzip,
                    hash: "g".into(),
                    size: 5,
                },
                crate::build::Encoded {
                    encoding: ContentEncoding::Br,
                    hash: "b".into(),
                    size: 4,
                },
            ],
        };
        let pick = |v: &str| {
            choose_encoding(&asset, &headers(&[("accept-encoding", v)])).map(|e| e.encoding)
        };
        assert_eq!(pick("gzip, br"), Some(ContentEncoding::Br));
        assert_eq!(pick("gzip"), Some(ContentEncoding::Gzip));
        assert_eq!(pick("br;q=0, gzip;q=0.5"), Some(ContentEncoding::Gzip));
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("*"), Some(ContentEncoding::Br));
        assert_eq!(pick("br;q=0, *"), Some(ContentEncoding::Gzip));
        assert_eq!(pick("*;q=0, gzip"), Some(ContentEncoding::Gzip));
        assert_eq!(pick("br;q=0, gzip;q=0, *"), None);
        assert_eq!(choose_encoding(&asset, &headers(&[])), None);
    }

    #[test]
    fn conditional_requests() {
        assert!(if_none_match(
            &headers(&[("if-none-match", "\"x\", \"e\"")]),
            "\"e\""
        ));
        assert!(if_none_match(
            &headers(&[("if-none-match", "W/\"e\"")]),
            "\"e\""
        ));
        assert!(if_none_match(&headers(&[("if-none-match", "*")]), "\"e\""));
        assert!(!if_none_match(
            &headers(&[("if-none-match", "\"x\"")]),
            "\"e\""
        ));
    }

    #[test]
    fn lookup_decodes_and_finds_index_pages() {
        let mut manifest = BuildManifest::default();
        let asset = Asset {
            hash: "h".into(),
            size: 1,
            content_type: "text/html".into(),
            encodings: vec![],
        };
        for path in ["/index.html", "/docs/index.html", "/a b.txt"] {
            manifest.assets.insert(path.into(), asset.clone());
        }
        let found = |p: &str| find(&manifest, p).map(|(path, _)| path);
        assert_eq!(found("/").as_deref(), Some("/index.html"));
        assert_eq!(found("/docs").as_deref(), Some("/docs/index.html"));
        assert_eq!(found("/docs/").as_deref(), Some("/docs/index.html"));
        assert_eq!(found("/a%20b.txt").as_deref(), Some("/a b.txt"));
        assert_eq!(found("/missing"), None);
        assert_eq!(found("/%zz"), None);
        assert_eq!(found("/%ff"), None);
    }
}
