//! Write [Switchyard] apps in Rust.
//!
//! A Switchyard app is a WebAssembly component that handles HTTP requests
//! (`wasi:http/proxy`) and may use the gateway's host interfaces, such as the
//! project-scoped [`kv`] store. This crate gives you:
//!
//! - [`export!`]: turns a plain function `fn(Request) -> impl IntoResponse`
//!   into the component's `wasi:http/incoming-handler` export;
//! - [`Request`] and [`Response`]: method, path, query, headers, body, JSON;
//! - [`Router`]: a small path router with `:param` and `*rest` segments;
//! - [`kv`]: get/set (with TTL), delete, exists, list, atomic increment and
//!   compare-and-swap, with Rust types and a typed [`kv::Error`];
//! - [`db`]: the project's tables through a typed query builder
//!   (`db::from("todos").select(["id"]).eq("done", false).fetch()`), rows
//!   deserialised with serde, batches in one transaction;
//! - [`outbound`]: HTTP requests to the origins `switchyard.toml` allows.
//!
//! Every request runs in a fresh instance of your component, so globals do
//! not survive between requests: keep state in [`kv`] or [`db`].
//!
//! # Example
//!
//! ```no_run
//! use switchyard_sdk::{kv, Request, Response, Router};
//!
//! fn handle(req: Request) -> Response {
//!     Router::new()
//!         .get("/", |_, _| Response::text("hello\n"))
//!         .get("/hits/:page", |_, params| {
//!             let page = params.get("page").unwrap_or("unknown");
//!             match kv::increment(&format!("hits:{page}"), 1) {
//!                 Ok(n) => Response::text(format!("{page} was seen {n} times\n")),
//!                 Err(e) => e.into(),
//!             }
//!         })
//!         .handle(&req)
//! }
//!
//! switchyard_sdk::export!(handle);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` in
//! `target/wasm32-wasip2/release/` is the component to deploy.
//!
//! [Switchyard]: https://github.com/switchyard-dev/switchyard
#![deny(missing_docs)]

// Lets the generated bindings and the `export!` macro name this crate the same
// way from inside it and from an app crate.
extern crate self as switchyard_sdk;

#[expect(
    missing_docs,
    reason = "generated from the WIT, which carries the docs"
)]
mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "switchyard:gateway/app",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_app",
        default_bindings_module: "::switchyard_sdk::__bindings",
        runtime_path: "::switchyard_sdk::__wit_bindgen::rt",
    });
}

pub mod db;
mod handler;
pub mod kv;
pub mod outbound;
mod percent;
mod request;
mod response;
mod router;

pub use request::{Method, ReadError, Request};
pub use response::{IntoResponse, Response};
pub use router::{Params, Router};

/// The raw `wasi` bindings this crate is built on, for what the helpers do not
/// cover (for example streaming a response body chunk by chunk).
pub use bindings::wasi;

#[doc(hidden)]
pub use handler::run as __run;
#[doc(hidden)]
pub mod __bindings {
    pub use crate::bindings::*;
}
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Exports a handler function as this component's HTTP entry point.
///
/// The function takes a [`Request`] and returns anything that implements
/// [`IntoResponse`] ([`Response`], `String`, `&str`, `Result<R, E>`, …).
/// Use it once per app crate (a `cdylib`):
///
/// ```no_run
/// fn handle(req: switchyard_sdk::Request) -> String {
///     format!("you asked for {}\n", req.path())
/// }
/// switchyard_sdk::export!(handle);
/// ```
///
/// `export!(raw handler)` instead hands `handler` the raw `wasi:http`
/// request and response slot, for apps that stream (see [`wasi`]);
/// [`Request::read`] and [`Response::send`] still work from there:
///
/// ```no_run
/// use switchyard_sdk::wasi::http::types::{IncomingRequest, ResponseOutparam};
///
/// fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
///     let response = match switchyard_sdk::Request::read(request) {
///         Ok(req) => switchyard_sdk::Response::text(format!("{} bytes\n", req.body().len())),
///         Err(e) => switchyard_sdk::Response::text(e.to_string()).with_status(400),
///     };
///     response.send(response_out);
/// }
/// switchyard_sdk::export!(raw handle);
/// ```
#[macro_export]
macro_rules! export {
    (raw $handler:path) => {
        #[doc(hidden)]
        struct __SwitchyardApp;

        impl $crate::__bindings::exports::wasi::http::incoming_handler::Guest for __SwitchyardApp {
            fn handle(
                request: $crate::wasi::http::types::IncomingRequest,
                response_out: $crate::wasi::http::types::ResponseOutparam,
            ) {
                $handler(request, response_out)
            }
        }

        $crate::__bindings::__export_app!(__SwitchyardApp with_types_in $crate::__bindings);
    };
    ($handler:path) => {
        #[doc(hidden)]
        fn __switchyard_handle(
            request: $crate::wasi::http::types::IncomingRequest,
            response_out: $crate::wasi::http::types::ResponseOutparam,
        ) {
            $crate::__run(request, response_out, $handler)
        }

        $crate::export!(raw __switchyard_handle);
    };
}
