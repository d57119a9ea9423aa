//! Shared helpers: a runtime in a temporary directory, deploying, and sending
//! requests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use switchyard_runtime::backend::Backends;
use switchyard_runtime::{
    App, AppSpec, BuildId, DispatchError, LimitsOverride, PoolConfig, ProjectId, RequestContext,
    Runtime, RuntimeConfig,
};

/// The epoch tick the tests run with (the default).
pub const TICK: Duration = Duration::from_millis(1);

/// Scheduling slack allowed on top of deadline + one tick on a loaded
/// two-core CI machine.
pub const SLACK: Duration = Duration::from_millis(400);

/// A config for tests: artifacts under `dir`, a small pool.
pub fn config(dir: &Path) -> RuntimeConfig {
    RuntimeConfig {
        artifact_dir: dir.join("artifacts"),
        pool: PoolConfig {
            total_component_instances: 64,
            total_core_instances: 1024,
            total_memories: 128,
            total_tables: 256,
            ..PoolConfig::default()
        },
        ..RuntimeConfig::default()
    }
}

/// A runtime whose artifacts and kv data live in `dir`.
pub fn runtime(dir: &Path) -> Runtime {
    runtime_with(config(dir), dir)
}

pub fn runtime_with(config: RuntimeConfig, dir: &Path) -> Runtime {
    let backends = Backends::sqlite(dir).expect("backends open");
    Runtime::new(config, backends).expect("runtime starts")
}

pub fn spec(project: &str, component: switchyard_runtime::ComponentId) -> AppSpec {
    AppSpec {
        project: ProjectId::new(project).expect("valid project id"),
        build: BuildId::new("b1").expect("valid build id"),
        component,
        env: Vec::new(),
        limits: LimitsOverride::default(),
        schema: Default::default(),
        egress: Default::default(),
    }
}

/// Compiles `bytes` and loads them as `project` with `limits`.
pub async fn deploy(
    runtime: &Runtime,
    bytes: &[u8],
    project: &str,
    limits: LimitsOverride,
) -> Arc<App> {
    let component = runtime.compile(bytes).await.expect("component compiles");
    let spec = AppSpec {
        limits,
        ..spec(project, component)
    };
    runtime.app(&spec).await.expect("app loads")
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    /// The body, or the error that aborted its stream.
    pub body: Result<Bytes, DispatchError>,
}

impl Reply {
    pub fn text(&self) -> String {
        match &self.body {
            Ok(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Err(e) => panic!("the body stream was aborted: {} ({e:?})", e.code()),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text()).expect("JSON body")
    }
}

static REQUEST_IDS: AtomicUsize = AtomicUsize::new(0);

pub fn request(method: &str, path: &str, body: impl Into<Bytes>) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(format!("http://app.localhost{path}"))
        .body(Full::new(body.into()))
        .expect("valid request")
}

/// Sends `req` to `app` and reads the whole response.
pub async fn send<B>(app: &App, req: http::Request<B>) -> Result<Reply, DispatchError>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
{
    let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
    let ctx = RequestContext {
        request_id: format!("test-{id}").into(),
        tls: false,
    };
    let response = app.handle(req, ctx).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes());
    Ok(Reply {
        status,
        headers,
        body,
    })
}

pub async fn get(app: &App, path: &str) -> Result<Reply, DispatchError> {
    send(app, request("GET", path, Bytes::new())).await
}

/// Runs `fut`, returning its output and how long it took.
pub async fn timed<T>(fut: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = fut.await;
    (out, start.elapsed())
}

/// The error `result` failed with; panics if it succeeded.
pub fn error(result: Result<Reply, DispatchError>) -> DispatchError {
    match result {
        Ok(reply) => panic!("expected an error, got {} {:?}", reply.status, reply.body),
        Err(e) => e,
    }
}

/// Limits that never get in the way except where a test sets one.
pub fn generous() -> LimitsOverride {
    LimitsOverride {
        fuel: Some(u64::MAX),
        ..LimitsOverride::default()
    }
}

/// Waits (up to 10 s) until `app`'s project log holds `count` lines reading
/// `message`: its guests have reached that point.
pub async fn wait_for_lines(runtime: &Runtime, app: &App, message: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = runtime
            .logs(app.project())
            .map(|l| l.read(0, 100))
            .unwrap_or_default();
        if log.iter().filter(|r| r.message == message).count() == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never {count} × {message:?}: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
