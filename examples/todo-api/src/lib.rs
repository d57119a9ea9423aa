//! `todo-api`: JSON CRUD over the project's gateway database.
//!
//! The `todos` table is declared in `switchyard.toml`; Switchyard creates it
//! at deploy. This guest has full access to it, the `sensitive` column
//! `owner_email` included; the static front end in `assets/` reads and
//! toggles the same rows from the browser through Switchyard's database
//! gateway (`/_switchyard/db/query`) with a public key, which never sees
//! `owner_email`.
//!
//! - `GET /api/todos?done=true|false&limit=N` lists todos, newest first;
//! - `POST /api/todos` `{"title": …, "owner_email"?: …}` creates one (201);
//! - `GET /api/todos/:id` reads one (404 if absent);
//! - `PATCH /api/todos/:id` `{"title"?: …, "done"?: …}` changes one;
//! - `DELETE /api/todos/:id` deletes one (204);
//! - `POST /api/todos/done/clear` deletes every done todo, and
//!   `POST /api/todos/import` `[{"title": …}, …]` inserts a list in one
//!   transaction (all or nothing);
//! - `GET /api/config` gives the front end the project's public key, from
//!   the project variable `TODO_PUBLIC_KEY` (public keys are meant to be
//!   seen by browsers).
//!
//! Database errors come back as `{"error": {"code", "message"}}` with a
//! matching status (400, 404, 409, 503, …).
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p todo-api`.

use serde::{Deserialize, Serialize};
use switchyard_sdk::{Request, Response, Router, db};

/// The columns this API returns.
const COLUMNS: [&str; 5] = ["id", "title", "done", "created_at", "owner_email"];

#[derive(Serialize, Deserialize)]
struct Todo {
    id: i64,
    title: String,
    done: bool,
    created_at: String,
    owner_email: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct NewTodo {
    title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner_email: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Changes {
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    done: Option<bool>,
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    Response::json(&serde_json::json!({
        "error": { "code": "BAD_REQUEST", "message": message.to_string() }
    }))
    .with_status(400)
}

fn not_found() -> Response {
    Response::json(&serde_json::json!({
        "error": { "code": "NOT_FOUND", "message": "no such todo" }
    }))
    .with_status(404)
}

fn id_param(params: &switchyard_sdk::Params) -> Result<i64, Response> {
    params
        .get("id")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| bad_request("the id must be an integer"))
}

fn list(req: &Request) -> Result<Response, db::Error> {
    let limit = req
        .query_param("limit")
        .and_then(|n| n.parse().ok())
        .unwrap_or(100u32);
    let mut query = db::from("todos")
        .select(COLUMNS)
        .order_desc("id")
        .limit(limit);
    match req.query_param("done").as_deref() {
        Some("true") => query = query.is_true("done"),
        Some("false") => query = query.is_false("done"),
        _ => {}
    }
    let todos: Vec<Todo> = query.fetch()?;
    Ok(Response::json(&todos))
}

fn create(req: &Request) -> Result<Response, db::Error> {
    let new: NewTodo = match req.json() {
        Ok(new) => new,
        Err(e) => return Ok(bad_request(e)),
    };
    let todo: Todo = db::from("todos")
        .insert(&new)?
        .returning(COLUMNS)
        .fetch_one()?;
    Ok(Response::json(&todo).with_status(201))
}

fn read(id: i64) -> Result<Response, db::Error> {
    let todo: Option<Todo> = db::from("todos")
        .select(COLUMNS)
        .eq("id", id)
        .fetch_optional()?;
    Ok(todo.map_or_else(not_found, |t| Response::json(&t)))
}

fn change(req: &Request, id: i64) -> Result<Response, db::Error> {
    let changes: Changes = match req.json() {
        Ok(changes) => changes,
        Err(e) => return Ok(bad_request(e)),
    };
    if changes.title.is_none() && changes.done.is_none() {
        return Ok(bad_request("nothing to change: send title and/or done"));
    }
    let updated: Vec<Todo> = db::from("todos")
        .update(&changes)?
        .eq("id", id)
        .returning(COLUMNS)
        .fetch()?;
    Ok(updated
        .into_iter()
        .next()
        .map_or_else(not_found, |t| Response::json(&t)))
}

fn remove(id: i64) -> Result<Response, db::Error> {
    let deleted = db::from("todos").delete().eq("id", id).execute()?;
    Ok(if deleted == 0 {
        not_found()
    } else {
        Response::new(204)
    })
}

fn clear_done() -> Result<Response, db::Error> {
    let deleted = db::from("todos").delete().is_true("done").execute()?;
    Ok(Response::json(&serde_json::json!({ "deleted": deleted })))
}

/// Inserts every todo of the list in one transaction: one bad entry (say a
/// missing title) and none is stored.
fn import(req: &Request) -> Result<Response, db::Error> {
    let todos: Vec<NewTodo> = match req.json() {
        Ok(todos) => todos,
        Err(e) => return Ok(bad_request(e)),
    };
    let queries = todos
        .iter()
        .map(|t| db::from("todos").insert(t).map(db::Query::from))
        .collect::<Result<Vec<_>, _>>()?;
    let results = db::batch(queries)?;
    let imported: u64 = results.iter().map(|r| r.affected).sum();
    Ok(Response::json(&serde_json::json!({ "imported": imported })).with_status(201))
}

fn config() -> Response {
    let key = std::env::var("TODO_PUBLIC_KEY").ok();
    Response::json(&serde_json::json!({ "publicKey": key }))
}

fn handle(req: Request) -> Response {
    Router::new()
        .get("/api/config", |_, _| config())
        .get("/api/todos", |req, _| list(req))
        .post("/api/todos", |req, _| create(req))
        .post("/api/todos/done/clear", |_, _| clear_done())
        .post("/api/todos/import", |req, _| import(req))
        .get("/api/todos/:id", |_, params| match id_param(params) {
            Ok(id) => read(id).unwrap_or_else(Response::from),
            Err(response) => response,
        })
        .patch("/api/todos/:id", |req, params| match id_param(params) {
            Ok(id) => change(req, id).unwrap_or_else(Response::from),
            Err(response) => response,
        })
        .delete("/api/todos/:id", |_, params| match id_param(params) {
            Ok(id) => remove(id).unwrap_or_else(Response::from),
            Err(response) => response,
        })
        .handle(&req)
}

switchyard_sdk::export!(handle);
