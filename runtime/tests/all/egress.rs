//! Guests' outgoing HTTP: denied by default, allowed only to the build's
//! allowlist, never to special-purpose addresses (checked after DNS), with
//! the request's own `Host`, within the subrequest budget and the timeouts.
//! The upstreams are raw TCP servers on loopback that record every request
//! they receive.

use crate::common::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_runtime::{
    App, EgressAllowlist, EgressConfig, LimitsOverride, Runtime, RuntimeConfig,
};
use switchyard_test_artifacts as artifacts;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A loopback HTTP/1.1 server that records the head of every request.
/// `/redirect?to=URL` answers 302 to URL, `/slow` waits 5 s first,
/// anything else answers 200 `hello from upstream`.
struct Upstream {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut conn).await else {
                        return;
                    };
                    seen.lock().unwrap().push(head.clone());
                    let target = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let response = if let Some(to) = target.strip_prefix("/redirect?to=") {
                        format!("HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\n\r\n")
                    } else {
                        if target == "/slow" {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        let body = "hello from upstream";
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
        Upstream { port, heads }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Reads a request head (through the blank line); `None` if the
/// connection ends first.
async fn read_head(conn: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A loopback HTTPS server with a self-signed certificate for 127.0.0.1
/// that answers every request 200 `hello over tls`: its port and its
/// certificate's PEM.
async fn tls_upstream() -> (u16, String) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = acceptor.accept(tcp).await else {
                    return;
                };
                if read_head(&mut conn).await.is_none() {
                    return;
                }
                let body = "hello over tls";
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (port, certified.cert.pem())
}

/// A runtime whose operator lets guests reach loopback (where the test
/// upstreams are), or not.
fn runtime_allowing(dir: &std::path::Path, loopback: bool, egress: EgressConfig) -> Runtime {
    let allow_ranges = if loopback {
        vec!["127.0.0.0/8".parse().unwrap()]
    } else {
        Vec::new()
    };
    let config = RuntimeConfig {
        egress: EgressConfig {
            allow_ranges,
            ..egress
        },
        ..config(dir)
    };
    runtime_with(config, dir)
}

/// The hostile guest with `rules`, as a project of its own (apps are cached
/// by project and build).
async fn hostile_allowing(runtime: &Runtime, rules: &[String], limits: LimitsOverride) -> Arc<App> {
    static PROJECTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = PROJECTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let component = runtime
        .compile(&artifacts::read(artifacts::HOSTILE))
        .await
        .unwrap();
    let spec = switchyard_runtime::AppSpec {
        egress: Arc::new(EgressAllowlist::parse(rules).unwrap()),
        limits,
        ..spec(&format!("egress{n}"), component)
    };
    runtime.app(&spec).await.unwrap()
}

/// Sends `/fetch` with `query` and returns the guest's list of outcomes.
async fn fetch(app: &App, query: &str) -> Vec<serde_json::Value> {
    let reply = get(app, &format!("/fetch?{query}")).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json().as_array().unwrap().clone()
}

fn encode(url: &str) -> String {
    url.replace('%', "%25")
        .replace('&', "%26")
        .replace('?', "%3F")
        .replace('=', "%3D")
}

fn log_lines(runtime: &Runtime, app: &App) -> Vec<String> {
    runtime
        .logs(app.project())
        .unwrap()
        .read(0, 1000)
        .into_iter()
        .map(|r| r.message)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_origin_is_reached_with_its_own_host_header() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let runtime = runtime_allowing(dir.path(), true, EgressConfig::default());
    let app = hostile_allowing(&runtime, &[upstream.url("")], generous()).await;

    let url = upstream.url("/hi?x=1");
    let results = fetch(&app, &format!("url={}&host=evil.example", encode(&url))).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["status"], 200, "{results:?}");
    assert_eq!(results[0]["body"], "hello from upstream");
    // The guest may not set Host; the wire carries the allowed authority.
    assert_eq!(results[0]["host_header"], "refused");
    let heads = upstream.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let head = heads[0].to_ascii_lowercase();
    assert!(head.starts_with("get /hi?x=1 http/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("\r\nhost: 127.0.0.1:{}\r\n", upstream.port)),
        "{head}"
    );
    assert!(
        !head.contains("evil.example") && !head.contains("app.localhost"),
        "{head}"
    );

    let log = log_lines(&runtime, &app);
    assert!(
        log.iter()
            .any(|l| l.starts_with(&format!("outgoing request to {url} (GET): 200 in"))),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_requests_are_denied_without_an_allowlist_and_outside_it() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = Upstream::start().await;
    let other = Upstream::start().await;
    let runtime = runtime_allowing(dir.path(), true, EgressConfig::default());

    // No allowlist: nothing leaves.
    let closed = hostile_allowing(&runtime, &[], generous()).await;
    let results = fetch(&closed, &format!("url={}", encode(&allowed.url("/")))).await;
    assert_eq!(results[0]["error"], "Denied", "{results:?}");
    assert!(
        log_lines(&runtime, &closed)
            .iter()
            .any(|l| l.contains("refused: outgoing HTTP is not enabled for this project"))
    );

    // An allowlist: only its scheme, host and port.
    let app = hostile_allowing(&runtime, &[allowed.url("")], generous()).await;
    for url in [
        other.url("/"),
        format!("https://127.0.0.1:{}/", allowed.port),
        format!("http://localhost:{}/", allowed.port),
        format!("http://127.0.0.2:{}/", allowed.port),
        format!("http://user@127.0.0.1:{}/", allowed.port),
    ] {
        let results = fetch(&app, &format!("url={}", encode(&url))).await;
        assert_eq!(results[0]["error"], "Denied", "{url}: {results:?}");
    }
    assert!(allowed.heads().is_empty() && other.heads().is_empty());
    assert!(
        log_lines(&runtime, &app)
            .iter()
            .any(|l| l.contains("refused: not in this project's egress allowlist")),
        "{:?}",
        log_lines(&runtime, &app)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_addresses_are_refused_after_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let port = upstream.port;
    // The operator allows no special range: every allowlisted name below
    // is refused once resolved, however it is spelled.
    let runtime = runtime_allowing(dir.path(), false, EgressConfig::default());
    let targets = [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        format!("http://2130706433:{port}"),
        format!("http://[::ffff:127.0.0.1]:{port}"),
        format!("http://[::1]:{port}"),
        "http://169.254.169.254".to_string(),
        "http://10.0.0.1".to_string(),
        "http://[fd00:ec2::254]".to_string(),
    ];
    let app = hostile_allowing(&runtime, &targets, generous()).await;
    for url in &targets {
        let results = fetch(&app, &format!("url={}", encode(&format!("{url}/latest")))).await;
        assert_eq!(results[0]["error"], "Prohibited", "{url}: {results:?}");
    }
    assert!(upstream.heads().is_empty(), "{:?}", upstream.heads());
    let log = log_lines(&runtime, &app);
    assert!(
        log.iter().any(|l| l.contains(
            "169.254.169.254 is a special-purpose address (link-local (cloud metadata))"
        )),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("(loopback), which apps may not reach")),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.contains("(IPv4-mapped)")), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_come_back_to_the_guest_unfollowed() {
    let dir = tempfile::tempdir().unwrap();
    let first = Upstream::start().await;
    let target = Upstream::start().await;
    let runtime = runtime_allowing(dir.path(), true, EgressConfig::default());
    let app = hostile_allowing(&runtime, &[first.url("")], generous()).await;

    let url = first.url(&format!("/redirect?to={}", target.url("/secret")));
    let results = fetch(&app, &format!("url={}", encode(&url))).await;
    assert_eq!(results[0]["status"], 302, "{results:?}");
    assert_eq!(results[0]["location"], target.url("/secret").as_str());
    assert_eq!(first.heads().len(), 1);
    assert!(target.heads().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_counts_against_the_subrequest_limit() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let runtime = runtime_allowing(dir.path(), true, EgressConfig::default());
    let limits = LimitsOverride {
        subrequests: Some(3),
        ..generous()
    };
    let app = hostile_allowing(&runtime, &[upstream.url("")], limits).await;

    let results = fetch(&app, &format!("n=5&url={}", encode(&upstream.url("/")))).await;
    let statuses: Vec<_> = results
        .iter()
        .map(|r| {
            r.get("status")
                .cloned()
                .unwrap_or_else(|| r["error"].clone())
        })
        .collect();
    let expected: Vec<serde_json::Value> = vec![
        200.into(),
        200.into(),
        200.into(),
        "Denied".into(),
        "Denied".into(),
    ];
    assert_eq!(statuses, expected);
    assert_eq!(upstream.heads().len(), 3);
    assert!(
        log_lines(&runtime, &app)
            .iter()
            .any(|l| l.contains("refused: this request has made all the outgoing requests it may"))
    );

    // The budget is per incoming request: the next one starts afresh.
    let results = fetch(&app, &format!("n=2&url={}", encode(&upstream.url("/")))).await;
    assert!(results.iter().all(|r| r["status"] == 200), "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_times_out_at_the_shorter_of_the_two_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let runtime = runtime_allowing(
        dir.path(),
        true,
        EgressConfig {
            response_timeout_ms: 600,
            ..EgressConfig::default()
        },
    );
    let app = hostile_allowing(&runtime, &[upstream.url("")], generous()).await;
    let slow = encode(&upstream.url("/slow"));

    // The guest asks for 200 ms: it gets 200 ms.
    let started = Instant::now();
    let results = fetch(&app, &format!("timeout=200&url={slow}")).await;
    let elapsed = started.elapsed();
    assert_eq!(results[0]["error"], "Timeout", "{results:?}");
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(200) + SLACK * 2,
        "{elapsed:?}"
    );

    // It asks for a minute: the operator's 600 ms hold.
    let started = Instant::now();
    let results = fetch(&app, &format!("timeout=60000&url={slow}")).await;
    let elapsed = started.elapsed();
    assert_eq!(results[0]["error"], "Timeout", "{results:?}");
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(600) + SLACK * 2,
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified_against_the_system_roots_and_the_operators_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (port, pem) = tls_upstream().await;
    let url = format!("https://127.0.0.1:{port}/");
    let rules = [format!("https://127.0.0.1:{port}")];

    // No system root vouches for a self-signed certificate.
    let runtime = runtime_allowing(dir.path(), true, EgressConfig::default());
    let app = hostile_allowing(&runtime, &rules, generous()).await;
    let results = fetch(&app, &format!("url={}", encode(&url))).await;
    let error = results[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("TlsCertificateError"), "{results:?}");
    drop((app, runtime));

    // The operator's `ca_file` does, beside the system's roots.
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, pem).unwrap();
    let trusting = tempfile::tempdir().unwrap();
    let egress = EgressConfig {
        ca_file: Some(ca_file),
        ..EgressConfig::default()
    };
    let runtime = runtime_allowing(trusting.path(), true, egress);
    let app = hostile_allowing(&runtime, &rules, generous()).await;
    let results = fetch(&app, &format!("url={}", encode(&url))).await;
    assert_eq!(results[0]["status"], 200, "{results:?}");
    assert_eq!(results[0]["body"], "hello over tls");
}
