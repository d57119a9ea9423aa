//! Compiled components on disk, so a component is compiled once per engine
//! configuration and every later load is a deserialize (an mmap), also after
//! a restart.
//!
//! Layout: `<artifact_dir>/<engine-hash>/<component-sha256>.cwasm`, where the
//! engine hash covers everything that makes compiled code incompatible
//! (wasmtime version, target, tunables). Files are written whole (temporary
//! file, fsync, rename) so a crash never leaves a truncated artifact under a
//! real name. Only bytes this module wrote are ever deserialized: tenant
//! bytes go through the compiler.

use crate::error::{LoadError, StartError};
use crate::ids::ComponentId;
use sha2::Digest;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Bumped when the way Switchyard compiles changes in a way the engine hash
/// cannot see.
const FORMAT_VERSION: &str = "switchyard-artifact-v1";

/// A temporary file this old is a crash's leftover, not a write in progress.
const STALE_TMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Makes every temporary file name unique within the process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) struct ArtifactCache {
    dir: PathBuf,
    compiled: AtomicU64,
    deserialized: AtomicU64,
}

impl ArtifactCache {
    /// Prepares `<root>/<engine-hash>/`, removing temporary files that a
    /// crash left behind (old enough that no live writer can own them).
    pub(crate) fn open(root: &Path, engine: &Engine) -> Result<Self, StartError> {
        let dir = root.join(engine_hash(engine));
        let io = |source| StartError::ArtifactDir {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io)?;
        for entry in fs::read_dir(&dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP_AGE);
            if stale && entry.path().extension().is_some_and(|ext| ext == "tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(ArtifactCache {
            dir,
            compiled: AtomicU64::new(0),
            deserialized: AtomicU64::new(0),
        })
    }

    fn path(&self, id: &ComponentId) -> PathBuf {
        self.dir.join(format!("{id}.cwasm"))
    }

    pub(crate) fn contains(&self, id: &ComponentId) -> bool {
        self.path(id).is_file()
    }

    /// Compiles tenant-supplied `bytes` (already checked to be a component),
    /// stores the artifact under `id` and returns the compiled component.
    /// Compiling through `Component::new` also checks the component against
    /// the pooling allocator's limits (memories, instances, sizes), so a
    /// component the pool could never run is refused here, as the tenant's
    /// error, and no artifact is written for it. Blocking: run it off the
    /// async workers.
    pub(crate) fn compile(
        &self,
        engine: &Engine,
        id: &ComponentId,
        bytes: &[u8],
    ) -> Result<Component, LoadError> {
        let component =
            Component::new(engine, bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("switchyard_components_compiled_total").increment(1);
        let artifact = component
            .serialize()
            .map_err(|e| LoadError::Internal(format!("cannot serialize component {id}: {e:#}")))?;
        self.write(id, &artifact)?;
        Ok(component)
    }

    fn write(&self, id: &ComponentId, artifact: &[u8]) -> std::io::Result<()> {
        let path = self.path(id);
        let unique = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("{}-{unique}.tmp", std::process::id()));
        let written = (|| {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(artifact)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, &path)?;
            // Make the rename itself durable.
            fs::File::open(&self.dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Loads the artifact for `id`, if this node has compiled it.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        id: &ComponentId,
    ) -> Result<Option<Component>, LoadError> {
        let path = self.path(id);
        if !path.is_file() {
            return Ok(None);
        }
        // SAFETY: `path` is inside this cache's directory and only ever
        // written by `write` above, from `Component::serialize`'s output,
        // atomically; the directory belongs to the operator, not to tenants.
        // wasmtime checks that the artifact matches this engine.
        let component = unsafe { Component::deserialize_file(engine, &path) }.map_err(|e| {
            // The detail names host paths: the operator's log only.
            tracing::error!(artifact = %path.display(), error = %format!("{e:#}"), "cannot load artifact");
            LoadError::Internal(format!("the compiled artifact for component {id} is unusable"))
        })?;
        self.deserialized.fetch_add(1, Ordering::Relaxed);
        Ok(Some(component))
    }

    /// Like [`Self::load`], but a missing artifact is an error.
    pub(crate) fn load_existing(
        &self,
        engine: &Engine,
        id: &ComponentId,
    ) -> Result<Component, LoadError> {
        self.load(engine, id)?
            .ok_or_else(|| LoadError::ArtifactMissing(id.clone()))
    }

    pub(crate) fn stats(&self) -> (u64, u64) {
        (
            self.compiled.load(Ordering::Relaxed),
            self.deserialized.load(Ordering::Relaxed),
        )
    }
}

/// A stable name for the engine's compatibility: the SHA-256 of
/// `Engine::precompile_compatibility_hash` and our format version.
fn engine_hash(engine: &Engine) -> String {
    struct Sha(sha2::Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            0 // unused: the digest is read directly
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Sha(sha2::Sha256::new());
    FORMAT_VERSION.hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..16])
}
