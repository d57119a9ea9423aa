//! The embedded control store: one SQLite file.

use super::{
    ApiKeyRecord, CertificateRecord, Change, ControlStore, EnvVar, HostnameRecord, KeyKind, Page,
    Project, ProjectSettings, StoreError, TokenRecord, now_ms,
};
use crate::build::{BuildManifest, BuildRecord};
use crate::hostname::{Hostname, wildcard_for};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use std::collections::HashSet;
use std::path::Path;
use switchyard_runtime::backend::sqlite::{DbError, SqliteDb};
use switchyard_runtime::{BuildId, ComponentId, ProjectId};
use tokio::sync::broadcast;

const SCHEMA_VERSION: i64 = 3;

/// The control store in a SQLite file (WAL, `synchronous=FULL`).
pub struct SqliteControlStore {
    db: SqliteDb,
    changes: broadcast::Sender<Change>,
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if switchyard_runtime::disk::is_full(&e) {
            StoreError::StorageFull(e.to_string())
        } else {
            StoreError::Unavailable(e.to_string())
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Unavailable(format!("corrupt record: {e}"))
    }
}

impl SqliteControlStore {
    /// Opens or creates the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let db = SqliteDb::open(path, migrate)?;
        let (changes, _) = broadcast::channel(1024);
        Ok(SqliteControlStore { db, changes })
    }

    fn announce(&self, change: Change) {
        // No subscriber is fine: nothing is cached yet.
        let _ = self.changes.send(change);
    }

    async fn project_change<T: Send + 'static>(
        &self,
        project: &ProjectId,
        f: impl FnOnce(&mut Connection, &str) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let id = project.as_str().to_owned();
        let value = self.db.write(move |conn| f(conn, &id)).await?;
        self.announce(Change::Project(project.clone()));
        Ok(value)
    }

    /// Takes an object lease of `kind` (`write` or `collect`) unless one of
    /// the other kind, or another collection, holds the objects.
    async fn take_object_lease(
        &self,
        holder: &str,
        kind: &'static str,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let holder = holder.to_owned();
        self.db
            .write(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let now = now_ms();
                tx.execute("DELETE FROM object_leases WHERE expires_at <= ?1", [now])?;
                let blocking: Option<String> = tx
                    .query_row(
                        "SELECT kind FROM object_leases
                         WHERE holder <> ?1 AND (kind <> ?2 OR kind = 'collect')
                         ORDER BY kind = 'collect' DESC LIMIT 1",
                        params![holder, kind],
                        |r| r.get(0),
                    )
                    .optional()?;
                match blocking.as_deref() {
                    Some("collect") => return Err(super::collection_in_progress()),
                    Some(_) => return Err(super::object_writes_in_progress()),
                    None => {}
                }
                tx.execute(
                    "INSERT OR REPLACE INTO object_leases (holder, kind, expires_at)
                     VALUES (?1, ?2, ?3)",
                    params![holder, kind, now.saturating_add(ttl_ms.max(1))],
                )?;
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn end_object_lease(&self, holder: &str, kind: &'static str) -> Result<(), StoreError> {
        let holder = holder.to_owned();
        self.db
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM object_leases WHERE holder = ?1 AND kind = ?2",
                    params![holder, kind],
                )?;
                Ok(())
            })
            .await
    }
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "foreign_keys", true)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction()?;
    if version < 1 {
        create_v1(&tx)?;
    }
    if version < 2 {
        tx.execute_batch(
            "CREATE TABLE api_keys (
                 id TEXT PRIMARY KEY,
                 project TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
                 kind TEXT NOT NULL CHECK (kind IN ('public', 'server')),
                 name TEXT NOT NULL,
                 secret_hash TEXT NOT NULL,
                 created_at INTEGER NOT NULL
             );
             CREATE INDEX api_keys_by_project ON api_keys (project);",
        )?;
    }
    if version < 3 {
        // Object writers (`write`) and the garbage collection (`collect`).
        tx.execute_batch(
            "CREATE TABLE object_leases (
                 holder TEXT PRIMARY KEY,
                 kind TEXT NOT NULL CHECK (kind IN ('write', 'collect')),
                 expires_at INTEGER NOT NULL
             );",
        )?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

/// The first schema.
fn create_v1(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE projects (
             id TEXT PRIMARY KEY,
             created_at INTEGER NOT NULL,
             suspended INTEGER NOT NULL DEFAULT 0,
             active_build TEXT,
             settings TEXT NOT NULL DEFAULT '{}'
         );
         CREATE TABLE env (
             project TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
             name TEXT NOT NULL,
             value TEXT NOT NULL,
             secret INTEGER NOT NULL,
             PRIMARY KEY (project, name)
         ) WITHOUT ROWID;
         CREATE TABLE hostnames (
             hostname TEXT PRIMARY KEY,
             project TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
             created_at INTEGER NOT NULL
         );
         CREATE INDEX hostnames_by_project ON hostnames (project);
         CREATE TABLE builds (
             project TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
             id TEXT NOT NULL,
             seq INTEGER NOT NULL,
             created_at INTEGER NOT NULL,
             component TEXT,
             manifest TEXT NOT NULL,
             PRIMARY KEY (project, id)
         );
         CREATE UNIQUE INDEX builds_by_seq ON builds (project, seq);
         CREATE TABLE deploy_leases (
             project TEXT PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
             holder TEXT NOT NULL,
             expires_at INTEGER NOT NULL
         );
         CREATE TABLE tokens (
             id TEXT PRIMARY KEY,
             project TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
             name TEXT NOT NULL,
             secret_hash TEXT NOT NULL,
             created_at INTEGER NOT NULL
         );
         CREATE INDEX tokens_by_project ON tokens (project);
         CREATE TABLE certificates (
             hostname TEXT PRIMARY KEY,
             cert_pem TEXT NOT NULL,
             key_pem TEXT NOT NULL,
             created_at INTEGER NOT NULL
         );",
    )
}

fn exists(conn: &Connection, project: &str) -> Result<(), StoreError> {
    let found: Option<i64> = conn
        .query_row("SELECT 1 FROM projects WHERE id = ?1", [project], |r| {
            r.get(0)
        })
        .optional()?;
    found.map(|_| ()).ok_or(StoreError::NotFound)
}

/// An update that had to change one row: none means no such project.
fn one_row(changed: usize) -> Result<(), StoreError> {
    if changed == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

fn read_project(conn: &Connection, id: &str) -> Result<Option<Project>, StoreError> {
    let row = conn
        .query_row(
            "SELECT id, created_at, suspended, active_build, settings FROM projects WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                ))
            },
        )
        .optional()?;
    let Some((id, created_at, suspended, active_build, settings)) = row else {
        return Ok(None);
    };
    let env = conn
        .prepare_cached("SELECT name, value, secret FROM env WHERE project = ?1 ORDER BY name")?
        .query_map([&id], |r| {
            Ok(EnvVar {
                name: r.get(0)?,
                value: r.get(1)?,
                secret: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(Project {
        id: parse_project(&id)?,
        created_at,
        suspended,
        active_build: active_build.as_deref().map(parse_build).transpose()?,
        env,
        settings: serde_json::from_str(&settings)?,
    }))
}

fn parse_project(id: &str) -> Result<ProjectId, StoreError> {
    ProjectId::new(id).map_err(|e| StoreError::Unavailable(format!("corrupt record: {e}")))
}

fn parse_build(id: &str) -> Result<BuildId, StoreError> {
    BuildId::new(id).map_err(|e| StoreError::Unavailable(format!("corrupt record: {e}")))
}

fn build_from_row(
    row: &Row<'_>,
) -> rusqlite::Result<(String, String, i64, Option<String>, String)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn build_record(
    (project, id, created_at, component, manifest): (String, String, i64, Option<String>, String),
) -> Result<BuildRecord, StoreError> {
    Ok(BuildRecord {
        id: parse_build(&id)?,
        project: parse_project(&project)?,
        created_at,
        component: component
            .as_deref()
            .map(ComponentId::parse)
            .transpose()
            .map_err(|e| StoreError::Unavailable(format!("corrupt record: {e}")))?,
        manifest: serde_json::from_str::<BuildManifest>(&manifest)?,
    })
}

const BUILD_COLUMNS: &str = "project, id, created_at, component, manifest";

#[async_trait::async_trait]
impl ControlStore for SqliteControlStore {
    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn create_project(&self, id: &ProjectId) -> Result<Project, StoreError> {
        let project = self
            .project_change(id, |conn, id| {
                let created = conn.execute(
                    "INSERT INTO projects (id, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    params![id, now_ms()],
                )?;
                if created == 0 {
                    return Err(StoreError::Conflict {
                        code: "PROJECT_EXISTS",
                        message: format!("project `{id}` already exists"),
                    });
                }
                read_project(conn, id)?.ok_or(StoreError::NotFound)
            })
            .await?;
        Ok(project)
    }

    async fn project(&self, id: &ProjectId) -> Result<Option<Project>, StoreError> {
        let id = id.as_str().to_owned();
        self.db.read(move |conn| read_project(conn, &id)).await
    }

    async fn projects(&self, after: Option<&str>, limit: u32) -> Result<Page<Project>, StoreError> {
        let after = after.unwrap_or("").to_owned();
        self.db
            .read(move |conn| {
                let ids: Vec<String> = conn
                    .prepare_cached("SELECT id FROM projects WHERE id > ?1 ORDER BY id LIMIT ?2")?
                    .query_map(params![after, i64::from(limit) + 1], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let more = ids.len() > limit as usize;
                let mut items = Vec::with_capacity(ids.len());
                for id in ids.iter().take(limit as usize) {
                    items.extend(read_project(conn, id)?);
                }
                let next = more
                    .then(|| items.last().map(|p: &Project| p.id.to_string()))
                    .flatten();
                Ok(Page { items, next })
            })
            .await
    }

    async fn delete_project(&self, id: &ProjectId) -> Result<bool, StoreError> {
        self.project_change(id, |conn, id| {
            Ok(conn.execute("DELETE FROM projects WHERE id = ?1", [id])? > 0)
        })
        .await
    }

    async fn set_suspended(&self, id: &ProjectId, suspended: bool) -> Result<(), StoreError> {
        self.project_change(id, move |conn, id| {
            one_row(conn.execute(
                "UPDATE projects SET suspended = ?2 WHERE id = ?1",
                params![id, suspended],
            )?)
        })
        .await
    }

    async fn set_env(&self, id: &ProjectId, vars: &[EnvVar]) -> Result<(), StoreError> {
        let vars = vars.to_vec();
        self.project_change(id, move |conn, id| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            exists(&tx, id)?;
            for var in &vars {
                tx.execute(
                    "INSERT INTO env (project, name, value, secret) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (project, name) DO UPDATE
                     SET value = excluded.value, secret = excluded.secret",
                    params![id, var.name, var.value, var.secret],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn unset_env(&self, id: &ProjectId, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.project_change(id, move |conn, id| {
            exists(conn, id)?;
            Ok(conn.execute(
                "DELETE FROM env WHERE project = ?1 AND name = ?2",
                params![id, name],
            )? > 0)
        })
        .await
    }

    async fn set_settings(
        &self,
        id: &ProjectId,
        settings: &ProjectSettings,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(settings)?;
        self.project_change(id, move |conn, id| {
            one_row(conn.execute(
                "UPDATE projects SET settings = ?2 WHERE id = ?1",
                params![id, json],
            )?)
        })
        .await
    }

    async fn add_hostname(
        &self,
        project: &ProjectId,
        hostname: &Hostname,
    ) -> Result<HostnameRecord, StoreError> {
        let name = hostname.as_str().to_owned();
        let created_at = now_ms();
        self.project_change(project, move |conn, id| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            exists(&tx, id)?;
            let added = tx.execute(
                "INSERT INTO hostnames (hostname, project, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
                params![name, id, created_at],
            )?;
            if added == 0 {
                // Never say which project has it.
                return Err(StoreError::Conflict {
                    code: "HOSTNAME_TAKEN",
                    message: format!("`{name}` is already routed"),
                });
            }
            tx.commit()?;
            Ok(())
        })
        .await?;
        Ok(HostnameRecord {
            hostname: hostname.clone(),
            project: project.clone(),
            created_at,
        })
    }

    async fn remove_hostname(
        &self,
        project: &ProjectId,
        hostname: &Hostname,
    ) -> Result<bool, StoreError> {
        let name = hostname.as_str().to_owned();
        self.project_change(project, move |conn, id| {
            Ok(conn.execute(
                "DELETE FROM hostnames WHERE hostname = ?1 AND project = ?2",
                params![name, id],
            )? > 0)
        })
        .await
    }

    async fn hostnames(&self, project: &ProjectId) -> Result<Vec<HostnameRecord>, StoreError> {
        let id = project.as_str().to_owned();
        self.db
            .read(move |conn| {
                let rows: Vec<(String, i64)> = conn
                    .prepare_cached(
                        "SELECT hostname, created_at FROM hostnames WHERE project = ?1 ORDER BY hostname",
                    )?
                    .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let project = parse_project(&id)?;
                rows.into_iter()
                    .map(|(name, created_at)| {
                        Ok(HostnameRecord {
                            hostname: Hostname::parse(&name)
                                .map_err(|e| StoreError::Unavailable(format!("corrupt record: {e}")))?,
                            project: project.clone(),
                            created_at,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn resolve_hostname(&self, host: &str) -> Result<Option<ProjectId>, StoreError> {
        let host = host.to_owned();
        self.db
            .read(move |conn| {
                let mut stmt =
                    conn.prepare_cached("SELECT project FROM hostnames WHERE hostname = ?1")?;
                let mut lookup = |name: &str| -> rusqlite::Result<Option<String>> {
                    stmt.query_row([name], |r| r.get(0)).optional()
                };
                let found = match lookup(&host)? {
                    Some(project) => Some(project),
                    None => match wildcard_for(&host) {
                        Some(wildcard) => lookup(&wildcard)?,
                        None => None,
                    },
                };
                found.as_deref().map(parse_project).transpose()
            })
            .await
    }

    async fn begin_deploy(
        &self,
        project: &ProjectId,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let (id, holder) = (project.as_str().to_owned(), holder.to_owned());
        self.db
            .write(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                exists(&tx, &id)?;
                let now = now_ms();
                tx.execute(
                    "DELETE FROM deploy_leases WHERE project = ?1 AND expires_at <= ?2",
                    params![id, now],
                )?;
                let taken = tx.execute(
                    "INSERT INTO deploy_leases (project, holder, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                    params![id, holder, now.saturating_add(ttl_ms)],
                )?;
                if taken == 0 {
                    return Err(StoreError::Conflict {
                        code: "DEPLOY_IN_PROGRESS",
                        message: format!("another deploy of `{id}` is in progress"),
                    });
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn end_deploy(&self, project: &ProjectId, holder: &str) -> Result<(), StoreError> {
        let (id, holder) = (project.as_str().to_owned(), holder.to_owned());
        self.db
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM deploy_leases WHERE project = ?1 AND holder = ?2",
                    params![id, holder],
                )?;
                Ok(())
            })
            .await
    }

    async fn release_deploys(&self, holder_prefix: &str) -> Result<(), StoreError> {
        let prefix = holder_prefix.to_owned();
        self.db
            .write(move |conn| {
                // An exact prefix comparison: LIKE would treat `_` and `%`
                // in the prefix as wildcards.
                for table in ["deploy_leases", "object_leases"] {
                    conn.execute(
                        &format!("DELETE FROM {table} WHERE substr(holder, 1, length(?1)) = ?1"),
                        [&prefix],
                    )?;
                }
                Ok(())
            })
            .await
    }

    async fn begin_object_writes(&self, holder: &str, ttl_ms: i64) -> Result<(), StoreError> {
        self.take_object_lease(holder, "write", ttl_ms).await
    }

    async fn end_object_writes(&self, holder: &str) -> Result<(), StoreError> {
        self.end_object_lease(holder, "write").await
    }

    async fn begin_collection(&self, holder: &str, ttl_ms: i64) -> Result<(), StoreError> {
        self.take_object_lease(holder, "collect", ttl_ms).await
    }

    async fn end_collection(&self, holder: &str) -> Result<(), StoreError> {
        self.end_object_lease(holder, "collect").await
    }

    async fn commit_build(&self, build: &BuildRecord, holder: &str) -> Result<(), StoreError> {
        let build = build.clone();
        let holder = holder.to_owned();
        let manifest = serde_json::to_string(&build.manifest)?;
        self.project_change(&build.project.clone(), move |conn, id| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            exists(&tx, id)?;
            let current: Option<String> = tx
                .query_row(
                    "SELECT holder FROM deploy_leases WHERE project = ?1 AND expires_at > ?2",
                    params![id, now_ms()],
                    |r| r.get(0),
                )
                .optional()?;
            if current.as_deref() != Some(holder.as_str()) {
                return Err(StoreError::Conflict {
                    code: "DEPLOY_LEASE_LOST",
                    message: "this deploy took too long and another deploy of the project \
                              took over; it was not activated"
                        .into(),
                });
            }
            let seq: i64 = tx.query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM builds WHERE project = ?1",
                [id],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO builds (project, id, seq, created_at, component, manifest)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    build.id.as_str(),
                    seq,
                    build.created_at,
                    build.component.as_ref().map(|c| c.as_str()),
                    manifest
                ],
            )?;
            tx.execute(
                "UPDATE projects SET active_build = ?2 WHERE id = ?1",
                params![id, build.id.as_str()],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn build(
        &self,
        project: &ProjectId,
        id: &BuildId,
    ) -> Result<Option<BuildRecord>, StoreError> {
        let (project, id) = (project.as_str().to_owned(), id.as_str().to_owned());
        self.db
            .read(move |conn| {
                conn.query_row(
                    &format!("SELECT {BUILD_COLUMNS} FROM builds WHERE project = ?1 AND id = ?2"),
                    params![project, id],
                    build_from_row,
                )
                .optional()?
                .map(build_record)
                .transpose()
            })
            .await
    }

    async fn builds(
        &self,
        project: &ProjectId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<BuildRecord>, StoreError> {
        let project = project.as_str().to_owned();
        let after: i64 = match after {
            None => i64::MAX,
            Some(cursor) => cursor.parse().map_err(|_| StoreError::NotFound)?,
        };
        self.db
            .read(move |conn| {
                let rows: Vec<(i64, _)> = conn
                    .prepare_cached(&format!(
                        "SELECT seq, {BUILD_COLUMNS} FROM builds
                         WHERE project = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
                    ))?
                    .query_map(params![project, after, i64::from(limit) + 1], |r| {
                        Ok((
                            r.get(0)?,
                            (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
                        ))
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                let more = rows.len() > limit as usize;
                let mut next = None;
                let mut items = Vec::with_capacity(rows.len());
                for (seq, row) in rows.into_iter().take(limit as usize) {
                    items.push(build_record(row)?);
                    next = Some(seq.to_string());
                }
                Ok(Page {
                    items,
                    next: if more { next } else { None },
                })
            })
            .await
    }

    async fn activate_build(&self, project: &ProjectId, id: &BuildId) -> Result<(), StoreError> {
        let build = id.as_str().to_owned();
        self.project_change(project, move |conn, id| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM builds WHERE project = ?1 AND id = ?2",
                    params![id, build],
                    |r| r.get(0),
                )
                .optional()?;
            if found.is_none() {
                return Err(StoreError::NotFound);
            }
            tx.execute(
                "UPDATE projects SET active_build = ?2 WHERE id = ?1",
                params![id, build],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn prune_builds(
        &self,
        project: &ProjectId,
        keep: usize,
    ) -> Result<Vec<BuildRecord>, StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.project_change(project, move |conn, id| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let doomed = tx
                .prepare(&format!(
                    "DELETE FROM builds WHERE project = ?1
                       AND id IS NOT (SELECT active_build FROM projects WHERE id = ?1)
                       AND seq NOT IN (SELECT seq FROM builds WHERE project = ?1 ORDER BY seq DESC LIMIT ?2)
                     RETURNING {BUILD_COLUMNS}"
                ))?
                .query_map(params![id, keep], build_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            tx.commit()?;
            doomed.into_iter().map(build_record).collect()
        })
        .await
    }

    async fn referenced_objects(&self) -> Result<HashSet<String>, StoreError> {
        self.db
            .read(|conn| {
                let mut referenced = HashSet::new();
                let mut stmt = conn.prepare("SELECT component, manifest FROM builds")?;
                let rows = stmt.query_map([], |r| {
                    Ok((r.get::<_, Option<String>>(0)?, r.get::<_, String>(1)?))
                })?;
                for row in rows {
                    let (component, manifest) = row?;
                    referenced.extend(component);
                    let manifest: BuildManifest = serde_json::from_str(&manifest)?;
                    referenced.extend(manifest.blob_hashes().map(str::to_owned));
                }
                Ok(referenced)
            })
            .await
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let token = token.clone();
        self.project_change(&token.project.clone(), move |conn, id| {
            exists(conn, id)?;
            conn.execute(
                "INSERT INTO tokens (id, project, name, secret_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![token.id, id, token.name, token.secret_hash, token.created_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let id = id.to_owned();
        self.db
            .read(move |conn| {
                conn.query_row(
                    "SELECT id, project, name, secret_hash, created_at FROM tokens WHERE id = ?1",
                    [id],
                    token_from_row,
                )
                .optional()?
                .transpose()
            })
            .await
    }

    async fn tokens(&self, project: &ProjectId) -> Result<Vec<TokenRecord>, StoreError> {
        let project = project.as_str().to_owned();
        self.db
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT id, project, name, secret_hash, created_at FROM tokens
                     WHERE project = ?1 ORDER BY created_at, id",
                )?
                .query_map([project], token_from_row)?
                .map(|row| row.map_err(StoreError::from).and_then(|token| token))
                .collect()
            })
            .await
    }

    async fn revoke_token(&self, project: &ProjectId, id: &str) -> Result<bool, StoreError> {
        let token = id.to_owned();
        self.project_change(project, move |conn, id| {
            Ok(conn.execute(
                "DELETE FROM tokens WHERE id = ?1 AND project = ?2",
                params![token, id],
            )? > 0)
        })
        .await
    }

    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let key = key.clone();
        self.project_change(&key.project.clone(), move |conn, id| {
            exists(conn, id)?;
            conn.execute(
                "INSERT INTO api_keys (id, project, kind, name, secret_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    key.id,
                    id,
                    key.kind.as_str(),
                    key.name,
                    key.secret_hash,
                    key.created_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let id = id.to_owned();
        self.db
            .read(move |conn| {
                conn.query_row(
                    "SELECT id, project, kind, name, secret_hash, created_at FROM api_keys WHERE id = ?1",
                    [id],
                    api_key_from_row,
                )
                .optional()?
                .transpose()
            })
            .await
    }

    async fn api_keys(&self, project: &ProjectId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let project = project.as_str().to_owned();
        self.db
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT id, project, kind, name, secret_hash, created_at FROM api_keys
                     WHERE project = ?1 ORDER BY created_at, id",
                )?
                .query_map([project], api_key_from_row)?
                .map(|row| row.map_err(StoreError::from).and_then(|key| key))
                .collect()
            })
            .await
    }

    async fn revoke_api_key(&self, project: &ProjectId, id: &str) -> Result<bool, StoreError> {
        let key = id.to_owned();
        self.project_change(project, move |conn, id| {
            Ok(conn.execute(
                "DELETE FROM api_keys WHERE id = ?1 AND project = ?2",
                params![key, id],
            )? > 0)
        })
        .await
    }

    async fn put_certificate(&self, cert: &CertificateRecord) -> Result<(), StoreError> {
        let cert = cert.clone();
        self.db
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO certificates (hostname, cert_pem, key_pem, created_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (hostname) DO UPDATE
                     SET cert_pem = excluded.cert_pem, key_pem = excluded.key_pem, created_at = excluded.created_at",
                    params![cert.hostname.as_str(), cert.cert_pem, cert.key_pem, cert.created_at],
                )?;
                Ok::<_, StoreError>(())
            })
            .await?;
        self.announce(Change::Certificates);
        Ok(())
    }

    async fn certificates(&self) -> Result<Vec<CertificateRecord>, StoreError> {
        self.db
            .read(|conn| {
                let rows: Vec<(String, String, String, i64)> = conn
                    .prepare("SELECT hostname, cert_pem, key_pem, created_at FROM certificates ORDER BY hostname")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                rows.into_iter()
                    .map(|(hostname, cert_pem, key_pem, created_at)| {
                        Ok(CertificateRecord {
                            hostname: Hostname::parse(&hostname)
                                .map_err(|e| StoreError::Unavailable(format!("corrupt record: {e}")))?,
                            cert_pem,
                            key_pem,
                            created_at,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn delete_certificate(&self, hostname: &Hostname) -> Result<bool, StoreError> {
        let name = hostname.as_str().to_owned();
        let deleted = self
            .db
            .write(move |conn| {
                Ok::<_, StoreError>(
                    conn.execute("DELETE FROM certificates WHERE hostname = ?1", [name])? > 0,
                )
            })
            .await?;
        self.announce(Change::Certificates);
        Ok(deleted)
    }
}

fn api_key_from_row(r: &Row<'_>) -> rusqlite::Result<Result<ApiKeyRecord, StoreError>> {
    let (id, project, kind, name, secret_hash, created_at): (
        String,
        String,
        String,
        String,
        String,
        i64,
    ) = (
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    );
    let kind = match kind.as_str() {
        "public" => KeyKind::Public,
        "server" => KeyKind::Server,
        other => {
            return Ok(Err(StoreError::Unavailable(format!(
                "corrupt record: key kind `{other}`"
            ))));
        }
    };
    Ok(parse_project(&project).map(|project| ApiKeyRecord {
        id,
        project,
        kind,
        name,
        secret_hash,
        created_at,
    }))
}

fn token_from_row(r: &Row<'_>) -> rusqlite::Result<Result<TokenRecord, StoreError>> {
    let (id, project, name, secret_hash, created_at): (String, String, String, String, i64) =
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
    Ok(parse_project(&project).map(|project| TokenRecord {
        id,
        project,
        name,
        secret_hash,
        created_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_control_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteControlStore::open(&dir.path().join("control.sqlite")).unwrap();
        crate::store::contract::control_store_contract(&store).await;
    }

    #[tokio::test]
    async fn state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sqlite");
        let id = ProjectId::new("durable").unwrap();
        {
            let store = SqliteControlStore::open(&path).unwrap();
            store.create_project(&id).await.unwrap();
            store
                .add_hostname(&id, &Hostname::parse("durable.example.com").unwrap())
                .await
                .unwrap();
        }
        let store = SqliteControlStore::open(&path).unwrap();
        assert!(store.project(&id).await.unwrap().is_some());
        assert_eq!(
            store.resolve_hostname("durable.example.com").await.unwrap(),
            Some(id)
        );
    }
}
