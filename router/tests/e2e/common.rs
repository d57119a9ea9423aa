//! A server started in-process on loopback, and clients for its listeners.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use switchyard::config::Config;
use switchyard::node::{NodeOptions, Running, start_with};

/// The admin token every test server uses.
pub const TOKEN: &str = "sya_test-admin-token";

pub struct TestServer {
    pub running: Option<Running>,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// A config for a test server in `data_dir`: every listener on port 0.
pub fn config(data_dir: &Path) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    config.listen.public = "127.0.0.1:0".parse().unwrap();
    config.listen.admin = "127.0.0.1:0".parse().unwrap();
    config.admin.token = Some(TOKEN.into());
    config.runtime.pool.total_component_instances = 64;
    config.runtime.pool.total_core_instances = 1024;
    config.runtime.pool.total_memories = 128;
    config.runtime.pool.total_tables = 256;
    config
}

impl TestServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let mut server = Self::start_with(config(&path)).await;
        server._dir = Some(dir);
        server
    }

    pub async fn start_with(config: Config) -> Self {
        Self::start_with_options(config, NodeOptions::default()).await
    }

    pub async fn start_with_options(config: Config, options: NodeOptions) -> Self {
        watch_for_server_panics();
        let data_dir = config.data_dir.clone();
        let running = start_with(config.finish().unwrap(), options).await.unwrap();
        TestServer {
            public: running.public_addr,
            admin: running.admin_addr,
            running: Some(running),
            data_dir,
            _dir: None,
        }
    }

    /// Waits until the server holds nothing a test gave it: every
    /// connection closed and every guest's store dropped (so its pool slot
    /// and concurrency permit are back). Both are this server's own counts,
    /// unaffected by tests running beside it.
    pub async fn assert_back_to_baseline(&self) {
        let running = self.running.as_ref().expect("the server runs");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let connections = running.open_connections();
            let stores = running.node.runtime.stats().live_stores;
            if connections == 0 && stores == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "10 s on, still {connections} connections open and {stores} stores alive"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let request = Request::get(format!("http://{}/metrics", self.admin))
            .body(Full::new(Bytes::new()))
            .unwrap();
        send(request).await.text()
    }

    /// Keeps `dir` (the server's data directory) until the server is dropped.
    pub fn keep(&mut self, dir: tempfile::TempDir) {
        self._dir = Some(dir);
    }

    /// Stops the server (gracefully) and waits for it.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown();
            running.stopped().await;
        }
    }

    pub fn node(&self) -> &switchyard::node::Node {
        &self.running.as_ref().unwrap().node
    }

    /// An admin API call with the admin token.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        self.admin_as(Some(TOKEN), method, path, body).await
    }

    pub async fn admin_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(format!("http://{}{path}", self.admin));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let reply = send(request.body(Full::new(body)).unwrap()).await;
        assert_eq!(reply.headers["api-version"], "1");
        let json = serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null);
        (reply.status, json)
    }

    /// Creates `project` (if needed) and deploys `bundle` to it.
    pub async fn deploy(&self, project: &str, bundle: Vec<u8>) -> (StatusCode, serde_json::Value) {
        let (status, _) = self
            .admin(
                "POST",
                "/v1/projects",
                Some(serde_json::json!({ "id": project })),
            )
            .await;
        assert!(
            status == StatusCode::CREATED || status == StatusCode::CONFLICT,
            "{status}"
        );
        self.upload(project, bundle).await
    }

    /// Deploys the component `wasm` (a test artifact) as `project`.
    pub async fn deploy_component(&self, project: &str, wasm: &str) {
        let (status, body) = self.deploy(project, component_bundle(wasm, "")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    pub async fn upload(&self, project: &str, bundle: Vec<u8>) -> (StatusCode, serde_json::Value) {
        self.upload_as(TOKEN, project, bundle).await
    }

    pub async fn upload_as(
        &self,
        token: &str,
        project: &str,
        bundle: Vec<u8>,
    ) -> (StatusCode, serde_json::Value) {
        let request = Request::post(format!(
            "http://{}/v1/projects/{project}/deployments",
            self.admin
        ))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(bundle)))
        .unwrap();
        let reply = send(request).await;
        (reply.status, serde_json::from_slice(&reply.body).unwrap())
    }

    /// A GET to the public listener for `host`.
    pub async fn get(&self, host: &str, path: &str) -> Reply {
        self.public_request(host, Request::get(path)).await
    }

    /// A request to the public listener for `host`, built by `builder`
    /// (whose URI is a path).
    pub async fn public_request(&self, host: &str, builder: http::request::Builder) -> Reply {
        self.public_send(host, builder, Bytes::new()).await
    }

    /// A POST of `json` to the public listener for `host`.
    pub async fn post_json(&self, host: &str, path: &str, json: serde_json::Value) -> Reply {
        let builder = Request::post(path).header("content-type", "application/json");
        self.public_send(host, builder, Bytes::from(json.to_string()))
            .await
    }

    pub async fn public_send(
        &self,
        host: &str,
        builder: http::request::Builder,
        body: Bytes,
    ) -> Reply {
        let mut request = builder.body(Full::new(body)).unwrap();
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        *request.uri_mut() = format!("http://{}{path}", self.public).parse().unwrap();
        request.headers_mut().insert("host", host.parse().unwrap());
        send(request).await
    }
}

/// Waits until the project's log (on the admin listener at `admin`) has a
/// record containing `text`. Logs live in the server's memory.
pub async fn wait_for_log(admin: SocketAddr, project: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let request = Request::get(format!("http://{admin}/v1/projects/{project}/logs"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let logs = send(request).await.text();
        if logs.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no `{text}` in {project}'s log: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.shutdown();
        }
        if !std::thread::panicking() {
            // Taken, so each panic fails one test, not every later one.
            let panics =
                std::mem::take(&mut *SERVER_PANICS.lock().unwrap_or_else(PoisonError::into_inner));
            assert!(panics.is_empty(), "a server task panicked: {panics:?}");
        }
    }
}

/// Panics outside the tests' own code: a server task's, which tokio
/// catches, so no test would otherwise notice. Shared by the whole test
/// binary: a panic fails the next server test to end, which may be another
/// test than the one whose server panicked (the message says where).
static SERVER_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn watch_for_server_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_none_or(|l| !l.file().contains("tests/")) {
                let thread = std::thread::current();
                SERVER_PANICS
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(format!("on thread {:?}: {info}", thread.name()));
            }
            previous(info);
        }));
    });
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

pub async fn send(request: Request<Full<Bytes>>) -> Reply {
    try_send(request).await.unwrap()
}

/// Why no whole response arrived.
#[derive(Debug)]
#[expect(
    dead_code,
    reason = "the fields are for failure messages, through Debug"
)]
pub enum SendError {
    /// Not even its head: the connection was refused, reset or closed.
    NoResponse(String),
    /// The head arrived and the body broke off.
    BodyCut(StatusCode, String),
}

/// Like [`send`], for a server that may go away: the error instead of a
/// panic when no whole response arrives.
pub async fn try_send(request: Request<Full<Bytes>>) -> Result<Reply, SendError> {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .request(request)
        .await
        .map_err(|e| SendError::NoResponse(format!("{e:?}")))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| SendError::BodyCut(status, format!("{e:?}")))?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// The todo-api example's bundle, with the example's own manifest.
pub fn todo_api_bundle() -> Vec<u8> {
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/todo-api/switchyard.toml"
    ))
    .unwrap();
    component_bundle(switchyard_test_artifacts::TODO_API, &manifest)
}

/// A tar bundle of `(path, bytes)` entries.
pub fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A bundle of a component and a manifest.
pub fn component_bundle(wasm: &str, manifest: &str) -> Vec<u8> {
    let component = switchyard_test_artifacts::read(wasm);
    tar(&[
        ("switchyard.toml", manifest.as_bytes()),
        ("app.wasm", &component),
    ])
}

/// The static-site example as a bundle.
pub fn static_site_bundle() -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/static-site");
    let mut entries: Vec<(String, Vec<u8>)> = vec![(
        "switchyard.toml".into(),
        std::fs::read(root.join("switchyard.toml")).unwrap(),
    )];
    let assets = root.join("assets");
    let mut stack = vec![assets.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path
                    .strip_prefix(&assets)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                entries.push((format!("assets/{relative}"), std::fs::read(&path).unwrap()));
            }
        }
    }
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    tar(&refs)
}

/// Every file under `dir` with its contents, for before/after comparisons.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    snapshot_paths(dir)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

/// An upload that has not finished: the rest of the bundle goes through
/// `sender` when the test wants it to.
pub struct UploadInFlight {
    pub sender:
        tokio::sync::mpsc::Sender<Result<http_body::Frame<Bytes>, std::convert::Infallible>>,
    pub rest: Bytes,
    pub response: tokio::task::JoinHandle<Result<StatusCode, hyper_util::client::legacy::Error>>,
}

/// Starts uploading `bundle` to `project` on the admin listener at `admin`:
/// the first `sent` bytes go out now.
pub fn begin_upload(
    admin: SocketAddr,
    project: &str,
    bundle: &[u8],
    sent: usize,
) -> UploadInFlight {
    type Frame = Result<http_body::Frame<Bytes>, std::convert::Infallible>;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Frame>(64);
    let stream = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let body = http_body_util::StreamBody::new(stream).boxed_unsync();
    let request = Request::post(format!("http://{admin}/v1/projects/{project}/deployments"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body)
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = tokio::spawn(async move { client.request(request).await.map(|r| r.status()) });
    let (head, rest) = bundle.split_at(sent);
    sender
        .try_send(Ok(http_body::Frame::data(Bytes::copy_from_slice(head))))
        .unwrap();
    UploadInFlight {
        sender,
        rest: Bytes::copy_from_slice(rest),
        response,
    }
}

impl UploadInFlight {
    /// Sends the rest of the bundle and ends the body.
    pub async fn finish(
        self,
    ) -> tokio::task::JoinHandle<Result<StatusCode, hyper_util::client::legacy::Error>> {
        self.sender
            .send(Ok(http_body::Frame::data(self.rest)))
            .await
            .unwrap();
        self.response
    }
}

/// Waits until `check` holds, for up to 30 s.
pub async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Bytes of scratch files of deploys in progress.
pub fn scratch_bytes(data_dir: &Path) -> u64 {
    snapshot(&data_dir.join("tmp"))
        .iter()
        .map(|(_, data)| data.len() as u64)
        .sum()
}

/// Runs `PRAGMA integrity_check` on every SQLite database under `dir`
/// (a live server's too: WAL lets this read beside its writer).
pub fn assert_databases_intact(dir: &Path) {
    let databases: Vec<PathBuf> = snapshot_paths(dir)
        .into_iter()
        .filter(|path| path.extension().is_some_and(|e| e == "sqlite" || e == "db"))
        .collect();
    assert!(!databases.is_empty(), "no database under {}", dir.display());
    for path in databases {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let verdict: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(verdict, "ok", "{}", path.display());
    }
}

/// Every file under `dir`.
fn snapshot_paths(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
