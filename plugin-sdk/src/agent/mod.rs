//! Remote agents (cargo feature `agent`, native targets only): processes that run task steps
//! Wasm cannot (a GPU, a proprietary library, a private network, the local disk).
//!
//! An agent opens ONE bidirectional gRPC stream to an engine replica (`weft.agent.v1`,
//! `AgentService.Open`; no inbound port), says `Hello` (its name, version, capacity and the
//! tasks it runs, with their JSON Schemas), gets `Welcome`, then runs the `Assignment`s it is
//! sent and answers each with a `TaskResult`.
//!
//! - [`Task`]: what a task author implements; typed input and output, like [`Step`](crate::Step).
//! - [`TaskContext`]: ids, progress reports, cancellation. [`TaskError`]: a failure.
//! - [`Agent`]: the tasks plus [`AgentOptions`] (clap flags: `--engine`, `--token`,
//!   `--capacity`, `--name`); [`Agent::run_until`] serves until a shutdown token fires.
//! - [`shutdown_on_signals`]: that token, for SIGINT/SIGTERM.
//! - [`testing`]: a fake engine, to test an agent without one.
//!
//! ```no_run
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//! use weft_plugin_sdk::agent::{Agent, AgentOptions, Task, TaskContext, TaskError};
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct Input { name: String }
//! #[derive(Serialize, JsonSchema)]
//! struct Output { greeting: String }
//!
//! struct Greet;
//! impl Task for Greet {
//!     type Input = Input;
//!     type Output = Output;
//!     const NAME: &'static str = "greet";
//!     const VERSION: &'static str = "1.0.0";
//!     const DESCRIPTION: &'static str = "Says hello.";
//!     async fn run(&self, ctx: TaskContext, input: Input) -> Result<Output, TaskError> {
//!         tracing::info!(attempt = ctx.attempt(), "greeting {}", input.name);
//!         Ok(Output { greeting: format!("Hello {}!", input.name) })
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let shutdown = weft_plugin_sdk::agent::shutdown_on_signals()?;
//!     let options = AgentOptions::new("http://127.0.0.1:50051").token("secret");
//!     Agent::new("greeter", "1.0.0", options).task(Greet).run_until(shutdown).await?;
//!     Ok(())
//! }
//! ```
//!
//! How an agent behaves:
//! - Assignments run concurrently, at most `capacity` at once, each in its own tokio task (a
//!   panic fails that assignment with `task_panicked`). Input JSON that does not deserialise
//!   into [`Task::Input`] fails with `invalid_input` before [`Task::run`]; an assignment for a
//!   task the agent does not run fails with `unknown_task` (both not retryable).
//! - A heartbeat every `Welcome.heartbeat_interval_ms`. An assignment's `timeout_ms` cancels its
//!   context and fails it with a retryable `timeout`.
//! - An engine `Cancel` cancels the assignment's context; a task that returns within
//!   [`Agent::cancel_grace`] has its result sent as is, otherwise it is dropped and the result is
//!   `cancelled`.
//! - The stream ends or fails: running assignments are cancelled (the engine runs them again
//!   elsewhere and would refuse their results) and the agent reconnects with capped, jittered
//!   exponential backoff. `Unauthenticated` is fatal: [`AgentError::Unauthenticated`].
//! - Shutdown: new assignments are refused (retryable `agent_shutting_down`); running ones get
//!   [`Agent::grace_period`] to finish, then are cancelled (retryable `interrupted`); the agent
//!   waits a few seconds for the engine's acks of the last results, then closes the stream.
//! - Logs go through `tracing`, in spans `session` (engine URL, agent id) and `assignment`
//!   (assignment, run and step ids, task, attempt); a task's own events land in the latter.

mod assignment;
mod backoff;
mod context;
mod error;
mod options;
mod registry;
mod runner;
mod session;
mod signal;
pub mod testing;

#[cfg(test)]
mod tests;

use std::future::Future;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use context::TaskContext;
pub use error::{AgentError, TaskError};
pub use options::AgentOptions;
pub use runner::Agent;
pub use signal::shutdown_on_signals;
pub use tokio_util::sync::CancellationToken;

/// A task an agent runs: typed JSON in, typed JSON out.
///
/// The agent calls [`Task::run`] once per assignment (one attempt of a workflow step whose
/// `taskConfig` names [`Task::NAME`]); several run at once, so `run` takes `&self`. The input
/// and output JSON Schemas sent to the engine are derived from [`Task::Input`] and
/// [`Task::Output`].
pub trait Task: Send + Sync + 'static {
    /// The task's input. Input JSON that does not deserialise into it fails the assignment with
    /// code `invalid_input` (not retryable) before [`Task::run`] is called.
    type Input: DeserializeOwned + JsonSchema + Send;
    /// The task's output, serialised to JSON for the engine.
    type Output: Serialize + JsonSchema + Send;

    /// The task's name, e.g. `"echo"`: what workflow steps name in `taskConfig.taskDefinitionId`.
    const NAME: &'static str;
    /// The task's version, a semantic version such as `"1.0.0"`.
    const VERSION: &'static str;
    /// One sentence for humans.
    const DESCRIPTION: &'static str;

    /// Run one attempt. Long-running work should watch [`TaskContext::cancelled`].
    fn run(
        &self,
        ctx: TaskContext,
        input: Self::Input,
    ) -> impl Future<Output = Result<Self::Output, TaskError>> + Send;
}
