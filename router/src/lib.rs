//! The Switchyard host: hostname routing, static assets, dispatch into
//! per-project sandboxes, the admin API and the CLI.
#![deny(missing_docs)]

pub mod admin;
pub mod assets;
pub mod auth;
pub mod blobs;
pub mod build;
pub mod cli;
pub mod config;
pub mod crash_point;
pub mod deploy;
pub mod dispatch;
pub mod error;
pub mod gateway;
pub mod hostname;
pub mod idle;
pub mod metrics;
pub mod node;
pub mod routing;
pub mod server;
pub mod storage;
pub mod store;
pub mod tenant;
pub mod tls;
