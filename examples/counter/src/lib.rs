//! `counter`: state that outlives the request, in the project's kv store.
//!
//! Every request runs in a fresh instance, so nothing survives in memory;
//! this app keeps its state in `switchyard:gateway/kv`.
//!
//! - `GET /visits/<any/path>` atomically increments the counter for that path
//!   and returns `{"path": …, "visits": n}`;
//! - `PUT /flash?ttl_ms=N` stores the request body as a message that expires
//!   after N milliseconds (default 60 s, at most one hour);
//! - `GET /flash` returns the message, or 404 once it has expired;
//! - `GET /` explains the above.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p counter`.

use std::time::Duration;
use switchyard_sdk::{Request, Response, Router, kv};

const FLASH_KEY: &str = "flash";
const DEFAULT_FLASH_TTL: Duration = Duration::from_secs(60);
const MAX_FLASH_TTL: Duration = Duration::from_secs(3600);

fn handle(req: Request) -> Response {
    Router::new()
        .get("/", |_, _| {
            Response::text(
                "GET /visits/<path>  count visits per path\n\
                 PUT /flash?ttl_ms=N store a message that expires\n\
                 GET /flash          read it back\n",
            )
        })
        .get(
            "/visits/*path",
            |_, params| -> Result<Response, kv::Error> {
                let path = format!("/{}", params.get("path").unwrap_or(""));
                let visits = kv::increment(&format!("visits:{path}"), 1)?;
                Ok(Response::json(
                    &serde_json::json!({ "path": path, "visits": visits }),
                ))
            },
        )
        .put("/flash", |req, _| -> Result<Response, kv::Error> {
            let ttl = match req.query_param("ttl_ms") {
                None => DEFAULT_FLASH_TTL,
                Some(ms) => match ms.parse::<u64>() {
                    Ok(ms) if ms > 0 => Duration::from_millis(ms).min(MAX_FLASH_TTL),
                    _ => {
                        return Ok(
                            Response::text("ttl_ms must be a positive integer\n").with_status(400)
                        );
                    }
                },
            };
            kv::set_with_ttl(FLASH_KEY, req.body(), ttl)?;
            Ok(Response::new(204))
        })
        .get("/flash", |_, _| -> Result<Response, kv::Error> {
            Ok(match kv::get(FLASH_KEY)? {
                Some(message) => Response::bytes("text/plain; charset=utf-8", message),
                None => Response::text("no message\n").with_status(404),
            })
        })
        .handle(&req)
}

switchyard_sdk::export!(handle);
