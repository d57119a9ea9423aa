//! Crash points, for recovery tests: with `SWITCHYARD_CRASH_AT=<point>` in
//! its environment, the process aborts when it reaches that point, leaving
//! its files as `kill -9` would (no destructor runs, nothing is flushed).
//! Unset, a crash point costs one load of a cached value.
//!
//! The points, in the order a deploy passes them:
//! `deploy.received` (the upload is spooled), `deploy.compiled` (the
//! component is compiled and its artifact cached), `deploy.stored` (every
//! object is in object storage), `deploy.migrated` (the database has the new
//! tables), `deploy.committed` (the build record is written and active,
//! before the client is answered).

use std::sync::OnceLock;

/// The variable naming the point to crash at.
pub const CRASH_AT_VAR: &str = "SWITCHYARD_CRASH_AT";

/// Aborts the process if `point` is the one `SWITCHYARD_CRASH_AT` names.
pub fn crash_point(point: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(CRASH_AT_VAR).ok());
    if at.as_deref() == Some(point) {
        eprintln!("{CRASH_AT_VAR}={point}: aborting");
        std::process::abort();
    }
}
