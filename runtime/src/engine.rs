//! The wasmtime engine every app runs on, and the thread that drives its
//! epoch.

use crate::config::RuntimeConfig;
use crate::error::StartError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Builds the engine: components, Cranelift, async (guests run on fibers so
/// they can yield), fuel as the CPU budget, epochs for the wall clock, and a
/// pooling allocator sized by `config.pool`.
pub(crate) fn build_engine(config: &RuntimeConfig) -> Result<Engine, StartError> {
    let pool = &config.pool;
    let max_memory = usize::try_from(pool.max_memory_bytes)
        .map_err(|_| StartError::Config("pool.max_memory_bytes is too large".into()))?;
    let table_elements = usize::try_from(pool.table_elements)
        .map_err(|_| StartError::Config("pool.table_elements is too large".into()))?;
    let keep_resident = usize::try_from(pool.memory_keep_resident_bytes)
        .map_err(|_| StartError::Config("pool.memory_keep_resident_bytes is too large".into()))?;

    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(pool.total_component_instances)
        .total_core_instances(pool.total_core_instances)
        .total_memories(pool.total_memories)
        .total_tables(pool.total_tables)
        // One fiber stack per concurrently running instance.
        .total_stacks(pool.total_component_instances)
        .max_core_instances_per_component(pool.max_core_instances_per_component)
        .max_memories_per_component(pool.max_memories_per_component)
        .max_tables_per_component(pool.max_tables_per_component)
        .max_memories_per_module(pool.max_memories_per_component)
        .max_tables_per_module(pool.max_tables_per_component)
        .max_memory_size(max_memory)
        .table_elements(table_elements)
        .max_unused_warm_slots(pool.max_unused_warm_slots)
        .linear_memory_keep_resident(keep_resident)
        .table_keep_resident(64 * 1024)
        .async_stack_keep_resident(128 * 1024)
        // Linux ≥ 6.7: reset only the pages a request dirtied, in place,
        // instead of dropping them (madvise, TLB shootdowns) and faulting them
        // back in on the next request.
        .pagemap_scan(Enabled::Auto);

    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .consume_fuel(true)
        .memory_init_cow(pool.memory_init_cow)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    Engine::new(&wasm).map_err(|e| StartError::Engine(format!("{e:#}")))
}

/// The one OS thread per engine that advances its epoch every tick. Guests
/// check the epoch at function entries and loop back-edges, so a spinning
/// guest notices within a tick: it yields to the executor (freeing the tokio
/// worker) or, past its deadline, traps.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine, tick: Duration) -> Result<Self, StartError> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("switchyard-epoch".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        // Woken early by `Drop` so shutdown never waits a tick.
                        std::thread::park_timeout(tick);
                        engine.increment_epoch();
                    }
                }
            })
            .map_err(|e| StartError::Config(format!("cannot start the epoch thread: {e}")))?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
