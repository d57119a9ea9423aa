//! The database gateway over HTTP: public and server API keys, keys that
//! open only their own project, sensitive columns refused in every clause,
//! an injection corpus, CORS, and the project's rate limit.

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use serde_json::{Value, json};
use switchyard_test_artifacts as artifacts;

/// Deploys todo-api as `project` and returns a (public, server) key pair.
async fn todo_project(server: &TestServer, project: &str) -> (String, String) {
    let (status, body) = server.deploy(project, todo_api_bundle()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut keys = Vec::new();
    for kind in ["public", "server"] {
        let (status, body) = server
            .admin(
                "POST",
                &format!("/v1/projects/{project}/keys"),
                Some(json!({ "kind": kind, "name": kind })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        keys.push(body["data"]["key"].as_str().unwrap().to_owned());
    }
    (keys[0].clone(), keys[1].clone())
}

/// POSTs `body` to the gateway's `endpoint` on `host` with `key`.
async fn db(server: &TestServer, host: &str, endpoint: &str, key: &str, body: Value) -> Reply {
    let builder = Request::post(format!("/_switchyard/db/{endpoint}"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json");
    server
        .public_send(host, builder, Bytes::from(body.to_string()))
        .await
}

fn columns(reply: &Reply) -> Vec<String> {
    serde_json::from_value(reply.json()["columns"].clone()).unwrap()
}

#[tokio::test]
async fn public_and_server_keys_share_the_guests_data_with_their_own_rights() {
    let server = TestServer::start().await;
    let (public, secret) = todo_project(&server, "web").await;
    let host = "web.localhost";

    // No key, a malformed key, a forged one: 401.
    let anonymous = server
        .public_send(
            host,
            Request::post("/_switchyard/db/query"),
            Bytes::from(json!({"select": "todos"}).to_string()),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.code(), "UNAUTHORIZED");
    assert_eq!(anonymous.headers["www-authenticate"], "Bearer");
    for bad in ["nope", "sypk_abc_def", &public.replace("sypk_", "sysk_")] {
        let reply = db(&server, host, "query", bad, json!({"select": "todos"})).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{bad}");
    }

    // The server key writes every column, the sensitive one included.
    let inserted = db(
        &server,
        host,
        "query",
        &secret,
        json!({"insert": "todos", "rows": [{"title": "from a server", "owner_email": "a@example.com"}], "returning": "*"}),
    )
    .await;
    assert_eq!(inserted.status, StatusCode::OK, "{}", inserted.text());
    assert_eq!(inserted.json()["rows"][0]["owner_email"], "a@example.com");
    assert_eq!(inserted.json()["affected"], 1);

    // The public key reads and writes the client columns only.
    let listed = db(&server, host, "query", &public, json!({"select": "todos"})).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    assert_eq!(columns(&listed), ["id", "title", "done", "created_at"]);
    assert_eq!(listed.json()["rows"][0]["title"], "from a server");
    let created = db(
        &server,
        host,
        "query",
        &public,
        json!({"insert": "todos", "rows": [{"title": "from a browser"}], "returning": ["id", "done"]}),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let id = created.json()["rows"][0]["id"].as_i64().unwrap();
    let toggled = db(
        &server,
        host,
        "query",
        &public,
        json!({"update": "todos", "set": {"done": true}, "filter": {"column": "id", "op": "eq", "value": id}}),
    )
    .await;
    assert_eq!(toggled.json()["affected"], 1, "{}", toggled.text());

    // The guest sees what the gateway wrote: one database.
    let from_guest = server.get(host, "/api/todos").await.json();
    assert_eq!(from_guest.as_array().unwrap().len(), 2);
    assert_eq!(from_guest[0]["done"], true);

    // A batch fails as a whole, and says which query.
    let batch = db(
        &server,
        host,
        "batch",
        &public,
        json!({"queries": [
            {"insert": "todos", "rows": [{"title": "kept?"}]},
            {"insert": "todos", "rows": [{"title": 42}]},
        ]}),
    )
    .await;
    assert_eq!(batch.status, StatusCode::BAD_REQUEST);
    assert_eq!(batch.code(), "INVALID_VALUE");
    let message = batch.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.starts_with("query 1: "), "{message}");
    let count = db(&server, host, "query", &secret, json!({"select": "todos"})).await;
    assert_eq!(count.json()["rows"].as_array().unwrap().len(), 2);
    let good = db(
        &server,
        host,
        "batch",
        &secret,
        json!({"queries": [
            {"delete": "todos", "filter": {"column": "done", "op": "is", "value": true}},
            {"select": "todos", "columns": ["title"]},
        ]}),
    )
    .await;
    assert_eq!(good.status, StatusCode::OK, "{}", good.text());
    assert_eq!(good.json()["results"][0]["affected"], 1);
    assert_eq!(
        good.json()["results"][1]["rows"],
        json!([{"title": "from a server"}])
    );

    // The schema each key may see.
    let schema = |key: String| {
        let server = &server;
        async move {
            let builder = Request::get("/_switchyard/db/schema")
                .header("authorization", format!("Bearer {key}"));
            server.public_request(host, builder).await.json()
        }
    };
    let public_schema = schema(public.clone()).await;
    let names: Vec<&str> = public_schema["tables"][0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "title", "done", "created_at"]);
    assert!(!public_schema.to_string().contains("owner_email"));
    assert!(
        schema(secret.clone())
            .await
            .to_string()
            .contains("owner_email")
    );

    // The platform's paths never reach the guest.
    for path in [
        "/_switchyard/other",
        "/%5Fswitchyard/db/nothing",
        "/_switchyard/db/query/x",
        "/%5fswitchyard/db/query%FF",
    ] {
        let unknown = server.get(host, path).await;
        assert_eq!(unknown.code(), "NOT_FOUND", "{path}: {}", unknown.text());
    }
    let encoded = server
        .public_send(
            host,
            Request::post("/_switchyard/db/%71uery")
                .header("authorization", format!("Bearer {public}")),
            Bytes::from(json!({"select": "todos", "columns": ["id"]}).to_string()),
        )
        .await;
    assert_eq!(
        encoded.status,
        StatusCode::OK,
        "an encoded path is the same endpoint: {}",
        encoded.text()
    );
    let wrong_method = server
        .public_request(
            host,
            Request::get("/_switchyard/db/query")
                .header("authorization", format!("Bearer {public}")),
        )
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_key_opens_only_its_own_project_and_dies_when_revoked() {
    let server = TestServer::start().await;
    let (public_a, secret_a) = todo_project(&server, "alpha").await;
    let (_, secret_b) = todo_project(&server, "beta").await;
    db(
        &server,
        "beta.localhost",
        "query",
        &secret_b,
        json!({"insert": "todos", "rows": [{"title": "beta's"}]}),
    )
    .await;

    for key in [&public_a, &secret_a] {
        let reply = db(
            &server,
            "beta.localhost",
            "query",
            key,
            json!({"select": "todos"}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(!reply.text().contains("beta's"));
    }
    assert_eq!(
        db(
            &server,
            "alpha.localhost",
            "query",
            &secret_a,
            json!({"select": "todos"})
        )
        .await
        .json()["rows"],
        json!([]),
        "same table name, other project's rows stay there"
    );

    let (_, keys) = server.admin("GET", "/v1/projects/alpha/keys", None).await;
    let listed = keys["data"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        !keys.to_string().contains(&public_a[5..]),
        "secrets are never listed"
    );
    let public_id = listed.iter().find(|k| k["kind"] == "public").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = server
        .admin(
            "DELETE",
            &format!("/v1/projects/alpha/keys/{public_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let revoked = db(
        &server,
        "alpha.localhost",
        "query",
        &public_a,
        json!({"select": "todos"}),
    )
    .await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED, "revoked at once");
    let (status, _) = server
        .admin(
            "DELETE",
            &format!("/v1/projects/beta/keys/{public_id}"),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a key is revoked through its own project"
    );
}

#[tokio::test]
async fn sensitive_columns_are_refused_in_every_clause_for_public_keys() {
    let server = TestServer::start().await;
    let (public, secret) = todo_project(&server, "probe").await;
    let host = "probe.localhost";
    db(
        &server,
        host,
        "query",
        &secret,
        json!({"insert": "todos", "rows": [{"title": "t", "owner_email": "x@example.com"}]}),
    )
    .await;
    let probes = [
        json!({"select": "todos", "columns": ["owner_email"]}),
        json!({"select": "todos", "columns": ["id", "owner_email"]}),
        json!({"select": "todos", "filter": {"column": "owner_email", "op": "like", "value": "x%"}}),
        json!({"select": "todos", "filter": {"column": "owner_email", "op": "is", "value": null}}),
        json!({"select": "todos", "filter": {"or": [{"column": "id", "op": "gt", "value": 0}, {"column": "owner_email", "op": "eq", "value": "x@example.com"}]}}),
        json!({"select": "todos", "order": [{"column": "owner_email"}]}),
        json!({"insert": "todos", "rows": [{"title": "t"}], "returning": ["owner_email"]}),
        json!({"insert": "todos", "rows": [{"title": "t", "owner_email": "y@example.com"}]}),
        json!({"update": "todos", "set": {"owner_email": "z@example.com"}, "filter": {"column": "id", "op": "gt", "value": 0}}),
        json!({"update": "todos", "set": {"done": true}, "filter": {"column": "id", "op": "gt", "value": 0}, "returning": ["owner_email"]}),
        json!({"delete": "todos", "filter": {"column": "owner_email", "op": "eq", "value": "x@example.com"}}),
        json!({"delete": "todos", "filter": {"column": "id", "op": "gt", "value": 0}, "returning": ["owner_email"]}),
    ];
    for probe in probes {
        let reply = db(&server, host, "query", &public, probe.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{probe}: {}",
            reply.text()
        );
        assert_eq!(reply.code(), "COLUMN_NOT_FOUND", "{probe}");
        assert!(!reply.text().contains("x@example.com"), "{probe}");
    }
    // A column that is readable but not client_write.
    let reply = db(&server, host, "query", &public, json!({"insert": "todos", "rows": [{"title": "t", "created_at": "2026-01-01T00:00:00.000Z"}]})).await;
    assert_eq!(reply.code(), "COLUMN_NOT_ALLOWED");
    // Nothing any probe tried was written.
    let rows = db(&server, host, "query", &secret, json!({"select": "todos"}))
        .await
        .json()["rows"]
        .clone();
    assert_eq!(rows, json!([rows[0].clone()]), "one row");
    assert_eq!(rows[0]["owner_email"], "x@example.com");
    assert_eq!(rows[0]["done"], false);
}

#[tokio::test]
async fn injection_corpus_is_refused_or_bound() {
    let server = TestServer::start().await;
    let (_, secret) = todo_project(&server, "inject").await;
    // Another project with a table of its own.
    let other_manifest =
        "[[tables]]\nname = \"secrets\"\ncolumns = [{ name = \"v\", type = \"text\" }]\n";
    let (status, body) = server
        .deploy("vault", component_bundle(artifacts::HELLO, other_manifest))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let host = "inject.localhost";
    let run = |query: Value| db(&server, host, "query", &secret, query);

    // Values: stored and compared as data.
    let values = [
        "it's",
        "\"; DROP TABLE todos; --",
        "'); DELETE FROM todos; --",
        "/* comment */",
        "-- comment",
        "100%_sure",
        "\\' OR 1=1 --",
        "日本語 ✓",
    ];
    for value in values {
        let reply =
            run(json!({"insert": "todos", "rows": [{"title": value}], "returning": ["title"]}))
                .await;
        assert_eq!(reply.json()["rows"][0]["title"], value, "{}", reply.text());
        let found = run(
            json!({"select": "todos", "filter": {"column": "title", "op": "eq", "value": value}}),
        )
        .await;
        assert_eq!(found.json()["rows"].as_array().unwrap().len(), 1, "{value}");
    }
    // `%` and `_` are pattern characters only in like/ilike.
    let pattern = run(
        json!({"select": "todos", "filter": {"column": "title", "op": "like", "value": "100\\%%"}}),
    )
    .await;
    assert_eq!(pattern.status, StatusCode::OK);
    let eq =
        run(json!({"select": "todos", "filter": {"column": "title", "op": "eq", "value": "100%"}}))
            .await;
    assert_eq!(eq.json()["rows"], json!([]));

    // Identifiers: only the declared spellings exist.
    for (query, code) in [
        (json!({"select": "TODOS"}), "TABLE_NOT_FOUND"),
        (json!({"select": "todos\""}), "TABLE_NOT_FOUND"),
        (
            json!({"select": "todos; DROP TABLE todos"}),
            "TABLE_NOT_FOUND",
        ),
        (json!({"select": "sqlite_master"}), "TABLE_NOT_FOUND"),
        (json!({"select": "sqlite_schema"}), "TABLE_NOT_FOUND"),
        (json!({"select": "_switchyard_tables"}), "TABLE_NOT_FOUND"),
        (json!({"select": "secrets"}), "TABLE_NOT_FOUND"),
        (json!({"select": "main.todos"}), "TABLE_NOT_FOUND"),
        (json!({"select": "tödös"}), "TABLE_NOT_FOUND"),
        (
            json!({"select": "todos", "columns": ["Title"]}),
            "COLUMN_NOT_FOUND",
        ),
        (
            json!({"select": "todos", "columns": ["title\" FROM sqlite_master --"]}),
            "COLUMN_NOT_FOUND",
        ),
        (
            json!({"select": "todos", "columns": ["count(*)"]}),
            "COLUMN_NOT_FOUND",
        ),
        (
            json!({"select": "todos", "columns": ["rowid"]}),
            "COLUMN_NOT_FOUND",
        ),
        (
            json!({"select": "todos", "order": [{"column": "id desc"}]}),
            "COLUMN_NOT_FOUND",
        ),
        (
            json!({"select": "todos", "order": [{"column": "1"}]}),
            "COLUMN_NOT_FOUND",
        ),
        (
            json!({"select": "todos", "order": [{"column": "(SELECT 1)"}]}),
            "COLUMN_NOT_FOUND",
        ),
        (json!({"select": "todos", "limit": -1}), "INVALID_QUERY"),
        (
            json!({"select": "todos", "limit": 1_000_000_000_000u64}),
            "INVALID_QUERY",
        ),
        (
            json!({"select": "todos", "limit": "1; DROP TABLE todos"}),
            "INVALID_QUERY",
        ),
        (
            json!({"select": "todos", "limit": 5000}),
            "QUERY_TOO_COMPLEX",
        ),
        (json!({"select": "todos", "offset": -5}), "INVALID_QUERY"),
        (
            json!({"select": "todos", "offset": 4_000_000_000u64}),
            "QUERY_TOO_COMPLEX",
        ),
        (json!({"delete": "todos"}), "FILTERLESS_MUTATION"),
        (
            json!({"update": "todos", "set": {"done": true}}),
            "FILTERLESS_MUTATION",
        ),
        (
            json!({"select": "todos", "filter": {"column": "id", "op": "eq", "value": null}}),
            "INVALID_FILTER",
        ),
        (
            json!({"select": "todos", "filter": {"column": "id", "op": "eq", "value": "1 OR 1=1"}}),
            "INVALID_VALUE",
        ),
    ] {
        let reply = run(query.clone()).await;
        assert_eq!(reply.code(), code, "{query}: {}", reply.text());
        assert!(
            !reply.text().contains("vault") && !reply.text().contains("/tmp"),
            "{}",
            reply.text()
        );
    }
    let all = run(json!({"select": "todos"})).await;
    assert_eq!(
        all.json()["rows"].as_array().unwrap().len(),
        values.len(),
        "the table is intact"
    );
}

#[tokio::test]
async fn cors_origins_and_the_rate_limit_apply() {
    let server = TestServer::start().await;
    let (public, _) = todo_project(&server, "spa").await;
    let host = "spa.localhost";
    let (status, body) = server
        .admin(
            "PUT",
            "/v1/projects/spa/limits",
            Some(json!({"cors_origins": ["https://app.example.com/"]})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_LIMITS"))
    );
    let (status, _) = server
        .admin(
            "PUT",
            "/v1/projects/spa/limits",
            Some(json!({"cors_origins": ["https://app.example.com"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let preflight = |origin: &'static str| {
        let server = &server;
        async move {
            let builder = Request::builder()
                .method("OPTIONS")
                .uri("/_switchyard/db/query")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization, content-type",
                );
            server.public_request(host, builder).await
        }
    };
    let allowed = preflight("https://app.example.com").await;
    assert_eq!(allowed.status, StatusCode::NO_CONTENT);
    assert_eq!(
        allowed.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        allowed.headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let refused = preflight("https://evil.example").await;
    assert!(refused.headers.get("access-control-allow-origin").is_none());

    let builder = Request::post("/_switchyard/db/query")
        .header("origin", "https://app.example.com")
        .header("authorization", format!("Bearer {public}"));
    let reply = server
        .public_send(
            host,
            builder,
            Bytes::from(json!({"select": "todos"}).to_string()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(reply.headers["vary"], "Origin");

    // The project's rate limit counts gateway calls too.
    let (status, _) = server
        .admin(
            "PUT",
            "/v1/projects/spa/limits",
            Some(json!({"requests_per_minute": 1, "burst": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            db(&server, host, "query", &public, json!({"select": "todos"}))
                .await
                .status,
        );
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}
