//! How the host stops a guest: the resource limiter of a store and the reasons it carries out.

use wasmtime::ResourceLimiter;

/// Elements a table may grow to; the pooling allocator's default slot size.
pub(crate) const TABLE_ELEMENTS: usize = 20_000;

/// Why the host stopped a guest. Raised as a `wasmtime::Error` from the limiter, the epoch
/// callback or a host function, and recovered by downcasting the error of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Stop {
    #[error("wall-clock deadline reached")]
    Timeout,
    #[error("invocation cancelled")]
    Cancelled,
    #[error("runtime shutting down")]
    Shutdown,
    #[error("memory limit reached")]
    MemoryLimit,
    #[error("log line limit reached")]
    LogLimit,
}

/// Caps the linear memory of all memories of one store together, traps (instead of letting
/// `memory.grow` return -1) when a guest asks for more, and records the peak.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit: usize,
    total: usize,
    peak: usize,
    last_growth: usize,
}

impl MemoryLimiter {
    pub(crate) fn new(limit_bytes: u64) -> Self {
        MemoryLimiter {
            limit: usize::try_from(limit_bytes).unwrap_or(usize::MAX),
            total: 0,
            peak: 0,
            last_growth: 0,
        }
    }

    /// Largest total of linear memory the store held, in bytes.
    pub(crate) fn peak(&self) -> u64 {
        self.peak as u64
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            // Beyond the memory's own declared maximum: plain wasm failure (-1), not our limit.
            return Ok(false);
        }
        let growth = desired.saturating_sub(current);
        let total = self.total.saturating_add(growth);
        if total > self.limit {
            return Err(wasmtime::Error::new(Stop::MemoryLimit));
        }
        self.total = total;
        self.last_growth = growth;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.total = self.total.saturating_sub(self.last_growth);
        self.last_growth = 0;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS && maximum.is_none_or(|max| desired <= max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_all_memories_together_and_records_the_peak() {
        let mut l = MemoryLimiter::new(10);
        assert!(l.memory_growing(0, 4, None).unwrap());
        assert!(l.memory_growing(0, 4, None).unwrap());
        assert_eq!(l.peak(), 8);
        let err = l.memory_growing(4, 7, None).unwrap_err();
        assert_eq!(err.downcast_ref::<Stop>(), Some(&Stop::MemoryLimit));
        assert!(l.memory_growing(4, 6, None).unwrap());
        assert_eq!(l.peak(), 10);
    }

    #[test]
    fn growth_past_a_declared_maximum_fails_without_trapping() {
        let mut l = MemoryLimiter::new(100);
        assert!(!l.memory_growing(0, 50, Some(10)).unwrap());
        assert_eq!(l.peak(), 0);
    }

    #[test]
    fn failed_growth_is_not_counted() {
        let mut l = MemoryLimiter::new(10);
        assert!(l.memory_growing(0, 8, None).unwrap());
        l.memory_grow_failed(wasmtime::Error::msg("no")).unwrap();
        assert!(l.memory_growing(0, 9, None).unwrap());
    }

    #[test]
    fn tables_are_capped() {
        let mut l = MemoryLimiter::new(0);
        assert!(l.table_growing(0, TABLE_ELEMENTS, None).unwrap());
        assert!(!l.table_growing(0, TABLE_ELEMENTS + 1, None).unwrap());
    }
}
