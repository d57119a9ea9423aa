//! End-to-end tests of the `switchyard` server: real listeners on port 0,
//! real HTTP, real components, deploys over the admin API (and the CLI).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a failed test"
)]

mod assets;
mod cli;
mod cluster;
mod common;
mod controls;
mod crash;
mod database;
mod deploys;
mod faults;
mod gateway;
mod h2_abuse;
mod listeners;
mod process;
