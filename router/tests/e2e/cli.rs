//! The `switchyard` command line against a running server.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use switchyard_test_artifacts as artifacts;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Runs the CLI in `cwd` against `server` with the admin token (from the
/// environment), plus `envs`.
async fn switchyard(
    server: &TestServer,
    cwd: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Output {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(args)
        .current_dir(cwd)
        .env("SWITCHYARD_URL", format!("http://{}", server.admin))
        .env("SWITCHYARD_TOKEN", TOKEN)
        .env_remove("SWITCHYARD_CLI_CONFIG")
        .env("HOME", cwd)
        .kill_on_drop(true);
    for (name, value) in envs {
        command.env(name, value);
    }
    command.output().await.unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        stderr(output),
        stdout(output)
    );
    stdout(output)
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[tokio::test]
async fn the_cli_deploys_apps_and_prints_their_urls() {
    let server = TestServer::start().await;
    let cwd = tempfile::tempdir().unwrap();
    let port = server.public.port();

    // An asset-only app: the project is created on first deploy.
    let site = examples().join("static-site");
    let out = succeeded(
        &switchyard(
            &server,
            cwd.path(),
            &["deploy", site.to_str().unwrap()],
            &[],
        )
        .await,
    );
    assert!(
        out.contains(&format!("http://static-site.localhost:{port}/")),
        "{out}"
    );
    assert!(
        server
            .get("static-site.localhost", "/")
            .await
            .text()
            .contains("<h1>static-site</h1>")
    );

    // An app whose component is built elsewhere: `[build] component`.
    let app = cwd.path().join("prebuilt");
    std::fs::create_dir_all(app.join("assets")).unwrap();
    std::fs::write(app.join("assets/notes.txt"), "notes").unwrap();
    let manifest = format!(
        "project = \"prebuilt\"\n[build]\ncomponent = {:?}\n",
        artifacts::HELLO
    );
    std::fs::write(app.join("switchyard.toml"), manifest).unwrap();
    let out = succeeded(&switchyard(&server, cwd.path(), &["deploy", "prebuilt"], &[]).await);
    assert!(
        out.contains(&format!("http://prebuilt.localhost:{port}/")),
        "{out}"
    );
    assert_eq!(
        server.get("prebuilt.localhost", "/").await.text(),
        "Hello from Switchyard!\n"
    );
    assert_eq!(
        server.get("prebuilt.localhost", "/notes.txt").await.text(),
        "notes"
    );

    // `build` packs a bundle; `deploy --bundle` uploads one as it is.
    let out = succeeded(
        &switchyard(
            &server,
            cwd.path(),
            &["build", "prebuilt", "--out", "packed.tar.gz"],
            &[],
        )
        .await,
    );
    assert_eq!(out.trim(), "built packed.tar.gz (component, 1 assets)");
    succeeded(
        &switchyard(
            &server,
            cwd.path(),
            &["deploy", "--bundle", "packed.tar.gz", "--project", "packed"],
            &[],
        )
        .await,
    );
    assert_eq!(
        server.get("packed.localhost", "/notes.txt").await.text(),
        "notes"
    );

    // `--project` wins over the manifest; `--json` prints the build.
    let out = succeeded(
        &switchyard(
            &server,
            cwd.path(),
            &["--json", "deploy", "prebuilt", "--project", "other"],
            &[],
        )
        .await,
    );
    let build: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(build["project"], "other");
    assert_eq!(
        server.get("other.localhost", "/").await.text(),
        "Hello from Switchyard!\n"
    );

    // A manifest the CLI can check itself is refused before uploading...
    std::fs::write(
        app.join("switchyard.toml"),
        "project = \"prebuilt\"\n[env]\nlower = \"x\"\n",
    )
    .unwrap();
    let failed = switchyard(&server, cwd.path(), &["deploy", "prebuilt"], &[]).await;
    assert!(!failed.status.success());
    assert!(
        stderr(&failed).contains("`lower`: env names must match"),
        "{}",
        stderr(&failed)
    );
    // ...and what only the server can check comes back with its code.
    let core = cwd.path().join("core.wasm");
    std::fs::write(&core, artifacts::wat("core-module", &[])).unwrap();
    let manifest = format!("project = \"prebuilt\"\n[build]\ncomponent = {core:?}\n");
    std::fs::write(app.join("switchyard.toml"), manifest).unwrap();
    let failed = switchyard(&server, cwd.path(), &["deploy", "prebuilt"], &[]).await;
    assert!(!failed.status.success());
    assert!(
        stderr(&failed).contains("COMPONENT_INVALID"),
        "{}",
        stderr(&failed)
    );
    assert_eq!(
        server.get("prebuilt.localhost", "/").await.text(),
        "Hello from Switchyard!\n",
        "still serving"
    );
    // Nothing to deploy at all.
    let empty = cwd.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("switchyard.toml"), "project = \"empty\"\n").unwrap();
    let failed = switchyard(&server, cwd.path(), &["deploy", "empty"], &[]).await;
    assert!(
        stderr(&failed).contains("nothing to deploy"),
        "{}",
        stderr(&failed)
    );
}

#[tokio::test]
async fn the_cli_manages_projects_env_hostnames_tokens_and_logs() {
    let server = TestServer::start().await;
    let cwd = tempfile::tempdir().unwrap();
    let dir = cwd.path();
    server.deploy_component("shop", artifacts::HOSTILE).await;
    let run = |args: &'static [&'static str]| {
        let server = &server;
        async move { succeeded(&switchyard(server, dir, args, &[]).await) }
    };

    assert!(run(&["projects", "list"]).await.contains("shop"));
    run(&["projects", "create", "spare"]).await;
    let projects: serde_json::Value =
        serde_json::from_str(&run(&["--json", "projects", "list"]).await).unwrap();
    assert_eq!(projects.as_array().unwrap().len(), 2);

    run(&["env", "set", "shop", "MODE=live", "REGION=eu"]).await;
    run(&["env", "set", "shop", "--secret", "API_KEY=hunter2"]).await;
    let env = run(&["env", "list", "shop"]).await;
    assert!(
        env.contains("MODE=live") && env.contains("API_KEY  (secret)"),
        "{env}"
    );
    assert!(!env.contains("hunter2"));
    assert_eq!(
        server.get("shop.localhost", "/env").await.json()["API_KEY"],
        "hunter2"
    );
    run(&["env", "unset", "shop", "REGION"]).await;
    assert!(!run(&["env", "list", "shop"]).await.contains("REGION"));

    run(&["hostnames", "add", "shop", "www.shop.example"]).await;
    assert_eq!(
        run(&["hostnames", "list", "shop"]).await.trim(),
        "www.shop.example"
    );
    assert_eq!(server.get("www.shop.example", "/ok").await.text(), "ok");
    run(&["hostnames", "remove", "shop", "www.shop.example"]).await;

    run(&["suspend", "shop"]).await;
    assert_eq!(
        server.get("shop.localhost", "/ok").await.code(),
        "PROJECT_SUSPENDED"
    );
    run(&["resume", "shop"]).await;
    assert_eq!(server.get("shop.localhost", "/ok").await.text(), "ok");

    server.get("shop.localhost", "/sleep?ms=1").await;
    let logs = run(&["logs", "shop"]).await;
    assert!(logs.contains("stdout sleeping"), "{logs}");

    // A deploy token from the CLI deploys with the CLI, and only there.
    let token = run(&["tokens", "create", "shop", "ci"]).await;
    let token = token.lines().next().unwrap().to_owned();
    assert!(token.starts_with("syd_"), "{token}");
    assert!(run(&["tokens", "list", "shop"]).await.contains("ci"));
    let app = dir.join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("switchyard.toml"),
        format!("[build]\ncomponent = {:?}\n", artifacts::PLAIN_PROXY),
    )
    .unwrap();
    let with_token = [("SWITCHYARD_TOKEN", token.as_str())];
    succeeded(
        &switchyard(
            &server,
            dir,
            &["deploy", "app", "--project", "shop"],
            &with_token,
        )
        .await,
    );
    assert!(
        server
            .get("shop.localhost", "/")
            .await
            .text()
            .starts_with("plain proxy saw")
    );
    let refused = switchyard(
        &server,
        dir,
        &["deploy", "app", "--project", "spare"],
        &with_token,
    )
    .await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("project `spare` does not exist"),
        "{}",
        stderr(&refused)
    );

    // History and rollback.
    let history = run(&["deployments", "shop"]).await;
    assert_eq!(history.lines().count(), 2, "{history}");
    assert!(history.lines().next().unwrap().ends_with("(active)"));
    run(&["rollback", "shop"]).await;
    assert_eq!(server.get("shop.localhost", "/ok").await.text(), "ok");

    // Credentials from a CLI config file, and a wrong token.
    let config = dir.join("cli.toml");
    std::fs::write(
        &config,
        format!(
            "server = \"http://{}\"\ntoken = \"{TOKEN}\"\n",
            server.admin
        ),
    )
    .unwrap();
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(["--cli-config", config.to_str().unwrap(), "projects", "list"])
        .current_dir(dir)
        .env_remove("SWITCHYARD_URL")
        .env_remove("SWITCHYARD_TOKEN");
    assert!(succeeded(&command.output().await.unwrap()).contains("shop"));
    let wrong = switchyard(
        &server,
        dir,
        &["projects", "list"],
        &[("SWITCHYARD_TOKEN", "sya_wrong")],
    )
    .await;
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("UNAUTHORIZED"),
        "{}",
        stderr(&wrong)
    );
}

#[tokio::test]
async fn the_cli_lists_every_page() {
    let server = TestServer::start().await;
    let cwd = tempfile::tempdir().unwrap();
    // More projects than one page of the API holds (200).
    for i in 0..230 {
        let body = serde_json::json!({ "id": format!("p{i:03}") });
        let (status, _) = server.admin("POST", "/v1/projects", Some(body)).await;
        assert_eq!(status, 201);
    }
    let out = switchyard(&server, cwd.path(), &["--json", "projects", "list"], &[]).await;
    let projects: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    let ids: std::collections::BTreeSet<&str> = projects
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 230);
    assert!(ids.contains("p000") && ids.contains("p229"));
}

#[tokio::test]
async fn the_cli_reports_an_unreachable_server_and_checks_components() {
    let server = TestServer::start().await;
    let cwd = tempfile::tempdir().unwrap();
    // Nothing listens on port 9 of loopback.
    let down = switchyard(
        &server,
        cwd.path(),
        &["projects", "list"],
        &[("SWITCHYARD_URL", "http://127.0.0.1:9")],
    )
    .await;
    assert!(!down.status.success());
    assert!(stderr(&down).contains("127.0.0.1:9"), "{}", stderr(&down));

    let ok = switchyard(&server, cwd.path(), &["check", artifacts::HELLO], &[]).await;
    assert!(succeeded(&ok).contains("is a valid Switchyard app"));
    let core = cwd.path().join("core.wasm");
    std::fs::write(&core, artifacts::wat("core-module", &[])).unwrap();
    let refused = switchyard(&server, cwd.path(), &["check", core.to_str().unwrap()], &[]).await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("COMPONENT_INVALID"),
        "{}",
        stderr(&refused)
    );
}

/// `switchyard new` makes an app that builds and deploys as it is.
#[tokio::test]
async fn a_new_app_builds_and_deploys() {
    let server = TestServer::start().await;
    let cwd = tempfile::tempdir().unwrap();
    succeeded(&switchyard(&server, cwd.path(), &["new", "fresh"], &[]).await);
    // The workspace's lock file pins the same dependency versions the
    // workspace tests with; a target directory of its own keeps this build
    // out of the way of the one running the tests.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::copy(root.join("Cargo.lock"), cwd.path().join("fresh/Cargo.lock")).unwrap();
    let target = Path::new(BIN)
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("new-apps");
    let envs = [("CARGO_TARGET_DIR", target.to_str().unwrap())];
    let out = succeeded(&switchyard(&server, cwd.path(), &["deploy", "fresh"], &envs).await);
    assert!(out.contains("http://fresh.localhost:"), "{out}");
    let reply = server.get("fresh.localhost", "/").await;
    assert_eq!(reply.status, http::StatusCode::OK, "{}", reply.text());
    assert_eq!(
        server.get("fresh.localhost", "/count").await.text(),
        "this page was seen 1 times\n"
    );
    assert!(
        server
            .get("fresh.localhost", "/about.html")
            .await
            .text()
            .contains("fresh")
    );

    let again = switchyard(&server, cwd.path(), &["new", "fresh"], &[]).await;
    assert!(stderr(&again).contains("exists already"));
    let bad = switchyard(&server, cwd.path(), &["new", "Bad_Name"], &[]).await;
    assert!(
        stderr(&bad).contains("cannot be a project name"),
        "{}",
        stderr(&bad)
    );
}
