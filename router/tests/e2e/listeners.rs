//! The listeners: HTTP/2 by prior knowledge, TLS by SNI with ALPN, header
//! and body limits, timeouts, the connection cap, graceful shutdown.

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_test_artifacts as artifacts;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `request` on a new connection and reads until the server closes it
/// (or 5 s pass).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    raw_until_closed(addr, request).await.0
}

/// Like [`raw`], and whether the server closed the connection in time.
async fn raw_until_closed(addr: SocketAddr, request: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    (
        String::from_utf8_lossy(&response).into_owned(),
        read.is_ok(),
    )
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or_default()
}

#[tokio::test]
async fn h2c_by_prior_knowledge_and_the_authority_rules() {
    let server = TestServer::start().await;
    server.deploy_component("hello", artifacts::HELLO).await;
    let tcp = TcpStream::connect(server.public).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);

    let request = Request::get("http://hello.localhost/json")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(
        (response.version(), response.status()),
        (Version::HTTP_2, StatusCode::OK)
    );
    assert_eq!(response.headers()["x-request-id"].len(), 32);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["project"], "hello");

    // `:authority` and a Host header that disagree: refused.
    let request = Request::get("http://hello.localhost/")
        .header("host", "other.localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    drop((response, sender));
    server.assert_back_to_baseline().await;
}

#[tokio::test]
async fn header_uri_and_body_limits_answer_431_414_400_and_413() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.http.max_body_bytes = 8192;
    let server = TestServer::start_with(config).await;
    server.deploy_component("hello", artifacts::HELLO).await;
    let public = server.public;

    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let response = raw(
        public,
        format!("GET / HTTP/1.1\r\nhost: hello.localhost\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 431 Request Header Fields Too Large",
        "too many headers"
    );
    let big = "v".repeat(20_000);
    let response = raw(
        public,
        format!("GET / HTTP/1.1\r\nhost: hello.localhost\r\nx-big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 431 Request Header Fields Too Large",
        "too large a header"
    );
    // A request target over `http.max_uri_bytes` (8192): 414, before routing;
    // one too long for the header buffer: 431 before it can be measured.
    let long = "a".repeat(9_000);
    let response = raw(
        public,
        format!("GET /{long} HTTP/1.1\r\nhost: hello.localhost\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status_line(&response), "HTTP/1.1 414 URI Too Long");
    assert!(response.contains("\"URI_TOO_LONG\""));
    let longer = "a".repeat(20_000);
    let response = raw(
        public,
        format!("GET /{longer} HTTP/1.1\r\nhost: hello.localhost\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 431 Request Header Fields Too Large",
        "a target longer than the header buffer"
    );

    let response = raw(
        public,
        b"GET / HTTP/1.1\r\nhost: hello.localhost\r\nhost: other.localhost\r\n\r\n",
    )
    .await;
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 400 Bad Request",
        "two Host headers"
    );
    assert!(response.contains("\"BAD_REQUEST\""));
    let response = raw(
        public,
        b"GET http://hello.localhost/ HTTP/1.1\r\nhost: other.localhost\r\n\r\n",
    )
    .await;
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 400 Bad Request",
        "target and Host disagree"
    );

    // A declared body over the limit is refused before the guest runs...
    let response = raw(
        public,
        b"POST /echo HTTP/1.1\r\nhost: hello.localhost\r\ncontent-length: 20000\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_line(&response), "HTTP/1.1 413 Payload Too Large");
    assert!(response.contains("\"PAYLOAD_TOO_LARGE\""));
    // ...and a streamed one when it crosses the limit.
    let chunk = "y".repeat(4096);
    let chunks: String = (0..5).map(|_| format!("1000\r\n{chunk}\r\n")).collect();
    let response = raw(
        public,
        format!("POST /echo HTTP/1.1\r\nhost: hello.localhost\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{chunks}0\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_line(&response), "HTTP/1.1 413 Payload Too Large");
    // Under the limit: fine.
    let response = raw(
        public,
        b"POST /echo HTTP/1.1\r\nhost: hello.localhost\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
    assert!(response.contains("\"bodyBytes\":5"));
    server.assert_back_to_baseline().await;
}

#[tokio::test]
async fn ambiguous_framing_closes_the_connection_and_smuggles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.http.max_body_bytes = 8192;
    let server = TestServer::start_with(config).await;
    server.deploy_component("hello", artifacts::HELLO).await;
    server.deploy_component("victim", artifacts::COUNTER).await;
    // Each case is followed, on the same connection, by a request to
    // another tenant that a front proxy framing the first request
    // differently would not have seen.
    let smuggled = "GET /visits/smuggled HTTP/1.1\r\nhost: victim.localhost\r\n\r\n";
    let head = "POST /echo HTTP/1.1\r\nhost: hello.localhost\r\n";
    let cases: &[(&str, String, &str)] = &[
        // hyper frames these by Transfer-Encoding alone, drops the
        // Content-Length before the request reaches Switchyard and closes
        // the connection after the response (RFC 9112 §6.1 allows this or
        // a 400): the request is answered, nothing after it is read.
        (
            "Content-Length and Transfer-Encoding",
            format!("{head}content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
            "200 OK",
        ),
        (
            "Transfer-Encoding and Content-Length",
            format!("{head}transfer-encoding: chunked\r\ncontent-length: 60\r\n\r\n0\r\n\r\n"),
            "200 OK",
        ),
        (
            "duplicate Transfer-Encoding",
            format!("{head}transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
            "400 Bad Request",
        ),
        (
            "chunked twice in one header",
            format!("{head}transfer-encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
            "400 Bad Request",
        ),
        (
            "a coding before chunked",
            format!("{head}transfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
            "400 Bad Request",
        ),
        (
            "xchunked",
            format!("{head}transfer-encoding: xchunked\r\n\r\n0\r\n\r\n"),
            "400 Bad Request",
        ),
        (
            "space before the colon",
            format!("{head}transfer-encoding : chunked\r\n\r\n0\r\n\r\n"),
            "400 Bad Request",
        ),
        (
            "two Content-Lengths",
            format!("{head}content-length: 5\r\ncontent-length: 6\r\n\r\nhello"),
            "400 Bad Request",
        ),
        (
            "a Content-Length list",
            format!("{head}content-length: 5, 5\r\n\r\nhello"),
            "400 Bad Request",
        ),
        (
            "a signed Content-Length",
            format!("{head}content-length: +5\r\n\r\nhello"),
            "400 Bad Request",
        ),
        (
            "an overflowing Content-Length",
            format!("{head}content-length: 99999999999999999999999\r\n\r\nhello"),
            "400 Bad Request",
        ),
        (
            "HTTP/1.0 with Transfer-Encoding",
            "POST /echo HTTP/1.0\r\nhost: hello.localhost\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            "400 Bad Request",
        ),
        (
            "an overflowing chunk size",
            format!("{head}transfer-encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n"),
            "400 Bad Request",
        ),
        (
            "a declared body over the limit",
            format!("{head}content-length: 20000000\r\n\r\nhello"),
            "413 Payload Too Large",
        ),
    ];
    for (case, request, status) in cases {
        let (response, closed) =
            raw_until_closed(server.public, format!("{request}{smuggled}").as_bytes()).await;
        assert_eq!(
            status_line(&response),
            format!("HTTP/1.1 {status}"),
            "{case}"
        );
        assert_eq!(response.matches("HTTP/1.").count(), 1, "{case}: {response}");
        assert!(closed, "{case}: the connection stayed open");
    }
    // Nothing reached the other tenant: its first visit is this one.
    let reply = server.get("victim.localhost", "/visits/smuggled").await;
    assert_eq!(reply.json()["visits"], 1, "{}", reply.text());
    // A well-framed chunked request still works, and keeps the connection.
    let (response, closed) = raw_until_closed(
        server.public,
        format!("{head}transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
    assert!(response.contains("\"bodyBytes\":5"), "{response}");
    assert!(!closed, "a keep-alive connection was closed");
    server.assert_back_to_baseline().await;
}

#[tokio::test]
async fn slow_headers_time_out_and_the_connection_cap_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.http.header_read_timeout_ms = 400;
    config.http.max_connections = 2;
    let server = TestServer::start_with(config).await;
    server.deploy_component("hello", artifacts::HELLO).await;

    // Headers trickled in: closed at the header read timeout.
    let started = Instant::now();
    let mut slow = TcpStream::connect(server.public).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: hello.localhost\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    drop(slow);

    // Two connections hold both slots; a third waits in the backlog until
    // one of them goes.
    let request = b"GET / HTTP/1.1\r\nhost: hello.localhost\r\n\r\n";
    let mut first = TcpStream::connect(server.public).await.unwrap();
    first.write_all(request).await.unwrap();
    let mut second = TcpStream::connect(server.public).await.unwrap();
    second.write_all(request).await.unwrap();
    let mut byte = [0u8; 1];
    first.read_exact(&mut byte).await.unwrap();
    second.read_exact(&mut byte).await.unwrap();
    let mut third = TcpStream::connect(server.public).await.unwrap();
    third.write_all(request).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte)).await;
    assert!(
        waiting.is_err(),
        "a third connection was served beyond the cap"
    );
    drop(first);
    let mut response = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), third.read_exact(&mut response))
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert_eq!(&response, b"HTTP/1.1 200");
    server.assert_back_to_baseline().await;
}

/// Scheduling slack on a loaded two-core machine, for timing assertions.
const SLACK: Duration = Duration::from_millis(600);

/// Reads from `stream` until the server closes it, and checks that came
/// 500 ms (the test's header read timeout) after `since`.
async fn closed_at_header_timeout(stream: &mut TcpStream, since: Instant, what: &str) {
    let mut sink = Vec::new();
    // Closed either way: with a FIN (Ok) or a reset (Err).
    let _closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sink))
        .await
        .unwrap_or_else(|_| panic!("{what} stayed open"));
    let waited = since.elapsed();
    eprintln!("{what} closed after {waited:?}");
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_millis(500) + SLACK,
        "{what}: {waited:?}"
    );
}

#[tokio::test]
async fn idle_connections_stalled_handshakes_and_slow_bodies_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (_, default_pem, default_key) = certificate("fallback.example.net");
    let cert = dir.path().join("default.pem");
    let key = dir.path().join("default.key");
    std::fs::write(&cert, default_pem).unwrap();
    std::fs::write(&key, default_key).unwrap();
    let mut config = config(&dir.path().join("data"));
    config.listen.public_tls = Some("127.0.0.1:0".parse().unwrap());
    config.tls.default = Some(switchyard::config::CertFiles {
        cert,
        key,
        hostnames: Vec::new(),
    });
    config.http.header_read_timeout_ms = 500;
    config.http.idle_timeout_ms = 800;
    config.runtime.limits.wall_clock_ms = 700;
    let server = TestServer::start_with(config).await;
    server.deploy_component("hello", artifacts::HELLO).await;
    let tls = server.running.as_ref().unwrap().tls_addr.unwrap();

    // A keep-alive connection left idle after a request is closed when the
    // next request's headers do not start within the header read timeout.
    let mut idle = TcpStream::connect(server.public).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: hello.localhost\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    closed_at_header_timeout(&mut idle, Instant::now(), "an idle keep-alive connection").await;

    // A TLS connection that never sends its ClientHello is closed at the
    // header read timeout.
    let started = Instant::now();
    let mut stalled = TcpStream::connect(tls).await.unwrap();
    closed_at_header_timeout(&mut stalled, started, "a stalled TLS handshake").await;

    // A body trickled in a byte at a time: the guest reading it reaches its
    // wall-clock deadline, the client gets 503 and the slot comes back.
    let started = Instant::now();
    let mut slow = TcpStream::connect(server.public).await.unwrap();
    slow.write_all(
        b"POST /echo HTTP/1.1\r\nhost: hello.localhost\r\ncontent-length: 100\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let trickle = async {
        for _ in 0..100 {
            if slow.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), trickle).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 503 Service Unavailable",
        "{response}"
    );
    assert!(response.contains("GUEST_TIMEOUT"), "{response}");
    eprintln!(
        "slow body answered and closed after {:?}",
        started.elapsed()
    );
    assert_eq!(
        server.get("hello.localhost", "/").await.status,
        StatusCode::OK
    );
    server.assert_back_to_baseline().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_refuses_new_ones() {
    let mut server = TestServer::start().await;
    server.deploy_component("slow", artifacts::HOSTILE).await;
    let public = server.public;
    let in_flight = tokio::spawn(async move {
        let request = Request::get(format!("http://{public}/sleep?ms=1500"))
            .header("host", "slow.localhost")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        send(request).await
    });
    wait_for_log(server.admin, "slow", "sleeping").await;

    let running = server.running.take().unwrap();
    running.shutdown();
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(public).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reply = in_flight.await.unwrap();
    assert_eq!(
        (reply.status, reply.text()),
        (StatusCode::OK, "slept".to_string()),
        "the in-flight request completed"
    );
    tokio::time::timeout(Duration::from_secs(10), running.stopped())
        .await
        .expect("the node stops");
}

/// A self-signed certificate for `name`: (DER, cert PEM, key PEM).
fn certificate(name: &str) -> (CertificateDer<'static>, String, String) {
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    (
        cert.cert.der().clone(),
        cert.cert.pem(),
        cert.signing_key.serialize_pem(),
    )
}

struct TlsReply {
    certificate: CertificateDer<'static>,
    alpn: Option<Vec<u8>>,
    status: StatusCode,
    body: Bytes,
}

/// A GET over TLS to `addr` with server name `sni` and `Host: host`,
/// trusting only `trusted`.
async fn tls_get(
    addr: SocketAddr,
    sni: &str,
    host: &str,
    trusted: &[&CertificateDer<'static>],
    alpn: &[&[u8]],
) -> TlsReply {
    try_tls_get(addr, sni, host, trusted, alpn).await.unwrap()
}

async fn try_tls_get(
    addr: SocketAddr,
    sni: &str,
    host: &str,
    trusted: &[&CertificateDer<'static>],
    alpn: &[&[u8]],
) -> std::io::Result<TlsReply> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add((*cert).clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await?;
    let (_, session) = tls.get_ref();
    let certificate = session.peer_certificates().unwrap()[0].clone();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let response = if alpn.as_deref() == Some(b"h2") {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = Request::get(format!("https://{host}/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = Request::get("/")
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(request).await.unwrap()
    };
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok(TlsReply {
        certificate,
        alpn,
        status,
        body,
    })
}

#[tokio::test]
async fn tls_serves_each_hostname_its_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (shop_der, shop_pem, shop_key) = certificate("shop.example.com");
    let (blog_der, blog_pem, blog_key) = certificate("blog.example.org");
    let (default_der, default_pem, default_key) = certificate("fallback.example.net");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let mut config = config(&dir.path().join("data"));
    config.listen.public_tls = Some("127.0.0.1:0".parse().unwrap());
    // One certificate from files, one uploaded below, and a default.
    config.tls.certificates.push(switchyard::config::CertFiles {
        cert: write("shop.pem", &shop_pem),
        key: write("shop.key", &shop_key),
        hostnames: vec!["shop.example.com".into()],
    });
    config.tls.default = Some(switchyard::config::CertFiles {
        cert: write("default.pem", &default_pem),
        key: write("default.key", &default_key),
        hostnames: Vec::new(),
    });
    let server = TestServer::start_with(config).await;
    let tls = server.running.as_ref().unwrap().tls_addr.unwrap();
    server.deploy_component("shop", artifacts::HELLO).await;
    server
        .deploy_component("blog", artifacts::PLAIN_PROXY)
        .await;
    for (project, hostname) in [("shop", "shop.example.com"), ("blog", "blog.example.org")] {
        let body = serde_json::json!({ "hostname": hostname });
        let (status, _) = server
            .admin(
                "POST",
                &format!("/v1/projects/{project}/hostnames"),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let upload = serde_json::json!({
        "hostname": "blog.example.org",
        "certificatePem": blog_pem,
        "privateKeyPem": blog_key,
    });
    let (status, body) = server.admin("POST", "/v1/certificates", Some(upload)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(!body.to_string().contains("PRIVATE KEY"));
    // A certificate for another name is refused.
    let wrong = serde_json::json!({ "hostname": "other.example.org", "certificatePem": blog_pem, "privateKeyPem": blog_key });
    let (status, body) = server.admin("POST", "/v1/certificates", Some(wrong)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("CERTIFICATE_NAME_MISMATCH"))
    );

    let trusted = [&shop_der, &blog_der, &default_der];
    let shop = tls_get(
        tls,
        "shop.example.com",
        "shop.example.com",
        &trusted,
        &[b"h2", b"http/1.1"],
    )
    .await;
    assert_eq!(shop.certificate, shop_der);
    assert_eq!(shop.alpn.as_deref(), Some(&b"h2"[..]), "h2 by ALPN");
    assert_eq!(
        (shop.status, &shop.body[..]),
        (StatusCode::OK, &b"Hello from Switchyard!\n"[..])
    );

    // The uploaded certificate is picked up without a restart.
    let deadline = Instant::now() + Duration::from_secs(5);
    let blog = loop {
        // Until the new set is loaded, the default certificate (not valid
        // for this name) fails the handshake.
        match try_tls_get(
            tls,
            "blog.example.org",
            "blog.example.org",
            &trusted,
            &[b"http/1.1"],
        )
        .await
        {
            Ok(reply) => break reply,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the uploaded certificate is not served: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(blog.certificate, blog_der);
    assert_eq!(blog.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert!(String::from_utf8_lossy(&blog.body).starts_with("plain proxy saw /"));

    // No certificate for the name: the default one.
    let fallback = tls_get(
        tls,
        "fallback.example.net",
        "fallback.example.net",
        &trusted,
        &[],
    )
    .await;
    assert_eq!(fallback.certificate, default_der);
    assert_eq!(
        fallback.status,
        StatusCode::NOT_FOUND,
        "and no project there"
    );

    // SNI for one hostname, Host for another: 421.
    let misdirected = tls_get(
        tls,
        "shop.example.com",
        "blog.example.org",
        &trusted,
        &[b"http/1.1"],
    )
    .await;
    assert_eq!(misdirected.status, StatusCode::MISDIRECTED_REQUEST);
    server.assert_back_to_baseline().await;
}
