//! Counters of the runtime, for metrics and tests.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::Allocator;

/// A snapshot of the runtime's counters (totals since `Runtime::new`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeStats {
    pub allocator: Allocator,
    /// Components compiled by cranelift.
    pub compiles: u64,
    /// Loads served from the disk cache (no compile).
    pub disk_cache_hits: u64,
    /// Disk cache files found unusable (corrupt, foreign, incompatible), deleted and recompiled.
    pub disk_cache_rejects: u64,
    /// Loads served from the in-memory hot set.
    pub memory_cache_hits: u64,
    pub loads_failed: u64,
    pub invocations: u64,
    /// Invocations the sandbox stopped (`InvokeError`).
    pub invocations_failed: u64,
    /// Invocations that completed with the guest's own `StepError`.
    pub guest_errors: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) compiles: AtomicU64,
    pub(crate) disk_cache_hits: AtomicU64,
    pub(crate) disk_cache_rejects: AtomicU64,
    pub(crate) memory_cache_hits: AtomicU64,
    pub(crate) loads_failed: AtomicU64,
    pub(crate) invocations: AtomicU64,
    pub(crate) invocations_failed: AtomicU64,
    pub(crate) guest_errors: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self, allocator: Allocator) -> RuntimeStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RuntimeStats {
            allocator,
            compiles: get(&self.compiles),
            disk_cache_hits: get(&self.disk_cache_hits),
            disk_cache_rejects: get(&self.disk_cache_rejects),
            memory_cache_hits: get(&self.memory_cache_hits),
            loads_failed: get(&self.loads_failed),
            invocations: get(&self.invocations),
            invocations_failed: get(&self.invocations_failed),
            guest_errors: get(&self.guest_errors),
        }
    }
}
