//! Deploys, in the order that keeps the previous build serving whatever
//! happens:
//!
//! 1. take the project's deploy lease (a concurrent deploy gets 409);
//! 2. spool the upload to a scratch directory, under a byte cap;
//! 3. read and check the bundle and its manifest (nothing stored yet);
//! 4. compile the component through a bounded queue (still nothing stored
//!    but the compile cache);
//! 5. store the component and the assets content-addressed (idempotent, and
//!    unreferenced until step 7);
//! 6. migrate the project's database to the declared tables, in one
//!    transaction (a refused or failed migration fails the deploy and
//!    changes nothing);
//! 7. commit the build and flip the project's pointer in one transaction;
//! 8. prune old builds beyond the retention count.
//!
//! Migrations are additive unless the manifest says
//! `allow_destructive_migrations`, so a migration that committed before a
//! failed step 7 leaves a database the previous build still works with.
//! A rollback brings back the tables and columns its build declares and
//! drops nothing; it takes the deploy lease too, so it never interleaves
//! with a deploy's migration.
//!
//! A crash before 7 leaves only scratch files (removed at startup),
//! unreferenced objects (removed by garbage collection) and a lease that
//! this node releases when it restarts (or that expires after 10 minutes).
//! The commit checks the lease is still this deploy's. From step 5 to 7 the
//! deploy is registered in the control store as an object writer, and
//! garbage collection (on any node) runs only while no writer is: an object
//! a deploy found already stored, and so did not write, cannot vanish
//! before the build that refers to it is committed.

pub mod bundle;
pub mod manifest;

use crate::blobs::{BlobError, BlobStore};
use crate::build::{Asset, BuildManifest, BuildRecord, ContentEncoding, Encoded, new_build_id};
use crate::config::DeployConfig;
use crate::crash_point::crash_point;
use crate::error::ApiError;
use crate::store::{ControlStore, StoreError, now_ms};
use bundle::{ExtractedAsset, extract, receive};
use bytes::Bytes;
use http_body::Body;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use switchyard_runtime::backend::db::MigrationError;
use switchyard_runtime::db::migrate::Removals;
use switchyard_runtime::db::schema::Schema;
use switchyard_runtime::{BuildId, Limits, ProjectId, Runtime};
use tokio::sync::Semaphore;

/// How long a deploy lease lasts if its holder dies without releasing it.
const LEASE_TTL_MS: i64 = 10 * 60 * 1000;

/// Objects younger than this are never collected (a second guard beside
/// the object writers' registration).
const GARBAGE_MIN_AGE: Duration = Duration::from_secs(3600);

/// How long one batch of garbage collection may hold the objects; it stops
/// deleting at half of it, so the hold never lapses mid-batch.
const COLLECTION_TTL: Duration = Duration::from_secs(5 * 60);
#[expect(clippy::cast_possible_truncation, reason = "five minutes fits")]
const COLLECTION_TTL_MS: i64 = COLLECTION_TTL.as_millis() as i64;

/// Objects deleted per hold, so that a deploy waits for one batch at most.
const COLLECTION_BATCH: usize = 256;

/// How long a deploy waits for a garbage collection to let go.
const COLLECTION_WAIT: Duration = Duration::from_secs(60);

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("resource"),
            StoreError::Conflict { code, message } => ApiError::Conflict { code, message },
            StoreError::Unavailable(detail) => ApiError::Unavailable(detail),
            StoreError::StorageFull(detail) => ApiError::StorageFull(detail),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        if e.storage_full {
            ApiError::StorageFull(e.to_string())
        } else {
            ApiError::Unavailable(e.to_string())
        }
    }
}

/// Runs deploys and rollbacks.
pub struct Deployer {
    store: Arc<dyn ControlStore>,
    blobs: BlobStore,
    runtime: Arc<Runtime>,
    limits: DeployConfig,
    max_upload_bytes: u64,
    default_limits: Limits,
    scratch_dir: PathBuf,
    /// Identifies this process's leases: `<node id>:<pid>:`.
    holder_prefix: String,
    compile_slots: Semaphore,
}

impl Deployer {
    /// A deployer; `node_id` names this node in deploy leases.
    #[expect(
        clippy::too_many_arguments,
        reason = "wiring: each is a distinct dependency"
    )]
    pub fn new(
        store: Arc<dyn ControlStore>,
        blobs: BlobStore,
        runtime: Arc<Runtime>,
        limits: DeployConfig,
        max_upload_bytes: u64,
        default_limits: Limits,
        scratch_dir: PathBuf,
        node_id: &str,
    ) -> Self {
        Deployer {
            compile_slots: Semaphore::new(limits.compile_concurrency),
            holder_prefix: format!("{node_id}:{}:", std::process::id()),
            store,
            blobs,
            runtime,
            limits,
            max_upload_bytes,
            default_limits,
            scratch_dir,
        }
    }

    /// Cleans up after a crash of this node: scratch files, and the deploy
    /// leases it held. Call once at startup, before serving.
    pub async fn recover(&self, node_id: &str) -> Result<(), ApiError> {
        if self.scratch_dir.exists() {
            std::fs::remove_dir_all(&self.scratch_dir).map_err(|e| {
                ApiError::Internal(format!("cannot clean {}: {e}", self.scratch_dir.display()))
            })?;
        }
        std::fs::create_dir_all(&self.scratch_dir).map_err(|e| {
            ApiError::Internal(format!("cannot create {}: {e}", self.scratch_dir.display()))
        })?;
        self.store.release_deploys(&format!("{node_id}:")).await?;
        Ok(())
    }

    /// Deploys the bundle in `body` to `project`.
    pub async fn deploy<B>(&self, project: &ProjectId, body: B) -> Result<BuildRecord, ApiError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let settings = self
            .store
            .project(project)
            .await?
            .ok_or(ApiError::NotFound("project"))?
            .settings;
        let lease = self.lease(project).await?;

        let scratch = tempfile::Builder::new()
            .prefix("deploy-")
            .tempdir_in(&self.scratch_dir)
            .map_err(|e| ApiError::io("cannot create a scratch directory", &e))?;
        let upload = scratch.path().join("bundle");
        receive(body, &upload, self.max_upload_bytes).await?;
        crash_point("deploy.received");
        let (limits, dir) = (self.limits.clone(), scratch.path().to_path_buf());
        let extracted = tokio::task::spawn_blocking(move || extract(&upload, &dir, &limits))
            .await
            .map_err(|e| ApiError::Internal(format!("bundle task failed: {e}")))??;

        let allowed = self.default_limits.with_overrides(&settings.sandbox);
        if let Some((field, asked, max)) = allowed.first_exceeded_by(&extracted.manifest.limits) {
            return Err(ApiError::Invalid {
                code: "LIMIT_NOT_ALLOWED",
                message: format!("limits.{field} = {asked} is above this project's limit of {max}"),
            });
        }
        // Lower is allowed, but not below what the sandbox can run with: a
        // build that could serve no request must not become active.
        allowed
            .tightened_by(&extracted.manifest.limits)
            .validate(&self.runtime.config().pool)
            .map_err(|e| ApiError::Invalid {
                code: "LIMIT_NOT_ALLOWED",
                message: format!("limits: {e}"),
            })?;
        let assets = asset_map(&extracted.assets);

        let component = match extracted.component {
            Some(bytes) => {
                let _slot = self
                    .compile_slots
                    .acquire()
                    .await
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                Some((self.runtime.compile(&bytes).await?, bytes))
            }
            None => None,
        };
        crash_point("deploy.compiled");

        // From here to the commit, an object found already stored must
        // stay: no node's garbage collection may run meanwhile.
        let _writes = self.object_writes().await?;
        let component = match component {
            Some((id, bytes)) => {
                self.blobs.put_component(&id, Bytes::from(bytes)).await?;
                Some(id)
            }
            None => None,
        };
        for asset in &extracted.assets {
            let bytes = tokio::fs::read(&asset.file)
                .await
                .map_err(|e| ApiError::io("cannot read a scratch file", &e))?;
            self.blobs
                .put_blob(&asset.sha256, Bytes::from(bytes))
                .await?;
        }
        crash_point("deploy.stored");

        let manifest = extracted.manifest;
        let removals = if manifest.allow_destructive_migrations {
            Removals::Drop
        } else {
            Removals::Refuse
        };
        self.migrate(project, &manifest.schema()?, removals).await?;
        crash_point("deploy.migrated");
        let record = BuildRecord {
            id: new_build_id(),
            project: project.clone(),
            created_at: now_ms(),
            component,
            manifest: BuildManifest {
                assets,
                spa_fallback: manifest.spa_fallback,
                not_found: manifest.not_found,
                headers: manifest.headers,
                cache: manifest.cache,
                env: manifest.env,
                limits: manifest.limits,
                tables: manifest.tables,
                egress: manifest.egress.allow,
            },
        };
        self.store.commit_build(&record, &lease.holder).await?;
        crash_point("deploy.committed");
        self.runtime.invalidate(project);
        if let Err(e) = self
            .store
            .prune_builds(project, self.limits.retained_builds)
            .await
        {
            tracing::warn!(%project, error = %e, "pruning old builds failed; they are kept until the next deploy");
        }
        Ok(record)
    }

    /// Points `project` back at `to`, or at the build before the active one.
    /// The build's compiled component is reused: nothing is recompiled.
    pub async fn rollback(
        &self,
        project: &ProjectId,
        to: Option<&BuildId>,
    ) -> Result<BuildRecord, ApiError> {
        let active = self
            .store
            .project(project)
            .await?
            .ok_or(ApiError::NotFound("project"))?
            .active_build;
        // A rollback migrates too: it must not interleave with a deploy.
        let _lease = self.lease(project).await?;
        let target = match to {
            Some(id) => self
                .store
                .build(project, id)
                .await?
                .ok_or(ApiError::NotFound("build"))?,
            None => {
                let builds = self
                    .store
                    .builds(
                        project,
                        None,
                        u32::try_from(self.limits.retained_builds + 1).unwrap_or(u32::MAX),
                    )
                    .await?
                    .items;
                let position = builds.iter().position(|b| Some(&b.id) == active.as_ref());
                position
                    .and_then(|i| builds.into_iter().nth(i + 1))
                    .ok_or(ApiError::Conflict {
                        code: "NO_PREVIOUS_BUILD",
                        message: "there is no earlier build to roll back to".into(),
                    })?
            }
        };
        let schema = Schema::new(target.manifest.tables.clone()).map_err(|e| {
            ApiError::Internal(format!("build {} has invalid tables: {e}", target.id))
        })?;
        self.migrate(project, &schema, Removals::Keep).await?;
        self.store.activate_build(project, &target.id).await?;
        self.runtime.invalidate(project);
        Ok(target)
    }

    /// Takes `project`'s deploy lease (`DEPLOY_IN_PROGRESS` if another
    /// deploy or rollback holds it); released when dropped.
    async fn lease(&self, project: &ProjectId) -> Result<Held, ApiError> {
        let holder = self.new_holder();
        self.store
            .begin_deploy(project, &holder, LEASE_TTL_MS)
            .await?;
        Ok(self.held(holder, HeldKind::Deploy(project.clone())))
    }

    /// Registers this deploy as an object writer, waiting a while for a
    /// garbage collection in progress to end. It lasts as long as the
    /// deploy lease taken before it, so a commit that still holds its
    /// lease still holds this too.
    async fn object_writes(&self) -> Result<Held, ApiError> {
        let holder = self.new_holder();
        let deadline = tokio::time::Instant::now() + COLLECTION_WAIT;
        loop {
            match self.store.begin_object_writes(&holder, LEASE_TTL_MS).await {
                Ok(()) => return Ok(self.held(holder, HeldKind::ObjectWrites)),
                Err(StoreError::Conflict {
                    code: "COLLECTION_IN_PROGRESS",
                    ..
                }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(StoreError::Conflict {
                    code: "COLLECTION_IN_PROGRESS",
                    ..
                }) => {
                    return Err(ApiError::Unavailable(
                        "a garbage collection of stored objects is taking long; \
                         try the deploy again"
                            .into(),
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn new_holder(&self) -> String {
        format!("{}{:016x}", self.holder_prefix, rand::random::<u64>())
    }

    fn held(&self, holder: String, kind: HeldKind) -> Held {
        Held {
            store: self.store.clone(),
            holder,
            kind,
        }
    }

    /// Brings `project`'s database to `schema`.
    async fn migrate(
        &self,
        project: &ProjectId,
        schema: &Schema,
        removals: Removals,
    ) -> Result<(), ApiError> {
        match self.runtime.db().migrate(project, schema, removals).await {
            Ok(steps) => {
                if !steps.is_empty() {
                    tracing::info!(%project, steps = %steps.join("; "), "database migrated");
                }
                Ok(())
            }
            Err(e @ MigrationError::Refused(_)) => Err(ApiError::Invalid {
                code: e.code(),
                message: e.to_string(),
            }),
            Err(e @ MigrationError::Failed(_)) => Err(ApiError::Conflict {
                code: e.code(),
                message: e.to_string(),
            }),
            Err(MigrationError::Unavailable { detail }) => Err(ApiError::Unavailable(format!(
                "the project's database: {detail}"
            ))),
            Err(MigrationError::StorageFull { detail }) => Err(ApiError::StorageFull(format!(
                "the project's database: {detail}"
            ))),
        }
    }

    /// Deletes objects that no retained build refers to, in batches, each
    /// while holding the objects against every node's deploys (see
    /// [`ControlStore::begin_collection`]). Stops early, to try again next
    /// time, while deploys are storing objects. Returns how many it deleted.
    pub async fn collect_garbage(&self) -> Result<usize, ApiError> {
        self.collect_garbage_older_than(GARBAGE_MIN_AGE).await
    }

    /// [`Self::collect_garbage`] for objects older than `min_age`.
    pub async fn collect_garbage_older_than(&self, min_age: Duration) -> Result<usize, ApiError> {
        let unavailable = |e: crate::blobs::BlobError| ApiError::Unavailable(e.to_string());
        let old = self
            .blobs
            .objects_older_than(min_age)
            .await
            .map_err(unavailable)?;
        let mut deleted = 0;
        for batch in old.chunks(COLLECTION_BATCH) {
            let holder = self.new_holder();
            let started = tokio::time::Instant::now();
            match self
                .store
                .begin_collection(&holder, COLLECTION_TTL_MS)
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict { code, .. }) => {
                    tracing::debug!(code, "garbage collection postponed");
                    break;
                }
                Err(e) => return Err(e.into()),
            }
            let _collection = self.held(holder, HeldKind::Collection);
            // Read under the hold: no build can be committed meanwhile.
            let referenced = self.store.referenced_objects().await?;
            for object in batch.iter().filter(|o| !referenced.contains(&o.key)) {
                if started.elapsed() >= COLLECTION_TTL / 2 {
                    return Ok(deleted);
                }
                self.blobs.delete(object).await.map_err(unavailable)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// Something held in the control store, released when dropped, however
/// the work that holds it ends.
struct Held {
    store: Arc<dyn ControlStore>,
    holder: String,
    kind: HeldKind,
}

enum HeldKind {
    /// A project's deploy lease.
    Deploy(ProjectId),
    /// A registration as an object writer.
    ObjectWrites,
    /// The objects, for a garbage collection.
    Collection,
}

impl Drop for Held {
    fn drop(&mut self) {
        let store = self.store.clone();
        let holder = std::mem::take(&mut self.holder);
        let kind = std::mem::replace(&mut self.kind, HeldKind::ObjectWrites);
        // Retried: a lease left to expire would refuse the project's
        // deploys for its whole TTL after, say, a full disk is cleared.
        tokio::spawn(async move {
            let give_up =
                tokio::time::Instant::now() + Duration::from_millis(LEASE_TTL_MS.unsigned_abs());
            let mut pause = Duration::from_millis(100);
            loop {
                let released = match &kind {
                    HeldKind::Deploy(project) => store.end_deploy(project, &holder).await,
                    HeldKind::ObjectWrites => store.end_object_writes(&holder).await,
                    HeldKind::Collection => store.end_collection(&holder).await,
                };
                let Err(e) = released else { return };
                if pause == Duration::from_millis(100) {
                    tracing::warn!(error = %e, "releasing a lease failed; retrying until it expires by itself");
                }
                if tokio::time::Instant::now() + pause >= give_up {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        });
    }
}

/// The served asset map: content types, and `.br` / `.gz` siblings attached
/// to the file they compress.
fn asset_map(extracted: &[ExtractedAsset]) -> BTreeMap<String, Asset> {
    let mut assets: BTreeMap<String, Asset> = extracted
        .iter()
        .map(|a| {
            let asset = Asset {
                hash: a.sha256.clone(),
                size: a.size,
                content_type: content_type(&a.path),
                encodings: Vec::new(),
            };
            (a.path.clone(), asset)
        })
        .collect();
    for encoding in [ContentEncoding::Br, ContentEncoding::Gzip] {
        for a in extracted {
            let Some(base) = a.path.strip_suffix(encoding.extension()) else {
                continue;
            };
            if let Some(original) = assets.get_mut(base) {
                original.encodings.push(Encoded {
                    encoding,
                    hash: a.sha256.clone(),
                    size: a.size,
                });
            }
        }
    }
    assets
}

/// The `Content-Type` for a path, with a UTF-8 charset for text.
fn content_type(path: &str) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let textual = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            mime.essence_str(),
            "application/javascript" | "application/json" | "image/svg+xml" | "application/xml"
        );
    if textual {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.essence_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extracted(path: &str, hash: &str, size: u64) -> ExtractedAsset {
        ExtractedAsset {
            path: path.into(),
            file: PathBuf::new(),
            size,
            sha256: hash.into(),
        }
    }

    #[test]
    fn siblings_become_encodings_and_types_are_guessed() {
        let map = asset_map(&[
            extracted("/app.js", "a", 100),
            extracted("/app.js.br", "b", 30),
            extracted("/app.js.gz", "c", 40),
            extracted("/orphan.css.br", "d", 5),
        ]);
        let js = &map["/app.js"];
        assert_eq!(js.content_type, "text/javascript; charset=utf-8");
        let encodings: Vec<_> = js
            .encodings
            .iter()
            .map(|e| (e.encoding, e.hash.as_str()))
            .collect();
        assert_eq!(
            encodings,
            [(ContentEncoding::Br, "b"), (ContentEncoding::Gzip, "c")]
        );
        assert!(
            map.contains_key("/app.js.br"),
            "siblings stay requestable themselves"
        );
        assert!(map["/orphan.css.br"].encodings.is_empty());
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("/index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("/logo.png"), "image/png");
        assert_eq!(
            content_type("/data.json"),
            "application/json; charset=utf-8"
        );
        assert_eq!(content_type("/blob"), "application/octet-stream");
    }
}
