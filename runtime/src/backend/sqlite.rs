//! A SQLite database file shared by async callers (the embedded backends and
//! the router's control store use it): one writer connection,
//! a few reader connections (WAL lets them read while the writer writes), and
//! every statement run on tokio's blocking pool so no worker thread waits on
//! disk.
//!
//! A caller that gives up (a timeout, a cancelled request) does not stop a
//! statement already running: its permit travels into the blocking task and
//! is released only when the statement is done. So the connection count is
//! never exceeded, and writes stay in the order they were queued (a retry
//! runs after the attempt it retries).

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Semaphore;

/// Reader connections kept open; readers beyond this wait for one.
const READERS: usize = 4;

/// A SQLite file with a writer and a few readers, used from async code.
pub struct SqliteDb {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    write_permit: Arc<Semaphore>,
    read_permits: Arc<Semaphore>,
}

/// A failure to run a statement, with SQLite's own message for the operator.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused or failed.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking task running the statement failed.
    #[error("the database task failed: {0}")]
    Task(String),
}

impl SqliteDb {
    /// Opens (creating if needed) the database at `path` and runs `init` on
    /// the writer connection: schema creation and migrations.
    pub fn open(
        path: &Path,
        init: impl FnOnce(&mut Connection) -> rusqlite::Result<()>,
    ) -> Result<Self, DbError> {
        let mut writer = open_connection(path)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        init(&mut writer)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = open_connection(path)?;
            reader.pragma_update(None, "query_only", true)?;
            readers.push(reader);
        }
        Ok(SqliteDb {
            path: path.to_path_buf(),
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(Mutex::new(readers)),
            write_permit: Arc::new(Semaphore::new(1)),
            read_permits: Arc::new(Semaphore::new(READERS)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a reader connection.
    pub async fn read<T, E>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let permit = self
            .read_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| E::from(DbError::Task(e.to_string())))?;
        let readers = self.readers.clone();
        blocking(move || {
            let _permit = permit;
            let conn = readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let Some(conn) = conn else {
                return Err(E::from(DbError::Task("no reader connection free".into())));
            };
            let result = f(&conn);
            readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
            result
        })
        .await
    }

    /// Runs `f` on the writer connection. Writers queue asynchronously, one
    /// at a time, so they never meet `SQLITE_BUSY` among themselves.
    pub async fn write<T, E>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let permit = self
            .write_permit
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| E::from(DbError::Task(e.to_string())))?;
        let writer = self.writer.clone();
        blocking(move || {
            let _permit = permit;
            let mut conn = writer.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
    }
}

/// Runs `f` on tokio's blocking pool; a task that dies is a `DbError::Task`.
pub(crate) async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<DbError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(E::from(DbError::Task(e.to_string()))),
    }
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Acknowledged writes survive a crash of the process or of the machine.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}
