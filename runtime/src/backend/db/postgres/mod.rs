//! The shared gateway database: PostgreSQL, one schema per project.
//!
//! A project's tables live in its own schema (`p_<project>`), and every
//! statement names them qualified by it — the validator only ever
//! generates the project's declared tables — with `search_path` pinned to
//! that schema as well. Each call is one transaction on a pooled
//! connection:
//!
//! - writes of one project run one at a time (a transaction-scoped
//!   advisory lock, waited for at most the busy timeout, then `DB_BUSY`),
//!   as SQLite's single writer does, so both backends behave alike;
//! - `SET LOCAL statement_timeout` makes PostgreSQL cancel a statement
//!   still running at the call's deadline (`QUERY_TIMEOUT`);
//! - the quota is the size of the schema's tables with their indexes and
//!   TOAST (main forks), measured before a write commits: a write that would leave it
//!   above the quota *and* larger than before is rolled back
//!   (`QUOTA_EXCEEDED`), after a `VACUUM` has had the chance to give back
//!   what deleted rows and aborted writes left behind (PostgreSQL does not
//!   shrink files on its own). Deletes always run, so a project over a
//!   lowered quota can get back under it. A project found full has its
//!   other writes refused without running for 1 s, doubling up to a minute
//!   until something is deleted (on that node), which bounds the vacuums a
//!   full project causes;
//! - reads run in one `REPEATABLE READ READ ONLY` snapshot.
//!
//! Migrations are the planner's steps rendered in PostgreSQL's DDL
//! ([`ddl`]), in one transaction with the project's lock held, recorded in
//! the schema's `_switchyard_tables`.

mod ddl;

use super::{Call, CallError, CallLimits, DbBackend, DbError, MigrationError, Rows, value_bytes};
use crate::db::migrate::{Removals, plan};
use crate::db::query::{Query, Value};
use crate::db::schema::{ColumnType, Schema, Table, quote};
use crate::db::sql::{Access, Dialect, QueryError, Statement};
use crate::ids::ProjectId;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
    Timeouts,
};
use futures::TryStreamExt;
use sha2::Digest;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{IsolationLevel, NoTls, Row};

/// How long a migration waits for the project's lock.
const MIGRATION_WAIT: Duration = Duration::from_secs(30);
/// How long a migration (or dropping a project's schema) may run.
const MIGRATION_LIMIT: Duration = Duration::from_secs(5 * 60);
/// How long past a deadline the server has to say it cancelled the work,
/// before the connection is given up on.
const GRACE: Duration = Duration::from_secs(2);
/// Where applied migrations record the tables they leave.
const META_TABLE: &str = "_switchyard_tables";
/// The bytes of a project's tables, their indexes, their TOAST tables and
/// those tables' indexes: main forks only, since the free-space and
/// visibility maps a `VACUUM` adds are PostgreSQL's bookkeeping, not data.
const SIZE_SQL: &str = "WITH own AS (
         SELECT c.oid, c.reltoastrelid FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'i')),
     relations AS (
         SELECT oid FROM own
         UNION ALL SELECT reltoastrelid FROM own WHERE reltoastrelid <> 0
         UNION ALL SELECT i.indexrelid FROM pg_index i JOIN own ON i.indrelid = own.reltoastrelid)
     SELECT COALESCE(sum(pg_relation_size(oid)), 0)::bigint FROM relations";

/// Settings of [`PostgresGatewayDb`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresGatewayDbOptions {
    /// How long a write waits for the project's other writes (and any call
    /// for a free connection) before failing with `DB_BUSY`. Default 5 s.
    pub busy_timeout: Duration,
    /// Connections in the pool. Default 16.
    pub pool_size: usize,
    /// How long opening a connection may take. Default 5 s.
    pub connect_timeout: Duration,
}

impl Default for PostgresGatewayDbOptions {
    fn default() -> Self {
        PostgresGatewayDbOptions {
            busy_timeout: Duration::from_secs(5),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Every project's gateway database, as schemas of one PostgreSQL
/// database. See the module docs.
pub struct PostgresGatewayDb {
    pool: Pool,
    options: PostgresGatewayDbOptions,
    /// Projects found full (a vacuum did not make room), by schema.
    full: moka::sync::Cache<String, FullBackoff>,
}

impl PostgresGatewayDb {
    /// A pool for `url` (`postgres://user[:password]@host[:port]/database`).
    /// Connections are made as needed; the first is made now, so a wrong
    /// URL or an unreachable server is reported at startup.
    pub async fn connect(url: &str, options: PostgresGatewayDbOptions) -> Result<Self, DbError> {
        // The parser's messages may quote the URL, password included.
        let mut config: tokio_postgres::Config = url.parse().map_err(|_| {
            DbError::unavailable(
                "invalid postgres URL: expected postgres://user[:password]@host[:port]/database",
            )
        })?;
        config
            .connect_timeout(options.connect_timeout)
            // A server that vanished (no FIN, no RST) is noticed within
            // about 30 s, by the probes when idle and by the unacknowledged
            // data otherwise, rather than the kernel's 2 h and 15 min.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(15))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(30))
            .application_name("switchyard")
            // A backstop for statements run outside a call's own
            // timeout; literals rendered in DDL rely on standard strings.
            .options("-c statement_timeout=60000 -c standard_conforming_strings=on");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(DbError::unavailable)?;
        let db = PostgresGatewayDb {
            pool,
            options,
            full: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        };
        let client = db
            .client(db.options.connect_timeout)
            .await
            .map_err(|e| e.error)?;
        client
            .batch_execute("SELECT 1")
            .await
            .map_err(DbError::unavailable)?;
        Ok(db)
    }

    /// The schema holding `project`'s tables: `p_<id>`, or for ids too
    /// long for PostgreSQL's 63-byte names, a prefix and a digest.
    pub fn schema_name(project: &ProjectId) -> String {
        let id = project.as_str();
        if id.len() <= 61 {
            format!("p_{id}")
        } else {
            let digest = hex::encode(sha2::Sha256::digest(id.as_bytes()));
            format!("p_{}_{}", &id[..40], &digest[..20])
        }
    }

    async fn client(&self, wait: Duration) -> Result<Object, CallError> {
        let timeouts = Timeouts {
            wait: Some(wait),
            create: Some(self.options.connect_timeout),
            recycle: Some(self.options.connect_timeout),
        };
        match self.pool.timeout_get(&timeouts).await {
            Ok(client) => Ok(client),
            Err(PoolError::Timeout(deadpool_postgres::TimeoutType::Wait)) => {
                Err(CallError::whole(DbError::Busy))
            }
            Err(e) => Err(CallError::whole(DbError::unavailable(e))),
        }
    }

    /// Runs `call` once: `Err(None)` means it was rolled back for being
    /// over the quota.
    async fn attempt(
        &self,
        client: &mut Object,
        schema: &str,
        statements: &[(Statement, bool)],
        call: &CallParts,
        started: Instant,
    ) -> Result<Vec<Rows>, Option<CallError>> {
        let whole = |e: tokio_postgres::Error| {
            Some(CallError::whole(db_error(&e, call.access, &call.limits)))
        };
        let timed_out = || {
            Some(CallError::whole(DbError::Timeout(millis(
                call.limits.timeout,
            ))))
        };
        let tx = client
            .build_transaction()
            .isolation_level(if call.writes {
                IsolationLevel::ReadCommitted
            } else {
                IsolationLevel::RepeatableRead
            })
            .read_only(!call.writes)
            .start()
            .await
            .map_err(whole)?;
        let remaining = call.limits.timeout.saturating_sub(started.elapsed());
        let wait = self.options.busy_timeout.min(remaining);
        tx.batch_execute(&format!(
            "SET LOCAL search_path = {}; SET LOCAL lock_timeout = {}",
            quote(schema),
            millis(wait).max(1)
        ))
        .await
        .map_err(whole)?;
        let mut size_before = 0;
        if call.writes {
            // Pipelined: one round trip; the size is read once the lock is
            // held (statements run in order, each with its own snapshot).
            let key = lock_key(schema);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&key];
            let lock = tx.execute("SELECT pg_advisory_xact_lock($1)", &params);
            let (locked, measured) = tokio::join!(lock, size(&tx, schema));
            match locked {
                Ok(_) => {}
                Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                    return Err(Some(CallError::whole(DbError::Busy)));
                }
                Err(e) => return Err(whole(e)),
            }
            size_before = measured.map_err(whole)?;
        }
        let remaining = call.limits.timeout.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return Err(timed_out());
        }
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            millis(remaining).max(1)
        ))
        .await
        .map_err(whole)?;
        let mut budget = call.limits.result_bytes;
        let mut results = Vec::with_capacity(statements.len());
        for (i, (statement, select)) in statements.iter().enumerate() {
            let rows = execute(&tx, statement, *select, &mut budget)
                .await
                .map_err(|e| Some(CallError::at(i, e.into_db_error(call.access, &call.limits))))?;
            results.push(rows);
        }
        if call.writes {
            // Only growth is refused: a project over its quota (lowered by
            // the operator, say) can still delete and update in place.
            let size_after = size(&tx, schema).await.map_err(whole)?;
            if size_after > call.limits.quota_bytes && size_after > size_before {
                tx.rollback().await.map_err(whole)?;
                return Err(None);
            }
        }
        tx.commit().await.map_err(whole)?;
        Ok(results)
    }
}

/// What [`PostgresGatewayDb::attempt`] needs of a call besides its
/// statements.
struct CallParts {
    access: Access,
    limits: CallLimits,
    writes: bool,
    /// Whether its writes are all deletes, which never grow a table.
    only_deletes: bool,
}

/// Until when a full project's writes (but deletes) are refused without
/// being run.
#[derive(Clone, Copy)]
struct FullBackoff {
    until: Instant,
    step: Duration,
}

/// The advisory lock that serialises a project's writes and migrations.
fn lock_key(schema: &str) -> i64 {
    let digest = sha2::Sha256::digest(schema.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait::async_trait]
impl DbBackend for PostgresGatewayDb {
    async fn migrate(
        &self,
        project: &ProjectId,
        schema: &Schema,
        removals: Removals,
    ) -> Result<Vec<String>, MigrationError> {
        let mut client = self
            .client(MIGRATION_WAIT)
            .await
            .map_err(|e| migration_unavailable(&e.error))?;
        // The server enforces MIGRATION_LIMIT itself; this is for a server
        // or network that stops answering.
        let bounded = tokio::time::timeout(
            MIGRATION_LIMIT + GRACE,
            self.migrate_on(&mut client, project, schema, removals),
        )
        .await;
        match bounded {
            Ok(result) => result,
            Err(_) => Err(migration_unavailable(&gave_up(client))),
        }
    }

    async fn call(&self, project: &ProjectId, call: Call) -> Result<Vec<Rows>, CallError> {
        self.run_call(project, call).await
    }

    async fn ping(&self) -> Result<(), DbError> {
        let client = self
            .client(self.options.busy_timeout)
            .await
            .map_err(|e| e.error)?;
        let limit = self.options.busy_timeout + GRACE;
        match tokio::time::timeout(limit, client.batch_execute("SELECT 1")).await {
            Ok(result) => result.map_err(DbError::unavailable),
            Err(_) => Err(gave_up(client)),
        }
    }

    async fn usage(&self, project: &ProjectId) -> Result<u64, DbError> {
        let client = self
            .client(self.options.busy_timeout)
            .await
            .map_err(|e| e.error)?;
        let limit = self.options.busy_timeout + GRACE;
        let schema = Self::schema_name(project);
        match tokio::time::timeout(limit, size(&client, &schema)).await {
            Ok(result) => result.map_err(DbError::unavailable),
            Err(_) => Err(gave_up(client)),
        }
    }

    async fn purge(&self, project: &ProjectId) -> Result<(), DbError> {
        let client = self
            .client(self.options.busy_timeout)
            .await
            .map_err(|e| e.error)?;
        let drop_schema = format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote(&Self::schema_name(project))
        );
        match tokio::time::timeout(MIGRATION_LIMIT + GRACE, client.batch_execute(&drop_schema))
            .await
        {
            Ok(result) => result.map_err(DbError::unavailable),
            Err(_) => Err(gave_up(client)),
        }
    }
}

impl PostgresGatewayDb {
    /// [`DbBackend::call`].
    async fn run_call(&self, project: &ProjectId, call: Call) -> Result<Vec<Rows>, CallError> {
        let started = Instant::now();
        let name = Self::schema_name(project);
        let dialect = Dialect::Postgres { schema: &name };
        let statements = super::statements(dialect, &call)?;
        if statements.is_empty() {
            return Ok(Vec::new());
        }
        let parts = CallParts {
            access: call.access,
            limits: call.limits,
            writes: statements.iter().any(|(_, select)| !select),
            only_deletes: call
                .queries
                .iter()
                .all(|q| matches!(q, Query::Select { .. } | Query::Delete { .. })),
        };
        if parts.writes && !parts.only_deletes && self.is_full(&name) {
            return Err(CallError::whole(DbError::QuotaExceeded));
        }
        let wait = self.options.busy_timeout.min(call.limits.timeout);
        let mut client = self.client(wait).await?;
        // PostgreSQL cancels a statement at the deadline by itself; this is
        // for a server or network that stops answering. A connection given
        // up on mid-call is closed, never reused.
        let backstop = call.limits.timeout + GRACE;
        let run = async {
            match self
                .attempt(&mut client, &name, &statements, &parts, started)
                .await
            {
                Ok(rows) => {
                    if parts.writes && parts.only_deletes {
                        self.full.invalidate(&name);
                    }
                    Ok(rows)
                }
                Err(Some(e)) => Err(e),
                Err(None) => {
                    // Over the quota: reclaim what deleted rows and aborted
                    // writes left, and try once more. A write refused again
                    // leaves its pages behind (PostgreSQL does not shrink
                    // files when rolling back): vacuum those too.
                    vacuum(&client, &name).await;
                    match self
                        .attempt(&mut client, &name, &statements, &parts, started)
                        .await
                    {
                        Err(None) => {
                            vacuum(&client, &name).await;
                            self.found_full(&name);
                            Err(CallError::whole(DbError::QuotaExceeded))
                        }
                        other => other.map_err(|e| {
                            e.unwrap_or_else(|| CallError::whole(DbError::QuotaExceeded))
                        }),
                    }
                }
            }
        };
        let outcome = tokio::time::timeout(backstop, run).await;
        match outcome {
            Ok(result) => result,
            Err(_) => {
                drop(Object::take(client));
                Err(CallError::whole(DbError::Timeout(millis(
                    call.limits.timeout,
                ))))
            }
        }
    }

    /// Whether `schema` was found full recently (on this node) and nothing
    /// was deleted since: its writes other than deletes are then refused
    /// without being run, so that a project at its quota cannot make every
    /// refused write two `VACUUM`s.
    fn is_full(&self, schema: &str) -> bool {
        self.full
            .get(schema)
            .is_some_and(|backoff| Instant::now() < backoff.until)
    }

    /// Records that `schema` is full: for 1 s the first time, doubling up
    /// to a minute while it stays full.
    fn found_full(&self, schema: &str) {
        let step = self.full.get(schema).map_or(Duration::from_secs(1), |b| {
            (b.step * 2).min(Duration::from_secs(60))
        });
        self.full.insert(
            schema.to_owned(),
            FullBackoff {
                until: Instant::now() + step,
                step,
            },
        );
    }

    /// [`DbBackend::migrate`] on `client`.
    async fn migrate_on(
        &self,
        client: &mut Object,
        project: &ProjectId,
        schema: &Schema,
        removals: Removals,
    ) -> Result<Vec<String>, MigrationError> {
        let name = Self::schema_name(project);
        if schema.tables().is_empty() {
            let exists = client
                .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&name])
                .await
                .map_err(|e| migration_unavailable(&e))?;
            if exists.is_none() {
                // Nothing declared, nothing there: no schema for a project
                // without tables.
                return Ok(Vec::new());
            }
        }
        let tx = client
            .transaction()
            .await
            .map_err(|e| migration_unavailable(&e))?;
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}",
            millis(MIGRATION_WAIT),
            millis(MIGRATION_LIMIT)
        ))
        .await
        .map_err(|e| migration_unavailable(&e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(&name)])
            .await
            .map_err(|e| migration_unavailable(&e))?;
        let meta = ddl::qualified(&name, META_TABLE);
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {meta} (position INTEGER PRIMARY KEY, definition TEXT NOT NULL)",
            schema = quote(&name)
        ))
        .await
        .map_err(|e| migration_unavailable(&e))?;
        let recorded: Vec<Table> = tx
            .query(
                &format!("SELECT definition FROM {meta} ORDER BY position"),
                &[],
            )
            .await
            .map_err(|e| migration_unavailable(&e))?
            .iter()
            .map(|row| {
                serde_json::from_str(row.get(0)).map_err(|e| MigrationError::Unavailable {
                    detail: format!("a recorded table is unreadable: {e}"),
                })
            })
            .collect::<Result<_, _>>()?;
        let plan = plan(&recorded, schema, removals)
            .map_err(|e| MigrationError::Refused(e.to_string()))?;
        let mut done = Vec::with_capacity(plan.steps.len());
        for step in &plan.steps {
            let sql =
                ddl::step_sql(&name, step).map_err(|e| MigrationError::Refused(e.to_string()))?;
            if let Err(e) = tx.batch_execute(&sql).await {
                return Err(migration_error(&e, &step.describe()));
            }
            done.push(step.describe());
        }
        tx.execute(&format!("DELETE FROM {meta}"), &[])
            .await
            .map_err(|e| migration_unavailable(&e))?;
        for (position, table) in plan.tables.iter().enumerate() {
            let definition = serde_json::to_string(table).map_err(|e| migration_unavailable(&e))?;
            let position = i32::try_from(position).unwrap_or(i32::MAX);
            tx.execute(
                &format!("INSERT INTO {meta} (position, definition) VALUES ($1, $2)"),
                &[&position, &definition],
            )
            .await
            .map_err(|e| migration_unavailable(&e))?;
        }
        tx.commit()
            .await
            .map_err(|e| migration_error(&e, "commit"))?;
        Ok(done)
    }
}

/// Has PostgreSQL reclaim dead rows and trailing empty pages of the
/// schema's tables (outside any transaction; best effort).
async fn vacuum(client: &Object, schema: &str) {
    let tables: Vec<String> = match client
        .query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind = 'r'",
            &[&schema],
        )
        .await
    {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list a project's tables to vacuum them");
            return;
        }
    };
    if tables.is_empty() {
        return;
    }
    let list: Vec<String> = tables.iter().map(|t| ddl::qualified(schema, t)).collect();
    if let Err(e) = client
        .batch_execute(&format!("VACUUM {}", list.join(", ")))
        .await
    {
        tracing::warn!(error = %e, "vacuuming a project's tables failed");
    }
}

/// The bytes a project's tables take (see [`SIZE_SQL`]).
async fn size(client: &impl GenericClient, schema: &str) -> Result<u64, tokio_postgres::Error> {
    let size: i64 = client.query_one(SIZE_SQL, &[&schema]).await?.get(0);
    Ok(u64::try_from(size).unwrap_or(0))
}

/// Closes a connection that stopped answering (never handing it back to
/// the pool, where a late reply could meet the next query).
fn gave_up(client: Object) -> DbError {
    drop(Object::take(client));
    DbError::unavailable("PostgreSQL did not answer in time")
}

/// A failure inside one statement.
enum StatementError {
    Postgres(tokio_postgres::Error),
    ResultTooLarge(u64),
}

impl StatementError {
    fn into_db_error(self, access: Access, limits: &CallLimits) -> DbError {
        match self {
            StatementError::Postgres(e) => db_error(&e, access, limits),
            StatementError::ResultTooLarge(max) => DbError::Query(QueryError::TooComplex(format!(
                "the result is larger than {max} bytes; select fewer rows or columns"
            ))),
        }
    }
}

async fn execute(
    tx: &deadpool_postgres::Transaction<'_>,
    statement: &Statement,
    select: bool,
    budget: &mut u64,
) -> Result<Rows, StatementError> {
    let params = statement.params.iter().map(Param);
    let stream = tx
        .query_raw(statement.sql.as_str(), params)
        .await
        .map_err(StatementError::Postgres)?;
    futures::pin_mut!(stream);
    let mut rows = Vec::new();
    let limit = *budget;
    while let Some(row) = stream.try_next().await.map_err(StatementError::Postgres)? {
        let mut values = Vec::with_capacity(statement.columns.len());
        for (i, ty) in statement.column_types.iter().enumerate() {
            let value = read_value(&row, i, *ty).map_err(StatementError::Postgres)?;
            *budget = budget
                .checked_sub(value_bytes(&value))
                .ok_or(StatementError::ResultTooLarge(limit))?;
            values.push(value);
        }
        rows.push(values);
    }
    let affected = if select {
        0
    } else {
        stream.rows_affected().unwrap_or(0)
    };
    Ok(Rows {
        columns: statement.columns.clone(),
        rows,
        affected,
    })
}

/// Column `i` of `row` as its declared type reads it.
fn read_value(row: &Row, i: usize, ty: ColumnType) -> Result<Value, tokio_postgres::Error> {
    Ok(match ty {
        ColumnType::Integer => row.try_get::<_, Option<i64>>(i)?.map(Value::S64),
        ColumnType::Real => row.try_get::<_, Option<f64>>(i)?.map(Value::F64),
        ColumnType::Boolean => row.try_get::<_, Option<bool>>(i)?.map(Value::Bool),
        ColumnType::Blob => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
        ColumnType::Text | ColumnType::Timestamp | ColumnType::Json | ColumnType::Uuid => {
            row.try_get::<_, Option<String>>(i)?.map(Value::Text)
        }
    }
    .unwrap_or(Value::Null))
}

/// A query value bound as a parameter of the type PostgreSQL inferred for
/// it (the column's, since values are only ever compared with or stored in
/// a column, or are a limit or offset).
#[derive(Debug)]
struct Param<'a>(&'a Value);

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self.0, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Bool(b), &Type::BOOL) => b.to_sql(ty, out),
            (Value::S64(n), &Type::INT8) => n.to_sql(ty, out),
            (Value::F64(v), &Type::FLOAT8) => v.to_sql(ty, out),
            (Value::Text(s), &Type::TEXT) => s.as_str().to_sql(ty, out),
            (Value::Blob(b), &Type::BYTEA) => b.as_slice().to_sql(ty, out),
            (value, ty) => Err(format!("cannot bind {value:?} as {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// What a PostgreSQL failure means to the caller, worded as the SQLite
/// backend words it. Constraint messages name the project's own table and
/// column for a server key; a public key gets only the kind.
fn db_error(e: &tokio_postgres::Error, access: Access, limits: &CallLimits) -> DbError {
    let Some(db) = e.as_db_error() else {
        return DbError::unavailable(detail(e));
    };
    let code = db.code();
    let table = db.table().unwrap_or("?");
    let constraint = |kind: &str, public: &str, what: String| {
        DbError::ConstraintViolation(match access {
            Access::Server => format!("{kind} constraint failed: {what}"),
            Access::Public => public.to_owned(),
        })
    };
    if *code == SqlState::UNIQUE_VIOLATION {
        // "Key (a, b)=(…) already exists.": the columns, never the values.
        let columns = db
            .detail()
            .and_then(|d| d.strip_prefix("Key ("))
            .and_then(|d| d.split_once(")=("))
            .map(|(columns, _)| columns)
            .unwrap_or("?");
        let named = columns
            .split(", ")
            .map(|c| format!("{table}.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        constraint(
            "UNIQUE",
            "a row with the same unique value already exists",
            named,
        )
    } else if *code == SqlState::NOT_NULL_VIOLATION {
        let column = db.column().unwrap_or("?");
        constraint(
            "NOT NULL",
            "a required value is missing",
            format!("{table}.{column}"),
        )
    } else if *code == SqlState::CHECK_VIOLATION {
        constraint(
            "CHECK",
            "a value does not fit its column",
            db.constraint().unwrap_or("?").to_owned(),
        )
    } else if code.code().starts_with("23") {
        DbError::ConstraintViolation("a constraint failed".into())
    } else if *code == SqlState::QUERY_CANCELED {
        DbError::Timeout(millis(limits.timeout))
    } else if [
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
    ]
    .contains(code)
    {
        DbError::Busy
    } else if code.code().starts_with("22") || *code == SqlState::PROGRAM_LIMIT_EXCEEDED {
        // Data exceptions: text with a NUL character (which PostgreSQL
        // cannot store), a number out of range, a value too large to index.
        DbError::Query(QueryError::InvalidValue(
            "a value cannot be stored in its column".into(),
        ))
    } else {
        DbError::unavailable(detail(e))
    }
}

/// What went wrong, for the operator's log: tokio-postgres shows only `db
/// error` and keeps the server's code and message in its source.
fn detail(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{e} {}: {}", db.code().code(), db.message()),
        (None, Some(source)) => format!("{e}: {source}"),
        (None, None) => e.to_string(),
    }
}

fn migration_error(e: &tokio_postgres::Error, step: &str) -> MigrationError {
    match e.as_db_error() {
        Some(db) if db.code().code().starts_with("23") => {
            MigrationError::Failed(format!("{step}: {}", db.message()))
        }
        _ => MigrationError::Unavailable {
            detail: format!("{step}: {e}"),
        },
    }
}

fn migration_unavailable(e: &dyn std::fmt::Display) -> MigrationError {
    MigrationError::Unavailable {
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> PostgresGatewayDb {
        let url = switchyard_test_services::shared_postgres().url();
        PostgresGatewayDb::connect(&url, PostgresGatewayDbOptions::default())
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_db_contract() {
        super::super::contract::db_contract(&db().await).await;
    }

    #[test]
    fn schema_names_fit_and_stay_distinct() {
        let short = ProjectId::new("shop").unwrap();
        assert_eq!(PostgresGatewayDb::schema_name(&short), "p_shop");
        let a = ProjectId::new(&"a".repeat(63)).unwrap();
        let b = ProjectId::new(&format!("{}b", "a".repeat(62))).unwrap();
        let (a, b) = (
            PostgresGatewayDb::schema_name(&a),
            PostgresGatewayDb::schema_name(&b),
        );
        assert!(a.len() <= 63 && b.len() <= 63);
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn a_wrong_url_is_refused_without_echoing_it() {
        let err = PostgresGatewayDb::connect(
            "postgres://u:hunter2@/",
            PostgresGatewayDbOptions::default(),
        )
        .await
        .err()
        .unwrap();
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    }
}
