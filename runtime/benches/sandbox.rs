//! The per-request cost of the sandbox: build a store, instantiate the
//! `hello` example, call its handler for `GET /`, read the whole response,
//! drop everything; the same for a `counter` request that makes one KV get
//! and for `todo-api` requests that make one gateway DB call (a point
//! select, an insert). Run:
//! `cargo bench -p switchyard-runtime --bench sandbox`.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use std::sync::Arc;
use switchyard_runtime::backend::Backends;
use switchyard_runtime::{
    AppSpec, BuildId, LimitsOverride, PoolConfig, ProjectId, RequestContext, Runtime, RuntimeConfig,
};

/// A single-threaded tokio runtime and a sandbox with a small pool, its
/// artifacts and data in a temporary directory (kept alive by the caller).
fn setup() -> (tokio::runtime::Runtime, tempfile::TempDir, Runtime) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = RuntimeConfig {
        artifact_dir: dir.path().join("artifacts"),
        pool: PoolConfig {
            total_component_instances: 16,
            total_memories: 32,
            total_tables: 64,
            total_core_instances: 256,
            ..PoolConfig::default()
        },
        ..RuntimeConfig::default()
    };
    let backends = tokio.block_on(async { Backends::sqlite(dir.path()) });
    let runtime = Runtime::new(config, backends.expect("backends open")).expect("runtime starts");
    (tokio, dir, runtime)
}

fn sandbox(c: &mut Criterion) {
    let (tokio, _dir, runtime) = setup();
    let ctx = RequestContext {
        request_id: Arc::from("bench"),
        tls: false,
    };

    let cases = [
        (
            "hello (SDK + std), GET /",
            switchyard_test_artifacts::HELLO,
            23,
        ),
        (
            "plain wasi:http proxy, GET /",
            switchyard_test_artifacts::PLAIN_PROXY,
            18,
        ),
    ];
    for (name, path, body_len) in cases {
        let app = tokio.block_on(async {
            let bytes = switchyard_test_artifacts::read(path);
            let component = runtime.compile(&bytes).await.expect("compiles");
            let spec = AppSpec {
                project: ProjectId::new("bench").expect("valid id"),
                build: BuildId::new(&format!("b{body_len}")).expect("valid id"),
                component,
                env: Vec::new(),
                limits: LimitsOverride::default(),
                schema: Default::default(),
                egress: Default::default(),
            };
            runtime.app(&spec).await.expect("loads")
        });
        c.bench_function(&format!("instantiate + handle + drop: {name}"), |b| {
            b.to_async(&tokio).iter(|| async {
                let request = http::Request::get("http://bench.localhost/")
                    .body(Empty::<Bytes>::new())
                    .expect("valid request");
                let response = app.handle(request, ctx.clone()).await.expect("answers");
                let body = response.into_body().collect().await.expect("complete body");
                assert_eq!(body.to_bytes().len(), body_len);
            })
        });
    }
}

/// `counter`'s `GET /flash`: one `kv::get` through the host, against the
/// embedded (SQLite) kv store, of a value set beforehand.
fn gateway_kv(c: &mut Criterion) {
    let (tokio, _dir, runtime) = setup();
    let app = tokio.block_on(async {
        let bytes = switchyard_test_artifacts::read(switchyard_test_artifacts::COUNTER);
        let spec = AppSpec {
            project: ProjectId::new("bench").expect("valid id"),
            build: BuildId::new("counter").expect("valid id"),
            component: runtime.compile(&bytes).await.expect("compiles"),
            env: Vec::new(),
            limits: LimitsOverride::default(),
            schema: Default::default(),
            egress: Default::default(),
        };
        runtime.app(&spec).await.expect("loads")
    });
    let ctx = RequestContext {
        request_id: Arc::from("bench"),
        tls: false,
    };
    let message = Bytes::from_static(b"a message kept in kv");
    let send = |method: http::Method, path: &'static str, status: u16| {
        let (app, ctx) = (app.clone(), ctx.clone());
        let body = match method {
            http::Method::PUT => message.clone(),
            _ => Bytes::new(),
        };
        async move {
            let request = http::Request::builder()
                .method(method)
                .uri(format!("http://bench.localhost{path}"))
                .body(http_body_util::Full::new(body))
                .expect("valid request");
            let response = app.handle(request, ctx).await.expect("answers");
            assert_eq!(response.status(), status);
            let body = response.into_body().collect().await.expect("complete body");
            body.to_bytes()
        }
    };
    tokio.block_on(send(http::Method::PUT, "/flash?ttl_ms=3600000", 204));
    assert_eq!(
        tokio.block_on(send(http::Method::GET, "/flash", 200)),
        message
    );
    c.bench_function("counter, no kv call (GET /)", |b| {
        b.to_async(&tokio)
            .iter(|| send(http::Method::GET, "/", 200))
    });
    c.bench_function("counter, kv get (GET /flash)", |b| {
        b.to_async(&tokio)
            .iter(|| send(http::Method::GET, "/flash", 200))
    });
}

/// `todo-api` answering from its database: one host call per request.
fn gateway_db(c: &mut Criterion) {
    use switchyard_runtime::db::migrate::Removals;
    use switchyard_runtime::db::schema::{Schema, Table};

    #[derive(serde::Deserialize)]
    struct Manifest {
        tables: Vec<Table>,
    }

    let (tokio, _dir, runtime) = setup();
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/todo-api/switchyard.toml"
    );
    let manifest: Manifest =
        toml::from_str(&std::fs::read_to_string(manifest).expect("manifest")).expect("parses");
    let schema = Arc::new(Schema::new(manifest.tables).expect("valid tables"));
    let project = ProjectId::new("bench").expect("valid id");
    let app = tokio.block_on(async {
        runtime
            .db()
            .migrate(&project, &schema, Removals::Refuse)
            .await
            .expect("migrates");
        let bytes = switchyard_test_artifacts::read(switchyard_test_artifacts::TODO_API);
        let spec = AppSpec {
            project: project.clone(),
            build: BuildId::new("todo").expect("valid id"),
            component: runtime.compile(&bytes).await.expect("compiles"),
            env: Vec::new(),
            limits: LimitsOverride::default(),
            schema: schema.clone(),
            egress: Default::default(),
        };
        runtime.app(&spec).await.expect("loads")
    });
    let ctx = RequestContext {
        request_id: Arc::from("bench"),
        tls: false,
    };
    let send = |request: http::Request<http_body_util::Full<Bytes>>, status: u16| {
        let (app, ctx) = (app.clone(), ctx.clone());
        async move {
            let response = app.handle(request, ctx).await.expect("answers");
            assert_eq!(response.status(), status);
            response.into_body().collect().await.expect("complete body");
        }
    };
    let insert = || {
        http::Request::post("http://bench.localhost/api/todos")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from_static(
                br#"{"title":"benchmark"}"#,
            )))
            .expect("valid request")
    };
    tokio.block_on(send(insert(), 201));
    let get = |path: &'static str| {
        http::Request::get(format!("http://bench.localhost{path}"))
            .body(http_body_util::Full::new(Bytes::new()))
            .expect("valid request")
    };
    c.bench_function("todo-api, no db call (404)", |b| {
        b.to_async(&tokio).iter(|| send(get("/nothing"), 404))
    });
    c.bench_function("todo-api, point select (GET /api/todos/1)", |b| {
        b.to_async(&tokio).iter(|| send(get("/api/todos/1"), 200))
    });
    c.bench_function("todo-api, durable insert (POST /api/todos)", |b| {
        b.to_async(&tokio).iter(|| send(insert(), 201))
    });
}

criterion_group!(benches, sandbox, gateway_kv, gateway_db);
criterion_main!(benches);
