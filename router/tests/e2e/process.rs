//! A `switchyard serve` child process, for the tests that need a real
//! process: killed, signalled, or several sharing storage.

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A `switchyard serve` child process on port 0.
pub struct ServeProcess {
    pub child: tokio::process::Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// Lines of its stderr that report a panic.
    panics: Arc<Mutex<Vec<String>>>,
}

impl ServeProcess {
    /// Starts the server on `data_dir` and waits for its banner.
    pub async fn start(data_dir: &Path) -> ServeProcess {
        Self::start_with(data_dir, &[]).await
    }

    /// Like [`Self::start`], with extra environment variables.
    pub async fn start_with(data_dir: &Path, env: &[(&str, String)]) -> ServeProcess {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .env("SWITCHYARD__ADMIN__TOKEN", TOKEN)
            .env("SWITCHYARD__RUNTIME__POOL__TOTAL_MEMORIES", "64")
            .env("SWITCHYARD__RUNTIME__POOL__TOTAL_COMPONENT_INSTANCES", "32")
            .env("SWITCHYARD__RUNTIME__POOL__TOTAL_CORE_INSTANCES", "512")
            .env("SWITCHYARD__RUNTIME__POOL__TOTAL_TABLES", "128")
            .env("RUST_LOG", "warn")
            // Load tests must not meet the rate limiter.
            .env("SWITCHYARD__TENANTS__BURST", "1000000")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (mut public, mut admin) = (None, None);
        let banner = tokio::time::timeout(Duration::from_secs(60), async {
            while public.is_none() || admin.is_none() {
                let line = lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("the server exited before serving");
                eprintln!("server: {line}");
                if let Some(rest) = line.trim().strip_prefix("apps:") {
                    // `http://<project>.localhost:PORT/`
                    let port = rest
                        .trim()
                        .trim_end_matches('/')
                        .rsplit(':')
                        .next()
                        .unwrap();
                    public = Some(SocketAddr::from(([127, 0, 0, 1], port.parse().unwrap())));
                }
                if let Some(rest) = line.trim().strip_prefix("admin:") {
                    let addr = rest
                        .trim()
                        .strip_prefix("http://")
                        .unwrap()
                        .split('/')
                        .next()
                        .unwrap();
                    admin = Some(addr.parse().unwrap());
                }
            }
        });
        banner.await.expect("no banner within 60 s");
        // Keep draining stderr so the server never blocks on it.
        let panics = Arc::new(Mutex::new(Vec::new()));
        let logged = panics.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("server: {line}");
                if line.contains("panicked at") {
                    logged.lock().unwrap().push(line);
                }
            }
        });
        ServeProcess {
            child,
            public: public.unwrap(),
            admin: admin.unwrap(),
            panics,
        }
    }

    /// Fails the test if the server has logged a panic.
    pub fn assert_no_panic_logged(&self) {
        let panics = self.panics.lock().unwrap();
        assert!(panics.is_empty(), "the server panicked: {panics:?}");
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id().unwrap()).unwrap()
    }

    pub async fn signal(&self, signal: &str) {
        let status = tokio::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }

    pub async fn kill9(mut self) {
        self.signal("KILL").await;
        self.child.wait().await.unwrap();
    }

    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.admin))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::new(
                body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
            ))
            .unwrap();
        let reply = send(request).await;
        (
            reply.status,
            serde_json::from_slice(&reply.body).unwrap_or_default(),
        )
    }

    pub async fn deploy(&self, project: &str, bundle: Vec<u8>) -> StatusCode {
        self.admin(
            "POST",
            "/v1/projects",
            Some(serde_json::json!({ "id": project })),
        )
        .await;
        let request = Request::post(format!(
            "http://{}/v1/projects/{project}/deployments",
            self.admin
        ))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::from(bundle)))
        .unwrap();
        send(request).await.status
    }

    pub async fn get(&self, host: &str, path: &str) -> Reply {
        let request = Request::get(format!("http://{}{path}", self.public))
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        send(request).await
    }
}

/// A request with an optional JSON body to the public listener at `public`;
/// the error if no whole response arrives (the server died or shut down).
pub async fn public_request(
    public: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Reply, SendError> {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{public}{path}"))
        .header("host", host)
        .header("content-type", "application/json")
        .body(Full::new(
            body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
        ))
        .unwrap();
    try_send(request).await
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_no_panic_logged();
        }
    }
}
