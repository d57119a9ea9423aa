//! Deploys over the admin API: the demo apps answer on their hostnames,
//! routing, rollback, restart, refusals, concurrency.

use crate::common::*;
use http::StatusCode;
use switchyard_test_artifacts as artifacts;

#[tokio::test]
async fn the_demo_apps_answer_on_their_hostnames() {
    let server = TestServer::start().await;
    let (status, build) = server
        .deploy("hello", component_bundle(artifacts::HELLO, ""))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{build}");
    assert_eq!(
        build["data"]["url"],
        format!("http://hello.localhost:{}/", server.public.port())
    );
    server
        .deploy("counter", component_bundle(artifacts::COUNTER, ""))
        .await;
    server.deploy("static-site", static_site_bundle()).await;

    let hello = server.get("hello.localhost", "/").await;
    assert_eq!(
        (hello.status, hello.text()),
        (StatusCode::OK, "Hello from Switchyard!\n".to_string())
    );
    assert_eq!(hello.headers["x-request-id"].len(), 32);
    let json = server.get("Hello.Localhost:8080", "/json").await.json();
    assert_eq!(json["project"], "hello");

    for expected in 1..=2 {
        let visits = server.get("counter.localhost", "/visits/home").await.json();
        assert_eq!(visits["visits"], expected);
    }
    let page = server.get("static-site.localhost", "/").await;
    assert!(page.text().contains("<h1>static-site</h1>"));

    let unknown = server.get("nobody.localhost", "/").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.code(), "HOST_NOT_FOUND");
    assert_eq!(
        unknown.headers["content-length"].to_str().unwrap(),
        unknown.body.len().to_string(),
        "a known length is sent as such"
    );
    assert_eq!(
        unknown.json()["error"]["requestId"],
        unknown.headers["x-request-id"].to_str().unwrap()
    );
    let bare = server.get("localhost", "/").await;
    assert_eq!(
        bare.code(),
        "HOST_NOT_FOUND",
        "the base domain itself is nobody's"
    );
}

#[tokio::test]
async fn custom_and_wildcard_hostnames_route_and_are_validated() {
    let server = TestServer::start().await;
    server
        .deploy("hello", component_bundle(artifacts::HELLO, ""))
        .await;
    server
        .deploy("counter", component_bundle(artifacts::COUNTER, ""))
        .await;
    let server = &server;
    let add = |project: &str, hostname: &str| {
        let body = serde_json::json!({ "hostname": hostname });
        let path = format!("/v1/projects/{project}/hostnames");
        async move { server.admin("POST", &path, Some(body)).await }
    };
    assert_eq!(
        add("hello", "Shop.Example.com.").await.0,
        StatusCode::CREATED
    );
    assert_eq!(add("counter", "*.example.org").await.0, StatusCode::CREATED);

    assert_eq!(
        server.get("shop.example.com", "/").await.text(),
        "Hello from Switchyard!\n"
    );
    assert_eq!(
        server.get("blog.example.org", "/visits/x").await.json()["visits"],
        1
    );
    assert_eq!(
        server.get("example.org", "/").await.code(),
        "HOST_NOT_FOUND"
    );
    assert_eq!(
        server.get("a.b.example.org", "/").await.code(),
        "HOST_NOT_FOUND"
    );

    let (status, body) = add("counter", "shop.example.com").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("HOSTNAME_TAKEN"))
    );
    assert!(!body.to_string().contains("hello"), "never says who has it");
    for bad in [
        "localhost",
        "x.localhost",
        "127.0.0.1",
        "bad_name.com",
        "*.com",
        "-x.example.com",
    ] {
        let (status, body) = add("hello", bad).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_HOSTNAME")),
            "{bad}"
        );
    }

    let (status, _) = server
        .admin(
            "DELETE",
            "/v1/projects/hello/hostnames/shop.example.com",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server.get("shop.example.com", "/").await.code(),
        "HOST_NOT_FOUND"
    );
}

#[tokio::test]
async fn rollback_serves_the_old_build_without_recompiling() {
    let server = TestServer::start().await;
    let (_, first) = server
        .deploy("roll", component_bundle(artifacts::HELLO, ""))
        .await;
    server
        .deploy("roll", component_bundle(artifacts::PLAIN_PROXY, ""))
        .await;
    assert!(
        server
            .get("roll.localhost", "/")
            .await
            .text()
            .starts_with("plain proxy saw")
    );
    let compiled = server.node().runtime.stats().compiled;

    let (status, rolled) = server
        .admin("POST", "/v1/projects/roll/rollback", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{rolled}");
    assert_eq!(rolled["data"]["id"], first["data"]["id"]);
    assert_eq!(
        server.get("roll.localhost", "/").await.text(),
        "Hello from Switchyard!\n"
    );
    assert_eq!(
        server.node().runtime.stats().compiled,
        compiled,
        "rollback does not recompile"
    );

    // And forward again, naming the build.
    let (_, list) = server
        .admin("GET", "/v1/projects/roll/deployments", None)
        .await;
    let newest = list["data"][0]["id"].as_str().unwrap().to_owned();
    let body = serde_json::json!({ "build": newest });
    assert_eq!(
        server
            .admin("POST", "/v1/projects/roll/rollback", Some(body))
            .await
            .0,
        StatusCode::OK
    );
    assert!(
        server
            .get("roll.localhost", "/")
            .await
            .text()
            .starts_with("plain proxy saw")
    );
    let missing = serde_json::json!({ "build": "b000-nope" });
    assert_eq!(
        server
            .admin("POST", "/v1/projects/roll/rollback", Some(missing))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_restart_keeps_everything_and_serves_without_recompiling() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut server = TestServer::start_with(config(dir.path())).await;
        server
            .deploy("hello", component_bundle(artifacts::HELLO, ""))
            .await;
        server.deploy("static-site", static_site_bundle()).await;
        let body = serde_json::json!({ "hostname": "hello.example.com" });
        server
            .admin("POST", "/v1/projects/hello/hostnames", Some(body))
            .await;
        server.stop().await;
    }
    let server = TestServer::start_with(config(dir.path())).await;
    assert_eq!(
        server.get("hello.example.com", "/").await.text(),
        "Hello from Switchyard!\n"
    );
    assert!(
        server
            .get("static-site.localhost", "/")
            .await
            .text()
            .contains("static-site")
    );
    let stats = server.node().runtime.stats();
    assert_eq!((stats.compiled, stats.deserialized), (0, 1), "{stats:?}");
    let (_, projects) = server.admin("GET", "/v1/projects", None).await;
    assert_eq!(projects["data"].as_array().unwrap().len(), 2);
}

/// A bundle with raw tar headers, for names and types `tar::Builder` would
/// refuse to write.
fn raw_tar(entries: &[(&str, &[u8], tar::EntryType)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data, kind) in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(*kind);
        if kind.is_symlink() || kind.is_hard_link() {
            header.set_link_name("switchyard.toml").unwrap();
        }
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

#[tokio::test]
async fn every_refused_deploy_has_its_code_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.deploy.max_assets = 3;
    config.deploy.max_asset_bytes = 100;
    config.deploy.max_total_asset_bytes = 150;
    config.deploy.max_component_bytes = 150_000;
    config.admin.max_upload_bytes = 400_000;
    let server = TestServer::start_with(config).await;
    let (status, _) = server
        .deploy(
            "site",
            tar(&[("switchyard.toml", b""), ("assets/index.html", b"v1")]),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    const FILE: tar::EntryType = tar::EntryType::Regular;
    let manifest = ("switchyard.toml", &b""[..], FILE);
    let asset = |name: &'static str, size: usize| (name, vec![b'x'; size]);
    let hello = artifacts::read(artifacts::HELLO);
    let plain = artifacts::read(artifacts::PLAIN_PROXY);
    let core_module = artifacts::wat("core-module", &[]);
    let unknown_import = artifacts::wat("unknown-import", &[]);
    let four: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| (format!("assets/{n}"), vec![b'x']))
        .collect();
    let four: Vec<(&str, &[u8])> = std::iter::once(("switchyard.toml", &b""[..]))
        .chain(four.iter().map(|(n, d)| (n.as_str(), d.as_slice())))
        .collect();
    let (big, fifty1, fifty2, fifty3) = (
        asset("assets/big", 101),
        asset("assets/a", 50),
        asset("assets/b", 50),
        asset("assets/c", 51),
    );

    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        (
            "BUNDLE_INVALID",
            b"this is not a tar archive".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "INVALID_MANIFEST",
            tar(&[("assets/index.html", b"x")]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "INVALID_MANIFEST",
            tar(&[("switchyard.toml", b"unknown_key = 1"), ("assets/a", b"x")]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "BUNDLE_EMPTY",
            tar(&[("switchyard.toml", b"")]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "ARCHIVE_LINK_REFUSED",
            raw_tar(&[manifest, ("assets/a", b"", tar::EntryType::Symlink)]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "ARCHIVE_LINK_REFUSED",
            raw_tar(&[manifest, ("assets/a", b"", tar::EntryType::Link)]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "ARCHIVE_PATH_REFUSED",
            raw_tar(&[manifest, ("/etc/passwd", b"x", FILE)]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "ARCHIVE_PATH_REFUSED",
            raw_tar(&[manifest, ("assets/../../escape", b"x", FILE)]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "ARCHIVE_PATH_REFUSED",
            raw_tar(&[manifest, ("assets/back\\slash", b"x", FILE)]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "ARCHIVE_PATH_REFUSED",
            raw_tar(&[manifest, ("assets/ctl\u{7}", b"x", FILE)]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "INVALID_ASSET_PATH",
            raw_tar(&[manifest, ("assets/a//b", b"x", FILE)]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "DUPLICATE_ENTRY",
            raw_tar(&[
                manifest,
                ("assets/a", b"1", FILE),
                ("./assets/a", b"2", FILE),
            ]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "BUNDLE_UNEXPECTED_ENTRY",
            tar(&[("switchyard.toml", b""), ("notes.txt", b"x")]),
            StatusCode::BAD_REQUEST,
        ),
        ("TOO_MANY_ASSETS", tar(&four), StatusCode::BAD_REQUEST),
        (
            "ASSET_TOO_LARGE",
            tar(&[("switchyard.toml", b""), (big.0, &big.1)]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "DEPLOYMENT_TOO_LARGE",
            tar(&[
                ("switchyard.toml", b""),
                (fifty1.0, &fifty1.1),
                (fifty2.0, &fifty2.1),
                (fifty3.0, &fifty3.1),
            ]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "COMPONENT_TOO_LARGE",
            tar(&[("switchyard.toml", b""), ("app.wasm", &hello)]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "INVALID_ENV_NAME",
            tar(&[
                ("switchyard.toml", b"[env]\nlower = \"x\""),
                ("app.wasm", &plain),
            ]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "INVALID_ENV_NAME",
            tar(&[
                ("switchyard.toml", b"[env]\nSWITCHYARD_BUILD = \"x\""),
                ("app.wasm", &plain),
            ]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "INVALID_MANIFEST",
            tar(&[
                ("switchyard.toml", b"spa_fallback = \"/missing.html\""),
                ("assets/a", b"x"),
            ]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "INVALID_HEADER_RULE",
            tar(&[
                (
                    "switchyard.toml",
                    b"[[headers]]\npattern = \"/**\"\nset = { \"content-length\" = \"1\" }",
                ),
                ("assets/a", b"x"),
            ]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "LIMIT_NOT_ALLOWED",
            tar(&[
                ("switchyard.toml", b"[limits]\nwall_clock_ms = 999999"),
                ("app.wasm", &plain),
            ]),
            StatusCode::BAD_REQUEST,
        ),
        (
            // Lower than the project's, but too low for any request to run.
            "LIMIT_NOT_ALLOWED",
            tar(&[
                ("switchyard.toml", b"[limits]\nwall_clock_ms = 0"),
                ("app.wasm", &plain),
            ]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "COMPONENT_INVALID",
            tar(&[("switchyard.toml", b""), ("app.wasm", &core_module)]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "COMPONENT_IMPORT_NOT_ALLOWED",
            tar(&[("switchyard.toml", b""), ("app.wasm", &unknown_import)]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PAYLOAD_TOO_LARGE",
            vec![0u8; 500_000],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];

    let before = (
        snapshot(&server.data_dir.join("objects")),
        snapshot(&server.data_dir.join("artifacts")),
    );
    let (_, deployments_before) = server
        .admin("GET", "/v1/projects/site/deployments", None)
        .await;
    for (code, bundle, status) in cases {
        let (got, body) = server.upload("site", bundle).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    let after = (
        snapshot(&server.data_dir.join("objects")),
        snapshot(&server.data_dir.join("artifacts")),
    );
    assert!(
        before == after,
        "a refused deploy wrote to the object store or the artifact cache"
    );
    let (_, deployments_after) = server
        .admin("GET", "/v1/projects/site/deployments", None)
        .await;
    assert_eq!(deployments_before, deployments_after);
    assert_eq!(
        server.get("site.localhost", "/index.html").await.text(),
        "v1"
    );
    assert!(
        std::fs::read_dir(server.data_dir.join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "scratch files are removed"
    );
    // Deploying to a project that does not exist is a 404, not a 400; the
    // body was never read, so the connection is not reused.
    let request = http::Request::post(format!(
        "http://{}/v1/projects/nope/deployments",
        server.admin
    ))
    .header("authorization", format!("Bearer {TOKEN}"))
    .body(http_body_util::Full::new(bytes::Bytes::from(tar(&[(
        "switchyard.toml",
        b"",
    )]))))
    .unwrap();
    let reply = send(request).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.headers["connection"], "close");
}

#[tokio::test]
async fn a_project_created_again_under_a_deleted_id_starts_empty() {
    let server = TestServer::start().await;
    server.deploy_component("blog", artifacts::HOSTILE).await;
    assert_eq!(
        server.get("blog.localhost", "/log-flood?kb=1").await.status,
        200
    );
    server.deploy_component("blog", artifacts::COUNTER).await;
    for n in 1..=2 {
        let visits = server.get("blog.localhost", "/visits/home").await.json();
        assert_eq!(visits["visits"], n, "{visits}");
    }
    let (_, logs) = server.admin("GET", "/v1/projects/blog/logs", None).await;
    assert!(!logs["data"]["records"].as_array().unwrap().is_empty());

    let (status, _) = server.admin("DELETE", "/v1/projects/blog", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server.get("blog.localhost", "/").await.code(),
        "HOST_NOT_FOUND"
    );

    // Another tenant gets the id: none of the first one's kv data or log.
    server.deploy_component("blog", artifacts::COUNTER).await;
    let visits = server.get("blog.localhost", "/visits/home").await.json();
    assert_eq!(visits["visits"], 1, "{visits}");
    let (_, logs) = server.admin("GET", "/v1/projects/blog/logs", None).await;
    assert_eq!(logs["data"]["records"], serde_json::json!([]), "{logs}");
}

#[tokio::test]
async fn concurrent_deploys_to_one_project_one_wins_the_other_gets_409() {
    let server = TestServer::start().await;
    server
        .admin(
            "POST",
            "/v1/projects",
            Some(serde_json::json!({ "id": "busy" })),
        )
        .await;
    let bundle = component_bundle(artifacts::HELLO, "");

    // The first upload trickles in, holding the project's deploy lease.
    let first = begin_upload(server.admin, "busy", &bundle, 1024);
    until("the first upload is being spooled", || {
        scratch_bytes(&server.data_dir) > 0
    })
    .await;
    let (status, body) = server.upload("busy", bundle.clone()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("DEPLOY_IN_PROGRESS"))
    );

    let first = first.finish().await;
    assert_eq!(first.await.unwrap().unwrap(), StatusCode::CREATED);
    assert_eq!(
        server.get("busy.localhost", "/").await.text(),
        "Hello from Switchyard!\n"
    );
    // The lease is released: the next deploy goes through.
    assert_eq!(server.upload("busy", bundle).await.0, StatusCode::CREATED);
}

/// Garbage collection and deploys exclude each other through the control
/// store, as they would across nodes sharing object storage: objects of
/// pruned builds go, never while a deploy (of any node) is storing objects,
/// and a deploy waits for a collection to end.
#[tokio::test]
async fn garbage_collection_and_deploys_exclude_each_other_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.deploy.retained_builds = 1;
    let server = TestServer::start_with(config).await;
    let node = server.node();
    let site = |text: &str| {
        tar(&[
            ("switchyard.toml", b""),
            ("assets/index.html", text.as_bytes()),
        ])
    };
    let objects = || async {
        node.blobs
            .objects_older_than(std::time::Duration::ZERO)
            .await
            .unwrap()
            .len()
    };

    assert_eq!(
        server.deploy("gc", site("first")).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        server.deploy("gc", site("second")).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        objects().await,
        2,
        "the pruned build's asset is still stored"
    );

    // Another node's deploy is storing objects: nothing is collected.
    node.store
        .begin_object_writes("other-node:1:deploy", 60_000)
        .await
        .unwrap();
    let gc = node
        .deployer
        .collect_garbage_older_than(std::time::Duration::ZERO);
    assert_eq!(gc.await.unwrap(), 0);
    assert_eq!(objects().await, 2);
    node.store
        .end_object_writes("other-node:1:deploy")
        .await
        .unwrap();
    let gc = node
        .deployer
        .collect_garbage_older_than(std::time::Duration::ZERO);
    assert_eq!(gc.await.unwrap(), 1);
    assert_eq!(objects().await, 1);
    assert_eq!(server.get("gc.localhost", "/").await.text(), "second");

    // Another node is collecting: a deploy waits for it, then lands.
    node.store
        .begin_collection("other-node:1:gc", 60_000)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        node.store.end_collection("other-node:1:gc").await.unwrap();
    };
    let ((status, build), ()) = tokio::join!(server.deploy("gc", site("third")), release);
    assert_eq!(status, StatusCode::CREATED, "{build}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(500));
    assert_eq!(server.get("gc.localhost", "/").await.text(), "third");
}
