//! End-to-end tests of the sandbox: real components built from `examples/`
//! and `tests/guests/`, a real engine, real SQLite.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a failed test"
)]

mod common;
mod egress;
mod examples;
mod hostile;
mod isolation;
mod kv;
mod loading;
mod logs;
mod toolchains;
