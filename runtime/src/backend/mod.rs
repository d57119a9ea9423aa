//! Storage behind the host interfaces, one trait per concern, each with an
//! embedded implementation. Backends store and fetch; access checks and
//! limits live in the host layer ([`crate::host`]).

pub mod kv;
pub mod sqlite;
