//! The agent against a fake engine (a real gRPC server on 127.0.0.1, see [`testing`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tonic::Status;
use weft_proto::agent::{self as proto, agent_message, task_result};

use super::testing::{AgentConnection, FakeEngine, FakeEngineConfig, assignment};
use super::*;

/// How long any single expected event may take; generous for a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// What [`Sleep`] has seen, shared with the test.
#[derive(Default)]
struct Stats {
    running: AtomicUsize,
    max_running: AtomicUsize,
    started: AtomicUsize,
    cancelled: AtomicUsize,
}

struct Running<'a>(&'a Stats);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SleepInput {
    /// How long to sleep.
    #[serde(default)]
    ms: u64,
    /// Fail with this code (retryable) after sleeping.
    #[serde(default)]
    fail: Option<String>,
    #[serde(default)]
    ignore_cancel: bool,
    #[serde(default)]
    panic: bool,
    #[serde(default)]
    progress: bool,
}

#[derive(Serialize, JsonSchema)]
struct SleepOutput {
    slept_ms: u64,
    run_id: String,
    step_id: String,
    attempt: u32,
}

/// Sleeps, honouring cancellation unless told not to.
struct Sleep(Arc<Stats>);

impl Task for Sleep {
    type Input = SleepInput;
    type Output = SleepOutput;
    const NAME: &'static str = "sleep";
    const VERSION: &'static str = "1.0.0";
    const DESCRIPTION: &'static str = "Sleeps for a while.";

    async fn run(&self, ctx: TaskContext, input: SleepInput) -> Result<SleepOutput, TaskError> {
        let stats = &self.0;
        stats.started.fetch_add(1, Ordering::SeqCst);
        let now = stats.running.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_running.fetch_max(now, Ordering::SeqCst);
        let _running = Running(stats);
        if input.progress {
            ctx.progress(0.5, "half way");
        }
        if input.panic {
            panic!("asked to panic");
        }
        let nap = sleep(Duration::from_millis(input.ms));
        if input.ignore_cancel {
            nap.await;
        } else {
            tokio::select! {
                () = nap => {}
                () = ctx.cancelled() => {
                    stats.cancelled.fetch_add(1, Ordering::SeqCst);
                    return Err(TaskError::cancelled("stopped early"));
                }
            }
        }
        if let Some(code) = input.fail {
            return Err(TaskError::retryable(code, "asked to fail"));
        }
        Ok(SleepOutput {
            slept_ms: input.ms,
            run_id: ctx.run_id().to_owned(),
            step_id: ctx.step_id().to_owned(),
            attempt: ctx.attempt(),
        })
    }
}

/// An agent running [`Sleep`], with short grace periods and backoff.
struct Spawned {
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    agent: JoinHandle<Result<(), AgentError>>,
}

fn spawn_agent(options: AgentOptions, tune: impl FnOnce(Agent) -> Agent) -> Spawned {
    let stats = Arc::new(Stats::default());
    let shutdown = CancellationToken::new();
    let agent = Agent::new("test-agent", "0.1.0", options)
        .task(Sleep(stats.clone()))
        .grace_period(Duration::from_secs(2))
        .cancel_grace(Duration::from_millis(300))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100));
    let agent = tokio::spawn(tune(agent).run_until(shutdown.clone()));
    Spawned {
        stats,
        shutdown,
        agent,
    }
}

/// A fake engine and an agent connecting to it.
struct Harness {
    engine: FakeEngine,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    agent: JoinHandle<Result<(), AgentError>>,
}

impl Harness {
    async fn start(
        config: FakeEngineConfig,
        options: impl FnOnce(AgentOptions) -> AgentOptions,
    ) -> Self {
        let engine = FakeEngine::start(config).await.unwrap();
        let Spawned {
            stats,
            shutdown,
            agent,
        } = spawn_agent(options(AgentOptions::new(engine.url())), |a| a);
        Self {
            engine,
            stats,
            shutdown,
            agent,
        }
    }

    async fn simple() -> Self {
        Self::start(FakeEngineConfig::default(), |o| o).await
    }

    async fn connection(&self) -> AgentConnection {
        within("the agent to connect", self.engine.accept()).await
    }

    /// Shut the agent down and return what `run_until` returned.
    async fn stop(self) -> Result<(), AgentError> {
        self.shutdown.cancel();
        within("the agent to stop", self.agent).await.unwrap()
    }
}

async fn result(connection: &mut AgentConnection) -> proto::TaskResult {
    within("a result", connection.next_result())
        .await
        .expect("the stream ended before a result")
}

/// Results for `n` assignments, by assignment id.
async fn results(connection: &mut AgentConnection, n: usize) -> HashMap<String, proto::TaskResult> {
    let mut results = HashMap::new();
    while results.len() < n {
        let result = result(connection).await;
        results.insert(result.assignment_id.clone(), result);
    }
    results
}

fn output(result: &proto::TaskResult) -> Value {
    match &result.outcome {
        Some(task_result::Outcome::OutputJson(json)) => serde_json::from_str(json).unwrap(),
        other => panic!("{}: not an output: {other:?}", result.assignment_id),
    }
}

fn error(result: &proto::TaskResult) -> &proto::TaskError {
    match &result.outcome {
        Some(task_result::Outcome::Error(error)) => error,
        other => panic!("{}: not an error: {other:?}", result.assignment_id),
    }
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    within(what, async {
        while !condition() {
            sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn says_hello_with_token_and_tasks_then_runs_an_assignment() {
    let config = FakeEngineConfig {
        token: Some("secret".into()),
        ..FakeEngineConfig::default()
    };
    let harness = Harness::start(config, |o| o.token("secret").capacity(3)).await;
    let mut connection = harness.connection().await;

    assert_eq!(connection.authorization.as_deref(), Some("Bearer secret"));
    let hello = &connection.hello;
    assert_eq!(
        (hello.name.as_str(), hello.version.as_str(), hello.capacity),
        ("test-agent", "0.1.0", 3)
    );
    let [task] = hello.tasks.as_slice() else {
        panic!("one task expected: {:?}", hello.tasks);
    };
    assert_eq!(
        (
            task.name.as_str(),
            task.version.as_str(),
            task.description.as_str()
        ),
        ("sleep", "1.0.0", "Sleeps for a while.")
    );
    let input: Value = serde_json::from_str(&task.input_schema_json).unwrap();
    assert_eq!(input["properties"]["ms"]["type"], "integer");
    let output_schema: Value = serde_json::from_str(&task.output_schema_json).unwrap();
    assert_eq!(output_schema["properties"]["slept_ms"]["type"], "integer");

    let mut a = assignment("a-1", "sleep", json!({"ms": 100, "progress": true}));
    a.run_id = "run-9".into();
    a.step_id = "fetch".into();
    a.attempt = 3;
    a.version = "1.0.0".into();
    connection.assign(a).await;
    let mut progress = Vec::new();
    let result = loop {
        let message = within("a message", connection.recv()).await.unwrap();
        match message.message.unwrap() {
            agent_message::Message::Progress(p) => progress.push(p),
            agent_message::Message::Result(r) => break r,
            _ => {}
        }
    };
    assert_eq!(result.assignment_id, "a-1");
    assert_eq!(
        output(&result),
        json!({"slept_ms": 100, "run_id": "run-9", "step_id": "fetch", "attempt": 3})
    );
    assert_eq!(progress.len(), 1);
    assert_eq!(
        (
            progress[0].assignment_id.as_str(),
            progress[0].progress,
            progress[0].message.as_str()
        ),
        ("a-1", 0.5, "half way")
    );

    assert_eq!(harness.stop().await, Ok(()));
    // The agent ended its side of the stream.
    within("the end of the stream", async {
        while connection.recv().await.is_some() {}
    })
    .await;
}

#[tokio::test]
async fn heartbeats_follow_the_welcome_interval() {
    let config = FakeEngineConfig {
        heartbeat_interval: Duration::from_millis(50),
        ..FakeEngineConfig::default()
    };
    let harness = Harness::start(config, |o| o).await;
    let mut connection = harness.connection().await;
    let started = Instant::now();
    let mut heartbeats = 0;
    while heartbeats < 4 {
        let message = within("a heartbeat", connection.recv()).await.unwrap();
        if let Some(agent_message::Message::Heartbeat(_)) = message.message {
            heartbeats += 1;
        }
    }
    // Four intervals of 50 ms, not a burst.
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_unknown_tasks_task_errors_and_panics_become_error_results() {
    let harness = Harness::simple().await;
    let mut connection = harness.connection().await;
    connection
        .assign(assignment("bad-input", "sleep", json!({"ms": "soon"})))
        .await;
    connection
        .assign(assignment("unknown", "teleport", json!({})))
        .await;
    let mut wrong_version = assignment("wrong-version", "sleep", json!({}));
    wrong_version.version = "2.0.0".into();
    connection.assign(wrong_version).await;
    connection
        .assign(assignment("fails", "sleep", json!({"fail": "busy"})))
        .await;
    connection
        .assign(assignment("panics", "sleep", json!({"panic": true})))
        .await;

    let results = results(&mut connection, 5).await;
    let summary = |id: &str| {
        let e = error(&results[id]);
        (e.code.as_str(), e.retryable)
    };
    assert_eq!(summary("bad-input"), ("invalid_input", false));
    assert!(
        error(&results["bad-input"])
            .message
            .starts_with("input of task `sleep`: "),
        "{:?}",
        results["bad-input"]
    );
    assert_eq!(summary("unknown"), ("unknown_task", false));
    assert_eq!(summary("wrong-version"), ("unknown_task", false));
    assert_eq!(summary("fails"), ("busy", true));
    assert_eq!(summary("panics"), ("task_panicked", false));
    assert!(error(&results["panics"]).message.contains("asked to panic"));
    // The agent survives its task's panic.
    connection
        .assign(assignment("after", "sleep", json!({})))
        .await;
    assert_eq!(output(&result(&mut connection).await)["slept_ms"], 0);
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn runs_at_most_capacity_assignments_at_once() {
    let harness = Harness::start(FakeEngineConfig::default(), |o| o.capacity(2)).await;
    let mut connection = harness.connection().await;
    for i in 0..5 {
        connection
            .assign(assignment(&format!("a-{i}"), "sleep", json!({"ms": 100})))
            .await;
    }
    let results = results(&mut connection, 5).await;
    for result in results.values() {
        assert_eq!(output(result)["slept_ms"], 100);
    }
    assert_eq!(harness.stats.max_running.load(Ordering::SeqCst), 2);
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn cancel_cancels_the_task_context() {
    let harness = Harness::simple().await;
    let mut connection = harness.connection().await;
    connection
        .assign(assignment("a-1", "sleep", json!({"ms": 60_000})))
        .await;
    let stats = harness.stats.clone();
    wait_until("the task to start", || {
        stats.started.load(Ordering::SeqCst) == 1
    })
    .await;
    let cancelled_at = Instant::now();
    connection.cancel("a-1", "user asked").await;
    let result = result(&mut connection).await;
    assert!(cancelled_at.elapsed() < Duration::from_secs(5));
    // The task's own answer, since it returned in time.
    assert_eq!(
        (
            error(&result).code.as_str(),
            error(&result).message.as_str()
        ),
        ("cancelled", "stopped early")
    );
    assert_eq!(stats.cancelled.load(Ordering::SeqCst), 1);
    // A cancel for an assignment the agent does not hold is ignored.
    connection.cancel("nobody", "whatever").await;
    connection
        .assign(assignment("a-2", "sleep", json!({})))
        .await;
    assert_eq!(result_id(&mut connection).await, "a-2");
    harness.stop().await.unwrap();
}

async fn result_id(connection: &mut AgentConnection) -> String {
    result(connection).await.assignment_id
}

#[tokio::test]
async fn a_task_that_ignores_cancel_is_dropped_after_the_cancel_grace() {
    let harness = Harness::start(FakeEngineConfig::default(), |o| o.capacity(1)).await;
    let mut connection = harness.connection().await;
    connection
        .assign(assignment(
            "stubborn",
            "sleep",
            json!({"ms": 60_000, "ignore_cancel": true}),
        ))
        .await;
    let stats = harness.stats.clone();
    wait_until("the task to start", || {
        stats.started.load(Ordering::SeqCst) == 1
    })
    .await;
    connection.cancel("stubborn", "user asked").await;
    let result = result(&mut connection).await;
    assert_eq!(
        (
            error(&result).code.as_str(),
            error(&result).message.as_str()
        ),
        ("cancelled", "cancelled by the engine: user asked")
    );
    // Its slot is free again (capacity 1), and the dropped task no longer runs.
    connection
        .assign(assignment("next", "sleep", json!({})))
        .await;
    assert_eq!(result_id(&mut connection).await, "next");
    assert_eq!(stats.running.load(Ordering::SeqCst), 0);
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn an_assignment_past_its_timeout_fails_retryably() {
    let harness = Harness::simple().await;
    let mut connection = harness.connection().await;
    let mut a = assignment("slow", "sleep", json!({"ms": 60_000}));
    a.timeout_ms = 100;
    connection.assign(a).await;
    let result = result(&mut connection).await;
    assert_eq!(
        (error(&result).code.as_str(), error(&result).retryable),
        ("timeout", true)
    );
    assert_eq!(harness.stats.cancelled.load(Ordering::SeqCst), 1);
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn reconnects_after_the_stream_ends_or_fails_and_stops_what_it_held() {
    let harness = Harness::start(FakeEngineConfig::default(), |o| o.capacity(1)).await;
    let first = harness.connection().await;
    first
        .assign(assignment("orphan", "sleep", json!({"ms": 60_000})))
        .await;
    let stats = harness.stats.clone();
    wait_until("the task to start", || {
        stats.started.load(Ordering::SeqCst) == 1
    })
    .await;

    // The engine ends the stream: the agent says Hello again on a new one, and stops the
    // assignment it can no longer report.
    drop(first);
    let second = harness.connection().await;
    assert_eq!(second.agent_id, "agent-2");
    assert_eq!(second.hello.name, "test-agent");
    wait_until("the orphan to be cancelled", || {
        stats.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;

    // The engine fails the stream with an error status: same.
    second.fail(Status::unavailable("engine restarting")).await;
    let mut third = harness.connection().await;
    assert_eq!(third.agent_id, "agent-3");
    third.assign(assignment("fresh", "sleep", json!({}))).await;
    assert_eq!(result_id(&mut third).await, "fresh");
    assert_eq!(harness.engine.opens(), 3);
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn connects_once_the_engine_comes_up() {
    let addr: SocketAddr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let Spawned {
        shutdown, agent, ..
    } = spawn_agent(AgentOptions::new(format!("http://{addr}")), |a| a);
    sleep(Duration::from_millis(300)).await;
    let engine = FakeEngine::start_at(addr, FakeEngineConfig::default())
        .await
        .unwrap();
    let connection = within("the agent to connect", engine.accept()).await;
    assert_eq!(connection.hello.name, "test-agent");
    shutdown.cancel();
    within("the agent to stop", agent).await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_without_an_engine_returns_promptly() {
    let addr: SocketAddr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let Spawned {
        shutdown, agent, ..
    } = spawn_agent(AgentOptions::new(format!("http://{addr}")), |a| {
        a.reconnect_backoff(Duration::from_secs(60), Duration::from_secs(60))
    });
    sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    shutdown.cancel();
    within("the agent to stop", agent).await.unwrap().unwrap();
    assert!(asked.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_refused_token_is_fatal_and_not_retried() {
    for token in [Some("wrong"), None] {
        let config = FakeEngineConfig {
            token: Some("secret".into()),
            ..FakeEngineConfig::default()
        };
        let harness = Harness::start(config, |o| AgentOptions {
            token: token.map(str::to_owned),
            ..o
        })
        .await;
        let returned = within("the agent to give up", harness.agent).await.unwrap();
        assert_eq!(
            returned,
            Err(AgentError::Unauthenticated("invalid agent token".into()))
        );
        assert_eq!(harness.engine.opens(), 1);
    }
}

#[tokio::test]
async fn shutdown_refuses_new_work_and_lets_running_assignments_finish() {
    let harness = Harness::simple().await;
    let mut connection = harness.connection().await;
    connection
        .assign(assignment("running", "sleep", json!({"ms": 400})))
        .await;
    let stats = harness.stats.clone();
    wait_until("the task to start", || {
        stats.started.load(Ordering::SeqCst) == 1
    })
    .await;
    harness.shutdown.cancel();
    sleep(Duration::from_millis(50)).await;
    connection
        .assign(assignment("late", "sleep", json!({})))
        .await;
    let results = results(&mut connection, 2).await;
    assert_eq!(output(&results["running"])["slept_ms"], 400);
    let late = error(&results["late"]);
    assert_eq!(
        (late.code.as_str(), late.retryable),
        ("agent_shutting_down", true)
    );
    within("the end of the stream", async {
        while connection.recv().await.is_some() {}
    })
    .await;
    assert_eq!(
        within("the agent to stop", harness.agent).await.unwrap(),
        Ok(())
    );
    assert_eq!(stats.cancelled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn shutdown_interrupts_assignments_past_the_grace_period() {
    let engine = FakeEngine::start(FakeEngineConfig::default())
        .await
        .unwrap();
    let Spawned {
        stats,
        shutdown,
        agent,
    } = spawn_agent(AgentOptions::new(engine.url()), |a| {
        a.grace_period(Duration::from_millis(200))
    });
    let mut connection = within("the agent to connect", engine.accept()).await;
    connection
        .assign(assignment("long", "sleep", json!({"ms": 60_000})))
        .await;
    wait_until("the task to start", || {
        stats.started.load(Ordering::SeqCst) == 1
    })
    .await;
    shutdown.cancel();
    let result = result(&mut connection).await;
    let e = error(&result);
    assert_eq!((e.code.as_str(), e.retryable), ("interrupted", true));
    assert_eq!(within("the agent to stop", agent).await.unwrap(), Ok(()));
}

#[tokio::test]
async fn configurations_it_cannot_start_with() {
    let run = |agent: Agent| async move {
        within(
            "the agent to refuse",
            agent.run_until(CancellationToken::new()),
        )
        .await
    };
    let options = AgentOptions::new("http://127.0.0.1:1");
    let sleep_task = || Sleep(Arc::default());
    let cases = [
        Agent::new("a", "1.0.0", options.clone()),
        Agent::new("a", "1.0.0", options.clone().capacity(0)).task(sleep_task()),
        Agent::new("a", "1.0.0", AgentOptions::new("127.0.0.1:1")).task(sleep_task()),
        Agent::new("a", "1.0.0", options.clone().token("two\nlines")).task(sleep_task()),
        Agent::new("", "1.0.0", options.clone()).task(sleep_task()),
        Agent::new("a", "1.0.0", options)
            .task(sleep_task())
            .task(sleep_task()),
    ];
    for agent in cases {
        let returned = run(agent).await;
        assert!(
            matches!(returned, Err(AgentError::Config(_))),
            "{returned:?}"
        );
    }
}
