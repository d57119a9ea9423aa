//! Gateway databases behind `switchyard:gateway/db` and the HTTP gateway.
//!
//! A [`DbBackend`] keeps one database per project — there is no name by
//! which a query of one project could reach another's tables — and runs
//! structured [`Query`]s on it: each call is checked by the one validator
//! ([`crate::db::sql`]) against the schema and the caller's [`Access`],
//! then runs as one transaction under a timeout that really cancels it and
//! a size quota the database itself enforces. Schemas change only through
//! [`DbBackend::migrate`], at deploy time.

#[cfg(any(test, feature = "testing"))]
pub mod contract;
mod postgres;
mod sqlite;

pub use postgres::{PostgresGatewayDb, PostgresGatewayDbOptions};
pub use sqlite::{SqliteGatewayDb, SqliteGatewayDbOptions};

use crate::db::migrate::Removals;
use crate::db::query::{Query, Value};
use crate::db::schema::Schema;
use crate::db::sql::{Access, Dialect, QueryError, QueryLimits, Statement, compile_for};
use crate::ids::ProjectId;
use std::sync::Arc;
use std::time::Duration;

/// The rows a query produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rows {
    /// The names of the returned columns (empty for a mutation without
    /// `returning`).
    pub columns: Vec<String>,
    /// The returned rows, one value per column, typed by column type
    /// (booleans as booleans, timestamps, json and uuids as text).
    pub rows: Vec<Vec<Value>>,
    /// Rows inserted, updated or deleted; 0 for a select.
    pub affected: u64,
}

/// What one call may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallLimits {
    /// Caps on each query's shape.
    pub query: QueryLimits,
    /// How long the whole call may run, queueing included; a statement
    /// still running then is interrupted and the call rolled back.
    pub timeout: Duration,
    /// The most bytes the project's database may hold.
    pub quota_bytes: u64,
    /// The most bytes of values one call may return (text and blobs by
    /// length, other values as 8 bytes).
    pub result_bytes: u64,
}

/// One call: a query, or a batch of them that succeeds or fails as a whole.
#[derive(Clone, Debug)]
pub struct Call {
    /// The project's declared schema (its active build's).
    pub schema: Arc<Schema>,
    /// Who is asking.
    pub access: Access,
    /// The queries, run in order in one transaction.
    pub queries: Vec<Query>,
    /// What the call may use.
    pub limits: CallLimits,
}

/// Why a call failed. Messages are safe to show the caller: they name only
/// what the caller sent and may see, never a file, a path or another
/// project.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DbError {
    /// The validator refused the query.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// A unique, not-null, primary key or check constraint refused a write.
    #[error("{0}")]
    ConstraintViolation(String),
    /// The call ran past its timeout and was cancelled.
    #[error("the query ran longer than {0} ms and was cancelled")]
    Timeout(u64),
    /// The write would take the project's database past its quota.
    #[error("the project's database is full")]
    QuotaExceeded,
    /// The database is locked by other writers for longer than the call
    /// could wait.
    #[error("the database is busy; retry shortly")]
    Busy,
    /// The database cannot be reached or failed. The detail is for the
    /// operator's log only.
    #[error("the database is unavailable")]
    Unavailable {
        /// What went wrong, for the operator.
        detail: String,
    },
}

impl DbError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            DbError::Query(e) => e.code(),
            DbError::ConstraintViolation(_) => "CONSTRAINT_VIOLATION",
            DbError::Timeout(_) => "QUERY_TIMEOUT",
            DbError::QuotaExceeded => "QUOTA_EXCEEDED",
            DbError::Busy => "DB_BUSY",
            DbError::Unavailable { .. } => "DB_UNAVAILABLE",
        }
    }

    pub(crate) fn unavailable(detail: impl std::fmt::Display) -> Self {
        DbError::Unavailable {
            detail: detail.to_string(),
        }
    }
}

/// A failed call: the error, and which query of the batch it came from
/// (`None` when it concerns the whole call: busy, unavailable, timeout).
/// Nothing the call wrote is kept.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error}")]
pub struct CallError {
    /// The failing query's position in the batch.
    pub index: Option<usize>,
    /// What went wrong.
    pub error: DbError,
}

impl CallError {
    /// An error of the whole call.
    pub fn whole(error: DbError) -> Self {
        CallError { index: None, error }
    }

    /// An error of query `index`.
    pub fn at(index: usize, error: impl Into<DbError>) -> Self {
        CallError {
            index: Some(index),
            error: error.into(),
        }
    }
}

/// Why a migration did not happen. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrationError {
    /// The change is not allowed (destructive without the flag, or not
    /// possible in place); the message says which and what to do.
    #[error("{0}")]
    Refused(String),
    /// The database refused a step (for example a unique index over
    /// duplicate values); the message names the step.
    #[error("{0}")]
    Failed(String),
    /// The database cannot be reached or failed; the detail is for the
    /// operator.
    #[error("the database is unavailable")]
    Unavailable {
        /// What went wrong, for the operator.
        detail: String,
    },
    /// The disk holding the database is full (not the project's quota);
    /// the detail is for the operator.
    #[error("the server is out of storage space")]
    StorageFull {
        /// What could not be written, for the operator.
        detail: String,
    },
}

impl MigrationError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            MigrationError::Refused(_) => "MIGRATION_REFUSED",
            MigrationError::Failed(_) => "MIGRATION_FAILED",
            MigrationError::Unavailable { .. } => "DB_UNAVAILABLE",
            MigrationError::StorageFull { .. } => "STORAGE_FULL",
        }
    }
}

/// Storage for every project's gateway database.
#[async_trait::async_trait]
pub trait DbBackend: Send + Sync + 'static {
    /// Brings `project`'s database to `schema` in one transaction, and
    /// returns the steps taken (described, for deploy output). Either all of
    /// it happens or none of it. `removals` says what to do with tables and
    /// columns the schema no longer declares.
    async fn migrate(
        &self,
        project: &ProjectId,
        schema: &Schema,
        removals: Removals,
    ) -> Result<Vec<String>, MigrationError>;

    /// Runs `call` on `project`'s database: every query is validated
    /// before any runs, then all run in one transaction (writes take the
    /// database's write lock first) and commit together, or none does.
    async fn call(&self, project: &ProjectId, call: Call) -> Result<Vec<Rows>, CallError>;

    /// Bytes `project`'s database takes, as counted against its quota.
    async fn usage(&self, project: &ProjectId) -> Result<u64, DbError>;

    /// Deletes `project`'s database, so that a project created later under
    /// the same id starts with none of its data.
    async fn purge(&self, project: &ProjectId) -> Result<(), DbError>;

    /// Whether the database answers (for readiness checks); an embedded
    /// one always does.
    async fn ping(&self) -> Result<(), DbError> {
        Ok(())
    }
}

/// SQLite's cap on bound parameters per statement, which every backend
/// keeps so that a query that runs on one runs on all.
const MAX_PARAMS: usize = 32_766;

/// Validates every query of `call` and builds its statements in
/// `dialect`, each flagged whether it is a select; nothing runs unless all
/// pass.
pub(crate) fn statements(
    dialect: Dialect<'_>,
    call: &Call,
) -> Result<Vec<(Statement, bool)>, CallError> {
    call.queries
        .iter()
        .enumerate()
        .map(|(i, query)| {
            let statement = compile_for(
                dialect,
                &call.schema,
                call.access,
                query,
                &call.limits.query,
            )
            .map_err(|e| CallError::at(i, e))?;
            if statement.params.len() > MAX_PARAMS {
                return Err(CallError::at(
                    i,
                    QueryError::TooComplex(format!(
                        "more than {MAX_PARAMS} values in one query; split it"
                    )),
                ));
            }
            Ok((statement, matches!(query, Query::Select { .. })))
        })
        .collect()
}

/// Bytes a value counts for against a call's result budget.
pub(crate) fn value_bytes(value: &Value) -> u64 {
    match value {
        Value::Text(s) => s.len() as u64,
        Value::Blob(b) => b.len() as u64,
        Value::Null | Value::Bool(_) | Value::S64(_) | Value::F64(_) => 8,
    }
}
