//! One Switchyard node: every part opened from the config, wired together,
//! and the listeners started and stopped.

use crate::assets::AssetServer;
use crate::auth::{AdminTokenSource, Authenticator};
use crate::blobs::{BlobStore, ObjectStoreLayer};
use crate::config::Config;
use crate::deploy::Deployer;
use crate::error::ApiError;
use crate::routing::RouteTable;
use crate::server::{Handler, ListenerSpec, OpenConnections, accept_loop, bind};
use crate::storage::StoragePlan;
use crate::store::{Change, ControlStore};
use crate::tenant::RequestLimiter;
use crate::tls::CertResolver;
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_runtime::backend::Backends;
use switchyard_runtime::{App, AppSpec, ComponentId, LoadError, Runtime};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinHandle;

/// How often objects no build refers to are collected.
const GARBAGE_INTERVAL: Duration = Duration::from_secs(600);

/// Connections the admin listener serves at once.
const ADMIN_CONNECTIONS: usize = 1024;

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A part failed to open; the text says which and why.
    #[error("{0}")]
    Open(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Everything a request needs, shared by all listeners.
pub struct Node {
    /// The configuration it started with.
    pub config: Config,
    /// The control store.
    pub store: Arc<dyn ControlStore>,
    /// Hostname → route.
    pub routes: RouteTable,
    /// The sandbox.
    pub runtime: Arc<Runtime>,
    /// Object storage.
    pub blobs: BlobStore,
    /// Static assets.
    pub assets: AssetServer,
    /// Per-project rate limits and quotas.
    pub limiter: Arc<dyn RequestLimiter>,
    /// Deploys and rollbacks.
    pub deployer: Deployer,
    /// Admin API authentication.
    pub auth: Authenticator,
    /// HTTPS certificates.
    pub certs: Arc<CertResolver>,
    /// Where the admin token came from (for the startup message).
    pub admin_token_source: AdminTokenSource,
    /// When it started.
    pub started: Instant,
    /// One compile at a time per component when an artifact is missing.
    recompiling: moka::future::Cache<ComponentId, ()>,
    /// Held while a project is created or deleted, so that clearing the
    /// data of a deleted id never races a create of that id.
    pub project_lifecycle: tokio::sync::Mutex<()>,
}

/// What an embedder may add to a node beyond its configuration.
#[derive(Clone, Default)]
pub struct NodeOptions {
    /// Wraps the object store the configuration names.
    pub object_store_layer: Option<ObjectStoreLayer>,
}

impl Node {
    /// Opens every part: data directory, admin token, control store, kv,
    /// sandbox, object storage; and cleans up after a crash.
    pub async fn open(config: Config) -> Result<Arc<Node>, NodeError> {
        Self::open_with(config, NodeOptions::default()).await
    }

    /// [`Node::open`] with `options`.
    pub async fn open_with(config: Config, options: NodeOptions) -> Result<Arc<Node>, NodeError> {
        let open = |what: &str, e: &dyn std::fmt::Display| NodeError::Open(format!("{what}: {e}"));
        create_private_dir(&config.data_dir).map_err(|e| open("data directory", &e))?;
        let (admin_token, admin_token_source) =
            crate::auth::admin_token(&config.admin, &config.data_dir)
                .map_err(|e| open("admin token", &e))?;
        let node_id = node_id(&config.data_dir).map_err(|e| open("node id", &e))?;

        let plan = StoragePlan::new(&config).map_err(|e| open("storage", &e))?;
        tracing::info!(storage = %plan.describe(), "opening storage");
        for warning in plan.cluster_warnings() {
            tracing::warn!("{warning}");
        }
        let store = plan
            .control_store()
            .await
            .map_err(|e| open("control store", &e))?;
        let backends = Backends {
            kv: plan.kv().map_err(|e| open("kv store", &e))?,
            db: plan.db().await.map_err(|e| open("gateway databases", &e))?,
        };
        let limiter = plan.limiter().map_err(|e| open("rate limiter", &e))?;
        let mut runtime_config = config.runtime.clone();
        runtime_config.max_component_bytes = config.deploy.max_component_bytes;
        let runtime =
            Arc::new(Runtime::new(runtime_config, backends).map_err(|e| open("sandbox", &e))?);
        let mut blobs = plan.objects().map_err(|e| open("object store", &e))?;
        if let Some(layer) = &options.object_store_layer {
            blobs = blobs.layered(layer);
        }
        let deployer = Deployer::new(
            store.clone(),
            blobs.clone(),
            runtime.clone(),
            config.deploy.clone(),
            config.admin.max_upload_bytes,
            config.runtime.limits.clone(),
            config.tmp_dir(),
            &node_id,
        );
        deployer
            .recover(&node_id)
            .await
            .map_err(|e| open("crash recovery", &e))?;
        let certs = Arc::new(CertResolver::default());
        certs
            .reload(&config.tls, store.as_ref())
            .await
            .map_err(|e| open("TLS certificates", &e))?;

        Ok(Arc::new(Node {
            routes: RouteTable::new(
                store.clone(),
                config.base_domain.clone(),
                config.runtime.limits.clone(),
                config.http.max_body_bytes,
                config.tenants.clone(),
            ),
            assets: AssetServer::new(
                blobs.clone(),
                config.assets.memory_cache_bytes,
                config.assets.max_cached_asset_bytes,
            ),
            limiter,
            auth: Authenticator::new(&admin_token, store.clone()),
            recompiling: moka::future::Cache::new(10_000),
            project_lifecycle: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            admin_token_source,
            certs,
            deployer,
            blobs,
            runtime,
            store,
            config,
        }))
    }

    /// The ready app for `spec`. If this node has no compiled artifact for
    /// its component (a fresh node, a cleared cache), the component is
    /// fetched from object storage and compiled, once per component.
    pub async fn app(&self, spec: &AppSpec) -> Result<Arc<App>, ApiError> {
        match self.runtime.app(spec).await {
            Err(LoadError::ArtifactMissing(id)) => {
                let compile = async {
                    let bytes = self.blobs.component(&id).await.map_err(ApiError::from)?;
                    self.runtime.compile(&bytes).await?;
                    Ok::<_, ApiError>(())
                };
                self.recompiling
                    .try_get_with(id.clone(), compile)
                    .await
                    .map_err(|e| match &*e {
                        // A request may retry; the operator's log says why.
                        ApiError::StorageFull(detail) | ApiError::Unavailable(detail) => {
                            ApiError::Unavailable(format!("recompiling {id}: {detail}"))
                        }
                        other => ApiError::Internal(format!("recompiling {id} failed: {other}")),
                    })?;
                self.recompiling.invalidate(&id).await;
                Ok(self.runtime.app(spec).await?)
            }
            other => Ok(other?),
        }
    }

    /// The public URL of a project.
    pub fn project_url(&self, project: &str, public: SocketAddr) -> String {
        let port = match public.port() {
            80 => String::new(),
            port => format!(":{port}"),
        };
        format!("http://{project}.{}{port}/", self.config.base_domain)
    }
}

/// A started node: its listening addresses, and how to stop it.
pub struct Running {
    /// The node.
    pub node: Arc<Node>,
    /// The plain HTTP listener.
    pub public_addr: SocketAddr,
    /// The HTTPS listener, if configured.
    pub tls_addr: Option<SocketAddr>,
    /// The admin listener.
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    supervisor: JoinHandle<()>,
    open: Arc<OpenConnections>,
}

impl Running {
    /// Begins a graceful shutdown: listeners stop accepting at once; requests
    /// in flight get `http.shutdown_grace_ms` to finish.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Connections open now, on every listener.
    pub fn open_connections(&self) -> usize {
        self.open.get()
    }

    /// Waits until the node has stopped.
    pub async fn stopped(self) {
        let _ = self.supervisor.await;
    }
}

/// Opens the node, binds its listeners and starts serving.
pub async fn start(config: Config) -> Result<Running, NodeError> {
    start_with(config, NodeOptions::default()).await
}

/// [`start`] with `options`.
pub async fn start_with(config: Config, options: NodeOptions) -> Result<Running, NodeError> {
    // Before anything registers a metric: handles taken earlier would
    // record nowhere.
    let _ = crate::metrics::handle();
    let node = Node::open_with(config, options).await?;
    let config = &node.config;
    let bind_at = |addr: SocketAddr| async move {
        bind(addr)
            .await
            .map_err(|source| NodeError::Bind { addr, source })
    };
    let public = bind_at(config.listen.public).await?;
    let admin = bind_at(config.listen.admin).await?;
    let tls = match config.listen.public_tls {
        Some(addr) => Some(bind_at(addr).await?),
        None => None,
    };
    let local = |l: &tokio::net::TcpListener| {
        l.local_addr()
            .map_err(|e| NodeError::Open(format!("listener: {e}")))
    };
    let (public_addr, admin_addr) = (local(&public)?, local(&admin)?);
    let tls_addr = tls.as_ref().map(local).transpose()?;

    let http = Arc::new(config.http.clone());
    let public_connections = Arc::new(Semaphore::new(config.http.max_connections));
    let open = Arc::new(OpenConnections::default());
    let public_handler: Handler = {
        let node = node.clone();
        Arc::new(move |request, conn| {
            let node = node.clone();
            Box::pin(async move { crate::dispatch::handle(&node, request, &conn).await })
        })
    };
    let admin_handler: Handler = {
        let node = node.clone();
        Arc::new(move |request, conn| {
            let node = node.clone();
            Box::pin(async move { crate::admin::handle(&node, request, &conn, public_addr).await })
        })
    };

    let mut specs = vec![
        ListenerSpec {
            listener: public,
            tls: None,
            handler: public_handler.clone(),
            http: http.clone(),
            connections: public_connections.clone(),
            open: open.clone(),
        },
        ListenerSpec {
            listener: admin,
            tls: None,
            handler: admin_handler,
            http: http.clone(),
            connections: Arc::new(Semaphore::new(ADMIN_CONNECTIONS)),
            open: open.clone(),
        },
    ];
    if let Some(listener) = tls {
        let server_config = crate::tls::server_config(node.certs.clone())
            .map_err(|e| NodeError::Open(format!("TLS: {e}")))?;
        specs.push(ListenerSpec {
            listener,
            tls: Some(tokio_rustls::TlsAcceptor::from(Arc::new(server_config))),
            handler: public_handler,
            http,
            connections: public_connections,
            open: open.clone(),
        });
    }

    let (stop, stop_rx) = watch::channel(false);
    let graceful = Arc::new(GracefulShutdown::new());
    let loops: Vec<_> = specs
        .into_iter()
        .map(|spec| tokio::spawn(accept_loop(spec, graceful.clone(), stop_rx.clone())))
        .collect();
    let background = background_tasks(&node);
    let grace = Duration::from_millis(node.config.http.shutdown_grace_ms);
    let mut stop_wait = stop_rx;
    let supervisor = tokio::spawn(async move {
        crate::server::stopped(&mut stop_wait).await;
        for accept in loops {
            let _ = accept.await;
        }
        // The accept loops held the other references; they are done.
        match Arc::try_unwrap(graceful) {
            Ok(graceful) => {
                if tokio::time::timeout(grace, graceful.shutdown())
                    .await
                    .is_err()
                {
                    tracing::warn!("the shutdown grace period ended with requests still in flight");
                }
            }
            Err(_) => tracing::error!(
                "cannot wait for in-flight requests: the shutdown handle is still shared"
            ),
        }
        for task in background {
            task.abort();
        }
    });
    Ok(Running {
        node,
        public_addr,
        tls_addr,
        admin_addr,
        stop,
        supervisor,
        open,
    })
}

fn background_tasks(node: &Arc<Node>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    // Store changes drop what they make stale.
    let weak = Arc::downgrade(node);
    let mut changes = node.store.subscribe();
    tasks.push(tokio::spawn(async move {
        loop {
            let change = changes.recv().await;
            let Some(node) = weak.upgrade() else { return };
            match change {
                Ok(Change::Project(project)) => {
                    node.routes.invalidate_project(&project);
                    node.runtime.invalidate(&project);
                }
                Ok(Change::Certificates) => reload_certs(&node).await,
                Ok(Change::All) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    node.routes.invalidate_all();
                    reload_certs(&node).await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }));
    let weak = Arc::downgrade(node);
    tasks.push(tokio::spawn(async move {
        let mut interval = tokio::time::interval(GARBAGE_INTERVAL);
        loop {
            interval.tick().await;
            let Some(node) = weak.upgrade() else { return };
            match node.deployer.collect_garbage().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "collected unreferenced objects"),
                Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
            }
        }
    }));
    if let Some(handle) = crate::metrics::handle() {
        tasks.push(crate::metrics::spawn_upkeep(handle));
    }
    tasks
}

async fn reload_certs(node: &Node) {
    if let Err(e) = node
        .certs
        .reload(&node.config.tls, node.store.as_ref())
        .await
    {
        tracing::error!(error = %e, "reloading TLS certificates failed; the previous set stays in use");
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), "the data directory is readable by other users");
    }
    Ok(())
}

/// This node's id, created on first start.
fn node_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        _ => {
            let id = format!("node-{:016x}", rand::random::<u64>());
            std::fs::write(&path, &id)?;
            Ok(id)
        }
    }
}
