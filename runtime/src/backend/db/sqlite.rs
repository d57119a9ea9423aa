//! The embedded gateway database: one SQLite file per project
//! (`<dir>/<project>.db`), so no statement of one project can name another
//! project's tables.
//!
//! Each open project has one writer connection and a few readers (WAL lets
//! them read while the writer writes). Writes queue for the writer inside
//! the process and run in `BEGIN IMMEDIATE`; a call that cannot get the
//! writer within the busy timeout fails with `DB_BUSY`. Every connection:
//!
//! - has an authorizer that allows only reads and writes of the project's
//!   own tables (no `sqlite_*` or `_switchyard_*` table, no `ATTACH`, no
//!   pragma, no DDL), behind the validator that already only generates DML;
//! - has a progress handler that interrupts a statement past its call's
//!   deadline, so a timeout really stops the work;
//! - has `max_page_count` set from the project's quota, so SQLite itself
//!   refuses to grow the file beyond it;
//! - is defensive (`SQLITE_DBCONFIG_DEFENSIVE`, `trusted_schema = OFF`, no
//!   double-quoted string literals, so a quoted name that is no column is
//!   an error), with `case_sensitive_like = ON` as the SQL generator
//!   expects.
//!
//! Migrations run on the writer in one transaction and record the tables
//! they leave in `_switchyard_tables`, which the next migration plans from.

use super::{Call, CallError, CallLimits, DbBackend, DbError, MigrationError, Rows, value_bytes};
use crate::backend::sqlite::blocking;
use crate::db::migrate::{Removals, Step, plan};
use crate::db::query::Value;
use crate::db::schema::{ColumnType, Schema, Table, quote};
use crate::db::sql::{Access, Dialect, QueryError, Statement};
use crate::ids::ProjectId;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags, ToSql, TransactionBehavior};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest text or blob a statement may bind or produce: the validator's
/// limit, enforced again by SQLite.
const MAX_VALUE_BYTES: i32 = crate::db::sql::MAX_VALUE_BYTES as i32;
/// Virtual machine steps between two deadline checks.
const PROGRESS_STEPS: i32 = 1000;
/// The WAL is truncated back to this after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;
/// How long a migration waits for the writer (deploys are patient).
const MIGRATION_WAIT: Duration = Duration::from_secs(30);
/// SQLite's own cap on `LIKE` / `GLOB` patterns.
const LIKE_PATTERN_LIMIT: i32 = 1024;
/// SQLite's memory for every project's database together: past it, a
/// statement fails (`DB_UNAVAILABLE`) instead of the process running out
/// (a mutation's `RETURNING` rows, for one, are all buffered first).
const HEAP_LIMIT_BYTES: i64 = 1024 * 1024 * 1024;
/// Where applied migrations record the tables they leave.
const META_TABLE: &str = "_switchyard_tables";

/// Settings of [`SqliteGatewayDb`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteGatewayDbOptions {
    /// How long a write waits for the project's writer (another write in
    /// progress) before failing with `DB_BUSY`. Default 5 s.
    pub busy_timeout: Duration,
    /// Projects whose connections stay open; the least recently used beyond
    /// this are closed. Each open project holds up to `1 + readers`
    /// connections (three file descriptors each). Default 256.
    pub open_projects: u64,
    /// Reader connections per project, opened as needed. Default 2.
    pub readers: usize,
}

impl Default for SqliteGatewayDbOptions {
    fn default() -> Self {
        SqliteGatewayDbOptions {
            busy_timeout: Duration::from_secs(5),
            open_projects: 256,
            readers: 2,
        }
    }
}

/// Every project's gateway database, as SQLite files in one directory.
pub struct SqliteGatewayDb {
    dir: PathBuf,
    options: SqliteGatewayDbOptions,
    open: moka::sync::Cache<ProjectId, Arc<ProjectDb>>,
    /// Every project database still in use, evicted from `open` or not:
    /// a call that outlives its cache entry must not meet a second writer
    /// for the same file.
    live: Mutex<HashMap<ProjectId, Weak<ProjectDb>>>,
}

impl SqliteGatewayDb {
    /// Keeps project databases in `dir` (created if missing).
    pub fn open(dir: impl AsRef<Path>, options: SqliteGatewayDbOptions) -> Result<Self, DbError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| DbError::unavailable(format!("cannot create {}: {e}", dir.display())))?;
        // Process-wide; set through a throwaway connection.
        Connection::open_in_memory()
            .and_then(|c| c.pragma_update(None, "hard_heap_limit", HEAP_LIMIT_BYTES))
            .map_err(DbError::unavailable)?;
        Ok(SqliteGatewayDb {
            open: moka::sync::Cache::new(options.open_projects.max(1)),
            live: Mutex::new(HashMap::new()),
            dir,
            options,
        })
    }

    /// The file holding `project`'s database.
    pub fn path(&self, project: &ProjectId) -> PathBuf {
        // Project ids are DNS labels: safe as file names.
        self.dir.join(format!("{project}.db"))
    }

    fn project(&self, project: &ProjectId) -> Arc<ProjectDb> {
        self.open.get_with(project.clone(), || {
            let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(db) = live.get(project).and_then(Weak::upgrade) {
                return db;
            }
            live.retain(|_, db| db.strong_count() > 0);
            let db = Arc::new(ProjectDb {
                path: self.path(project),
                writer: Arc::new(Mutex::new(None)),
                readers: Arc::new(Mutex::new(Vec::new())),
                write_permit: Arc::new(Semaphore::new(1)),
                read_permits: Arc::new(Semaphore::new(self.options.readers.max(1))),
            });
            live.insert(project.clone(), Arc::downgrade(&db));
            db
        })
    }
}

/// One project's open connections.
struct ProjectDb {
    path: PathBuf,
    writer: Arc<Mutex<Option<Conn>>>,
    readers: Arc<Mutex<Vec<Conn>>>,
    write_permit: Arc<Semaphore>,
    read_permits: Arc<Semaphore>,
}

/// A connection with the handles its hooks read.
struct Conn {
    conn: Connection,
    /// When the running call must stop, in nanoseconds since [`clock`]'s
    /// start; `u64::MAX` when no call runs.
    deadline: Arc<AtomicU64>,
    /// Lets Switchyard's own statements (pragmas, migrations) past the
    /// authorizer while it is set.
    trusted: Arc<AtomicBool>,
    /// The `max_page_count` last set.
    quota_bytes: Option<u64>,
}

fn clock() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Conn {
    fn open(path: &Path, reader: bool) -> rusqlite::Result<Conn> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags)?;
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
        // A double-quoted name that matches no column must be an error,
        // never the string literal SQLite would otherwise read it as.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DQS_DML, false)?;
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DQS_DDL, false)?;
        conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)?;
        // Above the validator's cap for tenants' patterns, room for the
        // schema's own `uuid` check (a 260-byte GLOB).
        conn.set_limit(Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH, LIKE_PATTERN_LIMIT)?;
        // File locks held by another process (a checkpoint, a backup tool).
        conn.busy_timeout(Duration::from_secs(2))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Acknowledged writes survive a crash of the process or machine.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        conn.pragma_update(None, "trusted_schema", false)?;
        conn.pragma_update(None, "case_sensitive_like", true)?;
        // Sorts and RETURNING buffers stay in memory, under the heap limit,
        // instead of temp files outside the quota.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        if reader {
            conn.pragma_update(None, "query_only", true)?;
        }

        let deadline = Arc::new(AtomicU64::new(u64::MAX));
        let watched = deadline.clone();
        conn.progress_handler(
            PROGRESS_STEPS,
            Some(move || nanos(clock()) > watched.load(Ordering::Relaxed)),
        )?;
        let trusted = Arc::new(AtomicBool::new(false));
        let bypass = trusted.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            if bypass.load(Ordering::Relaxed) {
                Authorization::Allow
            } else {
                authorize(&ctx)
            }
        }))?;
        Ok(Conn {
            conn,
            deadline,
            trusted,
            quota_bytes: None,
        })
    }

    /// Runs `f` with the authorizer open, for Switchyard's own statements.
    fn trusted<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        self.trusted.store(true, Ordering::Relaxed);
        let result = f(&self.conn);
        self.trusted.store(false, Ordering::Relaxed);
        result
    }

    /// Sets the file's size cap from the quota.
    fn set_quota(&mut self, quota_bytes: u64) -> rusqlite::Result<()> {
        if self.quota_bytes == Some(quota_bytes) {
            return Ok(());
        }
        self.trusted(|conn| {
            let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
            let pages = (quota_bytes / u64::try_from(page_size).unwrap_or(4096).max(1)).max(1);
            conn.pragma_update(
                None,
                "max_page_count",
                i64::try_from(pages).unwrap_or(i64::MAX),
            )
        })?;
        self.quota_bytes = Some(quota_bytes);
        Ok(())
    }
}

/// What a tenant's statement may do: read and write its own tables in the
/// main database. Everything else — `sqlite_*` and `_switchyard_*` tables,
/// the temp schema, pragmas, attach, DDL, triggers, views — is denied.
fn authorize(ctx: &AuthContext<'_>) -> Authorization {
    let own = |table: &str| {
        // SQLite leaves the name out for some reads (of the rowid).
        matches!(ctx.database_name, Some("main") | None)
            && table.starts_with(|c: char| c.is_ascii_lowercase())
            && !table.starts_with("sqlite_")
    };
    match ctx.action {
        AuthAction::Select | AuthAction::Transaction { .. } | AuthAction::Function { .. } => {
            Authorization::Allow
        }
        AuthAction::Read { table_name, .. }
        | AuthAction::Insert { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::Delete { table_name }
            if own(table_name) =>
        {
            Authorization::Allow
        }
        _ => Authorization::Deny,
    }
}

impl ProjectDb {
    /// Runs `f` on the writer, waiting at most `wait` for it.
    async fn write<T: Send + 'static>(
        &self,
        wait: Duration,
        f: impl FnOnce(&mut Conn) -> Result<T, CallError> + Send + 'static,
    ) -> Result<T, CallError> {
        let permit = acquire(&self.write_permit, wait).await?;
        let (writer, path) = (self.writer.clone(), self.path.clone());
        blocking(move || {
            let _permit = permit;
            let mut slot = writer.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(Conn::open(&path, false).map_err(unavailable)?);
            }
            let Some(conn) = slot.as_mut() else {
                return Err(CallError::whole(DbError::unavailable("no writer")));
            };
            let result = f(conn).map_err(|e| blame_a_full_disk(e, conn, &path));
            // A connection left inside a transaction (a failed rollback)
            // would fail every later call: open a fresh one next time.
            if !conn.conn.is_autocommit() {
                *slot = None;
            }
            result
        })
        .await
    }

    /// Runs `f` on a reader, waiting at most `wait` for one.
    async fn read<T: Send + 'static>(
        &self,
        wait: Duration,
        f: impl FnOnce(&mut Conn) -> Result<T, CallError> + Send + 'static,
    ) -> Result<T, CallError> {
        let permit = acquire(&self.read_permits, wait).await?;
        let (readers, path) = (self.readers.clone(), self.path.clone());
        blocking(move || {
            let _permit = permit;
            let pooled = readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => Conn::open(&path, true).map_err(unavailable)?,
            };
            let result = f(&mut conn);
            if conn.conn.is_autocommit() {
                readers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(conn);
            }
            result
        })
        .await
    }
}

/// `SQLITE_FULL` comes both from the quota (`max_page_count`) and from a
/// full disk, and SQLite does not say which. When the disk had less room
/// left than the quota, the disk is blamed: `DB_UNAVAILABLE`, the
/// operator's problem (the path goes to the log), not `QUOTA_EXCEEDED`,
/// which tells the tenant to delete data.
fn blame_a_full_disk(mut e: CallError, conn: &Conn, path: &Path) -> CallError {
    if matches!(e.error, DbError::QuotaExceeded) && conn.trusted(disk_ran_out_first) {
        e.error = DbError::unavailable(format!("the disk holding {} is full", path.display()));
    }
    e
}

/// Whether the filesystem holding `conn`'s database has less room left
/// than the database's quota (`max_page_count`) lets it grow: after
/// `SQLITE_FULL`, whether the disk rather than the quota ran out. Needs a
/// trusted connection (it reads pragmas).
fn disk_ran_out_first(conn: &Connection) -> bool {
    let quota_room = (|| -> rusqlite::Result<i64> {
        let pragma = |name| conn.pragma_query_value(None, name, |r| r.get::<_, i64>(0));
        let (max, pages, size) = (
            pragma("max_page_count")?,
            pragma("page_count")?,
            pragma("page_size")?,
        );
        Ok(max.saturating_sub(pages).saturating_mul(size))
    })();
    let dir = conn.path().map(Path::new).and_then(Path::parent);
    match (quota_room, dir.and_then(crate::disk::free_bytes)) {
        (Ok(quota_room), Some(disk_room)) => disk_room < u64::try_from(quota_room).unwrap_or(0),
        _ => false,
    }
}

async fn acquire(
    permits: &Arc<Semaphore>,
    wait: Duration,
) -> Result<OwnedSemaphorePermit, CallError> {
    match tokio::time::timeout(wait, permits.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(e)) => Err(CallError::whole(DbError::unavailable(e))),
        Err(_) => Err(CallError::whole(DbError::Busy)),
    }
}

/// A blocking task that died (`backend::sqlite::blocking`, which runs
/// every call: a caller that gives up does not stop it, so the statement
/// runs to its deadline and its permit is released only then).
impl From<crate::backend::sqlite::DbError> for CallError {
    fn from(e: crate::backend::sqlite::DbError) -> Self {
        CallError::whole(DbError::unavailable(e))
    }
}

fn unavailable(e: impl std::fmt::Display) -> CallError {
    CallError::whole(DbError::unavailable(e))
}

#[async_trait::async_trait]
impl DbBackend for SqliteGatewayDb {
    async fn migrate(
        &self,
        project: &ProjectId,
        schema: &Schema,
        removals: Removals,
    ) -> Result<Vec<String>, MigrationError> {
        if schema.tables().is_empty() && !self.path(project).exists() {
            // Nothing declared, nothing there: no file for a project
            // without tables.
            return Ok(Vec::new());
        }
        let db = self.project(project);
        let schema = schema.clone();
        let result = db
            .write(MIGRATION_WAIT, move |conn| {
                Ok(conn.trusted(|c| migrate(c, &schema, removals)))
            })
            .await;
        match result {
            Ok(outcome) => outcome,
            Err(e) => Err(MigrationError::Unavailable {
                detail: format!("{:?}", e.error),
            }),
        }
    }

    async fn call(&self, project: &ProjectId, call: Call) -> Result<Vec<Rows>, CallError> {
        let started = Instant::now();
        let statements = super::statements(Dialect::Sqlite, &call)?;
        if statements.is_empty() {
            return Ok(Vec::new());
        }
        let writes = statements.iter().any(|(_, select)| !select);
        let limits = call.limits;
        let access = call.access;
        let wait = self.options.busy_timeout.min(limits.timeout);
        let run =
            move |conn: &mut Conn| run_call(conn, &statements, access, &limits, started, writes);
        let db = self.project(project);
        if writes {
            db.write(wait, run).await
        } else {
            db.read(wait, run).await
        }
    }

    async fn usage(&self, project: &ProjectId) -> Result<u64, DbError> {
        if !self.path(project).exists() {
            return Ok(0);
        }
        self.project(project)
            .read(self.options.busy_timeout, |conn| {
                conn.trusted(|c| {
                    let pages: i64 = c.pragma_query_value(None, "page_count", |r| r.get(0))?;
                    let size: i64 = c.pragma_query_value(None, "page_size", |r| r.get(0))?;
                    Ok::<_, rusqlite::Error>(u64::try_from(pages.saturating_mul(size)).unwrap_or(0))
                })
                .map_err(unavailable)
            })
            .await
            .map_err(|e| e.error)
    }

    async fn purge(&self, project: &ProjectId) -> Result<(), DbError> {
        self.open.invalidate(project);
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(project);
        let path = self.path(project);
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(DbError::unavailable(format!("cannot remove {file:?}: {e}"))),
            }
        }
        Ok(())
    }
}

/// Runs a call's statements in one transaction on `conn`.
fn run_call(
    conn: &mut Conn,
    statements: &[(Statement, bool)],
    access: Access,
    limits: &CallLimits,
    started: Instant,
    writes: bool,
) -> Result<Vec<Rows>, CallError> {
    let remaining = limits.timeout.saturating_sub(started.elapsed());
    if remaining.is_zero() {
        return Err(CallError::whole(DbError::Timeout(millis(limits.timeout))));
    }
    conn.set_quota(limits.quota_bytes)
        .map_err(|e| CallError::whole(db_error(&e, access, limits)))?;
    conn.deadline
        .store(nanos(clock() + remaining), Ordering::Relaxed);
    let result = transaction(&mut conn.conn, statements, access, limits, writes);
    conn.deadline.store(u64::MAX, Ordering::Relaxed);
    result
}

fn transaction(
    conn: &mut Connection,
    statements: &[(Statement, bool)],
    access: Access,
    limits: &CallLimits,
    writes: bool,
) -> Result<Vec<Rows>, CallError> {
    let behavior = if writes {
        TransactionBehavior::Immediate
    } else {
        TransactionBehavior::Deferred
    };
    let whole = |e: rusqlite::Error| CallError::whole(db_error(&e, access, limits));
    // Dropped without commit on any error: rolled back.
    let tx = conn.transaction_with_behavior(behavior).map_err(whole)?;
    let mut budget = limits.result_bytes;
    let mut results = Vec::with_capacity(statements.len());
    for (i, (statement, select)) in statements.iter().enumerate() {
        let rows = execute(&tx, statement, *select, &mut budget)
            .map_err(|e| CallError::at(i, e.into_db_error(access, limits)))?;
        results.push(rows);
    }
    tx.commit().map_err(whole)?;
    Ok(results)
}

/// A failure inside one statement.
enum StatementError {
    Sqlite(rusqlite::Error),
    ResultTooLarge(u64),
}

impl From<rusqlite::Error> for StatementError {
    fn from(e: rusqlite::Error) -> Self {
        StatementError::Sqlite(e)
    }
}

impl StatementError {
    fn into_db_error(self, access: Access, limits: &CallLimits) -> DbError {
        match self {
            StatementError::Sqlite(e) => db_error(&e, access, limits),
            StatementError::ResultTooLarge(max) => DbError::Query(QueryError::TooComplex(format!(
                "the result is larger than {max} bytes; select fewer rows or columns"
            ))),
        }
    }
}

fn execute(
    tx: &rusqlite::Transaction<'_>,
    statement: &Statement,
    select: bool,
    budget: &mut u64,
) -> Result<Rows, StatementError> {
    let mut prepared = tx.prepare_cached(&statement.sql)?;
    let params = statement.params.iter().map(Param);
    let mut cursor = prepared.query(rusqlite::params_from_iter(params))?;
    let mut rows = Vec::new();
    let limit = *budget;
    while let Some(row) = cursor.next()? {
        let mut values = Vec::with_capacity(statement.columns.len());
        for (i, ty) in statement.column_types.iter().enumerate() {
            let value = read_value(row.get_ref(i)?, *ty);
            let size = value_bytes(&value);
            *budget = budget
                .checked_sub(size)
                .ok_or(StatementError::ResultTooLarge(limit))?;
            values.push(value);
        }
        rows.push(values);
    }
    drop(cursor);
    let affected = if select { 0 } else { tx.changes() };
    Ok(Rows {
        columns: statement.columns.clone(),
        rows,
        affected,
    })
}

/// A stored value as its column type reads it.
fn read_value(value: ValueRef<'_>, ty: ColumnType) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) if ty == ColumnType::Boolean => Value::Bool(n != 0),
        ValueRef::Integer(n) => Value::S64(n),
        ValueRef::Real(v) => Value::F64(v),
        ValueRef::Text(bytes) => Value::Text(String::from_utf8_lossy(bytes).into_owned()),
        ValueRef::Blob(bytes) => Value::Blob(bytes.to_vec()),
    }
}

/// A query value bound as a parameter.
struct Param<'a>(&'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
            Value::S64(n) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
            Value::F64(v) => ToSqlOutput::Borrowed(ValueRef::Real(*v)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a SQLite failure means to the caller. Constraint messages name the
/// project's own table and column; a public key gets only the kind, since
/// the column may be one it cannot see.
fn db_error(e: &rusqlite::Error, access: Access, limits: &CallLimits) -> DbError {
    let rusqlite::Error::SqliteFailure(failure, message) = e else {
        return DbError::unavailable(e);
    };
    match failure.code {
        ErrorCode::ConstraintViolation => {
            let message = match access {
                Access::Server => message
                    .clone()
                    .unwrap_or_else(|| "constraint failed".into()),
                Access::Public => constraint_kind(failure.extended_code).into(),
            };
            DbError::ConstraintViolation(message)
        }
        ErrorCode::DiskFull => DbError::QuotaExceeded,
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => DbError::Busy,
        ErrorCode::OperationInterrupted => DbError::Timeout(millis(limits.timeout)),
        ErrorCode::TooBig => DbError::Query(QueryError::InvalidValue(format!(
            "a value is larger than {MAX_VALUE_BYTES} bytes"
        ))),
        _ => DbError::unavailable(e),
    }
}

fn constraint_kind(extended_code: i32) -> &'static str {
    use rusqlite::ffi;
    match extended_code {
        ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
            "a row with the same unique value already exists"
        }
        ffi::SQLITE_CONSTRAINT_NOTNULL => "a required value is missing",
        ffi::SQLITE_CONSTRAINT_CHECK | ffi::SQLITE_CONSTRAINT_DATATYPE => {
            "a value does not fit its column"
        }
        _ => "a constraint failed",
    }
}

/// Applies the plan from the recorded tables to `schema` (on a trusted
/// connection, in one transaction).
fn migrate(
    conn: &Connection,
    schema: &Schema,
    removals: Removals,
) -> Result<Vec<String>, MigrationError> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| db_migration_error(conn, &e, "begin"))?;
    let outcome = migrate_in_transaction(conn, schema, removals);
    let end = if outcome.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    match (outcome, conn.execute_batch(end)) {
        (Ok(steps), Ok(())) => Ok(steps),
        (Ok(_), Err(e)) => Err(db_migration_error(conn, &e, "commit")),
        (Err(e), _) => Err(e),
    }
}

fn migrate_in_transaction(
    conn: &Connection,
    schema: &Schema,
    removals: Removals,
) -> Result<Vec<String>, MigrationError> {
    let recording = |e: rusqlite::Error| db_migration_error(conn, &e, "recording the tables");
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {} (name TEXT PRIMARY KEY, definition TEXT NOT NULL) STRICT",
        quote(META_TABLE)
    ))
    .map_err(recording)?;
    let live = recorded_tables(conn)?;
    let plan = plan(&live, schema, removals).map_err(|e| MigrationError::Refused(e.to_string()))?;
    let mut done = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        let sql = step_sql(step).map_err(|e| MigrationError::Refused(e.to_string()))?;
        conn.execute_batch(&sql)
            .map_err(|e| db_migration_error(conn, &e, &step.describe()))?;
        done.push(step.describe());
    }
    conn.execute(&format!("DELETE FROM {}", quote(META_TABLE)), [])
        .map_err(recording)?;
    for table in &plan.tables {
        let definition = serde_json::to_string(table).map_err(|e| MigrationError::Unavailable {
            detail: e.to_string(),
        })?;
        conn.execute(
            &format!(
                "INSERT INTO {} (name, definition) VALUES (?1, ?2)",
                quote(META_TABLE)
            ),
            (&table.name, definition),
        )
        .map_err(recording)?;
    }
    Ok(done)
}

/// What a failed migration step means. `conn` is the migration's own
/// (trusted) connection, asked whether a `SQLITE_FULL` was the disk's.
fn db_migration_error(conn: &Connection, e: &rusqlite::Error, step: &str) -> MigrationError {
    match e {
        rusqlite::Error::SqliteFailure(failure, message)
            if failure.code == ErrorCode::ConstraintViolation =>
        {
            MigrationError::Failed(format!(
                "{step}: {}",
                message.as_deref().unwrap_or("a constraint failed")
            ))
        }
        rusqlite::Error::SqliteFailure(failure, _) if failure.code == ErrorCode::DiskFull => {
            if disk_ran_out_first(conn) {
                MigrationError::StorageFull {
                    detail: format!("{step}: the disk is full"),
                }
            } else {
                MigrationError::Failed(format!("{step}: the project's database is full"))
            }
        }
        _ => MigrationError::Unavailable {
            detail: format!("{step}: {e}"),
        },
    }
}

/// The tables the last migration left.
fn recorded_tables(conn: &Connection) -> Result<Vec<Table>, MigrationError> {
    let unavailable = |e: rusqlite::Error| MigrationError::Unavailable {
        detail: e.to_string(),
    };
    let mut statement = conn
        .prepare(&format!(
            "SELECT definition FROM {} ORDER BY rowid",
            quote(META_TABLE)
        ))
        .map_err(unavailable)?;
    let definitions = statement
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(unavailable)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(unavailable)?;
    definitions
        .iter()
        .map(|json| {
            serde_json::from_str(json).map_err(|e| MigrationError::Unavailable {
                detail: format!("a recorded table is unreadable: {e}"),
            })
        })
        .collect()
}

fn step_sql(step: &Step) -> Result<String, crate::db::schema::SchemaError> {
    Ok(match step {
        Step::CreateTable(table) => table.create_sql(),
        Step::AddColumn { table, column } => format!(
            "ALTER TABLE {} ADD COLUMN {}",
            quote(table),
            column.added_definition_sql(table)?
        ),
        Step::CreateIndex { table, index } => table.index_sql(index),
        Step::DropIndex { table, index } => {
            format!("DROP INDEX IF EXISTS {}", quote(&table.index_name(index)))
        }
        Step::DropColumn { table, column } => {
            format!("ALTER TABLE {} DROP COLUMN {}", quote(table), quote(column))
        }
        Step::DropTable(table) => format!("DROP TABLE {}", quote(table)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_db_contract() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteGatewayDb::open(dir.path(), SqliteGatewayDbOptions::default()).unwrap();
        super::super::contract::db_contract(&db).await;
    }

    /// Behind the validator, the connection itself refuses everything but
    /// reads and writes of the project's own tables.
    #[test]
    fn the_authorizer_refuses_everything_but_own_tables() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Conn::open(&dir.path().join("p.db"), false).unwrap();
        conn.trusted(|c| {
            c.execute_batch(
                "CREATE TABLE todos (id INTEGER) STRICT;
                 CREATE TABLE _switchyard_tables (name TEXT) STRICT;",
            )
        })
        .unwrap();
        let allowed = [
            "SELECT id FROM todos",
            "INSERT INTO todos (id) VALUES (1)",
            "UPDATE todos SET id = 2 WHERE id = 1",
            "DELETE FROM todos WHERE id = 2",
            "SELECT lower('A')",
        ];
        for sql in allowed {
            conn.conn
                .execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let refused = [
            "SELECT name FROM sqlite_master",
            "SELECT name FROM sqlite_schema",
            "SELECT name FROM _switchyard_tables",
            "PRAGMA max_page_count = 1000000",
            "PRAGMA table_info(todos)",
            "ATTACH DATABASE 'other.db' AS other",
            "CREATE TABLE x (a INTEGER)",
            "CREATE TEMP TABLE x (a INTEGER)",
            "DROP TABLE todos",
            "ALTER TABLE todos ADD COLUMN b TEXT",
            "CREATE INDEX i ON todos (id)",
            "CREATE VIEW v AS SELECT id FROM todos",
            "CREATE TRIGGER t AFTER INSERT ON todos BEGIN SELECT 1; END",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r",
            "VACUUM",
            "SELECT id FROM temp.todos",
            // Not a column: an error, not the string 'nope'.
            "SELECT \"nope\" FROM todos",
        ];
        for sql in refused {
            assert!(conn.conn.execute_batch(sql).is_err(), "{sql} was allowed");
        }
    }
}
