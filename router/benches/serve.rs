//! The cost of one request through the whole server: a node started
//! in-process on loopback, one keep-alive HTTP/1.1 connection, requests sent
//! one after another. Three paths: a static asset (from the memory cache),
//! the `hello` component (routing + a fresh sandbox instance), and an
//! unknown host (routing only); and, as the floor, a bare hyper server.
//! Beside them, route resolution alone: a hostname to its project's route,
//! cached and not. Run: `cargo bench -p switchyard --bench serve`.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use switchyard::config::Config;
use switchyard::node::start;

const TOKEN: &str = "sya_bench-admin-token";

fn bundle() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let component = switchyard_test_artifacts::read(switchyard_test_artifacts::HELLO);
    let asset = vec![b'x'; 1024];
    let entries: [(&str, &[u8]); 3] = [
        ("switchyard.toml", b"project = \"bench\"\n"),
        ("app.wasm", &component),
        ("assets/static.txt", &asset),
    ];
    for (path, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, path, bytes)
            .expect("tar entry");
    }
    builder.into_inner().expect("tar archive")
}

/// Opens one HTTP/1.1 connection to `addr`.
async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

/// Sends `request` on `sender`; returns the status and body length.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> (StatusCode, usize) {
    sender.ready().await.expect("connection ready");
    let response = sender.send_request(request).await.expect("answers");
    let status = response.status();
    let body = response.into_body().collect().await.expect("complete body");
    (status, body.to_bytes().len())
}

/// Tokio worker threads shared by client and server:
/// `SWITCHYARD_BENCH_WORKERS`, default 2.
fn workers() -> usize {
    std::env::var("SWITCHYARD_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(2)
}

fn serve(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers())
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.listen.public = "127.0.0.1:0".parse().expect("address");
    config.listen.admin = "127.0.0.1:0".parse().expect("address");
    config.admin.token = Some(TOKEN.into());
    config.tenants.requests_per_minute = u32::MAX;
    config.tenants.burst = u32::MAX;
    config.runtime.pool.total_component_instances = 16;
    config.runtime.pool.total_core_instances = 256;
    config.runtime.pool.total_memories = 32;
    config.runtime.pool.total_tables = 64;
    let config = config.finish().expect("valid config");

    let (running, public) = tokio.block_on(async {
        let running = start(config).await.expect("node starts");
        let mut admin = connect(running.admin_addr).await;
        let authorized = |builder: http::request::Builder| {
            builder
                .header("host", "admin")
                .header("authorization", format!("Bearer {TOKEN}"))
        };
        let create = authorized(Request::post("/v1/projects"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(br#"{"id":"bench"}"#)))
            .expect("request");
        assert_eq!(send(&mut admin, create).await.0, StatusCode::CREATED);
        let deploy = authorized(Request::post("/v1/projects/bench/deployments"))
            .header("content-type", "application/x-tar")
            .body(Full::new(Bytes::from(bundle())))
            .expect("request");
        assert_eq!(send(&mut admin, deploy).await.0, StatusCode::CREATED);
        // Uncontended: the mutex only lets each iteration borrow the one
        // connection.
        let public = Arc::new(tokio::sync::Mutex::new(connect(running.public_addr).await));
        (running, public)
    });

    // The floor: the same client against a bare hyper server that answers
    // at once, so the figures above it are what Switchyard adds.
    let bare = tokio.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_request| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Arc::new(tokio::sync::Mutex::new(connect(addr).await))
    });
    c.bench_function("HTTP/1.1 request: bare hyper server (the floor)", |b| {
        b.to_async(&tokio).iter(|| {
            let bare = bare.clone();
            async move {
                let request = Request::get("/")
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                assert_eq!(
                    send(&mut *bare.lock().await, request).await.0,
                    StatusCode::OK
                );
            }
        })
    });

    let cases = [
        (
            "static asset, 1 KiB (memory cache)",
            "bench.localhost",
            "/static.txt",
            StatusCode::OK,
        ),
        (
            "component: hello, GET /",
            "bench.localhost",
            "/",
            StatusCode::OK,
        ),
        (
            "unknown host: 404 HOST_NOT_FOUND",
            "nobody.localhost",
            "/",
            StatusCode::NOT_FOUND,
        ),
    ];
    for (name, host, path, expected) in cases {
        c.bench_function(
            &format!("HTTP/1.1 request through the server: {name}"),
            |b| {
                b.to_async(&tokio).iter(|| {
                    let public = public.clone();
                    async move {
                        let request = Request::get(path)
                            .header("host", host)
                            .body(Full::new(Bytes::new()))
                            .expect("request");
                        let (status, _) = send(&mut *public.lock().await, request).await;
                        assert_eq!(status, expected);
                    }
                })
            },
        );
    }
    drop(public);
    tokio.block_on(async {
        running.shutdown();
        running.stopped().await;
    });
}

/// Hostname → route in the route table over an SQLite control store: a
/// cached route (every request after a tenant's first), and a hostname
/// whose route was just dropped (a tenant's first request, or the first
/// after a change to it), which reads the project, its build and its keys.
fn route_resolution(c: &mut Criterion) {
    use switchyard::config::TenantDefaults;
    use switchyard::routing::RouteTable;
    use switchyard::store::{ControlStore, SqliteControlStore};
    use switchyard_runtime::{Limits, ProjectId};

    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteControlStore::open(&dir.path().join("control.sqlite")).expect("store opens");
    let project = ProjectId::new("bench").expect("valid id");
    tokio
        .block_on(store.create_project(&project))
        .expect("project created");
    let routes = RouteTable::new(
        Arc::new(store),
        "localhost".into(),
        Limits::default(),
        1 << 20,
        TenantDefaults::default(),
    );
    let resolve = || async {
        let route = routes.resolve("bench.localhost").await.expect("resolves");
        assert!(route.is_some());
    };
    tokio.block_on(resolve());
    c.bench_function("route resolution: cached", |b| {
        b.to_async(&tokio).iter(resolve)
    });
    c.bench_function("route resolution: from the control store", |b| {
        b.to_async(&tokio).iter(|| async {
            routes.invalidate_all();
            resolve().await
        })
    });
}

criterion_group!(benches, serve, route_resolution);
criterion_main!(benches);
