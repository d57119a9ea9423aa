//! Switchyard's sandbox: runs each HTTP request in a fresh instance of a
//! tenant's WebAssembly component, under hard limits, with only the host
//! interfaces Switchyard provides.
//!
//! The three lifetimes:
//!
//! - **process**: one [`Runtime`]: the wasmtime engine (Cranelift, pooling
//!   allocator, fuel, epoch interruption driven by one ticker thread), the
//!   linker with every allowed import, the on-disk artifact cache;
//! - **deployment**: one [`App`] per project and build: the compiled,
//!   pre-instantiated component with its env and [`Limits`];
//! - **request**: [`App::handle`] builds a fresh store, instantiates, calls
//!   `wasi:http/incoming-handler`, and streams the response back.
//!
//! Guests may import `wasi:http`, `wasi:io`, `wasi:clocks`, `wasi:random`,
//! `wasi:cli` (any 0.2.x), `wasi:filesystem` and `wasi:sockets` (linked, but
//! no directory is preopened and every socket is refused), and
//! `switchyard:gateway/kv` and `switchyard:gateway/db`. Anything else is
//! refused at [`Runtime::compile`].
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use switchyard_runtime::{
//!     AppSpec, BuildId, ProjectId, RequestContext, Runtime, RuntimeConfig,
//!     backend::Backends,
//! };
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // kv data and the gateway databases, embedded under one directory.
//! let backends = Backends::sqlite("./switchyard-data".as_ref())?;
//! let runtime = Runtime::new(RuntimeConfig::default(), backends)?;
//!
//! // Deploy: validate and compile once (later loads are a deserialize).
//! let component = runtime.compile(&std::fs::read("hello.wasm")?).await?;
//! let app = runtime
//!     .app(&AppSpec {
//!         project: ProjectId::new("hello")?,
//!         build: BuildId::new("b1")?,
//!         component,
//!         env: vec![("GREETING".into(), "hi".into())],
//!         limits: Default::default(),
//!         schema: Default::default(),
//!         egress: Default::default(),
//!     })
//!     .await?;
//!
//! // Serve: each call runs in a fresh instance.
//! let request = http::Request::get("http://hello.localhost/json")
//!     .body(Full::new(Bytes::new()))?;
//! let ctx = RequestContext { request_id: "req-1".into(), tls: false };
//! match app.handle(request, ctx).await {
//!     Ok(response) => {
//!         let body = response.into_body().collect().await?.to_bytes();
//!         println!("{}", String::from_utf8_lossy(&body));
//!     }
//!     // A platform error: answer with its code, status and the request id.
//!     Err(error) => println!("{} {}", error.status(), error.code()),
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod app;
mod artifacts;
pub mod backend;
mod body;
mod config;
pub mod db;
pub mod disk;
mod dispatch;
mod egress;
mod engine;
mod error;
mod host;
mod ids;
mod imports;
mod lane;
mod limits;
mod logs;
mod runtime;
mod state;

pub use app::{App, AppSpec};
pub use body::ResponseBody;
pub use config::{LogConfig, PoolConfig, RuntimeConfig};
pub use dispatch::{MAX_RESPONSE_HEADERS, RequestContext};
pub use egress::{EgressAllowlist, EgressConfig, EgressRuleError, IpRange, MAX_EGRESS_RULES};
pub use error::{DispatchError, LoadError, StartError, error_response};
pub use ids::{BuildId, ComponentId, InvalidId, ProjectId};
pub use limits::{Limits, LimitsError, LimitsOverride};
pub use logs::{LogRecord, LogSource, ProjectLog};
pub use runtime::{Runtime, RuntimeStats};
