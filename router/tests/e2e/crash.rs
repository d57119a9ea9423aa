//! The `switchyard serve` process: killed with SIGKILL in the middle of a
//! deploy, and stopped with SIGTERM.

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use switchyard_test_artifacts as artifacts;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A `switchyard serve` child process on port 0.
struct Process {
    child: tokio::process::Child,
    public: SocketAddr,
    admin: SocketAddr,
}

impl Process {
    /// Starts the server on `data_dir` and waits for its banner.
    async fn start(data_dir: &Path) -> Process {
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
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("server: {line}");
            }
        });
        Process {
            child,
            public: public.unwrap(),
            admin: admin.unwrap(),
        }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id().unwrap()).unwrap()
    }

    async fn signal(&self, signal: &str) {
        let status = tokio::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }

    async fn kill9(mut self) {
        self.signal("KILL").await;
        self.child.wait().await.unwrap();
    }

    async fn admin(
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

    async fn deploy(&self, project: &str, bundle: Vec<u8>) -> StatusCode {
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

    async fn get(&self, host: &str, path: &str) -> Reply {
        let request = Request::get(format!("http://{}{path}", self.public))
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        send(request).await
    }
}

async fn assert_v1_serves_alone(server: &Process, data_dir: &Path) {
    assert_eq!(
        server.get("app.localhost", "/").await.text(),
        "Hello from Switchyard!\n",
        "the previous build serves"
    );
    let (_, builds) = server
        .admin("GET", "/v1/projects/app/deployments", None)
        .await;
    assert_eq!(
        builds["data"].as_array().unwrap().len(),
        1,
        "no half-written build: {builds}"
    );
    assert_eq!(scratch_bytes(data_dir), 0, "scratch files are gone");
    let (_, project) = server.admin("GET", "/v1/projects/app", None).await;
    assert_eq!(project["data"]["activeBuild"], builds["data"][0]["id"]);
}

#[tokio::test]
async fn a_deploy_killed_during_upload_or_compile_leaves_the_previous_build_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Process::start(&data).await;
    assert_eq!(
        server
            .deploy("app", component_bundle(artifacts::HELLO, ""))
            .await,
        StatusCode::CREATED
    );
    let artifacts_before = snapshot(&data.join("artifacts")).len();

    // SIGKILL while the bundle is still arriving.
    let big = component_bundle(artifacts::JAVASCRIPT, "");
    let upload = begin_upload(server.admin, "app", &big, big.len() / 2);
    until("the server spools the upload", || scratch_bytes(&data) > 0).await;
    server.kill9().await;
    assert!(
        upload.response.await.unwrap().is_err(),
        "no answer from a killed server"
    );

    let server = Process::start(&data).await;
    assert_v1_serves_alone(&server, &data).await;

    // SIGKILL while the component compiles: the whole bundle is in, no
    // answer has come, the JavaScript engine takes seconds to compile.
    let upload = begin_upload(server.admin, "app", &big, 0);
    let response = upload.finish().await;
    until("the bundle is spooled", || {
        scratch_bytes(&data) >= big.len() as u64
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !response.is_finished(),
        "the deploy finished before it could be interrupted"
    );
    server.kill9().await;

    let server = Process::start(&data).await;
    assert_v1_serves_alone(&server, &data).await;
    let artifacts_after: Vec<_> = snapshot(&data.join("artifacts"))
        .into_iter()
        .filter(|(path, _)| path.extension().is_none_or(|e| e != "tmp"))
        .collect();
    assert_eq!(
        artifacts_after.len(),
        artifacts_before,
        "no compiled artifact of the interrupted deploy"
    );

    // The lease died with the process: deploying again works at once.
    assert_eq!(
        server
            .deploy("app", component_bundle(artifacts::PLAIN_PROXY, ""))
            .await,
        StatusCode::CREATED
    );
    assert!(
        server
            .get("app.localhost", "/")
            .await
            .text()
            .starts_with("plain proxy saw /")
    );
    let (_, builds) = server
        .admin("GET", "/v1/projects/app/deployments", None)
        .await;
    assert_eq!(builds["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Process::start(&data).await;
    assert_eq!(
        server
            .deploy("slow", component_bundle(artifacts::HOSTILE, ""))
            .await,
        StatusCode::CREATED
    );

    let public = server.public;
    let in_flight = sleep_on(public, 1500);
    wait_for_log(server.admin, "slow", "sleeping").await;
    server.signal("TERM").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(public).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reply = in_flight.await.unwrap();
    assert_eq!(
        (reply.status, reply.text()),
        (StatusCode::OK, "slept".to_string())
    );
    let status = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");

    // A request that would outlast the grace period: a second signal ends
    // the process at once.
    let mut server = Process::start(&data).await;
    let _stuck = sleep_on(server.public, 60_000);
    wait_for_log(server.admin, "slow", "sleeping").await;
    server.signal("TERM").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "still draining after one signal"
    );
    let started = Instant::now();
    server.signal("INT").await;
    let status = tokio::time::timeout(Duration::from_secs(5), server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn sleep_on(public: SocketAddr, ms: u64) -> tokio::task::JoinHandle<Reply> {
    let request = Request::get(format!("http://{public}/sleep?ms={ms}"))
        .header("host", "slow.localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    tokio::spawn(send(request))
}
