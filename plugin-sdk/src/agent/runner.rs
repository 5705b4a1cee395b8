//! [`Agent`]: the tasks and options of one agent process, and its life: a stream to the engine,
//! reconnected with backoff until shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use weft_proto::agent::Hello;

use super::backoff::Backoff;
use super::options::{authorization, endpoint};
use super::registry::Registry;
use super::session::{self, SessionError, Shared};
use super::{AgentError, AgentOptions, Task};

/// A remote agent: a name, a version, [`AgentOptions`] and the [`Task`]s it runs.
///
/// ```no_run
/// # use weft_plugin_sdk::agent::{Agent, AgentOptions, Task};
/// # async fn example<T: Task>(task: T) -> Result<(), weft_plugin_sdk::agent::AgentError> {
/// let shutdown = weft_plugin_sdk::agent::shutdown_on_signals().expect("signal handlers");
/// Agent::new("my-agent", "1.0.0", AgentOptions::default())
///     .task(task)
///     .run_until(shutdown)
///     .await
/// # }
/// ```
pub struct Agent {
    name: String,
    version: String,
    options: AgentOptions,
    registry: Registry,
    grace: Duration,
    cancel_grace: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl Agent {
    /// An agent called `name` (unless [`AgentOptions::name`] overrides it), at `version`.
    pub fn new(name: impl Into<String>, version: impl Into<String>, options: AgentOptions) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            options,
            registry: Registry::default(),
            grace: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
        }
    }

    /// Run `task` too. Each `(NAME, VERSION)` once.
    pub fn task<T: Task>(mut self, task: T) -> Self {
        self.registry.add(task);
        self
    }

    /// On shutdown, how long running assignments may take to finish before they are cancelled
    /// (default 30 s). Cancelled ones report a retryable `interrupted` error, so the engine runs
    /// them again elsewhere.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long a cancelled task (engine `Cancel`, time-out, end of the grace period) may take
    /// to return before it is dropped and its capacity slot reused (default 5 s).
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// Reconnection delays: from `initial`, doubling, up to `max`, jittered down to half
    /// (default 250 ms to 30 s). A stream the engine welcomed resets them.
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// Serve the engine until `shutdown` is cancelled, then stop taking assignments, let the
    /// running ones finish (see [`Agent::grace_period`]), deliver their results and close the
    /// stream.
    ///
    /// Connection failures and broken streams are retried with backoff for as long as it runs;
    /// it returns an error only for a configuration it cannot start with or an engine that
    /// answers `Unauthenticated`.
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let (shared, mut backoff) = self.prepare()?;
        tracing::info!(
            engine = %shared.url,
            name = %shared.hello.name,
            version = %shared.hello.version,
            capacity = shared.hello.capacity,
            tasks = ?shared.hello.tasks.iter().map(|t| format!("{} {}", t.name, t.version)).collect::<Vec<_>>(),
            "agent starting"
        );

        let result = loop {
            let span = tracing::info_span!(
                "session",
                engine = %shared.url,
                agent_id = tracing::field::Empty
            );
            match session::run(&shared, &shutdown, &mut backoff)
                .instrument(span)
                .await
            {
                Ok(()) => break Ok(()),
                Err(SessionError::Fatal(e)) => break Err(e),
                Err(SessionError::Retry(reason)) if shutdown.is_cancelled() => {
                    tracing::info!(%reason, "stream ended during shutdown");
                    break Ok(());
                }
                Err(SessionError::Retry(reason)) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        %reason,
                        retry_in_ms = delay.as_millis() as u64,
                        "no stream to the engine; reconnecting"
                    );
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break Ok(()),
                        () = sleep(delay) => {}
                    }
                }
            }
        };

        // Assignments of a lost stream may still be winding down.
        shared.tracker.close();
        let wait = shared.cancel_grace + Duration::from_secs(1);
        if timeout(wait, shared.tracker.wait()).await.is_err() {
            tracing::warn!(
                running = shared.tracker.len(),
                "assignments still running at exit"
            );
        }
        tracing::info!("agent stopped");
        result
    }

    fn prepare(self) -> Result<(Shared, Backoff), AgentError> {
        self.registry.validate()?;
        let options = self.options;
        if options.capacity == 0 {
            return Err(AgentError::Config("capacity must be at least 1".into()));
        }
        let name = options
            .name
            .filter(|name| !name.is_empty())
            .unwrap_or(self.name);
        if name.is_empty() || self.version.is_empty() {
            return Err(AgentError::Config(
                "the agent needs a name and a version".into(),
            ));
        }
        let endpoint = endpoint(&options.engine)?;
        let authorization = options
            .token
            .as_deref()
            .filter(|token| !token.is_empty())
            .map(authorization)
            .transpose()?;
        let hello = Hello {
            name,
            version: self.version,
            capacity: options.capacity,
            tasks: self.registry.definitions(),
        };
        let shared = Shared {
            url: options.engine,
            endpoint,
            authorization,
            hello,
            registry: self.registry,
            slots: Arc::new(Semaphore::new(options.capacity as usize)),
            tracker: TaskTracker::new(),
            grace: self.grace,
            cancel_grace: self.cancel_grace,
        };
        Ok((shared, Backoff::new(self.backoff_initial, self.backoff_max)))
    }
}
