//! `hello`: the smallest useful Switchyard app.
//!
//! - `GET /` answers with plain text;
//! - `GET /json` answers with JSON naming the project and build it runs as
//!   (from the reserved `SWITCHYARD_PROJECT` / `SWITCHYARD_BUILD` variables);
//! - any method on `/echo` (and below) echoes the method, path, query,
//!   headers and body size back as JSON.
//!
//! It imports nothing from Switchyard beyond `wasi:http/proxy` and the
//! environment, so it also runs on any other wasi:http host (e.g.
//! `wasmtime serve`). Build: `cargo build --release --target wasm32-wasip2 -p hello`.

use switchyard_sdk::{Request, Response, Router};

fn handle(req: Request) -> Response {
    Router::new()
        .get("/", |_, _| Response::text("Hello from Switchyard!\n"))
        .get("/json", |_, _| {
            Response::json(&serde_json::json!({
                "message": "Hello from Switchyard!",
                "project": std::env::var("SWITCHYARD_PROJECT").ok(),
                "build": std::env::var("SWITCHYARD_BUILD").ok(),
            }))
        })
        .any("/echo", |req, _| echo(req))
        .any("/echo/*rest", |req, _| echo(req))
        .handle(&req)
}

fn echo(req: &Request) -> Response {
    let headers: Vec<_> = req
        .headers()
        .map(|(name, value)| (name, String::from_utf8_lossy(value)))
        .collect();
    let query: serde_json::Map<_, _> = req
        .query_pairs()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    Response::json(&serde_json::json!({
        "method": req.method().as_str(),
        "path": req.path(),
        "query": query,
        "headers": headers,
        "bodyBytes": req.body().len(),
    }))
}

switchyard_sdk::export!(handle);
