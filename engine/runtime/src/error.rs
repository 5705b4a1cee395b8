//! Why a load or an invocation failed. Each error has a stable `code()` for APIs and metrics,
//! a message naming the limit and its value, and a `retryable()` verdict.
//!
//! Retry policy: a failure that the same input would reproduce on any machine (a trap, running
//! out of fuel or memory, a stack overflow, oversized or invalid output, a log flood) is not
//! retryable; a failure that depends on the moment (wall-clock timeout, cancellation, shutdown,
//! exhausted host resources) is. A guest's own `StepError` carries its own `retryable` flag.

use std::time::Duration;

/// The sandbox stopped the guest, or could not run it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    #[error("the step ran past its wall-clock limit (timeout = {limit:?})")]
    Timeout { limit: Duration },
    #[error("the step used all its fuel (fuel = {limit})")]
    OutOfFuel { limit: u64 },
    #[error("the step tried to grow its memory past the limit (memory_bytes = {limit})")]
    MemoryLimit { limit: u64 },
    /// `limit` is the engine's wasm stack; `None` when the guest ran out of the stack it keeps in
    /// its own linear memory (sized when the guest was linked).
    #[error("the step overflowed its stack ({})", match .limit {
        Some(limit) => format!("max wasm stack = {limit} bytes"),
        None => "the stack it keeps in its linear memory ran out".to_string(),
    })]
    StackOverflow { limit: Option<usize> },
    #[error("the step returned {size} bytes, over the limit (output_bytes = {limit})")]
    OutputTooLarge { limit: u64, size: u64 },
    #[error("the step returned output that is not JSON: {0}")]
    InvalidOutput(String),
    #[error("the step called `log` more often than allowed (log_lines = {limit})")]
    LogLimit { limit: u32 },
    #[error("the step trapped: {0}")]
    Trap(String),
    #[error("the invocation was cancelled")]
    Cancelled,
    #[error("the runtime is shutting down")]
    ShuttingDown,
    #[error("the step could not be instantiated: {0}")]
    Instantiate(String),
    #[error("internal runtime error: {0}")]
    Internal(String),
}

impl InvokeError {
    /// Stable, machine-readable identifier.
    pub fn code(&self) -> &'static str {
        match self {
            InvokeError::Timeout { .. } => "timeout",
            InvokeError::OutOfFuel { .. } => "out_of_fuel",
            InvokeError::MemoryLimit { .. } => "memory_limit",
            InvokeError::StackOverflow { .. } => "stack_overflow",
            InvokeError::OutputTooLarge { .. } => "output_too_large",
            InvokeError::InvalidOutput(_) => "invalid_output",
            InvokeError::LogLimit { .. } => "log_limit",
            InvokeError::Trap(_) => "trap",
            InvokeError::Cancelled => "cancelled",
            InvokeError::ShuttingDown => "shutting_down",
            InvokeError::Instantiate(_) => "instantiate_failed",
            InvokeError::Internal(_) => "internal",
        }
    }

    /// Whether running the same step again may succeed (see the module docs).
    pub fn retryable(&self) -> bool {
        match self {
            InvokeError::Timeout { .. }
            | InvokeError::Cancelled
            | InvokeError::ShuttingDown
            | InvokeError::Instantiate(_)
            | InvokeError::Internal(_) => true,
            InvokeError::OutOfFuel { .. }
            | InvokeError::MemoryLimit { .. }
            | InvokeError::StackOverflow { .. }
            | InvokeError::OutputTooLarge { .. }
            | InvokeError::InvalidOutput(_)
            | InvokeError::LogLimit { .. }
            | InvokeError::Trap(_) => false,
        }
    }
}

/// A plugin was refused at load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly binary: {0}")]
    NotWasm(String),
    #[error(
        "this is a precompiled artifact; upload the WebAssembly component it was compiled from"
    )]
    PrecompiledArtifact,
    #[error(
        "this is a core WebAssembly module; a component implementing weft:step@1.0.0 is required"
    )]
    NotAComponent,
    #[error("invalid WebAssembly component: {0}")]
    InvalidComponent(String),
    #[error("the component does not implement the weft:step@1.0.0 world `step`: {0}")]
    WrongWorld(String),
    #[error("compiling the component took longer than compile_timeout = {limit:?}")]
    CompileTimeout { limit: Duration },
    #[error("`describe` failed ({code}): {0}", code = .0.code())]
    Describe(InvokeError),
    #[error("invalid description: {0}")]
    InvalidDescription(String),
    #[error("the runtime is shutting down")]
    ShuttingDown,
    #[error("internal runtime error: {0}")]
    Internal(String),
}

impl LoadError {
    /// Stable, machine-readable identifier.
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::NotWasm(_) => "not_wasm",
            LoadError::PrecompiledArtifact => "precompiled_artifact",
            LoadError::NotAComponent => "not_a_component",
            LoadError::InvalidComponent(_) => "invalid_component",
            LoadError::WrongWorld(_) => "wrong_world",
            LoadError::CompileTimeout { .. } => "compile_timeout",
            LoadError::Describe(_) => "describe_failed",
            LoadError::InvalidDescription(_) => "invalid_description",
            LoadError::ShuttingDown => "shutting_down",
            LoadError::Internal(_) => "internal",
        }
    }

    /// Whether loading the same bytes again may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            LoadError::CompileTimeout { .. } | LoadError::ShuttingDown | LoadError::Internal(_) => {
                true
            }
            LoadError::Describe(e) => e.retryable(),
            LoadError::NotWasm(_)
            | LoadError::PrecompiledArtifact
            | LoadError::NotAComponent
            | LoadError::InvalidComponent(_)
            | LoadError::WrongWorld(_)
            | LoadError::InvalidDescription(_) => false,
        }
    }
}

/// Errors of `Runtime::new`.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot configure the wasm engine: {0}")]
    Engine(String),
    #[error("cannot use the cache directory {path}: {source}")]
    CacheDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("invalid runtime configuration: {0}")]
    Config(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_limit_and_its_value() {
        let e = InvokeError::OutputTooLarge {
            limit: 1024,
            size: 4096,
        };
        assert_eq!(e.code(), "output_too_large");
        assert_eq!(
            e.to_string(),
            "the step returned 4096 bytes, over the limit (output_bytes = 1024)"
        );
        let e = InvokeError::Timeout {
            limit: Duration::from_millis(250),
        };
        assert_eq!(
            e.to_string(),
            "the step ran past its wall-clock limit (timeout = 250ms)"
        );
        assert!(e.retryable());
        assert!(!InvokeError::Trap("x".into()).retryable());
    }

    #[test]
    fn describe_failure_carries_the_inner_code() {
        let e = LoadError::Describe(InvokeError::OutOfFuel { limit: 5 });
        assert_eq!(e.code(), "describe_failed");
        assert_eq!(
            e.to_string(),
            "`describe` failed (out_of_fuel): the step used all its fuel (fuel = 5)"
        );
        assert!(!e.retryable());
    }
}
