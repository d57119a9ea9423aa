//! The per-request cost of the sandbox: build a store, instantiate the
//! `hello` example, call its handler for `GET /`, read the whole response,
//! drop everything. Run: `cargo bench -p switchyard-runtime --bench sandbox`.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use std::sync::Arc;
use switchyard_runtime::backend::Backends;
use switchyard_runtime::{
    AppSpec, BuildId, LimitsOverride, PoolConfig, ProjectId, RequestContext, Runtime, RuntimeConfig,
};

fn sandbox(c: &mut Criterion) {
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

criterion_group!(benches, sandbox);
criterion_main!(benches);
