//! The `switchyard serve` process: killed with SIGKILL in the middle of a
//! deploy, and stopped with SIGTERM.

use crate::common::*;
use crate::process::ServeProcess as Process;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use switchyard_test_artifacts as artifacts;

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
