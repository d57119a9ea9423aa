//! The `switchyard serve` process: killed with SIGKILL in the middle of a
//! deploy or under a load of writes, and stopped with SIGTERM under load.

use crate::common::*;
use crate::process::{ServeProcess as Process, public_request};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
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
    let artifacts_before = compiled_artifacts(&data);

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
    assert_eq!(
        compiled_artifacts(&data),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_streams_and_the_deploy_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let grace = Duration::from_secs(30);
    let grace_env = (
        "SWITCHYARD__HTTP__SHUTDOWN_GRACE_MS",
        grace.as_millis().to_string(),
    );
    let mut server = Process::start_with(&data, &[grace_env]).await;
    for (project, wasm) in [
        ("app", artifacts::HELLO),
        ("canary", artifacts::HELLO),
        ("slow", artifacts::HOSTILE),
    ] {
        let bundle = component_bundle(wasm, "");
        assert_eq!(server.deploy(project, bundle).await, StatusCode::CREATED);
    }

    // In flight at the signal: a deploy compiling (the JavaScript engine
    // takes seconds), a response streaming for 2 s, and a load of requests.
    let big = component_bundle(artifacts::JAVASCRIPT, "");
    let deploy = begin_upload(server.admin, "app", &big, 0).finish().await;
    until("the bundle is spooled", || {
        scratch_bytes(&data) >= big.len() as u64
    })
    .await;
    let public = server.public;
    let stream = tokio::spawn(async move {
        public_request(
            public,
            "slow.localhost",
            "GET",
            "/drip?chunks=40&ms=50",
            None,
        )
        .await
    });
    wait_for_log(server.admin, "slow", "dripping").await;
    let load: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async move {
                let mut served = 0;
                loop {
                    match public_request(public, "canary.localhost", "GET", "/", None).await {
                        Ok(reply) => assert_eq!(
                            (reply.status, reply.text().as_str()),
                            (StatusCode::OK, "Hello from Switchyard!\n"),
                        ),
                        // Refused or closed before a response began: the
                        // server had stopped taking requests.
                        Err(SendError::NoResponse(_)) => return served,
                        Err(cut) => panic!("a response the server began was cut: {cut:?}"),
                    }
                    served += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!deploy.is_finished(), "the deploy ended before the signal");

    let signalled = Instant::now();
    server.signal("TERM").await;
    let streamed = stream.await.unwrap().expect("the stream is cut");
    let whole: String = (0..40).map(|i| format!("chunk {i}\n")).collect();
    assert_eq!((streamed.status, streamed.text()), (StatusCode::OK, whole));
    assert_eq!(
        deploy.await.unwrap().expect("the deploy is cut"),
        StatusCode::CREATED
    );
    let status = tokio::time::timeout(grace, server.child.wait())
        .await
        .expect("still running after the grace period")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(signalled.elapsed() < grace);
    let mut served = 0;
    for task in load {
        served += task.await.unwrap();
    }
    assert!(served > 0);

    // The deploy that finished is the active build, whole.
    let server = Process::start(&data).await;
    assert_eq!(
        server.get("app.localhost", "/").await.text(),
        "javascript saw /; visits=1\n"
    );
    let (_, builds) = server
        .admin("GET", "/v1/projects/app/deployments", None)
        .await;
    assert_eq!(builds["data"].as_array().unwrap().len(), 2, "{builds}");
    assert_eq!(scratch_bytes(&data), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_end_of_the_grace_period_the_process_exits_and_a_cut_deploy_is_absent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let grace_env = ("SWITCHYARD__HTTP__SHUTDOWN_GRACE_MS", "1000".to_string());
    let mut server = Process::start_with(&data, &[grace_env]).await;
    for (project, wasm) in [("app", artifacts::HELLO), ("slow", artifacts::HOSTILE)] {
        let bundle = component_bundle(wasm, "");
        assert_eq!(server.deploy(project, bundle).await, StatusCode::CREATED);
    }
    let public = server.public;
    let stuck = tokio::spawn(async move {
        public_request(public, "slow.localhost", "GET", "/sleep?ms=60000", None).await
    });
    wait_for_log(server.admin, "slow", "sleeping").await;
    let compiled_before = compiled_artifacts(&data);
    let big = component_bundle(artifacts::PYTHON, "");
    let deploy = begin_upload(server.admin, "app", &big, 0).finish().await;
    until("the bundle is spooled", || {
        scratch_bytes(&data) >= big.len() as u64
    })
    .await;

    let signalled = Instant::now();
    server.signal("TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .expect("still running 10 s into a 1 s grace period")
        .unwrap();
    let exited_after = signalled.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        exited_after < Duration::from_secs(3),
        "a 1 s grace period took {exited_after:?}"
    );
    assert!(stuck.await.unwrap().is_err(), "the sleeper was cut");

    // The deploy finished in time or is wholly absent. (It may also have
    // committed just as the process exited, its answer lost.)
    let answered = deploy
        .await
        .unwrap()
        .is_ok_and(|status| status == StatusCode::CREATED);
    let server = Process::start(&data).await;
    let (_, builds) = server
        .admin("GET", "/v1/projects/app/deployments", None)
        .await;
    let builds = builds["data"].as_array().unwrap().len();
    let body = server.get("app.localhost", "/").await.text();
    if builds == 2 {
        assert!(body.starts_with("python saw /"), "{body}");
    } else {
        assert!(!answered, "a deploy answered 201 is not listed");
        assert_eq!(builds, 1);
        assert_eq!(body, "Hello from Switchyard!\n");
        assert_eq!(
            compiled_artifacts(&data),
            compiled_before,
            "the compile was abandoned, not finished after the grace period"
        );
    }
    assert_eq!(scratch_bytes(&data), 0);
    eprintln!("exited {exited_after:?} after SIGTERM with a 1 s grace period");
}

/// What the writers below had been answered when the server died.
#[derive(Clone, Default)]
struct Acknowledged {
    /// Per counter path, the highest count answered.
    visits: BTreeMap<String, i64>,
    /// Rows answered `201`: id → title.
    todos: BTreeMap<i64, String>,
}

impl Acknowledged {
    fn writes(&self) -> usize {
        self.todos.len() + self.visits.values().map(|&n| n as usize).sum::<usize>()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_acknowledged_before_a_sigkill_under_load_survive_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Process::start(&data).await;
    assert_eq!(
        server
            .deploy("counter", component_bundle(artifacts::COUNTER, ""))
            .await,
        StatusCode::CREATED
    );
    assert_eq!(
        server.deploy("todos", todo_api_bundle()).await,
        StatusCode::CREATED
    );

    // Eight writers, each until the server stops answering: four bump a
    // kv counter of their own, four insert database rows.
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let (public, acked) = (server.public, acknowledged.clone());
        writers.push(tokio::spawn(async move {
            let path = format!("/visits/writer-{writer}");
            while let Ok(reply) =
                public_request(public, "counter.localhost", "GET", &path, None).await
            {
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                let visits = reply.json()["visits"].as_i64().unwrap();
                acked.lock().unwrap().visits.insert(path.clone(), visits);
            }
        }));
        let (public, acked) = (server.public, acknowledged.clone());
        writers.push(tokio::spawn(async move {
            for row in 0.. {
                let title = format!("writer {writer}, row {row}");
                let body = json!({ "title": title });
                let Ok(reply) =
                    public_request(public, "todos.localhost", "POST", "/api/todos", Some(body))
                        .await
                else {
                    return;
                };
                assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
                let id = reply.json()["id"].as_i64().unwrap();
                acked.lock().unwrap().todos.insert(id, title);
            }
        }));
    }
    until("hundreds of writes are acknowledged", || {
        acknowledged.lock().unwrap().writes() >= 400
    })
    .await;
    server.kill9().await;
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("a writer still waits on a killed server")
            .unwrap();
    }
    let acked = acknowledged.lock().unwrap().clone();
    assert!(!acked.todos.is_empty() && acked.visits.len() == 4);

    let server = Process::start(&data).await;
    for (path, &last) in &acked.visits {
        let reply = server.get("counter.localhost", path).await;
        let visits = reply.json()["visits"].as_i64().unwrap();
        assert!(
            visits > last,
            "{path}: {last} was acknowledged, the next visit counts {visits}"
        );
    }
    for (id, title) in &acked.todos {
        let reply = server
            .get("todos.localhost", &format!("/api/todos/{id}"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "row {id}: {}", reply.text());
        assert_eq!(reply.json()["title"], title.as_str());
    }
    assert_databases_intact(&data);
    eprintln!(
        "acknowledged before the kill: {} rows, {} counter increments",
        acked.todos.len(),
        acked.writes() - acked.todos.len()
    );
}

/// Compiled artifacts in the cache (not half-written ones).
fn compiled_artifacts(data_dir: &Path) -> usize {
    snapshot(&data_dir.join("artifacts"))
        .iter()
        .filter(|(path, _)| path.extension().is_some_and(|e| e == "cwasm"))
        .count()
}

fn sleep_on(public: SocketAddr, ms: u64) -> tokio::task::JoinHandle<Reply> {
    let request = Request::get(format!("http://{public}/sleep?ms={ms}"))
        .header("host", "slow.localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    tokio::spawn(send(request))
}
