//! Static assets on the public listener: types, validators, ranges,
//! precompressed variants, fallbacks, rules; and assets beside a component.

use crate::common::*;
use http::{Method, Request, StatusCode};
use switchyard_test_artifacts as artifacts;

const SITE: &str = "static-site.localhost";

#[tokio::test]
async fn the_static_site_is_served_with_types_validators_and_rules() {
    let server = TestServer::start().await;
    let (status, body) = server.deploy("static-site", static_site_bundle()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let index = server.get(SITE, "/").await;
    assert_eq!(index.status, StatusCode::OK);
    assert_eq!(index.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        index.headers["x-content-type-options"], "nosniff",
        "a headers rule"
    );
    assert_eq!(index.headers["x-frame-options"], "DENY");
    assert_eq!(
        index.headers["cache-control"],
        "public, max-age=0, must-revalidate"
    );
    assert_eq!(index.headers["accept-ranges"], "bytes");
    let etag = index.headers["etag"].to_str().unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.len() == 66,
        "a strong ETag of the sha256: {etag}"
    );
    assert_eq!(server.get(SITE, "/index.html").await.body, index.body);

    let css = server.get(SITE, "/css/site.css").await;
    assert_eq!(css.headers["content-type"], "text/css; charset=utf-8");
    assert_eq!(
        css.headers["cache-control"], "public, max-age=31536000, immutable",
        "a cache rule"
    );

    // Revalidation.
    let cached = server
        .public_request(SITE, Request::get("/").header("if-none-match", &etag))
        .await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    assert!(cached.body.is_empty());
    assert_eq!(cached.headers["etag"], etag.as_str());
    let changed = server
        .public_request(SITE, Request::get("/").header("if-none-match", "\"other\""))
        .await;
    assert_eq!(changed.status, StatusCode::OK);

    // Ranges.
    let size = index.body.len();
    let part = server
        .public_request(SITE, Request::get("/").header("range", "bytes=0-14"))
        .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, index.body.slice(0..15));
    assert_eq!(part.headers["content-range"], format!("bytes 0-14/{size}"));
    let tail = server
        .public_request(SITE, Request::get("/").header("range", "bytes=-7"))
        .await;
    assert_eq!(tail.body, index.body.slice(size - 7..));
    let beyond = server
        .public_request(
            SITE,
            Request::get("/").header("range", format!("bytes={size}-")),
        )
        .await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(beyond.headers["content-range"], format!("bytes */{size}"));
    let stale = server
        .public_request(
            SITE,
            Request::get("/")
                .header("range", "bytes=0-3")
                .header("if-range", "\"old\""),
        )
        .await;
    assert_eq!(
        (stale.status, stale.body.len()),
        (StatusCode::OK, size),
        "If-Range mismatch: everything"
    );

    // Precompressed siblings.
    let plain = server.get(SITE, "/app.js").await;
    assert_eq!(
        plain.headers["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(plain.headers["vary"], "Accept-Encoding");
    assert!(plain.headers.get("content-encoding").is_none());
    let gzipped = server
        .public_request(
            SITE,
            Request::get("/app.js").header("accept-encoding", "br, gzip"),
        )
        .await;
    assert_eq!(gzipped.headers["content-encoding"], "gzip");
    assert_eq!(gzipped.headers["vary"], "Accept-Encoding");
    assert_eq!(
        gzipped.headers["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_ne!(
        gzipped.headers["etag"], plain.headers["etag"],
        "each variant has its own ETag"
    );
    let mut decoded = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&gzipped.body[..]),
        &mut decoded,
    )
    .unwrap();
    assert_eq!(decoded.as_bytes(), &plain.body[..]);
    let refused = server
        .public_request(
            SITE,
            Request::get("/app.js").header("accept-encoding", "gzip;q=0"),
        )
        .await;
    assert!(refused.headers.get("content-encoding").is_none());

    // HEAD: the headers of the GET, no body.
    let head = server
        .public_request(SITE, Request::head("/css/site.css"))
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["content-length"], css.body.len().to_string());
    assert!(head.body.is_empty());

    // The SPA fallback: unknown paths get the app shell, for GET and HEAD.
    let route = server.get(SITE, "/dashboard/settings").await;
    assert_eq!(
        (route.status, route.body.clone()),
        (StatusCode::OK, index.body.clone())
    );
    assert_eq!(route.headers["x-content-type-options"], "nosniff");
    // Other methods on an asset-only app have nowhere to go.
    let post = server
        .public_request(SITE, Request::post("/dashboard"))
        .await;
    assert_eq!(post.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_custom_not_found_page_and_index_pages() {
    let server = TestServer::start().await;
    let bundle = tar(&[
        ("switchyard.toml", b"not_found = \"/404.html\"\n"),
        ("assets/404.html", b"<h1>nothing here</h1>"),
        ("assets/docs/index.html", b"docs"),
        ("assets/a file.txt", b"spaced"),
        ("assets/data.json", b"{}"),
        ("assets/image.png", b"\x89PNG"),
    ]);
    let (status, body) = server.deploy("docs", bundle).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let host = "docs.localhost";

    let missing = server.get(host, "/missing").await;
    assert_eq!(
        (missing.status, missing.text()),
        (StatusCode::NOT_FOUND, "<h1>nothing here</h1>".to_string())
    );
    assert_eq!(missing.headers["content-type"], "text/html; charset=utf-8");
    // A custom 404 is not cacheable as a success: no 304 for it.
    let etag = missing.headers["etag"].clone();
    let again = server
        .public_request(host, Request::get("/missing").header("if-none-match", etag))
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);

    assert_eq!(server.get(host, "/docs").await.text(), "docs");
    assert_eq!(server.get(host, "/docs/").await.text(), "docs");
    assert_eq!(server.get(host, "/a%20file.txt").await.text(), "spaced");
    assert_eq!(
        server.get(host, "/data.json").await.headers["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(
        server.get(host, "/image.png").await.headers["content-type"],
        "image/png"
    );
    // Without a not-found page: the platform's 404 envelope.
    server
        .deploy("bare", tar(&[("switchyard.toml", b""), ("assets/x", b"x")]))
        .await;
    let bare = server.get("bare.localhost", "/nothing").await;
    assert_eq!(
        (bare.status, bare.code().as_str()),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
}

#[tokio::test]
async fn assets_beside_a_component_and_the_guest_sees_forwarded_headers() {
    let server = TestServer::start().await;
    let component = artifacts::read(artifacts::HELLO);
    let manifest = "[[headers]]\npattern = \"/echo/**\"\nset = { \"x-rule\" = \"on\" }\n";
    let bundle = tar(&[
        ("switchyard.toml", manifest.as_bytes()),
        ("app.wasm", &component),
        ("assets/robots.txt", b"User-agent: *\n"),
    ]);
    let (status, body) = server.deploy("mixed", bundle).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let host = "mixed.localhost";

    // The asset answers GET; the component answers the rest.
    let robots = server.get(host, "/robots.txt").await;
    assert_eq!(
        (
            robots.text(),
            robots.headers["content-type"].to_str().unwrap()
        ),
        ("User-agent: *\n".into(), "text/plain; charset=utf-8")
    );
    assert_eq!(
        server.get(host, "/").await.text(),
        "Hello from Switchyard!\n"
    );
    let post = server
        .public_request(host, Request::post("/robots.txt"))
        .await;
    assert_eq!(
        (post.status, post.text()),
        (StatusCode::NOT_FOUND, "not found\n".to_string()),
        "hello's own 404"
    );

    let echo = server
        .public_request(
            host,
            Request::builder()
                .method(Method::POST)
                .uri("/echo/x?q=1")
                .header("x-forwarded-for", "6.6.6.6")
                .header("x-forwarded-host", "evil.example")
                .header("forwarded", "for=6.6.6.6")
                .header("x-forwarded-port", "1")
                .header("x-forwarded-prefix", "/admin")
                .header("x-real-ip", "6.6.6.6")
                .header("connection", "x-secret")
                .header("x-secret", "hop")
                .header("x-kept", "yes"),
        )
        .await;
    assert_eq!(echo.status, StatusCode::OK);
    assert_eq!(
        echo.headers["x-rule"], "on",
        "header rules apply to the component's responses too"
    );
    let json = echo.json();
    let header = |name: &str| -> Vec<String> {
        json["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|pair| pair[0] == name)
            .map(|pair| pair[1].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        header("x-forwarded-for"),
        ["127.0.0.1"],
        "set by the host, never the client"
    );
    assert_eq!(header("x-forwarded-host"), [host]);
    assert_eq!(header("x-forwarded-proto"), ["http"]);
    for claim in [
        "forwarded",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
    ] {
        assert!(header(claim).is_empty(), "{claim} is the client's claim");
    }
    assert!(
        header("x-secret").is_empty(),
        "named by Connection: hop-by-hop"
    );
    assert!(header("connection").is_empty());
    assert_eq!(header("x-kept"), ["yes"]);
}
