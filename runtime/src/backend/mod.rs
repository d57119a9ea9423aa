//! Storage behind the host interfaces, one trait per concern, each with an
//! embedded implementation. Backends store and fetch; access checks and
//! limits live in the host layer ([`crate::host`]) — except the gateway
//! database's, which every entry point (guests and the HTTP gateway) shares
//! through [`db::DbBackend`].

pub mod db;
pub mod kv;
pub mod redis;
pub mod sqlite;

use std::sync::Arc;

/// The storage a [`crate::Runtime`] gives its guests.
#[derive(Clone)]
pub struct Backends {
    /// Every project's kv data.
    pub kv: Arc<dyn kv::KvBackend>,
    /// Every project's gateway database.
    pub db: Arc<dyn db::DbBackend>,
}

impl Backends {
    /// The embedded backends, in `dir`: kv data in `kv.sqlite`, one
    /// database per project in `db/`.
    pub fn sqlite(dir: &std::path::Path) -> Result<Backends, crate::StartError> {
        let kv =
            kv::SqliteKv::open(dir.join("kv.sqlite")).map_err(|e| crate::StartError::Backend {
                what: "kv store",
                detail: e.to_string(),
            })?;
        Ok(Backends {
            kv: Arc::new(kv),
            db: Backends::sqlite_gateway_db(dir)?,
        })
    }

    /// The embedded gateway databases: one SQLite file per project in
    /// `<dir>/db/`.
    fn sqlite_gateway_db(
        dir: &std::path::Path,
    ) -> Result<Arc<dyn db::DbBackend>, crate::StartError> {
        let db = db::SqliteGatewayDb::open(dir.join("db"), db::SqliteGatewayDbOptions::default())
            .map_err(|e| crate::StartError::Backend {
            what: "gateway databases",
            detail: match e {
                db::DbError::Unavailable { detail } => detail,
                other => other.to_string(),
            },
        })?;
        Ok(Arc::new(db))
    }
}
