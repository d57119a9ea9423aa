//! The process-wide sandbox: one engine, one linker, the artifact cache and
//! the caches of compiled components and ready apps.

use crate::app::{App, AppSpec, guest_env};
use crate::artifacts::ArtifactCache;
use crate::backend::Backends;
use crate::backend::db::DbBackend;
use crate::config::RuntimeConfig;
use crate::egress::Egress;
use crate::engine::{EpochTicker, build_engine};
use crate::error::{LoadError, StartError};
use crate::ids::{BuildId, ComponentId, ProjectId};
use crate::imports::check_component;
use crate::logs::{LogRegistry, ProjectLog};
use crate::state::{GuestMetrics, LiveStores, RequestState, TenantCtx};
use std::sync::Arc;
use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// Counters about the runtime's caches, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Components compiled by this process.
    pub compiled: u64,
    /// Artifacts loaded from the artifact cache by this process.
    pub deserialized: u64,
    /// Apps currently cached.
    pub apps: u64,
    /// Stores alive now: requests running, plus cancelled ones whose guest
    /// has not yet been dropped. Zero when the runtime is idle.
    pub live_stores: u64,
}

/// The sandbox. Create one per process and share it (`Arc`).
pub struct Runtime {
    engine: Engine,
    linker: Linker<RequestState>,
    artifacts: Arc<ArtifactCache>,
    components: moka::future::Cache<ComponentId, Component>,
    apps: moka::future::Cache<(ProjectId, BuildId), Arc<App>>,
    backends: Backends,
    logs: Arc<LogRegistry>,
    config: RuntimeConfig,
    ticker: Arc<EpochTicker>,
    egress: Arc<Egress>,
    live_stores: Arc<LiveStores>,
}

impl Runtime {
    /// Starts the sandbox: builds the engine and its pooling allocator,
    /// starts the epoch thread, links every host interface, and opens the
    /// artifact cache. `backends` store every project's kv data and
    /// database.
    pub fn new(config: RuntimeConfig, backends: Backends) -> Result<Self, StartError> {
        config.limits.validate(&config.pool)?;
        if config.epoch_tick_ms == 0 {
            return Err(StartError::Config(
                "epoch_tick_ms must be at least 1".into(),
            ));
        }
        let engine = build_engine(&config)?;
        let ticker = Arc::new(EpochTicker::start(engine.clone(), config.epoch_tick())?);
        let linker = link(&engine).map_err(|e| StartError::Engine(format!("{e:#}")))?;
        let artifacts = Arc::new(ArtifactCache::open(&config.artifact_dir, &engine)?);
        let egress = Arc::new(Egress::new(&config.egress)?);
        Ok(Runtime {
            egress,
            components: moka::future::Cache::new(config.app_cache_capacity),
            apps: moka::future::Cache::builder()
                .max_capacity(config.app_cache_capacity)
                .support_invalidation_closures()
                .build(),
            logs: Arc::new(LogRegistry::new(config.logs.clone())),
            engine,
            linker,
            artifacts,
            backends,
            config,
            ticker,
            live_stores: Arc::default(),
        })
    }

    /// The configuration the runtime started with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Validates and compiles tenant-supplied component bytes, once: the
    /// artifact is cached on disk under the returned id, and compiling the
    /// same bytes again (even after a restart) only loads it.
    ///
    /// Refused: anything larger than `max_component_bytes`, anything that is
    /// not a component (a core module included), any import outside the
    /// allowed set (the error names it), imports whose types do not match
    /// the host, and components that do not export
    /// `wasi:http/incoming-handler`.
    pub async fn compile(&self, bytes: &[u8]) -> Result<ComponentId, LoadError> {
        let size = bytes.len() as u64;
        if size > self.config.max_component_bytes {
            return Err(LoadError::TooLarge {
                size,
                limit: self.config.max_component_bytes,
            });
        }
        check_component(bytes)?;
        let id = ComponentId::of(bytes);
        let component = self.component(&id, Some(bytes.into())).await?;
        self.pre(&component)?;
        Ok(id)
    }

    /// Whether this node has the compiled artifact for `id`.
    pub fn is_compiled(&self, id: &ComponentId) -> bool {
        self.artifacts.contains(id)
    }

    /// The ready-to-serve app for `spec`'s project and build, built on first
    /// use and cached. Fails with `ArtifactMissing` if the component was
    /// never compiled here.
    pub async fn app(&self, spec: &AppSpec) -> Result<Arc<App>, LoadError> {
        let key = (spec.project.clone(), spec.build.clone());
        self.apps
            .try_get_with(key, self.build_app(spec))
            .await
            .map_err(|e| (*e).clone())
    }

    /// Drops the cached apps of `project`, so the next request picks up a
    /// changed env or limits.
    pub fn invalidate(&self, project: &ProjectId) {
        let project = project.clone();
        // Only fails if the cache was built without invalidation closures;
        // `Runtime::new` enables them.
        let _ = self
            .apps
            .invalidate_entries_if(move |(p, _), _| *p == project);
    }

    /// Drops everything the sandbox keeps for `project` — cached apps, its
    /// log, its kv data and its database — so that a project created later
    /// under the same id starts with none of it.
    pub async fn forget_project(&self, project: &ProjectId) -> Result<(), String> {
        self.invalidate(project);
        self.logs.remove(project);
        let kv = self.backends.kv.purge(project).await;
        let db = self.backends.db.purge(project).await;
        match (kv, db) {
            (Ok(_), Ok(())) => Ok(()),
            (Err(e), _) => Err(format!("kv: {e}")),
            (_, Err(crate::backend::db::DbError::Unavailable { detail })) => {
                Err(format!("db: {detail}"))
            }
            (_, Err(e)) => Err(format!("db: {e}")),
        }
    }

    /// The gateway database backend, for the entry points outside the
    /// sandbox (the HTTP gateway, deploy-time migrations).
    pub fn db(&self) -> &Arc<dyn DbBackend> {
        &self.backends.db
    }

    /// The kv store every project's guests use.
    pub fn kv(&self) -> &Arc<dyn crate::backend::kv::KvBackend> {
        &self.backends.kv
    }

    /// The captured stdout/stderr of `project`, if it has logged anything.
    pub fn logs(&self, project: &ProjectId) -> Option<Arc<ProjectLog>> {
        self.logs.get(project)
    }

    /// Cache counters.
    pub fn stats(&self) -> RuntimeStats {
        let (compiled, deserialized) = self.artifacts.stats();
        RuntimeStats {
            compiled,
            deserialized,
            apps: self.apps.entry_count(),
            live_stores: self.live_stores.get(),
        }
    }

    async fn build_app(&self, spec: &AppSpec) -> Result<Arc<App>, LoadError> {
        let limits = self.config.limits.with_overrides(&spec.limits);
        limits.validate(&self.config.pool)?;
        let env = guest_env(spec)?;
        let component = self.component(&spec.component, None).await?;
        let pre = self.pre(&component)?;
        let tenant = TenantCtx {
            project: spec.project.clone(),
            build: spec.build.clone(),
            slots: Arc::new(Semaphore::new(limits.concurrency as usize)),
            metrics: GuestMetrics::new(&spec.project),
            background_after: self.config.background_after(),
            limits,
            env,
            kv: self.backends.kv.clone(),
            kv_timeout: self.config.kv_timeout(),
            db: self.backends.db.clone(),
            schema: spec.schema.clone(),
            egress_allowlist: spec.egress.clone(),
            egress: self.egress.clone(),
            logs: self.logs.clone(),
            live_stores: self.live_stores.clone(),
            _ticker: self.ticker.clone(),
        };
        Ok(Arc::new(App {
            tenant: Arc::new(tenant),
            pre,
        }))
    }

    /// The compiled component `id`: from memory, else from the artifact
    /// cache, else compiled from `source` if given. Concurrent loads of one
    /// id share one deserialize; a compile races no one it could starve (a
    /// load that finds no artifact yet fails and is not cached).
    async fn component(
        &self,
        id: &ComponentId,
        source: Option<Arc<[u8]>>,
    ) -> Result<Component, LoadError> {
        if let Some(component) = self.components.get(id).await {
            return Ok(component);
        }
        let Some(bytes) = source else {
            return self
                .components
                .try_get_with(id.clone(), self.blocking(id, ArtifactCache::load_existing))
                .await
                .map_err(|e| (*e).clone());
        };
        let component = self
            .blocking(id, move |artifacts, engine, id| {
                match artifacts.load(engine, id)? {
                    Some(component) => Ok(component),
                    None => artifacts.compile(engine, id, &bytes),
                }
            })
            .await?;
        self.components.insert(id.clone(), component.clone()).await;
        Ok(component)
    }

    /// Runs an artifact-cache operation on the blocking pool.
    async fn blocking(
        &self,
        id: &ComponentId,
        op: impl FnOnce(&ArtifactCache, &Engine, &ComponentId) -> Result<Component, LoadError>
        + Send
        + 'static,
    ) -> Result<Component, LoadError> {
        let (engine, artifacts, id) = (self.engine.clone(), self.artifacts.clone(), id.clone());
        tokio::task::spawn_blocking(move || op(&artifacts, &engine, &id))
            .await
            .unwrap_or_else(|e| Err(LoadError::Internal(format!("compile task failed: {e}"))))
    }

    /// Links `component` against the host and checks it exports an HTTP
    /// handler.
    fn pre(&self, component: &Component) -> Result<ProxyPre<RequestState>, LoadError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        ProxyPre::new(pre).map_err(|e| LoadError::NoHandler(format!("{e:#}")))
    }
}

/// Every interface a guest may import, linked once per process.
fn link(engine: &Engine) -> wasmtime::Result<Linker<RequestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // wasmtime-wasi links wasi:io through the whole WASI context; every
    // stream call of an HTTP handler would then build the context that
    // `RequestState` otherwise builds only on a real WASI call. The same
    // host functions, reaching the resource table directly, replace them.
    linker.allow_shadowing(true);
    wasmtime_wasi_io::add_to_linker_async(&mut linker)?;
    linker.allow_shadowing(false);
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    crate::host::kv::add_to_linker(&mut linker)?;
    crate::host::db::add_to_linker(&mut linker)?;
    Ok(linker)
}
