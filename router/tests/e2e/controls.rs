//! Tenant controls and the admin API's guarantees: suspension, rate limits,
//! quotas, concurrency, tokens and their scope, secret env, logs, metrics.

use crate::common::*;
use http::{Request, StatusCode};
use serde_json::json;
use std::time::Duration;
use switchyard_test_artifacts as artifacts;

#[tokio::test]
async fn suspend_is_a_kill_switch_and_resume_undoes_it() {
    let server = TestServer::start().await;
    server
        .deploy("hello", component_bundle(artifacts::HELLO, ""))
        .await;
    server
        .deploy("other", component_bundle(artifacts::HELLO, ""))
        .await;

    let (status, _) = server
        .admin("POST", "/v1/projects/hello/suspend", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let refused = server.get("hello.localhost", "/").await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "PROJECT_SUSPENDED")
    );
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(
        server.get("other.localhost", "/").await.status,
        StatusCode::OK,
        "only that project"
    );
    let (_, project) = server.admin("GET", "/v1/projects/hello", None).await;
    assert_eq!(project["data"]["suspended"], true);

    server
        .admin("POST", "/v1/projects/hello/resume", None)
        .await;
    assert_eq!(
        server.get("hello.localhost", "/").await.status,
        StatusCode::OK
    );
    server.assert_back_to_baseline().await;
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after_and_the_quota_too() {
    let server = TestServer::start().await;
    server
        .deploy("limited", component_bundle(artifacts::HELLO, ""))
        .await;
    server
        .deploy("quota", component_bundle(artifacts::HELLO, ""))
        .await;
    let (status, body) = server
        .admin(
            "PUT",
            "/v1/projects/limited/limits",
            Some(json!({ "requests_per_minute": 6, "burst": 3 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let mut statuses = Vec::new();
    for _ in 0..5 {
        let reply = server.get("limited.localhost", "/").await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(reply.code(), "RATE_LIMITED");
            let retry: u64 = reply.headers["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                (1..=10).contains(&retry),
                "6/min: a token every 10 s, got {retry}"
            );
        }
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429],
        "the burst, then refusals"
    );

    server
        .admin(
            "PUT",
            "/v1/projects/quota/limits",
            Some(json!({ "daily_requests": 2 })),
        )
        .await;
    assert_eq!(
        server.get("quota.localhost", "/").await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.get("quota.localhost", "/").await.status,
        StatusCode::OK
    );
    let over = server.get("quota.localhost", "/").await;
    assert_eq!(
        (over.status, over.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "QUOTA_EXCEEDED")
    );
    let retry: u64 = over.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry), "until UTC midnight: {retry}");

    let (status, body) = server
        .admin(
            "PUT",
            "/v1/projects/quota/limits",
            Some(json!({ "requests_per_minute": 0 })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_LIMITS"))
    );
    let (status, body) = server
        .admin(
            "PUT",
            "/v1/projects/quota/limits",
            Some(json!({ "sandbox": { "memory_bytes": 1u64 << 40 } })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_LIMITS"))
    );
    let (_, limits) = server.admin("GET", "/v1/projects/quota/limits", None).await;
    assert_eq!(limits["data"]["effective"]["dailyRequests"], 2);
    server.assert_back_to_baseline().await;
}

#[tokio::test]
async fn the_concurrency_cap_answers_503_capacity() {
    let server = TestServer::start().await;
    server.deploy_component("busy", artifacts::HOSTILE).await;
    let (status, body) = server
        .admin(
            "PUT",
            "/v1/projects/busy/limits",
            Some(json!({ "sandbox": { "concurrency": 1 } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let public = server.public;
    let slow = tokio::spawn(async move {
        let request = Request::get(format!("http://{public}/sleep?ms=3000"))
            .header("host", "busy.localhost")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        send(request).await
    });
    wait_for_log(server.admin, "busy", "sleeping").await;
    let refused = server.get("busy.localhost", "/ok").await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "CAPACITY")
    );
    assert_eq!(refused.headers["retry-after"], "1");

    let slept = slow.await.unwrap();
    assert_eq!(slept.text(), "slept");
    assert_eq!(
        server.get("busy.localhost", "/ok").await.text(),
        "ok",
        "the slot is free again"
    );
    server.assert_back_to_baseline().await;
}

#[tokio::test]
async fn tokens_authenticate_and_a_deploy_token_stays_in_its_project() {
    let server = TestServer::start().await;
    server
        .deploy("mine", component_bundle(artifacts::HELLO, ""))
        .await;
    server
        .deploy("theirs", component_bundle(artifacts::HELLO, ""))
        .await;

    for token in [
        None,
        Some("wrong"),
        Some("sya_wrong"),
        Some("syd_nope_nope"),
        Some(""),
    ] {
        let (status, body) = server.admin_as(token, "GET", "/v1/projects", None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("UNAUTHORIZED")),
            "{token:?}"
        );
    }
    // Health, metrics and the API description need no token.
    assert_eq!(
        server.admin_as(None, "GET", "/livez", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        server.admin_as(None, "GET", "/readyz", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        server
            .admin_as(None, "GET", "/v1/openapi.json", None)
            .await
            .0,
        StatusCode::OK
    );

    let (status, created) = server
        .admin(
            "POST",
            "/v1/projects/mine/tokens",
            Some(json!({ "name": "ci" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["data"]["token"].as_str().unwrap().to_owned();
    let token_id = created["data"]["id"].as_str().unwrap().to_owned();
    let (_, listed) = server.admin("GET", "/v1/projects/mine/tokens", None).await;
    assert_eq!(listed["data"][0]["name"], "ci");
    assert!(
        !listed.to_string().contains(&token[token.len() - 20..]),
        "a token is shown once"
    );

    // Its own project: read, deploy, env, logs.
    let own = Some(token.as_str());
    assert_eq!(
        server
            .admin_as(own, "GET", "/v1/projects/mine", None)
            .await
            .0,
        StatusCode::OK
    );
    let (status, _) = server
        .upload_as(&token, "mine", component_bundle(artifacts::PLAIN_PROXY, ""))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, listed) = server.admin_as(own, "GET", "/v1/projects", None).await;
    let ids: Vec<_> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    assert_eq!(ids, [json!("mine")], "it sees its own project only");

    // Another project: as if it did not exist.
    for (method, path) in [
        ("GET", "/v1/projects/theirs"),
        ("GET", "/v1/projects/theirs/env"),
        ("GET", "/v1/projects/theirs/deployments"),
        ("GET", "/v1/projects/theirs/logs"),
        ("POST", "/v1/projects/theirs/rollback"),
        ("DELETE", "/v1/projects/theirs/env/X"),
    ] {
        let (status, body) = server.admin_as(own, method, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
    }
    let (status, _) = server
        .upload_as(
            &token,
            "theirs",
            component_bundle(artifacts::PLAIN_PROXY, ""),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        server.get("theirs.localhost", "/").await.text(),
        "Hello from Switchyard!\n",
        "untouched"
    );

    // The operator's powers stay with the operator.
    for (method, path, body) in [
        ("POST", "/v1/projects", Some(json!({ "id": "new" }))),
        ("DELETE", "/v1/projects/mine", None),
        ("POST", "/v1/projects/mine/suspend", None),
        (
            "PUT",
            "/v1/projects/mine/limits",
            Some(json!({ "burst": 100000 })),
        ),
        (
            "POST",
            "/v1/projects/mine/hostnames",
            Some(json!({ "hostname": "x.example.com" })),
        ),
        (
            "POST",
            "/v1/projects/mine/tokens",
            Some(json!({ "name": "more" })),
        ),
        ("GET", "/v1/certificates", None),
    ] {
        let (status, reply) = server.admin_as(own, method, path, body).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("FORBIDDEN")),
            "{method} {path}"
        );
    }

    // Revoked: it no longer works.
    let (status, _) = server
        .admin(
            "DELETE",
            &format!("/v1/projects/mine/tokens/{token_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server
            .admin_as(own, "GET", "/v1/projects/mine", None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_secret_env_value_reaches_the_guest_and_never_the_api() {
    let server = TestServer::start().await;
    server.deploy_component("envy", artifacts::HOSTILE).await;
    let secret = "s3cr3t-value-7f2b";
    let vars = json!({ "vars": [
        { "name": "API_KEY", "value": secret, "secret": true },
        { "name": "MODE", "value": "test" },
    ]});
    let (status, body) = server
        .admin("PUT", "/v1/projects/envy/env", Some(vars))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body.to_string().contains(secret));

    let env = server.get("envy.localhost", "/env").await.json();
    assert_eq!(
        (env["API_KEY"].as_str(), env["MODE"].as_str()),
        (Some(secret), Some("test"))
    );
    assert_eq!(env["SWITCHYARD_PROJECT"], "envy");

    for path in ["/v1/projects/envy/env", "/v1/projects/envy", "/v1/projects"] {
        let (status, body) = server.admin("GET", path, None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            !body.to_string().contains(secret),
            "{path} shows the secret: {body}"
        );
    }
    let (_, env) = server.admin("GET", "/v1/projects/envy/env", None).await;
    assert!(
        env["data"]
            .as_array()
            .unwrap()
            .contains(&json!({ "name": "API_KEY", "secret": true }))
    );

    let bad = json!({ "vars": [{ "name": "SWITCHYARD_PROJECT", "value": "other" }] });
    let (status, body) = server
        .admin("PUT", "/v1/projects/envy/env", Some(bad))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_ENV_NAME"))
    );

    let (status, _) = server
        .admin("DELETE", "/v1/projects/envy/env/API_KEY", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        server
            .get("envy.localhost", "/env")
            .await
            .json()
            .get("API_KEY")
            .is_none()
    );
}

#[tokio::test]
async fn logs_can_be_read_and_followed_and_metrics_count_requests() {
    let server = TestServer::start().await;
    server.deploy_component("noisy", artifacts::HOSTILE).await;
    server.get("noisy.localhost", "/sleep?ms=1").await;
    let (status, logs) = server.admin("GET", "/v1/projects/noisy/logs", None).await;
    assert_eq!(status, StatusCode::OK);
    let records = logs["data"]["records"].as_array().unwrap();
    let record = records
        .iter()
        .find(|r| r["message"].as_str().unwrap().contains("sleeping"))
        .unwrap();
    assert_eq!(record["source"], "stdout");
    let next = logs["data"]["next"].as_u64().unwrap();

    // Follow: records written afterwards arrive on the open stream.
    let request = Request::get(format!(
        "http://{}/v1/projects/noisy/logs?follow=true&since={next}",
        server.admin
    ))
    .header("authorization", format!("Bearer {TOKEN}"))
    .body(http_body_util::Full::new(bytes::Bytes::new()))
    .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut body = response.into_body();
    let reply = server.get("noisy.localhost", "/body-length").await;
    let request_id = reply.headers["x-request-id"].to_str().unwrap().to_owned();
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        use http_body_util::BodyExt;
        let mut text = String::new();
        while !text.contains('\n') {
            let frame = body.frame().await.unwrap().unwrap();
            if let Some(data) = frame.data_ref() {
                text.push_str(&String::from_utf8_lossy(data));
            }
        }
        text
    })
    .await
    .expect("a followed record arrives");
    let record: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(record["requestId"], request_id.as_str());
    assert!(
        record["message"]
            .as_str()
            .unwrap()
            .contains("reading the body")
    );

    let metrics = server.metrics().await;
    assert!(
        metrics.contains("switchyard_requests_total{project=\"noisy\",class=\"2xx\"}"),
        "{metrics}"
    );
    for name in [
        "switchyard_request_duration_seconds",
        "switchyard_instantiate_seconds",
        "switchyard_fuel_used_total",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    // Body bytes as sent, whether or not the guest declared a length.
    let bytes_out: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_response_bytes_total{project=\"noisy\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(bytes_out > 0, "{metrics}");
    drop((body, client));
    server.assert_back_to_baseline().await;
}

/// `[egress] allow` in switchyard.toml reaches the guest: an allowlisted
/// upstream on loopback (a range this operator allowed) answers, anything
/// else is refused, every attempt is metered; a bad rule refuses the deploy.
#[tokio::test]
async fn egress_follows_the_manifest_allowlist_and_is_metered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nupstream")
                    .await;
            });
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.runtime.egress.allow_ranges = vec!["127.0.0.0/8".parse().unwrap()];
    let server = TestServer::start_with(config).await;

    let (status, body) = server
        .deploy(
            "caller",
            component_bundle(
                artifacts::HOSTILE,
                "[egress]\nallow = [\"http://*.example.com\", \"ftp://x\"]\n",
            ),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_EGRESS_RULE")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ftp://x")
    );

    let manifest = format!("[egress]\nallow = [\"http://127.0.0.1:{port}\"]\n");
    let (status, body) = server
        .deploy("caller", component_bundle(artifacts::HOSTILE, &manifest))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let allowed = format!("http%3A//127.0.0.1%3A{port}/x");
    let results = server
        .get("caller.localhost", &format!("/fetch?url={allowed}"))
        .await
        .json();
    assert_eq!(results[0]["status"], 200, "{results}");
    assert_eq!(results[0]["body"], "upstream");
    let results = server
        .get("caller.localhost", "/fetch?url=http%3A//example.com/")
        .await
        .json();
    assert_eq!(results[0]["error"], "Denied", "{results}");

    let metrics = server.metrics().await;
    for result in ["sent", "denied"] {
        let line =
            format!("switchyard_egress_requests_total{{project=\"caller\",result=\"{result}\"}} 1");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    server.assert_back_to_baseline().await;
}
