//! Process-wide sandbox settings, fixed when the [`crate::Runtime`] starts.

use crate::egress::EgressConfig;
use crate::limits::Limits;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Everything the runtime needs to start. Every field has a default, so an
/// empty config (or `RuntimeConfig::default()`) is a working one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Where compiled components are cached, one subdirectory per engine
    /// configuration. Must not be writable by tenants: artifacts found here
    /// are loaded as native code. Default `./switchyard-data/artifacts`.
    pub artifact_dir: PathBuf,
    /// How often the epoch ticker thread advances the engine's epoch, in
    /// milliseconds. A spinning guest yields its worker thread once per tick,
    /// and timeouts fire at most one tick late. Default 1.
    pub epoch_tick_ms: u64,
    /// How long a guest may run on the server's threads (inside its polls:
    /// its wasm and its host calls; waiting between polls does not count)
    /// before it moves to the background lane (lowest CPU priority), in
    /// milliseconds; checked at least once per epoch tick. 0: never.
    /// Default 2.
    pub background_after_ms: u64,
    /// Largest component accepted by [`crate::Runtime::compile`], in bytes.
    /// Default 20 MiB.
    pub max_component_bytes: u64,
    /// How many ready-to-run apps (one per project and build) stay cached.
    /// Default 10 000.
    pub app_cache_capacity: u64,
    /// How long a kv call may take before the guest gets `unavailable`, in
    /// milliseconds. Default 2000.
    pub kv_timeout_ms: u64,
    /// Default limits for every project.
    pub limits: Limits,
    /// Sizes of the pooling instance allocator.
    pub pool: PoolConfig,
    /// Capture of guests' stdout and stderr.
    pub logs: LogConfig,
    /// Guests' outgoing HTTP requests.
    pub egress: EgressConfig,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            artifact_dir: PathBuf::from("./switchyard-data/artifacts"),
            epoch_tick_ms: 1,
            background_after_ms: 2,
            max_component_bytes: 20 * 1024 * 1024,
            app_cache_capacity: 10_000,
            kv_timeout_ms: 2_000,
            limits: Limits::default(),
            pool: PoolConfig::default(),
            logs: LogConfig::default(),
            egress: EgressConfig::default(),
        }
    }
}

impl RuntimeConfig {
    pub(crate) fn epoch_tick(&self) -> Duration {
        Duration::from_millis(self.epoch_tick_ms)
    }

    pub(crate) fn background_after(&self) -> Option<Duration> {
        (self.background_after_ms > 0).then(|| Duration::from_millis(self.background_after_ms))
    }

    pub(crate) fn kv_timeout(&self) -> Duration {
        Duration::from_millis(self.kv_timeout_ms)
    }
}

/// Sizes of wasmtime's pooling instance allocator: how many instances can run
/// at once on this node, and the largest any one of them may be. Slots are
/// reserved as virtual memory up front (about 4 GiB of address space per
/// memory slot, not resident), so these numbers bound concurrency, not RSS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Component instances alive at once: the node's request concurrency for
    /// dynamic requests. Default 1000.
    pub total_component_instances: u32,
    /// Core instances alive at once, across all components. Default 10 000.
    pub total_core_instances: u32,
    /// Linear memories alive at once. Default 2000.
    pub total_memories: u32,
    /// Tables alive at once. Default 2000.
    pub total_tables: u32,
    /// Most core instances one component may contain. Default 64.
    pub max_core_instances_per_component: u32,
    /// Most memories one component may define. Default 4.
    pub max_memories_per_component: u32,
    /// Most tables one component may define. Default 16.
    pub max_tables_per_component: u32,
    /// Largest single linear memory, in bytes; no project's memory limit may
    /// exceed it. Default 128 MiB.
    pub max_memory_bytes: u64,
    /// Most elements one table may hold; no project's table limit may exceed
    /// it. Default 100 000.
    pub table_elements: u64,
    /// Freed slots kept warm for reuse. Default 100.
    pub max_unused_warm_slots: u32,
    /// Bytes of each freed linear memory kept resident and reset in place
    /// instead of returned to the OS. On Linux 6.7+ only the pages a request
    /// actually dirtied are reset (`PAGEMAP_SCAN`), so the next request on
    /// the slot does not fault them back in: this halves the per-request
    /// cost. Costs up to this much RSS per slot that has been used.
    /// Default 1 MiB.
    pub memory_keep_resident_bytes: u64,
    /// Whether a memory slot maps its component's initial memory image
    /// copy-on-write (and keeps it mapped for the next instance of the same
    /// component) instead of copying the data segments at every
    /// instantiation. Either way a freed slot is reset before any instance
    /// uses it again. Default true.
    pub memory_init_cow: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            total_component_instances: 1000,
            total_core_instances: 10_000,
            total_memories: 2000,
            total_tables: 2000,
            max_core_instances_per_component: 64,
            max_memories_per_component: 4,
            max_tables_per_component: 16,
            max_memory_bytes: 128 * 1024 * 1024,
            table_elements: 100_000,
            max_unused_warm_slots: 100,
            memory_keep_resident_bytes: 1024 * 1024,
            memory_init_cow: true,
        }
    }
}

/// Where guest output goes: each project has one bounded in-memory buffer,
/// and all of them together fit a global budget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Output one request may log (stdout and stderr together), in bytes;
    /// the rest is dropped after a truncation marker. Default 64 KiB.
    pub per_request_bytes: u64,
    /// Output kept per project, in bytes; the oldest records go first.
    /// Default 256 KiB.
    pub per_project_bytes: u64,
    /// Memory for all projects' logs together, in bytes: room for
    /// `total_bytes / per_project_bytes` projects, after which the logs of
    /// rarely used projects are dropped. Default 256 MiB.
    pub total_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            per_request_bytes: 64 * 1024,
            per_project_bytes: 256 * 1024,
            total_bytes: 256 * 1024 * 1024,
        }
    }
}
