//! One guest call in a fresh `Store`: limits applied, deadline and cancellation watched, the
//! outcome classified. Used by `Runtime::invoke` (export `run`) and `Runtime::load` (`describe`).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use crate::config::{Grants, Limits};
use crate::engine::MAX_WASM_STACK;
use crate::error::InvokeError;
use crate::limits::Stop;
use crate::sandbox::{
    HostState, LogTags, StepPre, WitStepContext, WitStepDescription, WitStepError,
};

/// Who is calling: the run, the step within it, and which attempt this is (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepContext {
    pub run_id: String,
    pub step_id: String,
    pub attempt: u32,
}

/// A step failure reported by the guest itself (its `step-error`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StepError {
    pub message: String,
    /// Chosen by the plugin, e.g. "invalid_input".
    pub code: String,
    pub retryable: bool,
}

/// A finished invocation: the guest ran to completion (successfully or with its own error).
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub outcome: Result<serde_json::Value, StepError>,
    /// Fuel consumed (metering is always on; unlimited invocations start with `u64::MAX`).
    pub fuel_used: Option<u64>,
    /// Largest total linear memory of the instance.
    pub peak_memory_bytes: u64,
    /// Wall-clock time of the whole invocation, instantiation included.
    pub duration: Duration,
}

/// Which export to call.
pub(crate) enum Call {
    Describe,
    Run { ctx: WitStepContext, input: String },
}

pub(crate) enum Returned {
    Described(WitStepDescription),
    Ran(Result<String, WitStepError>),
}

/// What the sandbox measured, whatever the outcome.
pub(crate) struct Usage {
    pub(crate) fuel_used: u64,
    pub(crate) peak_memory_bytes: u64,
}

/// Everything a guest call needs from the runtime.
pub(crate) struct Sandbox<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) shutdown: &'a CancellationToken,
    /// One permit per instance that may exist at once (the pool's size).
    pub(crate) slots: &'a tokio::sync::Semaphore,
}

impl Sandbox<'_> {
    /// Instantiates `pre` in a fresh store under `limits` and makes one call. The deadline counts
    /// from `started`. Returns the guest's answer (not yet checked against the output limit).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn call(
        &self,
        pre: &StepPre<HostState>,
        grants: &Grants,
        call: Call,
        limits: &Limits,
        tags: LogTags,
        cancel: &CancellationToken,
        started: Instant,
    ) -> (Result<Returned, InvokeError>, Usage) {
        let deadline = started + limits.timeout;
        let slot = tokio::select! {
            biased;
            permit = self.slots.acquire() => permit.map_err(|_| InvokeError::ShuttingDown),
            _ = self.shutdown.cancelled() => Err(InvokeError::ShuttingDown),
            _ = cancel.cancelled() => Err(InvokeError::Cancelled),
            _ = tokio::time::sleep_until(deadline.into()) => Err(InvokeError::Timeout { limit: limits.timeout }),
        };
        let _slot = match slot {
            Ok(permit) => permit,
            Err(e) => {
                let usage = Usage {
                    fuel_used: 0,
                    peak_memory_bytes: 0,
                };
                return (Err(e), usage);
            }
        };
        let mut store = Store::new(
            self.engine,
            HostState::new(limits.memory_bytes, limits.log_lines, tags, grants),
        );
        store.limiter(|s| &mut s.limiter);
        let fuel = limits.fuel.unwrap_or(u64::MAX);
        let fuel_set = store.set_fuel(fuel);
        store.set_epoch_deadline(1);
        let (shutdown, cancelled) = (self.shutdown.clone(), cancel.clone());
        store.epoch_deadline_callback(move |_| {
            if shutdown.is_cancelled() {
                Err(wasmtime::Error::new(Stop::Shutdown))
            } else if cancelled.is_cancelled() {
                Err(wasmtime::Error::new(Stop::Cancelled))
            } else if Instant::now() >= deadline {
                Err(wasmtime::Error::new(Stop::Timeout))
            } else {
                // Let other tasks on this worker run, then keep going until the next tick.
                Ok(UpdateDeadline::Yield(1))
            }
        });

        // The epoch callback stops a guest that computes; this select stops one that waits (in
        // an async host call), dropping the call.
        let mut result = match fuel_set {
            Err(e) => Err(internal(e)),
            Ok(()) => tokio::select! {
                biased;
                r = call_guest(pre, &mut store, call) => r.map_err(|(phase, e)| classify(phase, &e, limits)),
                _ = self.shutdown.cancelled() => Err(InvokeError::ShuttingDown),
                _ = cancel.cancelled() => Err(InvokeError::Cancelled),
                _ = tokio::time::sleep_until(deadline.into()) => Err(InvokeError::Timeout { limit: limits.timeout }),
            },
        };

        let usage = Usage {
            fuel_used: fuel.saturating_sub(store.get_fuel().unwrap_or(fuel)),
            peak_memory_bytes: store.data().limiter.peak(),
        };
        let stderr = report_stdio(store.data());
        if let Err(InvokeError::Trap(msg)) = &mut result
            && !stderr.is_empty()
        {
            msg.push_str("; guest stderr: ");
            msg.push_str(tail(&stderr, 1024));
        }
        (result, usage)
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Instantiate,
    Call,
}

async fn call_guest(
    pre: &StepPre<HostState>,
    store: &mut Store<HostState>,
    call: Call,
) -> Result<Returned, (Phase, wasmtime::Error)> {
    let step = pre
        .instantiate_async(&mut *store)
        .await
        .map_err(|e| (Phase::Instantiate, e))?;
    let returned = match call {
        Call::Describe => step
            .call_describe(&mut *store)
            .await
            .map(Returned::Described),
        Call::Run { ctx, input } => step
            .call_run(&mut *store, &ctx, &input)
            .await
            .map(Returned::Ran),
    };
    returned.map_err(|e| (Phase::Call, e))
}

/// Names the limit a wasmtime error stands for.
fn classify(phase: Phase, err: &wasmtime::Error, limits: &Limits) -> InvokeError {
    if let Some(stop) = err.downcast_ref::<Stop>() {
        return match stop {
            Stop::Timeout => InvokeError::Timeout {
                limit: limits.timeout,
            },
            Stop::Cancelled => InvokeError::Cancelled,
            Stop::Shutdown => InvokeError::ShuttingDown,
            Stop::MemoryLimit => InvokeError::MemoryLimit {
                limit: limits.memory_bytes,
            },
            Stop::LogLimit => InvokeError::LogLimit {
                limit: limits.log_lines,
            },
        };
    }
    if let Some(trap) = err.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => InvokeError::OutOfFuel {
                limit: limits.fuel.unwrap_or(u64::MAX),
            },
            Trap::StackOverflow => InvokeError::StackOverflow {
                limit: Some(MAX_WASM_STACK),
            },
            Trap::MemoryOutOfBounds if shadow_stack_overflow(err) => {
                InvokeError::StackOverflow { limit: None }
            }
            Trap::Interrupt => InvokeError::Timeout {
                limit: limits.timeout,
            },
            other => InvokeError::Trap(other.to_string()),
        };
    }
    match phase {
        Phase::Instantiate => InvokeError::Instantiate(format!("{err:#}")),
        Phase::Call => InvokeError::Trap(format!("{err:#}")),
    }
}

/// Whether an out-of-bounds access is a guest's own stack running out. Rust and C guests keep
/// their stack in linear memory below their data ("stack first"), growing down towards address 0;
/// the frame that no longer fits is written just below 0, which wraps to the top of the 32-bit
/// address space. wasmtime reports the faulting address in the error chain ("memory fault at wasm
/// address 0x…", wasmtime 48): an address within 64 KiB of 2^32 is taken as that overflow.
fn shadow_stack_overflow(err: &wasmtime::Error) -> bool {
    const WINDOW: u64 = 64 << 10;
    err.chain().any(|cause| {
        cause
            .to_string()
            .strip_prefix("memory fault at wasm address 0x")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .is_some_and(|address| address.abs_diff(1 << 32) <= WINDOW)
    })
}

fn internal(err: wasmtime::Error) -> InvokeError {
    InvokeError::Internal(format!("{err:#}"))
}

/// Forwards what the guest printed to `tracing`; returns its stderr.
fn report_stdio(state: &HostState) -> String {
    let (stdout, out_dropped) = state.stdout.contents();
    let (stderr, err_dropped) = state.stderr.contents();
    if !stdout.is_empty() || !stderr.is_empty() {
        tracing::debug!(
            target: "weft::guest",
            stdout = %stdout,
            stderr = %stderr,
            dropped_bytes = out_dropped + err_dropped,
            "guest stdio"
        );
    }
    stderr
}

fn tail(s: &str, max: usize) -> &str {
    let s = s.trim_end();
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Checks the guest's answer against the output limit and parses it.
pub(crate) fn finish_run(
    ran: Result<String, WitStepError>,
    limits: &Limits,
) -> Result<Result<serde_json::Value, StepError>, InvokeError> {
    let size = match &ran {
        Ok(text) => text.len(),
        Err(e) => e.message.len() + e.code.len(),
    } as u64;
    if size > limits.output_bytes {
        return Err(InvokeError::OutputTooLarge {
            limit: limits.output_bytes,
            size,
        });
    }
    match ran {
        Ok(text) => serde_json::from_str(&text)
            .map(Ok)
            .map_err(|e| InvokeError::InvalidOutput(e.to_string())),
        Err(e) => Ok(Err(StepError {
            message: e.message,
            code: e.code,
            retryable: e.retryable,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_measured_before_it_is_parsed() {
        let limits = Limits {
            output_bytes: 4,
            ..Limits::default()
        };
        assert_eq!(
            finish_run(Ok("12345".into()), &limits),
            Err(InvokeError::OutputTooLarge { limit: 4, size: 5 })
        );
        assert_eq!(
            finish_run(Ok("12".into()), &limits),
            Ok(Ok(serde_json::json!(12)))
        );
        assert!(matches!(
            finish_run(Ok("nope".into()), &limits),
            Err(InvokeError::InvalidOutput(_))
        ));
        let err = WitStepError {
            message: "bad".into(),
            code: "x".into(),
            retryable: true,
        };
        assert_eq!(
            finish_run(Err(err), &limits),
            Ok(Err(StepError {
                message: "bad".into(),
                code: "x".into(),
                retryable: true
            }))
        );
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("abcdef\n", 3), "def");
        assert_eq!(tail("ab", 3), "ab");
    }
}
