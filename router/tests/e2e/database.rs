//! The gateway database end to end: the `todo-api` example's guest doing
//! CRUD over its declared table, migrations at deploy (additive, refused,
//! failed, destructive with the flag, rollback), and a deleted project's
//! data going with it.

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use switchyard_test_artifacts as artifacts;

/// The example's own manifest.
fn todo_manifest() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/todo-api/switchyard.toml"
    );
    std::fs::read_to_string(path).unwrap()
}

fn todo_bundle(manifest: &str) -> Vec<u8> {
    component_bundle(artifacts::TODO_API, manifest)
}

async fn send_json(
    server: &TestServer,
    host: &str,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> Reply {
    let builder = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    server
        .public_send(host, builder, Bytes::from(body.to_string()))
        .await
}

async fn active_build(server: &TestServer, project: &str) -> String {
    let (_, body) = server
        .admin("GET", &format!("/v1/projects/{project}"), None)
        .await;
    body["data"]["activeBuild"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn todo_api_does_crud_through_its_guest() {
    let server = TestServer::start().await;
    let (status, body) = server.deploy("todos", todo_bundle(&todo_manifest())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let host = "todos.localhost";

    let created = send_json(
        &server,
        host,
        "POST",
        "/api/todos",
        serde_json::json!({ "title": "it's; DROP TABLE todos; --", "owner_email": "a@example.com" }),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let todo = created.json();
    let id = todo["id"].as_i64().unwrap();
    assert_eq!(
        todo["title"], "it's; DROP TABLE todos; --",
        "bound, never spliced"
    );
    assert_eq!(todo["done"], false, "the declared default, as a boolean");
    assert_eq!(
        todo["owner_email"], "a@example.com",
        "the guest sees every column"
    );
    assert_eq!(todo["created_at"].as_str().unwrap().len(), 24);

    let second = send_json(
        &server,
        host,
        "POST",
        "/api/todos",
        serde_json::json!({ "title": "two" }),
    )
    .await
    .json();
    let changed = send_json(
        &server,
        host,
        "PATCH",
        &format!("/api/todos/{id}"),
        serde_json::json!({ "done": true }),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    assert_eq!(changed.json()["done"], true);

    let all = server.get(host, "/api/todos").await.json();
    let ids: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [second["id"].as_i64().unwrap(), id], "newest first");
    let open = server.get(host, "/api/todos?done=false").await.json();
    assert_eq!(open.as_array().unwrap().len(), 1);
    assert_eq!(
        server.get(host, &format!("/api/todos/{id}")).await.json()["done"],
        true
    );

    // A batch with a bad entry (no title: not null) stores nothing.
    let failed = send_json(
        &server,
        host,
        "POST",
        "/api/todos/import",
        serde_json::json!([{ "title": "a" }, { "owner_email": "no title" }]),
    )
    .await;
    assert_eq!(failed.status, StatusCode::BAD_REQUEST, "{}", failed.text());
    let failed = send_json(
        &server,
        host,
        "POST",
        "/api/todos/import",
        serde_json::json!([{ "title": "a" }, { "title": "b" }, { "title": null }]),
    )
    .await;
    assert_eq!(failed.status, StatusCode::BAD_REQUEST, "{}", failed.text());
    assert_eq!(
        server
            .get(host, "/api/todos")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let imported = send_json(
        &server,
        host,
        "POST",
        "/api/todos/import",
        serde_json::json!([{ "title": "a" }, { "title": "b" }]),
    )
    .await;
    assert_eq!(imported.status, StatusCode::CREATED, "{}", imported.text());
    assert_eq!(imported.json()["imported"], 2);

    let cleared = send_json(
        &server,
        host,
        "POST",
        "/api/todos/done/clear",
        serde_json::json!({}),
    )
    .await
    .json();
    assert_eq!(cleared["deleted"], 1);
    let deleted = server
        .public_request(
            host,
            Request::delete(format!("/api/todos/{}", second["id"])),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = server.get(host, &format!("/api/todos/{id}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(
        server
            .get(host, "/api/todos")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn migrations_run_at_deploy_and_a_refused_or_failed_one_changes_nothing() {
    let server = TestServer::start().await;
    let host = "shop.localhost";
    let manifest = todo_manifest();
    assert_eq!(
        server.deploy("shop", todo_bundle(&manifest)).await.0,
        StatusCode::CREATED
    );
    for title in ["one", "two"] {
        let reply = send_json(
            &server,
            host,
            "POST",
            "/api/todos",
            serde_json::json!({ "title": title }),
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let first_build = active_build(&server, "shop").await;

    // Additive: a new column with a default, and an index.
    let wider = manifest.replace(
        "  # Kept from browsers",
        "  { name = \"priority\", type = \"integer\", default = { value = 3 }, client_read = true },\n  # Kept from browsers",
    );
    assert_ne!(wider, manifest);
    let (status, body) = server.upload("shop", todo_bundle(&wider)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let second_build = active_build(&server, "shop").await;
    assert_eq!(
        server
            .get(host, "/api/todos")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2,
        "rows kept"
    );

    // Dropping a column without the flag: refused, the build stays.
    let narrower = manifest.replace(
        "  { name = \"owner_email\", type = \"text\", nullable = true, sensitive = true },\n",
        "",
    );
    assert_ne!(narrower, manifest);
    let (status, body) = server.upload("shop", todo_bundle(&narrower)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "MIGRATION_REFUSED");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("allow_destructive_migrations"),
        "{message}"
    );
    assert_eq!(active_build(&server, "shop").await, second_build);

    // A changed column type: refused.
    let retyped = wider.replace(
        "{ name = \"title\", type = \"text\"",
        "{ name = \"title\", type = \"json\"",
    );
    assert_ne!(retyped, wider);
    let (status, body) = server.upload("shop", todo_bundle(&retyped)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("MIGRATION_REFUSED"))
    );

    // A unique index over duplicate values: the database refuses, the
    // whole migration (the new table before it included) is rolled back.
    let failing = format!(
        "{}\n[[tables]]\nname = \"extra\"\ncolumns = [{{ name = \"x\", type = \"integer\" }}]\n",
        wider.replace(
            "indexes = [{ columns = [\"done\", \"id\"] }]",
            "indexes = [{ columns = [\"done\", \"id\"] }, { columns = [\"done\"], unique = true }]",
        )
    );
    let (status, body) = server.upload("shop", todo_bundle(&failing)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "MIGRATION_FAILED");
    assert_eq!(active_build(&server, "shop").await, second_build);
    assert_eq!(
        server.get(host, "/api/todos").await.status,
        StatusCode::OK,
        "the old build serves"
    );
    let (status, body) = server.upload("shop", todo_bundle(&wider)).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "nothing of the failed migration stayed: {body}"
    );

    // With the flag, the column goes.
    let destructive = format!("allow_destructive_migrations = true\n{narrower}");
    let (status, body) = server.upload("shop", todo_bundle(&destructive)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let listed = server.get(host, "/api/todos").await;
    assert_eq!(
        (listed.status, listed.json()["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("COLUMN_NOT_FOUND")),
        "the guest still selects owner_email, which this build no longer declares"
    );

    // Rolling back to the first build brings the column back (empty) and
    // drops nothing.
    let (status, body) = server
        .admin(
            "POST",
            "/v1/projects/shop/rollback",
            Some(serde_json::json!({ "build": first_build })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let todos = server.get(host, "/api/todos").await;
    assert_eq!(todos.status, StatusCode::OK, "{}", todos.text());
    let todos = todos.json();
    assert_eq!(todos.as_array().unwrap().len(), 2);
    assert!(todos[0]["owner_email"].is_null());
}

#[tokio::test]
async fn a_deleted_project_takes_its_database_along() {
    let server = TestServer::start().await;
    let host = "gone.localhost";
    server.deploy("gone", todo_bundle(&todo_manifest())).await;
    send_json(
        &server,
        host,
        "POST",
        "/api/todos",
        serde_json::json!({ "title": "x" }),
    )
    .await;
    let db_file = server.data_dir.join("db/gone.db");
    assert!(db_file.exists());
    let (status, _) = server.admin("DELETE", "/v1/projects/gone", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!db_file.exists());

    server.deploy("gone", todo_bundle(&todo_manifest())).await;
    assert_eq!(
        server.get(host, "/api/todos").await.json(),
        serde_json::json!([])
    );
}
