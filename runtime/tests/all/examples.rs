//! The example apps answer correctly; state lives in kv, across requests
//! and across restarts; a plain wasi:http component runs unmodified.

use crate::common::*;
use std::time::{Duration, Instant};
use switchyard_runtime::LimitsOverride;
use switchyard_test_artifacts as artifacts;

#[tokio::test]
async fn hello_answers_text_json_and_echo() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = deploy(
        &runtime,
        &artifacts::read(artifacts::HELLO),
        "hello",
        LimitsOverride::default(),
    )
    .await;

    let reply = get(&app, "/").await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(reply.text(), "Hello from Switchyard!\n");

    let json = get(&app, "/json").await.unwrap().json();
    assert_eq!(json["project"], "hello");
    assert_eq!(json["build"], "b1");

    let req = http::Request::builder()
        .method("POST")
        .uri("http://hello.localhost/echo/deeper?name=Ada%20L&x=1")
        .header("x-custom", "yes")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"12345",
        )))
        .unwrap();
    let echo = send(&app, req).await.unwrap().json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo/deeper");
    assert_eq!(
        echo["query"],
        serde_json::json!({"name": "Ada L", "x": "1"})
    );
    assert_eq!(echo["bodyBytes"], 5);
    let headers = echo["headers"].as_array().unwrap();
    assert!(
        headers.contains(&serde_json::json!(["x-custom", "yes"])),
        "{headers:?}"
    );

    assert_eq!(get(&app, "/nope").await.unwrap().status, 404);
}

#[tokio::test]
async fn hello_imports_nothing_from_switchyard() {
    let hello = artifacts::read(artifacts::HELLO);
    let needle = b"switchyard:gateway";
    assert!(
        !hello.windows(needle.len()).any(|w| w == needle),
        "hello must stay a plain wasi:http/proxy component"
    );
}

#[tokio::test]
async fn a_plain_wasi_http_component_runs_unmodified() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = deploy(
        &runtime,
        &artifacts::read(artifacts::PLAIN_PROXY),
        "plain",
        LimitsOverride::default(),
    )
    .await;
    let reply = get(&app, "/some/path?q=1").await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "plain proxy saw /some/path?q=1\n");
}

#[tokio::test]
async fn counter_persists_across_requests_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let counter = artifacts::read(artifacts::COUNTER);
    {
        let runtime = runtime(dir.path());
        let app = deploy(&runtime, &counter, "counter", LimitsOverride::default()).await;
        for expected in 1..=3 {
            let json = get(&app, "/visits/a/b").await.unwrap().json();
            assert_eq!(
                json,
                serde_json::json!({"path": "/a/b", "visits": expected})
            );
        }
        let json = get(&app, "/visits/other").await.unwrap().json();
        assert_eq!(json["visits"], 1);
        assert_eq!(runtime.stats().compiled, 1);
    }

    // A new runtime on the same data directory: the counter goes on, and the
    // component is loaded from the artifact cache, not compiled again.
    let runtime = runtime(dir.path());
    let component = switchyard_runtime::ComponentId::of(&counter);
    let app = runtime.app(&spec("counter", component)).await.unwrap();
    let json = get(&app, "/visits/a/b").await.unwrap().json();
    assert_eq!(json["visits"], 4);
    let stats = runtime.stats();
    assert_eq!((stats.compiled, stats.deserialized), (0, 1), "{stats:?}");
}

#[tokio::test]
async fn counter_flash_message_expires() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = deploy(
        &runtime,
        &artifacts::read(artifacts::COUNTER),
        "flash",
        LimitsOverride::default(),
    )
    .await;

    assert_eq!(get(&app, "/flash").await.unwrap().status, 404);
    let put = send(&app, request("PUT", "/flash?ttl_ms=300", "see you soon"))
        .await
        .unwrap();
    assert_eq!(put.status, 204);
    let reply = get(&app, "/flash").await.unwrap();
    assert_eq!(
        (reply.status, reply.text()),
        (200, "see you soon".to_string())
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = get(&app, "/flash").await.unwrap();
        if reply.status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the message never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bad = send(&app, request("PUT", "/flash?ttl_ms=0", "x"))
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn project_env_and_reserved_variables_reach_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let component = runtime
        .compile(&artifacts::read(artifacts::HOSTILE))
        .await
        .unwrap();
    let mut spec = spec("env-test", component);
    spec.env = vec![("GREETING".into(), "hi there".into())];
    let app = runtime.app(&spec).await.unwrap();
    let env = get(&app, "/env").await.unwrap().json();
    assert_eq!(env["GREETING"], "hi there");
    assert_eq!(env["SWITCHYARD_PROJECT"], "env-test");
    assert_eq!(env["SWITCHYARD_BUILD"], "b1");
    assert_eq!(
        env.as_object().unwrap().len(),
        3,
        "nothing of the host's environment: {env}"
    );
}
