//! Per-deployment and per-request host state.
//!
//! [`TenantCtx`] is built once per (project, build) and shared read-only by
//! all of its requests. [`RequestState`] is the `T` of each request's
//! `Store<T>`: built fresh per request from the tenant, dropped with it.

use crate::backend::db::DbBackend;
use crate::backend::kv::KvBackend;
use crate::db::schema::Schema;
use crate::egress::{Egress, EgressAllowlist, OutboundPolicy};
use crate::engine::EpochTicker;
use crate::host::db::DbView;
use crate::host::kv::KvView;
use crate::ids::{BuildId, ProjectId};
use crate::limits::{GuestLimiter, Limits};
use crate::logs::{GuestOutput, LogRegistry, LogSource, RequestLog};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Most random bytes one `get-random-bytes` call may ask for: the host fills
/// them synchronously, outside the fuel budget.
const MAX_RANDOM_BYTES: u64 = 64 * 1024;

/// Everything about a deployed app that its requests share.
pub(crate) struct TenantCtx {
    pub(crate) project: ProjectId,
    pub(crate) build: BuildId,
    pub(crate) limits: Limits,
    /// The project's variables plus the reserved `SWITCHYARD_*` ones.
    pub(crate) env: Vec<(String, String)>,
    pub(crate) kv: Arc<dyn KvBackend>,
    pub(crate) kv_timeout: Duration,
    pub(crate) db: Arc<dyn DbBackend>,
    /// The build's declared tables: what its db queries are checked against.
    pub(crate) schema: Arc<Schema>,
    /// The origins its guest may send requests to.
    pub(crate) egress_allowlist: Arc<EgressAllowlist>,
    pub(crate) egress: Arc<Egress>,
    pub(crate) logs: Arc<LogRegistry>,
    /// One permit per running request: `limits.concurrency` of them.
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) metrics: GuestMetrics,
    /// How long a guest may execute on the caller's thread before it moves
    /// to the background lane; `None`: never.
    pub(crate) background_after: Option<Duration>,
    /// The runtime's count of live stores, which each store of this app
    /// joins while it exists.
    pub(crate) live_stores: Arc<LiveStores>,
    /// Keeps the epoch ticking while any store of this app lives, even past
    /// the `Runtime`: without ticks a spinning guest would never yield or
    /// reach its deadline.
    pub(crate) _ticker: Arc<EpochTicker>,
}

#[cfg(test)]
impl TenantCtx {
    /// A tenant for host-interface tests, outside any `Runtime`.
    /// Its database backend is unused by kv tests and sits in the system's
    /// temporary directory; set `db` and `schema` for db tests.
    pub(crate) fn for_tests(project: ProjectId, limits: Limits, kv: Arc<dyn KvBackend>) -> Self {
        let db = crate::backend::db::SqliteGatewayDb::open(
            std::env::temp_dir().join("switchyard-unit-db"),
            Default::default(),
        )
        .expect("db backend opens");
        let ticker = EpochTicker::start(wasmtime::Engine::default(), Duration::from_secs(1))
            .expect("epoch thread starts");
        TenantCtx {
            build: BuildId::new("test").expect("valid build id"),
            logs: Arc::new(LogRegistry::new(crate::config::LogConfig::default())),
            slots: Arc::new(Semaphore::new(limits.concurrency as usize)),
            metrics: GuestMetrics::new(&project),
            background_after: None,
            project,
            limits,
            env: Vec::new(),
            kv,
            kv_timeout: Duration::from_secs(2),
            db: Arc::new(db),
            schema: Arc::new(Schema::default()),
            egress_allowlist: Arc::default(),
            egress: Arc::new(Egress::new(&Default::default()).expect("egress defaults are valid")),
            live_stores: Arc::default(),
            _ticker: Arc::new(ticker),
        }
    }
}

/// A build's metric handles, registered once when it is loaded: looking a
/// labelled metric up in the recorder costs more than the update itself.
pub(crate) struct GuestMetrics {
    pub(crate) project: Arc<str>,
    pub(crate) instantiate: metrics::Histogram,
    pub(crate) fuel_used: metrics::Counter,
    runs_ok: metrics::Counter,
}

impl GuestMetrics {
    pub(crate) fn new(project: &ProjectId) -> Self {
        let project: Arc<str> = project.to_string().into();
        GuestMetrics {
            instantiate: metrics::histogram!("switchyard_instantiate_seconds"),
            fuel_used: metrics::counter!("switchyard_fuel_used_total", "project" => project.to_string()),
            runs_ok: metrics::counter!("switchyard_guest_runs_total", "project" => project.to_string(), "result" => "ok"),
            project,
        }
    }

    /// Counts a finished run under its result: `ok` or the failure's code.
    pub(crate) fn run_ended(&self, result: Result<(), &'static str>) {
        match result {
            Ok(()) => self.runs_ok.increment(1),
            Err(code) => metrics::counter!(
                "switchyard_guest_runs_total",
                "project" => self.project.to_string(),
                "result" => code
            )
            .increment(1),
        }
    }
}

/// How many stores a runtime has alive. Each holds a pool slot and its
/// app's concurrency permit until it is dropped, so once every guest is
/// done (cancelled ones included) this is back to zero.
#[derive(Default)]
pub(crate) struct LiveStores(AtomicU64);

impl LiveStores {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One store, counted in its runtime's [`LiveStores`] until dropped.
struct LiveStore(Arc<LiveStores>);

impl LiveStore {
    fn new(stores: &Arc<LiveStores>) -> Self {
        stores.0.fetch_add(1, Ordering::Relaxed);
        LiveStore(stores.clone())
    }
}

impl Drop for LiveStore {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The host state of one request's store.
pub(crate) struct RequestState {
    pub(crate) tenant: Arc<TenantCtx>,
    pub(crate) limiter: GuestLimiter,
    table: ResourceTable,
    /// Built on the guest's first WASI call (environment, output, clocks,
    /// random): most requests of an HTTP handler make none, and building one
    /// (seeding its random sources, copying the environment) is a measurable
    /// share of a small request.
    wasi: Option<WasiCtx>,
    log: Arc<RequestLog>,
    http: WasiHttpCtx,
    outbound: OutboundPolicy,
    kv_calls: u32,
    db_calls: u32,
    /// Released when the store is dropped, i.e. when the guest is done.
    _slot: OwnedSemaphorePermit,
    _live: LiveStore,
}

impl RequestState {
    pub(crate) fn new(
        tenant: Arc<TenantCtx>,
        log: &Arc<RequestLog>,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        let limits = &tenant.limits;
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.resource_handles as usize);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(usize::try_from(limits.http_field_bytes).unwrap_or(usize::MAX));

        RequestState {
            limiter: GuestLimiter::new(limits),
            outbound: OutboundPolicy {
                egress: tenant.egress.clone(),
                allowlist: tenant.egress_allowlist.clone(),
                log: log.clone(),
                project: tenant.metrics.project.clone(),
                remaining: limits.subrequests,
            },
            table,
            wasi: None,
            log: log.clone(),
            http,
            kv_calls: 0,
            db_calls: 0,
            _slot: slot,
            _live: LiveStore::new(&tenant.live_stores),
            tenant,
        }
    }

    pub(crate) fn kv(&mut self) -> KvView<'_> {
        KvView {
            tenant: &self.tenant,
            calls: &mut self.kv_calls,
        }
    }

    pub(crate) fn db(&mut self) -> DbView<'_> {
        DbView {
            tenant: &self.tenant,
            calls: &mut self.db_calls,
        }
    }
}

/// The guest's WASI context. No preopened directories, no network:
/// wasi:filesystem and wasi:sockets are linked (toolchains import them) but
/// every use is refused.
fn wasi_ctx(env: &[(String, String)], log: &Arc<RequestLog>) -> WasiCtx {
    WasiCtxBuilder::new()
        .envs(env)
        .stdout(GuestOutput::new(log.clone(), LogSource::Stdout))
        .stderr(GuestOutput::new(log.clone(), LogSource::Stderr))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .max_random_size(MAX_RANDOM_BYTES)
        .build()
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (env, log) = (&self.tenant.env, &self.log);
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| wasi_ctx(env, log)),
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_io::IoView for RequestState {
    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}
