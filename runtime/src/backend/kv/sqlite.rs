//! The embedded kv backend: one SQLite file for all projects, the project id
//! in every primary key.
//!
//! Values expire lazily (reads ignore expired rows) and a background sweep
//! deletes them in batches; quota accounting is kept per namespace in the same
//! transaction as every write.

use super::{ENTRY_OVERHEAD_BYTES, KeyPage, KvBackend, KvBackendError, prefix_end};
use crate::backend::sqlite::{DbError, SqliteDb};
use crate::ids::ProjectId;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SCHEMA_VERSION: i64 = 1;

/// An entry's size as charged to its namespace's quota, in SQL. Must agree
/// with `entry_size` (checked by the kv contract's usage assertions).
macro_rules! entry_size_sql {
    () => {
        "(length(key) + length(value) + 64)"
    };
}

/// Expired rows purged per namespace when a write meets its quota: keeps the
/// one writer (shared by every tenant) from being held by a large purge.
const PURGE_ON_WRITE_ROWS: u32 = 1000;
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
const SWEEP_BATCH: u32 = 1000;

/// kv data in a SQLite file. Durable once a call returns
/// (`synchronous = FULL`).
pub struct SqliteKv {
    db: Arc<SqliteDb>,
    sweeper: Option<tokio::task::JoinHandle<()>>,
}

impl From<DbError> for KvBackendError {
    fn from(e: DbError) -> Self {
        KvBackendError::Unavailable(e.to_string())
    }
}

impl From<rusqlite::Error> for KvBackendError {
    fn from(e: rusqlite::Error) -> Self {
        KvBackendError::Unavailable(e.to_string())
    }
}

impl SqliteKv {
    /// Opens or creates the store at `path`. Inside a tokio runtime it also
    /// starts the sweep that deletes expired keys every 30 s.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, KvBackendError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                KvBackendError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let db = Arc::new(SqliteDb::open(path, migrate)?);
        let sweeper = tokio::runtime::Handle::try_current()
            .ok()
            .map(|rt| rt.spawn(sweep(Arc::downgrade(&db))));
        Ok(SqliteKv { db, sweeper })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// Deletes up to `max_rows` expired keys; returns how many it deleted.
    pub async fn purge_expired(&self, max_rows: u32) -> Result<u64, KvBackendError> {
        purge_expired(&self.db, max_rows).await
    }
}

impl Drop for SqliteKv {
    fn drop(&mut self) {
        if let Some(sweeper) = self.sweeper.take() {
            sweeper.abort();
        }
    }
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction()?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS kv (
             ns TEXT NOT NULL,
             key BLOB NOT NULL,
             value BLOB NOT NULL,
             expires_at INTEGER,
             PRIMARY KEY (ns, key)
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
         CREATE TABLE IF NOT EXISTS kv_usage (
             ns TEXT PRIMARY KEY,
             bytes INTEGER NOT NULL
         ) WITHOUT ROWID;",
    )?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

async fn sweep(db: Weak<SqliteDb>) {
    let first = tokio::time::Instant::now() + SWEEP_INTERVAL;
    let mut interval = tokio::time::interval_at(first, SWEEP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(db) = db.upgrade() else { return };
        loop {
            match purge_expired(&db, SWEEP_BATCH).await {
                Ok(n) if n == u64::from(SWEEP_BATCH) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "kv sweep of expired keys failed");
                    break;
                }
            }
        }
    }
}

async fn purge_expired(db: &SqliteDb, max_rows: u32) -> Result<u64, KvBackendError> {
    db.write(move |conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let freed: Vec<(String, i64)> = tx
            .prepare(concat!(
                "DELETE FROM kv WHERE (ns, key) IN
                         (SELECT ns, key FROM kv WHERE expires_at <= ?1 LIMIT ?2)
                     RETURNING ns, ",
                entry_size_sql!()
            ))?
            .query_map(params![now_ms(), max_rows], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (ns, bytes) in &freed {
            add_usage(&tx, ns, -bytes)?;
        }
        tx.commit()?;
        Ok(freed.len() as u64)
    })
    .await
}

fn now_ms() -> i64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn expiry(now: i64, ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|ttl| now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)))
}

fn is_live(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_none_or(|at| at > now)
}

/// The live value under `(ns, key)` and its expiry.
fn live_value(
    conn: &Connection,
    ns: &str,
    key: &[u8],
    now: i64,
) -> rusqlite::Result<Option<(Vec<u8>, Option<i64>)>> {
    // Every get runs this: the connection keeps it parsed.
    conn.prepare_cached(
        "SELECT value, expires_at FROM kv
         WHERE ns = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
    )?
    .query_row(params![ns, key, now], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()
}

fn usage(conn: &Connection, ns: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .query_row("SELECT bytes FROM kv_usage WHERE ns = ?1", [ns], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or(0))
}

fn add_usage(tx: &Transaction<'_>, ns: &str, delta: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO kv_usage (ns, bytes) VALUES (?1, ?2)
         ON CONFLICT (ns) DO UPDATE SET bytes = bytes + excluded.bytes",
        params![ns, delta],
    )?;
    Ok(())
}

/// Deletes up to `PURGE_ON_WRITE_ROWS` of the namespace's expired rows; used
/// when a write meets the quota.
fn purge_namespace(tx: &Transaction<'_>, ns: &str, now: i64) -> rusqlite::Result<()> {
    let freed: i64 = tx
        .prepare(concat!(
            "DELETE FROM kv WHERE (ns, key) IN
                 (SELECT ns, key FROM kv WHERE ns = ?1 AND expires_at <= ?2 LIMIT ?3)
             RETURNING ",
            entry_size_sql!()
        ))?
        .query_map(params![ns, now, PURGE_ON_WRITE_ROWS], |r| {
            r.get::<_, i64>(0)
        })?
        .sum::<rusqlite::Result<i64>>()?;
    add_usage(tx, ns, -freed)
}

/// What an entry costs against the quota.
fn entry_size(key: &[u8], value: &[u8]) -> i64 {
    let overhead = i64::try_from(ENTRY_OVERHEAD_BYTES).unwrap_or(i64::MAX);
    (key.len() + value.len()) as i64 + overhead
}

/// Writes `(ns, key) = value` inside `tx`, keeping the namespace within
/// `quota` (expired rows are purged once before giving up).
fn put(
    tx: &Transaction<'_>,
    ns: &str,
    key: &[u8],
    value: &[u8],
    expires_at: Option<i64>,
    quota: u64,
    now: i64,
) -> Result<(), KvBackendError> {
    let quota = i64::try_from(quota).unwrap_or(i64::MAX);
    let size = entry_size(key, value);
    for attempt in 0..2 {
        let old: i64 = tx
            .query_row(
                concat!(
                    "SELECT ",
                    entry_size_sql!(),
                    " FROM kv WHERE ns = ?1 AND key = ?2"
                ),
                params![ns, key],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let delta = size - old;
        if delta <= 0 || usage(tx, ns)?.saturating_add(delta) <= quota {
            tx.execute(
                "INSERT INTO kv (ns, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (ns, key) DO UPDATE
                 SET value = excluded.value, expires_at = excluded.expires_at",
                params![ns, key, value, expires_at],
            )?;
            add_usage(tx, ns, delta)?;
            return Ok(());
        }
        if attempt == 0 {
            purge_namespace(tx, ns, now)?;
        }
    }
    Err(KvBackendError::QuotaExceeded)
}

/// Runs `f` in an immediate (write-locked) transaction, committing on success.
async fn write_tx<T: Send + 'static>(
    db: &SqliteDb,
    f: impl FnOnce(&Transaction<'_>, i64) -> Result<T, KvBackendError> + Send + 'static,
) -> Result<T, KvBackendError> {
    db.write(move |conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx, now_ms())?;
        tx.commit()?;
        Ok(value)
    })
    .await
}

#[async_trait::async_trait]
impl KvBackend for SqliteKv {
    async fn get(&self, ns: &ProjectId, key: &str) -> Result<Option<Vec<u8>>, KvBackendError> {
        let (ns, key) = (ns.clone(), key.to_owned());
        self.db
            .read(move |conn| {
                Ok(live_value(conn, ns.as_str(), key.as_bytes(), now_ms())?.map(|(v, _)| v))
            })
            .await
    }

    async fn set(
        &self,
        ns: &ProjectId,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        quota_bytes: u64,
    ) -> Result<(), KvBackendError> {
        let (ns, key) = (ns.clone(), key.to_owned());
        write_tx(&self.db, move |tx, now| {
            put(
                tx,
                ns.as_str(),
                key.as_bytes(),
                &value,
                expiry(now, ttl),
                quota_bytes,
                now,
            )
        })
        .await
    }

    async fn delete(&self, ns: &ProjectId, key: &str) -> Result<bool, KvBackendError> {
        let (ns, key) = (ns.clone(), key.to_owned());
        write_tx(&self.db, move |tx, now| {
            let removed: Option<(i64, Option<i64>)> = tx
                .query_row(
                    concat!(
                        "DELETE FROM kv WHERE ns = ?1 AND key = ?2 RETURNING ",
                        entry_size_sql!(),
                        ", expires_at"
                    ),
                    params![ns.as_str(), key.as_bytes()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            Ok(match removed {
                Some((bytes, expires_at)) => {
                    add_usage(tx, ns.as_str(), -bytes)?;
                    is_live(expires_at, now)
                }
                None => false,
            })
        })
        .await
    }

    async fn exists(&self, ns: &ProjectId, key: &str) -> Result<bool, KvBackendError> {
        let (ns, key) = (ns.clone(), key.to_owned());
        self.db
            .read(move |conn| {
                let found: Option<i64> = conn
                    .query_row(
                        "SELECT 1 FROM kv WHERE ns = ?1 AND key = ?2
                         AND (expires_at IS NULL OR expires_at > ?3)",
                        params![ns.as_str(), key.as_bytes(), now_ms()],
                        |r| r.get(0),
                    )
                    .optional()?;
                Ok(found.is_some())
            })
            .await
    }

    async fn list_keys(
        &self,
        ns: &ProjectId,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, KvBackendError> {
        let (ns, prefix, cursor) = (ns.clone(), prefix.to_owned(), cursor.map(str::to_owned));
        self.db
            .read(move |conn| {
                let end = prefix_end(prefix.as_bytes());
                // Seek straight to where the page starts: after the cursor if
                // it is within the prefix's range, else at the prefix.
                let (sql, start) = match &cursor {
                    Some(cursor) if cursor.as_bytes() >= prefix.as_bytes() => {
                        (LIST_AFTER_CURSOR, cursor.as_bytes())
                    }
                    _ => (LIST_FROM_PREFIX, prefix.as_bytes()),
                };
                let mut stmt = conn.prepare_cached(sql)?;
                let mut keys: Vec<String> = stmt
                    .query_map(
                        params![ns.as_str(), start, end, now_ms(), i64::from(limit) + 1],
                        |r| r.get::<_, Vec<u8>>(0),
                    )?
                    .map(|key| key.map(|k| String::from_utf8_lossy(&k).into_owned()))
                    .collect::<rusqlite::Result<_>>()?;
                let more = keys.len() > limit as usize;
                keys.truncate(limit as usize);
                let cursor = if more { keys.last().cloned() } else { None };
                Ok(KeyPage { keys, cursor })
            })
            .await
    }

    async fn increment(
        &self,
        ns: &ProjectId,
        key: &str,
        delta: i64,
        quota_bytes: u64,
    ) -> Result<i64, KvBackendError> {
        let (ns, key) = (ns.clone(), key.to_owned());
        write_tx(&self.db, move |tx, now| {
            let (current, expires_at) = match live_value(tx, ns.as_str(), key.as_bytes(), now)? {
                Some((value, expires_at)) => (parse_integer(&value)?, expires_at),
                None => (0, None),
            };
            let next = current
                .checked_add(delta)
                .ok_or(KvBackendError::NotAnInteger)?;
            let value = next.to_string();
            put(
                tx,
                ns.as_str(),
                key.as_bytes(),
                value.as_bytes(),
                expires_at,
                quota_bytes,
                now,
            )?;
            Ok(next)
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        ns: &ProjectId,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        quota_bytes: u64,
    ) -> Result<bool, KvBackendError> {
        let (ns, key) = (ns.clone(), key.to_owned());
        write_tx(&self.db, move |tx, now| {
            let current = live_value(tx, ns.as_str(), key.as_bytes(), now)?.map(|(v, _)| v);
            if current != expected {
                return Ok(false);
            }
            put(
                tx,
                ns.as_str(),
                key.as_bytes(),
                &new,
                None,
                quota_bytes,
                now,
            )?;
            Ok(true)
        })
        .await
    }

    async fn purge(&self, ns: &ProjectId) -> Result<u64, KvBackendError> {
        let ns = ns.clone();
        write_tx(&self.db, move |tx, _| {
            let removed = tx.execute("DELETE FROM kv WHERE ns = ?1", [ns.as_str()])?;
            tx.execute("DELETE FROM kv_usage WHERE ns = ?1", [ns.as_str()])?;
            Ok(removed as u64)
        })
        .await
    }

    async fn usage(&self, ns: &ProjectId) -> Result<u64, KvBackendError> {
        let ns = ns.clone();
        self.db
            .read(move |conn| Ok(u64::try_from(usage(conn, ns.as_str())?).unwrap_or(0)))
            .await
    }
}

/// A page of live keys in `[?2, ?3)` of namespace `?1`; `?3` NULL means
/// unbounded.
const LIST_FROM_PREFIX: &str = "SELECT key FROM kv
     WHERE ns = ?1 AND key >= ?2 AND (?3 IS NULL OR key < ?3)
       AND (expires_at IS NULL OR expires_at > ?4)
     ORDER BY key LIMIT ?5";

/// The same, strictly after the cursor `?2`.
const LIST_AFTER_CURSOR: &str = "SELECT key FROM kv
     WHERE ns = ?1 AND key > ?2 AND (?3 IS NULL OR key < ?3)
       AND (expires_at IS NULL OR expires_at > ?4)
     ORDER BY key LIMIT ?5";

/// A value in canonical decimal form (no sign but `-`, no leading zeros, no
/// spaces), as Redis's `INCRBY` reads it, so both backends agree.
fn parse_integer(value: &[u8]) -> Result<i64, KvBackendError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<i64>().ok().filter(|n| n.to_string() == s))
        .ok_or(KvBackendError::NotAnInteger)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_kv_contract() {
        let dir = tempfile::tempdir().unwrap();
        let kv = SqliteKv::open(dir.path().join("kv.sqlite")).unwrap();
        crate::backend::kv::contract::kv_contract(&kv).await;
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.sqlite");
        let ns = ProjectId::new("durable").unwrap();
        {
            let kv = SqliteKv::open(&path).unwrap();
            kv.set(&ns, "k", b"v".to_vec(), None, 1 << 20)
                .await
                .unwrap();
            assert_eq!(kv.increment(&ns, "n", 41, 1 << 20).await.unwrap(), 41);
        }
        let kv = SqliteKv::open(&path).unwrap();
        assert_eq!(kv.get(&ns, "k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(kv.increment(&ns, "n", 1, 1 << 20).await.unwrap(), 42);
        // "k" + "v", "n" + "42", each plus the per-entry overhead
        assert_eq!(
            kv.usage(&ns).await.unwrap(),
            2 + 3 + 2 * ENTRY_OVERHEAD_BYTES
        );
    }

    #[tokio::test]
    async fn sweeping_expired_keys_returns_their_quota() {
        let dir = tempfile::tempdir().unwrap();
        let kv = SqliteKv::open(dir.path().join("kv.sqlite")).unwrap();
        let ns = ProjectId::new("sweep").unwrap();
        for i in 0..5 {
            let ttl = Some(Duration::from_millis(1));
            kv.set(&ns, &format!("k{i}"), vec![0; 10], ttl, 1 << 20)
                .await
                .unwrap();
        }
        kv.set(&ns, "keep", vec![0; 10], None, 1 << 20)
            .await
            .unwrap();
        let entry = |key_len: u64| key_len + 10 + ENTRY_OVERHEAD_BYTES;
        assert_eq!(kv.usage(&ns).await.unwrap(), 5 * entry(2) + entry(4));
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(kv.purge_expired(1000).await.unwrap(), 5);
        assert_eq!(kv.usage(&ns).await.unwrap(), entry(4));
        assert_eq!(kv.purge_expired(1000).await.unwrap(), 0);
    }
}
