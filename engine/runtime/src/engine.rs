//! The one process-wide `wasmtime::Engine` and the one epoch ticker that drives every deadline.

use std::hash::Hasher;
use std::sync::Weak;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::RuntimeConfig;
use crate::error::RuntimeError;
use crate::limits::TABLE_ELEMENTS;

/// Period of the epoch ticker: the granularity of timeouts and cancellation of running guests.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Wasm stack of a guest; a deeper recursion traps with `stack_overflow`.
pub(crate) const MAX_WASM_STACK: usize = 512 << 10;
/// Component instances that may exist at once (pool slots); invocations beyond wait for one.
pub(crate) const MAX_INSTANCES: u32 = 256;

/// Released instances whose memory is returned to the kernel together: one `process_madvise`
/// call per batch (Linux with `PIDFD_SELF`, 6.13 or later; older kernels get one `madvise` per
/// region, as without batching) instead of several per instance, each interrupting the other
/// cores to flush their TLBs. A slot is reused only after its batch is flushed (no instance sees
/// another's memory); up to `DECOMMIT_BATCH - 1` released instances per CPU (at most 16 CPUs)
/// stay resident meanwhile.
pub(crate) const DECOMMIT_BATCH: usize = 32;

/// Bytes of a released instance's linear memory (from its start) that stay resident where the
/// kernel has `PAGEMAP_SCAN`: its dirty pages are reset to their initial contents in place
/// instead of being returned to the kernel, so the next instance in the slot neither faults
/// them in again nor makes the kernel flush other cores' TLBs. 2 MiB covers a Rust guest's
/// 1 MiB stack and its data and first heap pages. Only pages an instance touched stay resident:
/// at most this much per memory slot that was used (the pool has `2 × MAX_INSTANCES` = 512:
/// 1 GiB at the very most, for guests that dirty 2 MiB each).
pub(crate) const KEEP_RESIDENT: usize = 2 << 20;
/// The same for tables.
pub(crate) const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// How instances get their memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    Pooling,
    OnDemand,
}

/// Builds the engine: pooling allocator when asked and possible, on-demand otherwise.
pub(crate) fn build(cfg: &RuntimeConfig) -> Result<(Engine, Allocator), RuntimeError> {
    if cfg.pooling {
        match Engine::new(&config(cfg, true)) {
            Ok(engine) => return Ok((engine, Allocator::Pooling)),
            Err(e) => tracing::warn!(
                error = %format!("{e:#}"),
                "pooling allocator unavailable (address space too small for the pool?); \
                 falling back to on-demand allocation"
            ),
        }
    }
    let engine =
        Engine::new(&config(cfg, false)).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
    Ok((engine, Allocator::OnDemand))
}

fn config(cfg: &RuntimeConfig, pooling: bool) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true)
        .epoch_interruption(true)
        // Always metered so that a per-plugin fuel limit needs no second engine; unlimited
        // invocations get u64::MAX fuel.
        .consume_fuel(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .parallel_compilation(true);
    if pooling {
        let memory = cfg.maxima.memory_bytes.clamp(64 << 10, 4 << 30);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(MAX_INSTANCES)
            .total_core_instances(MAX_INSTANCES * 8)
            .total_memories(MAX_INSTANCES * 2)
            .total_tables(MAX_INSTANCES * 8)
            .total_stacks(MAX_INSTANCES)
            .max_memories_per_module(1)
            .max_tables_per_module(4)
            .table_elements(TABLE_ELEMENTS)
            .max_memory_size(usize::try_from(memory).unwrap_or(usize::MAX))
            .decommit_batch_size(DECOMMIT_BATCH);
        // Only where the kernel tells which pages are dirty (Linux 6.7+): there the kept
        // memory is reset page by page, the dirty ones only; elsewhere keeping it would mean a
        // `memset` of all of it at every release.
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(KEEP_RESIDENT_TABLE)
                .pagemap_scan(wasmtime::Enabled::Yes);
        }
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    c
}

/// Hex digest identifying the engine's code generation settings; part of every cache key, so an
/// artifact is only ever loaded by an engine that can run it.
pub(crate) fn compatibility_hash(engine: &Engine) -> String {
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            0
        }
    }
    let mut h = Sha(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    hex::encode(&h.0.finalize()[..8])
}

/// Starts the ticker thread. It increments the engine epoch every `EPOCH_TICK` until `shutdown`
/// is cancelled or the runtime is dropped; on shutdown it ticks once more so that running guests
/// observe it.
pub(crate) fn start_ticker<T: Send + Sync + 'static>(
    engine: Engine,
    alive: Weak<T>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("weft-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
                if shutdown.is_cancelled() || alive.strong_count() == 0 {
                    engine.increment_epoch();
                    break;
                }
            }
        })
        .map(drop)
}
