//! Two `switchyard serve` processes sharing Redis (control store, kv, rate
//! limits), an S3 bucket (moto) and PostgreSQL, as docs/CLUSTER.md
//! describes: what one node does, the other serves; and Redis killed and
//! restarted under traffic.

use crate::common::*;
use crate::process::ServeProcess;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::time::{Duration, Instant};
use switchyard_test_artifacts as artifacts;
use switchyard_test_services::{Redis, shared_postgres, shared_redis, shared_s3};

/// How soon a change made through one node must be served by the other.
const PROPAGATION: Duration = Duration::from_secs(1);

/// The environment that points a node at the shared services; `tag`
/// keeps this test's keys, bucket prefix and nothing else apart.
fn cluster_env(redis_url: &str, tag: &str) -> Vec<(&'static str, String)> {
    let s3 = shared_s3();
    s3.create_bucket("cluster");
    vec![
        ("SWITCHYARD__STORAGE__CONTROL", redis_url.to_owned()),
        ("SWITCHYARD__STORAGE__KV", redis_url.to_owned()),
        ("SWITCHYARD__STORAGE__RATE_LIMITS", redis_url.to_owned()),
        ("SWITCHYARD__STORAGE__REDIS_PREFIX", tag.to_owned()),
        ("SWITCHYARD__STORAGE__DB", shared_postgres().url()),
        (
            "SWITCHYARD__STORAGE__OBJECTS",
            format!(
                "s3://cluster/{tag}?endpoint={}&region=us-east-1",
                s3.endpoint()
            ),
        ),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
    ]
}

async fn two_nodes(redis_url: &str, tag: &str) -> (ServeProcess, ServeProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let env = cluster_env(redis_url, tag);
    let a = ServeProcess::start_with(&dir.path().join("a"), &env).await;
    let b = ServeProcess::start_with(&dir.path().join("b"), &env).await;
    (a, b, dir)
}

fn site(text: &str) -> Vec<u8> {
    tar(&[
        ("switchyard.toml", b""),
        ("assets/index.html", text.as_bytes()),
    ])
}

async fn public(
    node: &ServeProcess,
    method: &str,
    host: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", node.public))
        .header("host", host)
        .header("content-type", "application/json")
        .body(Full::new(
            body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
        ))
        .unwrap();
    send(request).await
}

/// Polls `node` until `host`'s `/` says `text`; returns how long it took.
async fn served_within(node: &ServeProcess, host: &str, text: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let reply = node.get(host, "/").await;
        if reply.status == StatusCode::OK && reply.text() == text {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "still {} {:?} after {limit:?}, expected {text:?}",
            reply.status,
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Components this node has compiled, from its metrics.
async fn compiled(node: &ServeProcess) -> u64 {
    let request = Request::get(format!("http://{}/metrics", node.admin))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let text = send(request).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("switchyard_components_compiled_total "))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_deploys_rollbacks_kv_databases_and_rate_limits() {
    let tag = format!("cluster-{}", std::process::id());
    let (a, b, _dir) = two_nodes(&shared_redis().url(), &tag).await;

    // A deploy through A is served by B within a second, and so is a
    // rollback. (B's first request loads the route from Redis; after
    // that, only the change announcement makes B look again.)
    assert_eq!(a.deploy("site", site("one")).await, StatusCode::CREATED);
    served_within(&b, "site.localhost", "one", PROPAGATION).await;
    assert_eq!(a.deploy("site", site("two")).await, StatusCode::CREATED);
    let deployed = served_within(&b, "site.localhost", "two", PROPAGATION).await;
    let (status, _) = a.admin("POST", "/v1/projects/site/rollback", None).await;
    assert_eq!(status, StatusCode::OK);
    let rolled_back = served_within(&b, "site.localhost", "one", PROPAGATION).await;
    eprintln!("propagation: deploy {deployed:?}, rollback {rolled_back:?}");

    // A component deployed through A runs on B: B fetches it from the
    // bucket and compiles it. Its kv data is one store for both nodes.
    assert_eq!(
        a.deploy("counter", component_bundle(artifacts::COUNTER, ""))
            .await,
        StatusCode::CREATED
    );
    // Eight requests at once on B compile it once (single flight).
    let compiled_before = compiled(&b).await;
    let first = (0..8).map(|_| b.get("counter.localhost", "/visits/warm"));
    for reply in futures::future::join_all(first).await {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    assert_eq!(compiled(&b).await, compiled_before + 1, "one compile on b");
    let visits = |reply: Reply| reply.json()["visits"].as_i64().unwrap();
    assert_eq!(visits(a.get("counter.localhost", "/visits/x").await), 1);
    assert_eq!(visits(b.get("counter.localhost", "/visits/x").await), 2);
    assert_eq!(visits(a.get("counter.localhost", "/visits/x").await), 3);

    // The gateway database is PostgreSQL for both: a row written through
    // A is read through B.
    assert_eq!(
        a.deploy("todos", todo_api_bundle()).await,
        StatusCode::CREATED
    );
    let created = public(
        &a,
        "POST",
        "todos.localhost",
        "/api/todos",
        Some(serde_json::json!({ "title": "written on a" })),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let listed = public(&b, "GET", "todos.localhost", "/api/todos", None).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    let titles: Vec<String> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(titles, ["written on a"]);

    // One rate limit for both nodes: a burst of 100 at 600/min admits
    // about 100 requests plus 10 a second however they are spread.
    let (status, _) = a
        .admin(
            "PUT",
            "/v1/projects/site/limits",
            Some(serde_json::json!({ "requests_per_minute": 600, "burst": 100 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    served_within(&b, "site.localhost", "one", PROPAGATION).await;
    // The probe above spent a token or more; start from a full bucket.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let requests = (0..300).map(|i| {
        let node = if i % 2 == 0 { &a } else { &b };
        async move { node.get("site.localhost", "/").await.status }
    });
    let statuses = futures::future::join_all(requests).await;
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let limit = 100.0 + 10.0 * elapsed;
    eprintln!(
        "rate limit: {admitted} admitted, {limited} limited in {elapsed:.2} s (limit {limit:.0})"
    );
    assert_eq!(admitted + limited, 300);
    assert!(
        admitted >= 100,
        "the burst is the project's, not halved per node"
    );
    assert!(
        (admitted as f64) <= limit * 1.05,
        "{admitted} admitted, above {limit:.0} + 5%"
    );
}

/// What the traffic of the outage test saw.
#[derive(Default)]
struct Traffic {
    /// The highest count a 200 acknowledged.
    acknowledged: i64,
    /// 200s before and after the restart.
    ok_before: usize,
    ok_after: usize,
    /// Other answers, by status.
    refused: Vec<StatusCode>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_traffic_loses_nothing_acknowledged() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let mut redis = Redis::start_durable();
    let tag = format!("outage-{}", std::process::id());
    let (a, b, dir) = two_nodes(&redis.url(), &tag).await;
    // A third node that admits requests when the limiter cannot ask Redis.
    let mut env = cluster_env(&redis.url(), &tag);
    env.push(("SWITCHYARD__STORAGE__RATE_LIMITS_FAIL_OPEN", "true".into()));
    let open = ServeProcess::start_with(&dir.path().join("c"), &env).await;
    assert_eq!(
        a.deploy("counter", component_bundle(artifacts::COUNTER, ""))
            .await,
        StatusCode::CREATED
    );
    assert_eq!(a.deploy("site", site("static")).await, StatusCode::CREATED);
    assert_eq!(open.get("site.localhost", "/").await.text(), "static");
    let (a, b) = (Arc::new(a), Arc::new(b));

    // Traffic on both nodes, one request after another, until told to stop.
    let traffic = Arc::new(Mutex::new(Traffic::default()));
    let restarted = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (a, b) = (a.clone(), b.clone());
        let (traffic, restarted, stop) = (traffic.clone(), restarted.clone(), stop.clone());
        tokio::spawn(async move {
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let node = if i % 2 == 0 { &a } else { &b };
                let started = Instant::now();
                let reply = node.get("counter.localhost", "/visits/n").await;
                assert!(started.elapsed() < Duration::from_secs(5), "a request hung");
                {
                    let mut seen = traffic.lock().unwrap();
                    if reply.status == StatusCode::OK {
                        let count = reply.json()["visits"].as_i64().unwrap();
                        seen.acknowledged = seen.acknowledged.max(count);
                        if restarted.load(Ordering::SeqCst) {
                            seen.ok_after += 1;
                        } else {
                            seen.ok_before += 1;
                        }
                    } else {
                        seen.refused.push(reply.status);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let wait_for = |what: &'static str, check: fn(&Traffic) -> bool| {
        let traffic = traffic.clone();
        async move {
            let started = Instant::now();
            while !check(&traffic.lock().unwrap()) {
                assert!(started.elapsed() < Duration::from_secs(30), "{what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for("traffic flows", |t| t.ok_before >= 20).await;

    redis.kill();
    // Degraded, as documented: requests are refused with 503 and
    // Retry-After (the rate limiter fails closed), and /readyz says which
    // stores are down. Nothing hangs.
    wait_for("refusals during the outage", |t| t.refused.len() >= 10).await;
    for node in [&a, &b] {
        let reply = node.get("counter.localhost", "/visits/n").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.headers["retry-after"], "1");
        let (status, ready) = node.admin("GET", "/readyz", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ready["data"]["degraded"], true, "{ready}");
        assert_eq!(ready["data"]["checks"]["control"], "unavailable");
        assert_eq!(ready["data"]["checks"]["kv"], "unavailable");
        assert_eq!(ready["data"]["checks"]["db"], "ok");
    }
    // Failing open, the cached route keeps serving, and the guest gets
    // `unavailable` from kv within its timeout (the app answers 503).
    assert_eq!(open.get("site.localhost", "/").await.text(), "static");
    let started = Instant::now();
    let reply = open.get("counter.localhost", "/visits/n").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    redis.restart();
    restarted.store(true, Ordering::SeqCst);
    // Both nodes recover on their own while the traffic goes on.
    wait_for("recovery after the restart", |t| t.ok_after >= 20).await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    let (acknowledged, refused) = {
        let seen = traffic.lock().unwrap();
        (seen.acknowledged, seen.refused.clone())
    };
    assert!(
        refused
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "only 503s while Redis was away: {refused:?}"
    );
    // Nothing acknowledged was lost: the count goes on above every count
    // a 200 reported.
    let next = a.get("counter.localhost", "/visits/n").await.json()["visits"]
        .as_i64()
        .unwrap();
    assert!(
        next > acknowledged,
        "{next} after {acknowledged} acknowledged"
    );
    for node in [&a, &b] {
        let started = Instant::now();
        loop {
            let (_, ready) = node.admin("GET", "/readyz", None).await;
            if ready["data"]["degraded"] == false {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{ready}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(b.get("site.localhost", "/").await.text(), "static");
    assert_eq!(open.get("site.localhost", "/").await.text(), "static");
}
