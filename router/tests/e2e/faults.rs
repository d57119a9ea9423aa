//! Faults below the server: an object store that fails, stalls or hangs
//! (injected by wrapping the real one), a process killed at each step of a
//! deploy, and a database server killed and restarted. What must hold: clients get a 503 they can retry, never a
//! hang; a deploy either commits whole or leaves the previous build
//! serving; leftovers are collected; it all recovers without a restart.

use crate::common::*;
use crate::process::ServeProcess as Process;
use async_trait::async_trait;
use futures::stream::BoxStream;
use http::StatusCode;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::blobs::ObjectStoreLayer;
use switchyard::node::NodeOptions;
use switchyard_test_artifacts as artifacts;
use switchyard_test_services::Postgres;

/// What the wrapped store does to every read and write.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    /// Fails at once, as an unreachable or erroring store would.
    Fail,
    /// Answers after this long.
    Delay(Duration),
    /// Never answers.
    Hang,
}

/// The real store, with a fault switched on and off by the test.
#[derive(Debug)]
struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    fault: Arc<Mutex<Fault>>,
}

impl std::fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

impl FaultyStore {
    async fn inject(&self) -> object_store::Result<()> {
        let fault = *self.fault.lock().unwrap();
        match fault {
            Fault::None => Ok(()),
            Fault::Fail => Err(object_store::Error::Generic {
                store: "faulty",
                source: "injected failure".into(),
            }),
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Fault::Hang => std::future::pending().await,
        }
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inject().await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inject().await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inject().await?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inject().await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inject().await?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// A site with a small asset (kept in the memory cache once read), a large
/// one (streamed from the store every time) and one never read before the
/// store fails.
fn site(version: &str) -> Vec<u8> {
    let big = version.repeat(64 * 1024 / version.len());
    tar(&[
        ("switchyard.toml", b""),
        ("assets/small.txt", format!("small {version}").as_bytes()),
        ("assets/big.txt", big.as_bytes()),
        ("assets/unread.txt", format!("unread {version}").as_bytes()),
    ])
}

async fn deployments(server: &TestServer, project: &str) -> usize {
    let (_, builds) = server
        .admin("GET", &format!("/v1/projects/{project}/deployments"), None)
        .await;
    builds["data"].as_array().unwrap().len()
}

async fn canary_served(server: &TestServer) {
    let reply = server.get("canary.localhost", "/").await;
    assert_eq!(reply.status, StatusCode::OK, "the canary: {}", reply.text());
}

/// A 503 a client may retry, answered within the store deadline.
fn assert_retryable(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {}",
        reply.text()
    );
    assert_eq!(reply.code(), "UNAVAILABLE", "{what}");
    assert_eq!(reply.headers["retry-after"], "1", "{what}");
    assert!(
        !reply.text().contains("injected") && !reply.text().contains('/'),
        "{what}: the store's detail stays in the operator log: {}",
        reply.text()
    );
}

#[tokio::test]
async fn object_store_failures_and_stalls_answer_503_and_deploys_fail_cleanly() {
    let fault = Arc::new(Mutex::new(Fault::None));
    let layer: ObjectStoreLayer = {
        let fault = fault.clone();
        Arc::new(move |inner| {
            Arc::new(FaultyStore {
                inner,
                fault: fault.clone(),
            })
        })
    };
    let set = |f: Fault| *fault.lock().unwrap() = f;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.storage.objects_timeout_ms = 500;
    config.assets.max_cached_asset_bytes = 1024;
    let mut server = TestServer::start_with_options(
        config,
        NodeOptions {
            object_store_layer: Some(layer),
        },
    )
    .await;
    server.keep(dir);
    server.deploy_component("canary", artifacts::HELLO).await;
    assert_eq!(
        server.deploy("site", site("v1")).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        server.get("site.localhost", "/small.txt").await.text(),
        "small v1"
    );
    assert_eq!(
        server.get("site.localhost", "/big.txt").await.body.len(),
        64 * 1024
    );

    // The store fails.
    set(Fault::Fail);
    assert_retryable(
        &server.get("site.localhost", "/big.txt").await,
        "a streamed asset",
    );
    assert_retryable(
        &server.get("site.localhost", "/unread.txt").await,
        "an uncached asset",
    );
    assert_eq!(
        server.get("site.localhost", "/small.txt").await.text(),
        "small v1",
        "a cached asset is served from memory"
    );
    let (status, body) = server.deploy("site", site("v2")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "UNAVAILABLE");
    assert_eq!(
        deployments(&server, "site").await,
        1,
        "no build from the failed deploy"
    );
    assert_eq!(
        scratch_bytes(&server.data_dir),
        0,
        "its scratch files are gone"
    );
    canary_served(&server).await;

    // The store is slow, within its deadline: served, late.
    set(Fault::Delay(Duration::from_millis(200)));
    let started = Instant::now();
    let reply = server.get("site.localhost", "/big.txt").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(200));

    // The store hangs: the deadline answers, for clients and deploys.
    set(Fault::Hang);
    let started = Instant::now();
    assert_retryable(
        &server.get("site.localhost", "/big.txt").await,
        "a hung read",
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(3),
        "answered after {waited:?}, the deadline is 500 ms"
    );
    let started = Instant::now();
    let (status, _) = server.deploy("site", site("v3")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        server.get("site.localhost", "/small.txt").await.text(),
        "small v1"
    );
    canary_served(&server).await;

    // The store is back: everything works again, no restart.
    set(Fault::None);
    assert_eq!(
        server.deploy("site", site("v4")).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        server.get("site.localhost", "/small.txt").await.text(),
        "small v4"
    );
    assert_eq!(
        server.get("site.localhost", "/unread.txt").await.text(),
        "unread v4"
    );
    let big = server.get("site.localhost", "/big.txt").await;
    assert_eq!(big.status, StatusCode::OK);
    assert!(big.text().starts_with("v4v4"));
    assert_eq!(deployments(&server, "site").await, 2);
    canary_served(&server).await;
    server.assert_back_to_baseline().await;
}

/// A bundle whose asset and table are new at `step`, and whose component
/// alternates between two.
fn step_bundle(step: usize) -> Vec<u8> {
    let component = artifacts::read(if step.is_multiple_of(2) {
        artifacts::HELLO
    } else {
        artifacts::PLAIN_PROXY
    });
    // Every earlier step's table too: a table a crashed deploy added stays,
    // and a later deploy that left it out would be refused.
    let manifest: String = (0..=step)
        .map(|t| {
            format!(
                "[[tables]]\nname = \"t{t}\"\ncolumns = [{{ name = \"id\", type = \"integer\", primary_key = true }}]\n"
            )
        })
        .collect();
    tar(&[
        ("switchyard.toml", manifest.as_bytes()),
        ("app.wasm", &component),
        ("assets/version.txt", format!("v{step}").as_bytes()),
    ])
}

/// Every object under `<data>/objects`, by the key builds refer to it by.
fn stored_objects(data: &std::path::Path) -> BTreeSet<String> {
    snapshot(&data.join("objects"))
        .into_iter()
        .map(|(path, _)| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            name.strip_suffix(".wasm").unwrap_or(&name).to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_deploy_killed_at_each_step_leaves_the_old_build_or_the_whole_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Process::start(&data).await;
    assert_eq!(
        server.deploy("app", step_bundle(0)).await,
        StatusCode::CREATED
    );
    server.kill9().await;

    let points = [
        "deploy.received",
        "deploy.compiled",
        "deploy.stored",
        "deploy.migrated",
        "deploy.committed",
    ];
    for (index, point) in points.into_iter().enumerate() {
        let step = index + 1;
        let mut server = Process::start_with(
            &data,
            &[(switchyard::crash_point::CRASH_AT_VAR, point.to_owned())],
        )
        .await;
        let bundle = step_bundle(step);
        let upload = begin_upload(server.admin, "app", &bundle, 0).finish().await;
        let status = tokio::time::timeout(Duration::from_secs(60), server.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the server did not crash at {point}"))
            .unwrap();
        assert!(!status.success(), "{point}: {status}");
        assert!(
            upload.await.unwrap().is_err(),
            "{point}: no answer from a crashed server"
        );

        let server = Process::start(&data).await;
        let (_, builds) = server
            .admin("GET", "/v1/projects/app/deployments", None)
            .await;
        let builds = builds["data"].as_array().unwrap().clone();
        let (_, project) = server.admin("GET", "/v1/projects/app", None).await;
        let served = server.get("app.localhost", "/version.txt").await.text();
        if point == "deploy.committed" {
            assert_eq!(served, format!("v{step}"), "{point}: the new build serves");
            assert_eq!(builds.len(), 2, "{point}: {builds:?}");
            assert_eq!(project["data"]["activeBuild"], builds[0]["id"]);
            assert!(
                server
                    .get("app.localhost", "/")
                    .await
                    .text()
                    .starts_with("plain proxy saw /"),
                "{point}: the new build's component serves"
            );
        } else {
            assert_eq!(served, "v0", "{point}: the previous build serves");
            assert_eq!(
                builds.len(),
                1,
                "{point}: no half-written build: {builds:?}"
            );
            assert_eq!(
                server.get("app.localhost", "/").await.text(),
                "Hello from Switchyard!\n",
                "{point}: the previous build's component serves"
            );
        }
        assert_eq!(project["data"]["activeBuild"], builds[0]["id"]);
        assert_eq!(scratch_bytes(&data), 0, "{point}: scratch files are gone");
        server.kill9().await;
    }

    // What the interrupted deploys stored is collected; what the two
    // committed builds use stays, and they still serve.
    let before = stored_objects(&data);
    let server = TestServer::start_with(config(&data)).await;
    let referenced: BTreeSet<String> = server
        .node()
        .store
        .referenced_objects()
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        before.len() > referenced.len(),
        "the interrupted deploys left objects: {before:?}"
    );
    let deleted = server
        .node()
        .deployer
        .collect_garbage_older_than(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(deleted, before.len() - referenced.len());
    assert_eq!(stored_objects(&data), referenced);
    assert_eq!(
        server.get("app.localhost", "/version.txt").await.text(),
        "v5"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_server_that_goes_away_answers_db_unavailable_then_comes_back() {
    let mut postgres = Postgres::start_durable();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.storage.db = Some(postgres.url());
    let mut server = TestServer::start_with(config).await;
    server.keep(dir);
    server.deploy_component("canary", artifacts::HELLO).await;
    let (status, body) = server.deploy("todos", todo_api_bundle()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let add = |title: &'static str| {
        server.post_json(
            "todos.localhost",
            "/api/todos",
            serde_json::json!({ "title": title }),
        )
    };
    assert_eq!(add("before").await.status, StatusCode::CREATED);

    tokio::task::block_in_place(|| postgres.kill());
    for _ in 0..3 {
        let started = Instant::now();
        let reply = server.get("todos.localhost", "/api/todos").await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.text()
        );
        assert_eq!(reply.code(), "DB_UNAVAILABLE");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a bounded wait: {:?}",
            started.elapsed()
        );
        let write = add("while down").await;
        assert_eq!(write.code(), "DB_UNAVAILABLE", "{}", write.text());
        canary_served(&server).await;
    }

    tokio::task::block_in_place(|| postgres.restart());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = server.get("todos.localhost", "/api/todos").await;
        if reply.status == StatusCode::OK {
            let titles: Vec<String> = reply
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["title"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(titles, ["before"], "nothing written while it was down");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not back 30 s after the restart: {}",
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(add("after").await.status, StatusCode::CREATED);
    server.assert_back_to_baseline().await;
}

/// A tmpfs of a few MiB on a fresh directory, so the test can fill it;
/// unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts it; `None` where mounting needs a privilege the test lacks.
    fn mount(size_mib: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_mib}m,mode=0700"))
            .arg("switchyard-test")
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(SmallDisk { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a ballast file until at most `leave` bytes are free.
    fn fill(&self, leave: u64) {
        use std::io::Write;
        let mut ballast = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("ballast"))
            .unwrap();
        let chunk = vec![0xa5u8; 64 * 1024];
        loop {
            let free = switchyard_runtime::disk::free_bytes(self.path()).unwrap();
            if free <= leave {
                return;
            }
            let n = usize::try_from(free - leave).unwrap().min(chunk.len());
            match ballast.write_all(&chunk[..n]) {
                Ok(()) => {}
                Err(e) if switchyard_runtime::disk::is_full(&e) => return,
                Err(e) => panic!("writing the ballast: {e}"),
            }
        }
    }

    /// Frees the space [`Self::fill`] took.
    fn empty(&self) {
        std::fs::remove_file(self.path().join("ballast")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_deploys_and_writes_cleanly_and_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount(64) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "mounting a tmpfs needs root, which CI has"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let data = disk.path().join("data");
    let server = TestServer::start_with(config(&data)).await;
    server.deploy_component("canary", artifacts::HELLO).await;
    server.deploy_component("app", artifacts::HELLO).await;
    server.deploy_component("counter", artifacts::COUNTER).await;
    let (status, body) = server.deploy("todos", todo_api_bundle()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let add_todo = |title: String| {
        server.post_json(
            "todos.localhost",
            "/api/todos",
            serde_json::json!({ "title": title }),
        )
    };
    let put_flash = |kib: usize| {
        let server = &server;
        async move {
            let builder = http::Request::builder().method("PUT").uri("/flash");
            let body = bytes::Bytes::from(vec![b'f'; kib * 1024]);
            server.public_send("counter.localhost", builder, body).await
        }
    };
    let mut rows = Vec::new();
    let before = add_todo("before".into()).await;
    assert_eq!(before.status, StatusCode::CREATED);
    rows.push(before.json());
    let assert_app_unchanged = |builds: usize| {
        let server = &server;
        async move {
            let reply = server.get("app.localhost", "/").await;
            assert_eq!(
                reply.text(),
                "Hello from Switchyard!\n",
                "the old build serves"
            );
            let (_, listed) = server
                .admin("GET", "/v1/projects/app/deployments", None)
                .await;
            assert_eq!(listed["data"].as_array().unwrap().len(), builds);
            assert_eq!(scratch_bytes(&server.data_dir), 0, "no scratch left");
        }
    };

    // Each phase leaves room for the steps before the one that must fail.
    let bundle = component_bundle(artifacts::HOSTILE, "");
    let refused_deploy = |leave: u64| {
        let (server, disk, bundle) = (&server, &disk, bundle.clone());
        async move {
            disk.fill(leave);
            let (status, body) = server.deploy("app", bundle).await;
            assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
            assert_eq!(body["error"]["code"], "STORAGE_FULL");
            assert!(
                !body.to_string().contains(disk.path().to_str().unwrap()),
                "{body}"
            );
            assert_app_unchanged(1).await;
            disk.empty();
        }
    };
    // Room for the deploy's lease, not for its upload.
    refused_deploy(128 * 1024).await;
    // Room for the upload, not for the compiled component.
    refused_deploy(bundle.len() as u64 + 128 * 1024).await;

    // Not a byte left.
    disk.fill(0);
    let (status, body) = server
        .deploy("app", component_bundle(artifacts::PLAIN_PROXY, ""))
        .await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_app_unchanged(1).await;

    // Database writes fail once the write-ahead log can grow no more: as
    // the database being unavailable, not as the tenant's quota.
    let title = "t".repeat(64 * 1024);
    let refused = 'writes: {
        for _ in 0..500 {
            let reply = add_todo(title.clone()).await;
            if reply.status != StatusCode::CREATED {
                break 'writes reply;
            }
            rows.push(reply.json());
        }
        panic!("500 rows of 64 KiB fit on a full 64 MiB disk");
    };
    assert_eq!(
        (refused.status, refused.code()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "DB_UNAVAILABLE".to_string()
        ),
        "{}",
        refused.text()
    );
    // The kv store the same.
    let refused = 'writes: {
        for _ in 0..500 {
            let reply = put_flash(256).await;
            if reply.status != StatusCode::NO_CONTENT {
                break 'writes reply;
            }
        }
        panic!("500 kv writes of 256 KiB fit on a full 64 MiB disk");
    };
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text()
    );
    canary_served(&server).await;
    assert_eq!(
        server
            .get("todos.localhost", "/api/todos?limit=1")
            .await
            .status,
        StatusCode::OK,
        "reads still work"
    );

    // Space comes back: everything works again, without a restart, and
    // every acknowledged row is there.
    disk.empty();
    let (status, body) = server
        .deploy("app", component_bundle(artifacts::PLAIN_PROXY, ""))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        server
            .get("app.localhost", "/")
            .await
            .text()
            .starts_with("plain proxy saw /")
    );
    assert_eq!(add_todo("after".into()).await.status, StatusCode::CREATED);
    assert_eq!(put_flash(1).await.status, StatusCode::NO_CONTENT);
    for row in &rows {
        let reply = server
            .get("todos.localhost", &format!("/api/todos/{}", row["id"]))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["title"], row["title"]);
    }
    canary_served(&server).await;
    assert_databases_intact(&data);
    server.assert_back_to_baseline().await;
}
