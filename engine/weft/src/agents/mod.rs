//! Remote agents: the connection registry (one owner, lock inside), the gRPC service agents
//! open their stream to ([`service`]), and the [`AgentRunner`] that dispatches task steps to them.
//!
//! Invariants: an assignment belongs to exactly one connected agent; a result is accepted only
//! from the agent that holds the assignment and only once; an agent that disconnects or stops
//! heartbeating loses its assignments, whose steps fail with a retryable `agent_lost` (the retry
//! policy sends them to another agent as a new attempt).

pub mod service;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use uuid::Uuid;
use weft_proto::agent::{
    Assignment, Cancel, EngineMessage, Hello, TaskResult, engine_message, task_result,
};

use crate::executor::plan::Failure;
use crate::executor::runner::{Runner, TaskRequest, TaskResult as RunnerResult};
use crate::metrics::Metrics;

/// The outbound half of an agent's stream.
pub type Outbound = mpsc::Sender<Result<EngineMessage, Status>>;

/// How an assignment ended, as the runner sees it.
#[derive(Debug)]
enum AgentOutcome {
    Result(TaskResult),
    Lost(String),
}

/// A task an agent registered.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    /// Task name.
    pub name: String,
    /// Version.
    pub version: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of the input.
    pub input_parameters: Value,
    /// JSON Schema of the output.
    pub output_parameters: Value,
}

/// A connected agent, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    /// Assigned by the engine at connection.
    pub id: Uuid,
    /// The agent's name.
    pub name: String,
    /// The agent's version.
    pub version: String,
    /// Always true for listed agents (disconnected ones are forgotten).
    pub connected: bool,
    /// When it connected.
    pub connected_at: DateTime<Utc>,
    /// Its last message.
    pub last_seen: DateTime<Utc>,
    /// Assignments it runs at once.
    pub capacity: u32,
    /// Assignments it runs now.
    pub in_flight: usize,
    /// Its tasks.
    pub tasks: Vec<TaskView>,
}

struct Pending {
    reply: oneshot::Sender<AgentOutcome>,
    run_id: String,
    step_id: String,
}

struct AgentEntry {
    view: AgentView,
    tasks: Vec<(String, semver::Version)>,
    outbound: Outbound,
    pending: HashMap<String, Pending>,
}

/// Why an assignment could not be made.
#[derive(Debug, PartialEq, Eq)]
pub enum AssignError {
    /// No connected agent registered the task.
    NoAgent,
    /// Agents have it, but all are at capacity.
    Busy,
}

/// An agent connected or left (for the live feed).
#[derive(Debug, Clone)]
pub struct AgentChange {
    /// `agent.connected` or `agent.disconnected`.
    pub kind: &'static str,
    /// The agent as it was then.
    pub agent: AgentView,
    /// Why it left (disconnections only).
    pub reason: Option<String>,
}

/// Agent changes kept for a slow live feed.
const CHANGES_BUFFER: usize = 256;

/// The registry of connected agents. One owner: all state is behind its lock.
pub struct AgentRegistry {
    agents: Mutex<HashMap<Uuid, AgentEntry>>,
    /// Signalled when capacity frees up or agents connect.
    changed: Notify,
    heartbeat: Duration,
    changes: tokio::sync::broadcast::Sender<AgentChange>,
    metrics: Metrics,
}

impl AgentRegistry {
    /// An empty registry; agents heartbeat every `heartbeat`. Connections are counted in
    /// `metrics`.
    pub fn new(heartbeat: Duration, metrics: Metrics) -> Arc<AgentRegistry> {
        Arc::new(AgentRegistry {
            agents: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            heartbeat,
            changes: tokio::sync::broadcast::channel(CHANGES_BUFFER).0,
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, AgentEntry>> {
        self.agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The heartbeat interval agents are told to use.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// Register a new connection after validating its Hello.
    pub fn register(&self, hello: Hello, outbound: Outbound) -> Result<Uuid, Status> {
        let name = hello.name.trim();
        if name.is_empty() || name.len() > 128 {
            return Err(Status::invalid_argument(
                "hello.name must be 1 to 128 characters",
            ));
        }
        if hello.capacity == 0 || hello.capacity > 10_000 {
            return Err(Status::invalid_argument(
                "hello.capacity must be between 1 and 10000",
            ));
        }
        if hello.tasks.is_empty() || hello.tasks.len() > 1000 {
            return Err(Status::invalid_argument(
                "hello.tasks must list 1 to 1000 tasks",
            ));
        }
        let mut tasks = Vec::new();
        let mut views = Vec::new();
        for (i, task) in hello.tasks.into_iter().enumerate() {
            if task.name.trim().is_empty() || task.name.len() > 128 {
                return Err(Status::invalid_argument(format!(
                    "hello.tasks[{i}].name must be 1 to 128 characters"
                )));
            }
            let version = semver::Version::parse(&task.version).map_err(|e| {
                Status::invalid_argument(format!(
                    "hello.tasks[{i}].version '{}': {e}",
                    task.version
                ))
            })?;
            let schema = |text: &str, field: &str| -> Result<Value, Status> {
                if text.trim().is_empty() {
                    return Ok(Value::Bool(true));
                }
                serde_json::from_str(text).map_err(|e| {
                    Status::invalid_argument(format!("hello.tasks[{i}].{field} is not JSON: {e}"))
                })
            };
            views.push(TaskView {
                name: task.name.clone(),
                version: version.to_string(),
                description: task.description.clone(),
                input_parameters: schema(&task.input_schema_json, "input_schema_json")?,
                output_parameters: schema(&task.output_schema_json, "output_schema_json")?,
            });
            tasks.push((task.name, version));
        }
        let id = Uuid::now_v7();
        let now = Utc::now();
        let entry = AgentEntry {
            view: AgentView {
                id,
                name: name.to_string(),
                version: hello.version,
                connected: true,
                connected_at: now,
                last_seen: now,
                capacity: hello.capacity,
                in_flight: 0,
                tasks: views,
            },
            tasks,
            outbound,
            pending: HashMap::new(),
        };
        let view = entry.view.clone();
        self.lock().insert(id, entry);
        self.metrics.agent_connected();
        self.changed.notify_waiters();
        // No listener is not an error.
        let _ = self.changes.send(AgentChange {
            kind: "agent.connected",
            agent: view,
            reason: None,
        });
        tracing::info!(agent_id = %id, agent = name, "agent connected");
        Ok(id)
    }

    /// The agent said something: it is alive.
    pub fn seen(&self, agent: Uuid) {
        if let Some(entry) = self.lock().get_mut(&agent) {
            entry.view.last_seen = Utc::now();
        }
    }

    /// Forget an agent; its assignments are lost (their steps will run again elsewhere).
    pub fn disconnect(&self, agent: Uuid, reason: &str) {
        let entry = self.lock().remove(&agent);
        if let Some(entry) = entry {
            self.metrics.agent_disconnected();
            tracing::info!(agent_id = %agent, agent = %entry.view.name, reason, lost = entry.pending.len(), "agent disconnected");
            // Close the agent's stream (if it is still open) so it reconnects.
            let _ = entry
                .outbound
                .try_send(Err(Status::unavailable(format!("disconnected: {reason}"))));
            for (id, pending) in entry.pending {
                tracing::warn!(assignment_id = %id, run_id = %pending.run_id, step_id = %pending.step_id, "assignment lost with its agent");
                let _ = pending.reply.send(AgentOutcome::Lost(format!(
                    "agent '{}' {reason}",
                    entry.view.name
                )));
            }
            self.changed.notify_waiters();
            let mut view = entry.view;
            view.connected = false;
            let _ = self.changes.send(AgentChange {
                kind: "agent.disconnected",
                agent: view,
                reason: Some(reason.to_string()),
            });
        }
    }

    /// Disconnect agents silent for three heartbeat intervals.
    pub fn expire_silent(&self) {
        let cutoff =
            Utc::now() - chrono::Duration::from_std(self.heartbeat * 3).unwrap_or_default();
        let silent: Vec<Uuid> = self
            .lock()
            .values()
            .filter(|e| e.view.last_seen < cutoff)
            .map(|e| e.view.id)
            .collect();
        for agent in silent {
            self.disconnect(agent, "stopped heartbeating");
        }
    }

    /// Whether a connected agent registered `task` (matching `version`).
    pub fn provides(&self, task: &str, version: Option<&semver::VersionReq>) -> bool {
        self.lock().values().any(|e| {
            e.tasks
                .iter()
                .any(|(n, v)| n == task && version.is_none_or(|r| r.matches(v)))
        })
    }

    /// Give `request` to the least busy agent that has the task and free capacity.
    fn assign(
        &self,
        request: &TaskRequest,
    ) -> Result<(String, oneshot::Receiver<AgentOutcome>), AssignError> {
        let mut agents = self.lock();
        let mut candidates: Vec<&mut AgentEntry> = agents
            .values_mut()
            .filter(|e| {
                e.tasks.iter().any(|(n, v)| {
                    n == &request.task && request.version.as_ref().is_none_or(|r| r.matches(v))
                })
            })
            .collect();
        if candidates.is_empty() {
            return Err(AssignError::NoAgent);
        }
        candidates.retain(|e| e.pending.len() < e.view.capacity as usize);
        candidates.sort_by_key(|e| (e.pending.len() * 1000) / e.view.capacity.max(1) as usize);
        for entry in candidates {
            let version = entry
                .tasks
                .iter()
                .filter(|(n, v)| {
                    n == &request.task && request.version.as_ref().is_none_or(|r| r.matches(v))
                })
                .map(|(_, v)| v.clone())
                .max()
                .map(|v| v.to_string())
                .unwrap_or_default();
            let id = Uuid::now_v7().to_string();
            let message = EngineMessage {
                message: Some(engine_message::Message::Assignment(Assignment {
                    assignment_id: id.clone(),
                    task: request.task.clone(),
                    version,
                    input_json: request.input.to_string(),
                    run_id: request.context.run_id.clone(),
                    step_id: request.context.step_id.clone(),
                    attempt: request.context.attempt,
                    timeout_ms: request
                        .timeout
                        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
                        .unwrap_or(0),
                    traceparent: request.traceparent.clone(),
                })),
            };
            if entry.outbound.try_send(Ok(message)).is_err() {
                continue;
            }
            let (reply, receiver) = oneshot::channel();
            entry.pending.insert(
                id.clone(),
                Pending {
                    reply,
                    run_id: request.context.run_id.clone(),
                    step_id: request.context.step_id.clone(),
                },
            );
            entry.view.in_flight = entry.pending.len();
            return Ok((id, receiver));
        }
        Err(AssignError::Busy)
    }

    /// A result from `agent`. Accepted only if that agent holds the assignment.
    pub fn complete(&self, agent: Uuid, result: TaskResult) -> Result<(), String> {
        let pending = {
            let mut agents = self.lock();
            let Some(entry) = agents.get_mut(&agent) else {
                return Err("unknown agent".into());
            };
            entry.view.last_seen = Utc::now();
            let pending = entry.pending.remove(&result.assignment_id);
            entry.view.in_flight = entry.pending.len();
            pending
        };
        let Some(pending) = pending else {
            return Err(format!(
                "assignment {} is not held by this agent (finished, cancelled or reassigned)",
                result.assignment_id
            ));
        };
        self.changed.notify_waiters();
        pending
            .reply
            .send(AgentOutcome::Result(result))
            .map_err(|_| {
                "the step stopped waiting for this result (cancelled or timed out)".to_string()
            })
    }

    /// Tell the agent holding `assignment` to stop it, and stop waiting for it.
    fn cancel(&self, assignment: &str, reason: &str) {
        let mut agents = self.lock();
        for entry in agents.values_mut() {
            if entry.pending.remove(assignment).is_some() {
                entry.view.in_flight = entry.pending.len();
                let _ = entry.outbound.try_send(Ok(EngineMessage {
                    message: Some(engine_message::Message::Cancel(Cancel {
                        assignment_id: assignment.to_string(),
                        reason: reason.to_string(),
                    })),
                }));
                self.changed.notify_waiters();
                return;
            }
        }
    }

    /// Agents connecting and leaving from now on.
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<AgentChange> {
        self.changes.subscribe()
    }

    /// Connected agents.
    pub fn list(&self) -> Vec<AgentView> {
        let mut agents: Vec<AgentView> = self.lock().values().map(|e| e.view.clone()).collect();
        agents.sort_by_key(|a| (a.connected_at, a.id));
        agents
    }

    /// Every task of every connected agent (one entry per name and version).
    pub fn task_definitions(&self) -> Vec<TaskView> {
        let mut tasks: Vec<TaskView> = Vec::new();
        for agent in self.list() {
            for task in agent.tasks {
                if !tasks
                    .iter()
                    .any(|t| t.name == task.name && t.version == task.version)
                {
                    tasks.push(task);
                }
            }
        }
        tasks.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        tasks
    }

    /// Disconnect silent agents until `shutdown`.
    pub async fn sweep(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.heartbeat) => self.expire_silent(),
            }
        }
    }
}

/// Runs task steps on connected agents.
pub struct AgentRunner {
    registry: Arc<AgentRegistry>,
}

impl AgentRunner {
    /// Over the registry.
    pub fn new(registry: Arc<AgentRegistry>) -> Self {
        Self { registry }
    }
}

#[async_trait]
impl Runner for AgentRunner {
    fn name(&self) -> &'static str {
        "agent"
    }

    fn provides(&self, task: &str, version: Option<&semver::VersionReq>) -> bool {
        self.registry.provides(task, version)
    }

    async fn run(&self, request: TaskRequest, cancel: CancellationToken) -> RunnerResult {
        // Wait for capacity (agents may all be busy), as long as an agent has the task.
        let (id, receiver) = loop {
            let changed = self.registry.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.registry.assign(&request) {
                Ok(assigned) => break assigned,
                Err(AssignError::NoAgent) => {
                    return Err(Failure {
                        code: "no_runner".into(),
                        message: format!("no connected agent provides task '{}'", request.task),
                        retryable: true,
                    });
                }
                Err(AssignError::Busy) => {
                    tokio::select! {
                        () = cancel.cancelled() => return Err(cancelled()),
                        () = changed => {}
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                }
            }
        };
        let timeout = request.timeout.unwrap_or(Duration::MAX);
        let outcome = tokio::select! {
            outcome = receiver => outcome,
            () = cancel.cancelled() => {
                self.registry.cancel(&id, "the step was cancelled");
                return Err(cancelled());
            }
            () = tokio::time::sleep(timeout) => {
                self.registry.cancel(&id, "the step timed out");
                return Err(Failure {
                    code: "timeout".into(),
                    message: format!("the agent did not answer within {timeout:?}"),
                    retryable: true,
                });
            }
        };
        match outcome {
            Ok(AgentOutcome::Result(result)) => match result.outcome {
                Some(task_result::Outcome::OutputJson(text)) => serde_json::from_str(&text)
                    .map_err(|e| Failure {
                        code: "invalid_output".into(),
                        message: format!("the agent's output is not JSON: {e}"),
                        retryable: false,
                    }),
                Some(task_result::Outcome::Error(error)) => Err(Failure {
                    code: if error.code.is_empty() {
                        "agent_error".into()
                    } else {
                        error.code
                    },
                    message: error.message,
                    retryable: error.retryable,
                }),
                None => Err(Failure::fatal(
                    "invalid_output",
                    "the agent sent a result with no outcome",
                )),
            },
            Ok(AgentOutcome::Lost(reason)) => Err(Failure {
                code: "agent_lost".into(),
                message: reason,
                retryable: true,
            }),
            Err(_) => Err(Failure {
                code: "agent_lost".into(),
                message: "the agent connection closed before it answered".into(),
                retryable: true,
            }),
        }
    }
}

fn cancelled() -> Failure {
    Failure {
        code: "cancelled".into(),
        message: "the step was cancelled".into(),
        retryable: true,
    }
}
