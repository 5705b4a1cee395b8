//! [`TaskContext`]: which assignment a task runs, its progress reports and its cancellation; and
//! [`Stopper`], the agent's side of that cancellation.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weft_proto::agent::{AgentMessage, TaskProgress, agent_message};

/// The assignment a [`Task::run`](super::Task::run) call belongs to.
///
/// Cheap to clone (one `Arc`): hand copies to the futures a task spawns.
#[derive(Clone)]
pub struct TaskContext {
    inner: Arc<Inner>,
}

struct Inner {
    assignment_id: String,
    run_id: String,
    step_id: String,
    attempt: u32,
    traceparent: Option<String>,
    cancel: CancellationToken,
    /// The current stream's progress queue; `None` for a detached context.
    progress: Option<mpsc::Sender<AgentMessage>>,
}

impl TaskContext {
    pub(crate) fn new(
        assignment_id: String,
        run_id: String,
        step_id: String,
        attempt: u32,
        traceparent: Option<String>,
        cancel: CancellationToken,
        progress: mpsc::Sender<AgentMessage>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                assignment_id,
                run_id,
                step_id,
                attempt,
                traceparent,
                cancel,
                progress: Some(progress),
            }),
        }
    }

    /// A context that belongs to no engine, for unit tests of a [`Task`](super::Task): progress
    /// goes nowhere, and cancelling the returned token is what an engine `Cancel` would do.
    pub fn detached(
        run_id: impl Into<String>,
        step_id: impl Into<String>,
        attempt: u32,
    ) -> (Self, CancellationToken) {
        let cancel = CancellationToken::new();
        let ctx = Self {
            inner: Arc::new(Inner {
                assignment_id: "detached".to_owned(),
                run_id: run_id.into(),
                step_id: step_id.into(),
                attempt,
                traceparent: None,
                cancel: cancel.clone(),
                progress: None,
            }),
        };
        (ctx, cancel)
    }

    /// The engine's id of this attempt; every result and progress report names it.
    pub fn assignment_id(&self) -> &str {
        &self.inner.assignment_id
    }

    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    pub fn step_id(&self) -> &str {
        &self.inner.step_id
    }

    /// Which attempt this is, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// The W3C `traceparent` of the engine's span for this attempt (`00-<trace id>-<span
    /// id>-<flags>`), when the engine exports traces: parent your own spans to it.
    pub fn traceparent(&self) -> Option<&str> {
        self.inner.traceparent.as_deref()
    }

    /// Tell the engine how far the task is: `fraction` from 0.0 to 1.0 (clamped), and a short
    /// message for humans.
    ///
    /// Best effort and never blocks: a report is dropped when the stream's small progress queue
    /// is full or the stream is gone. Results are never dropped this way.
    pub fn progress(&self, fraction: f64, message: impl Into<String>) {
        let Some(progress) = &self.inner.progress else {
            return;
        };
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        let report = AgentMessage {
            message: Some(agent_message::Message::Progress(TaskProgress {
                assignment_id: self.inner.assignment_id.clone(),
                progress: fraction,
                message: message.into(),
            })),
        };
        if progress.try_send(report).is_err() {
            tracing::debug!("progress report dropped (queue full or stream closed)");
        }
    }

    /// Resolves once the task should stop: the engine cancelled this assignment, its time-out
    /// passed, the agent is shutting down and its grace period is over, or the stream to the
    /// engine broke (the engine then runs the step again elsewhere).
    ///
    /// A task that ignores it is dropped a few seconds later (see
    /// [`Agent::cancel_grace`](super::Agent::cancel_grace)); one that honours it usually returns
    /// [`TaskError::cancelled`](super::TaskError::cancelled).
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + '_ {
        self.inner.cancel.cancelled()
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// A token cancelled together with this context, for libraries that take one. Cancelling it
    /// does not cancel the context.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.inner.cancel.child_token()
    }
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("assignment_id", &self.inner.assignment_id)
            .field("run_id", &self.inner.run_id)
            .field("step_id", &self.inner.step_id)
            .field("attempt", &self.inner.attempt)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// Why an assignment was told to stop before it finished by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The engine sent `Cancel`, with this reason.
    Cancelled(String),
    /// The assignment's `timeout_ms` passed.
    Timeout,
    /// The agent is shutting down and the grace period is over.
    Shutdown,
    /// The stream it came on is gone: no result can be delivered any more.
    Disconnected,
}

/// The agent's handle on one assignment's cancellation: records the first reason, then cancels
/// the context's token.
#[derive(Debug, Clone)]
pub(crate) struct Stopper {
    cancel: CancellationToken,
    reason: Arc<OnceLock<Stop>>,
}

impl Stopper {
    pub(crate) fn new() -> Self {
        Self {
            cancel: CancellationToken::new(),
            reason: Arc::default(),
        }
    }

    /// The token the assignment's [`TaskContext`] watches.
    pub(crate) fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stop the assignment; only the first reason counts.
    pub(crate) fn stop(&self, why: Stop) {
        let _ = self.reason.set(why);
        self.cancel.cancel();
    }

    /// Resolves once [`Stopper::stop`] was called, with the first reason.
    pub(crate) async fn stopped(&self) -> Stop {
        self.cancel.cancelled().await;
        self.reason.get().cloned().unwrap_or(Stop::Disconnected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn progress_is_clamped_and_names_the_assignment() {
        let (tx, mut rx) = mpsc::channel(4);
        let ctx = TaskContext::new(
            "as-1".into(),
            "run".into(),
            "step".into(),
            2,
            Some("00-0190a5b27c3d7e4f8a1b2c3d4e5f6071-8a1b2c3d4e5f6071-01".into()),
            CancellationToken::new(),
            tx,
        );
        ctx.progress(1.5, "done");
        ctx.progress(f64::NAN, "nan");
        let Some(agent_message::Message::Progress(p)) = rx.recv().await.unwrap().message else {
            panic!("not progress");
        };
        assert_eq!(
            (p.assignment_id.as_str(), p.progress, p.message.as_str()),
            ("as-1", 1.0, "done")
        );
        let Some(agent_message::Message::Progress(p)) = rx.recv().await.unwrap().message else {
            panic!("not progress");
        };
        assert_eq!(p.progress, 0.0);
    }

    #[tokio::test]
    async fn detached_context_is_cancelled_by_its_token_and_not_by_its_children() {
        let (ctx, cancel) = TaskContext::detached("run", "step", 1);
        ctx.progress(0.5, "ignored");
        ctx.cancellation_token().cancel();
        assert!(!ctx.is_cancelled());
        cancel.cancel();
        ctx.cancelled().await;
        assert!(ctx.is_cancelled());
        assert_eq!(ctx.attempt(), 1);
    }

    #[tokio::test]
    async fn the_first_stop_reason_wins() {
        let stopper = Stopper::new();
        stopper.stop(Stop::Cancelled("user".into()));
        stopper.stop(Stop::Shutdown);
        assert!(stopper.token().is_cancelled());
        assert_eq!(stopper.stopped().await, Stop::Cancelled("user".into()));
    }
}
