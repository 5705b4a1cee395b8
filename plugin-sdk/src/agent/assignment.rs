//! One assignment, from a free slot to its outcome: waits for capacity, runs the task in its own
//! tokio task (a panic stays there), enforces the time-out, and turns a stop (engine `Cancel`,
//! shutdown, lost stream) into the result the engine should get.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinError;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::Instrument as _;

use super::context::{Stop, Stopper};
use super::registry::Runnable;
use super::{TaskContext, TaskError};

/// Everything one assignment needs; built by the session from an `Assignment` message.
pub(crate) struct Job {
    pub task: Arc<dyn Runnable>,
    pub ctx: TaskContext,
    pub stopper: Stopper,
    pub input: String,
    /// From the assignment's `timeout_ms`, counted from its arrival; `None` for none.
    pub deadline: Option<Instant>,
    pub timeout_ms: u64,
    /// The agent's capacity, shared by all streams.
    pub slots: Arc<Semaphore>,
    /// How long a stopped task may take to return before it is dropped.
    pub cancel_grace: Duration,
}

/// What to send the engine: the output JSON or an error; `None` when nothing can be sent (the
/// stream the assignment came on is gone).
pub(crate) type Outcome = Option<Result<String, TaskError>>;

/// Run `job` to its outcome. Frees its capacity slot before returning, so the engine never sees
/// a result while the slot is still taken.
pub(crate) async fn run(job: Job) -> Outcome {
    let Job {
        task,
        ctx,
        stopper,
        input,
        deadline,
        timeout_ms,
        slots,
        cancel_grace,
    } = job;
    let deadline_passed = async {
        match deadline {
            Some(deadline) => sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline_passed);

    // Wait for a slot: the engine should not assign beyond capacity, but tasks of a lost stream
    // may still be winding down when a new stream's assignments arrive.
    let _slot = tokio::select! {
        slot = slots.acquire_owned() => slot.expect("the capacity semaphore is never closed"),
        why = stopper.stopped() => return stopped_outcome(why, None, timeout_ms),
        () = &mut deadline_passed => {
            stopper.stop(Stop::Timeout);
            return stopped_outcome(Stop::Timeout, None, timeout_ms);
        }
    };

    tracing::info!("assignment started");
    let started = Instant::now();
    let mut attempt = tokio::spawn(task.start(ctx, input).in_current_span());
    let why = tokio::select! {
        joined = &mut attempt => {
            let outcome = finished_outcome(joined);
            log_outcome(&outcome, started);
            return Some(outcome);
        }
        why = stopper.stopped() => why,
        () = &mut deadline_passed => {
            stopper.stop(Stop::Timeout);
            Stop::Timeout
        }
    };

    tracing::info!(reason = ?why, "assignment stopping");
    let joined = match timeout(cancel_grace, &mut attempt).await {
        Ok(joined) => Some(joined),
        Err(_) => {
            tracing::warn!(
                grace_ms = cancel_grace.as_millis() as u64,
                "task ignored cancellation: dropped"
            );
            attempt.abort();
            let _ = attempt.await;
            None
        }
    };
    let outcome = stopped_outcome(why, joined.map(finished_outcome), timeout_ms);
    if let Some(outcome) = &outcome {
        log_outcome(outcome, started);
    }
    outcome
}

/// The outcome of a task that returned (or panicked) by itself.
fn finished_outcome(
    joined: Result<Result<String, TaskError>, JoinError>,
) -> Result<String, TaskError> {
    match joined {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(TaskError::fatal(
            "task_panicked",
            format!("the task panicked: {}", panic_message(e.into_panic())),
        )),
        Err(_) => Err(TaskError::retryable(
            "interrupted",
            "the task was aborted by the agent",
        )),
    }
}

/// The outcome of a task that was told to stop; `returned` is what it gave back within the
/// grace period, if anything.
fn stopped_outcome(
    why: Stop,
    returned: Option<Result<String, TaskError>>,
    timeout_ms: u64,
) -> Outcome {
    match why {
        // Whatever the task managed to return still goes to the engine, which rejects it if it
        // no longer holds the assignment.
        Stop::Cancelled(reason) => Some(returned.unwrap_or_else(|| {
            Err(TaskError::cancelled(format!(
                "cancelled by the engine: {reason}"
            )))
        })),
        Stop::Timeout => Some(Err(TaskError::retryable(
            "timeout",
            format!("no result within the assignment's {timeout_ms} ms"),
        ))),
        // Finished work is worth sending; anything else was cut short by the shutdown, not by
        // the input, so the engine may run it again elsewhere.
        Stop::Shutdown => Some(match returned {
            Some(Ok(output)) => Ok(output),
            Some(Err(e)) => Err(TaskError::retryable(
                "interrupted",
                format!("the agent shut down before the task finished ({e})"),
            )),
            None => Err(TaskError::retryable(
                "interrupted",
                "the agent shut down before the task finished",
            )),
        }),
        Stop::Disconnected => None,
    }
}

fn log_outcome(outcome: &Result<String, TaskError>, started: Instant) {
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(_) => tracing::info!(elapsed_ms, "assignment succeeded"),
        Err(e) => tracing::info!(
            elapsed_ms,
            code = %e.code,
            retryable = e.retryable,
            message = %e.message,
            "assignment failed"
        ),
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => "(no message)".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_map_to_results() {
        let out = || Some(Ok::<_, TaskError>("{}".to_owned()));
        let cancelled = stopped_outcome(Stop::Cancelled("user".into()), None, 0);
        assert_eq!(
            cancelled,
            Some(Err(TaskError::cancelled("cancelled by the engine: user")))
        );
        assert_eq!(
            stopped_outcome(Stop::Cancelled("user".into()), out(), 0),
            out()
        );
        let timeout = stopped_outcome(Stop::Timeout, out(), 50)
            .unwrap()
            .unwrap_err();
        assert_eq!(
            (timeout.code.as_str(), timeout.retryable),
            ("timeout", true)
        );
        assert_eq!(stopped_outcome(Stop::Shutdown, out(), 0), out());
        let interrupted =
            stopped_outcome(Stop::Shutdown, Some(Err(TaskError::cancelled("stop"))), 0)
                .unwrap()
                .unwrap_err();
        assert_eq!(
            (interrupted.code.as_str(), interrupted.retryable),
            ("interrupted", true)
        );
        assert_eq!(stopped_outcome(Stop::Disconnected, out(), 0), None);
    }
}
