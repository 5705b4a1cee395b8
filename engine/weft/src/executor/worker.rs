//! Running one claimed step: compute its outcome (through a runner for task steps, inside the
//! engine for the others), then record it with [`plan::step_outcome`] in one transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use weft_domain::expression::Expression;
use weft_domain::{DefinitionSpec, StepDefinition, StepType};
use weft_runtime::StepContext;
use weft_store::{
    ClaimedStep, LeaseGuard, NewRun, ParentRef, RunOutputs, RunRecord, RunStatus, StepPhase,
    StepRecord, StoreError,
};

use super::plan::{self, Failure, Outcome};
use super::record::{self, Pending};
use super::runner::TaskRequest;
use super::{Executor, ExecutorError};
use crate::metrics::Tally;

/// A claimed step with what it runs under.
pub struct Job {
    pub claimed: ClaimedStep,
    /// Its slot of the replica's `max_concurrent_steps`.
    pub permit: OwnedSemaphorePermit,
    pub cancel: CancellationToken,
    /// The run and its outputs, when the transition that claimed the step had them in hand.
    pub context: Option<RunContext>,
}

/// What a step needs of its run to bind its input, as read inside the transition that claimed
/// it (under the run's lock: current).
pub struct RunContext {
    pub run: RunRecord,
    pub outputs: Map<String, Value>,
}

/// Give the jobs that have no run context theirs, read for all of them at once (two
/// statements, instead of two for each job as it starts). A job left without one (the read
/// failed) reads its own.
pub async fn with_contexts(executor: &Executor, jobs: &mut [Job]) {
    let mut missing: Vec<Uuid> = jobs
        .iter()
        .filter(|j| j.context.is_none())
        .map(|j| j.claimed.step.run_id)
        .collect();
    if missing.is_empty() {
        return;
    }
    missing.sort_unstable();
    missing.dedup();
    let found = match executor.shared.store.runs_with_outputs(&missing).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, runs = missing.len(), "cannot read the runs of claimed steps; each step reads its own");
            return;
        }
    };
    let found: HashMap<Uuid, RunOutputs> = found.into_iter().map(|r| (r.run.id, r)).collect();
    for job in jobs.iter_mut().filter(|j| j.context.is_none()) {
        if let Some(RunOutputs { run, outputs }) = found.get(&job.claimed.step.run_id) {
            job.context = Some(RunContext {
                run: run.clone(),
                outputs: outputs.clone(),
            });
        }
    }
}

/// Execute `job` and record the outcome; return the steps claimed in the same transaction
/// (see [`record`]). Errors are logged: the step's lease expires and it runs again.
pub async fn execute(executor: &Executor, job: Job) -> Vec<Job> {
    let Job {
        claimed,
        permit,
        cancel,
        context,
    } = job;
    let step_row = claimed.step.id;
    let run_id = claimed.step.run_id;
    let step_id = claimed.step.step_id.clone();
    let mut permit = Some(permit);
    match execute_inner(executor, claimed, cancel, context, &mut permit).await {
        Ok(next) => next,
        Err(ExecutorError::Store(StoreError::Stale(reason))) => {
            tracing::info!(%run_id, %step_id, %reason, "step result dropped: its lease was lost");
            Vec::new()
        }
        Err(e) => {
            tracing::error!(%run_id, %step_id, step_row = %step_row, error = %e, "step could not be recorded; it will run again when its lease expires");
            Vec::new()
        }
    }
}

async fn execute_inner(
    executor: &Executor,
    claimed: ClaimedStep,
    cancel: CancellationToken,
    context: Option<RunContext>,
    permit: &mut Option<OwnedSemaphorePermit>,
) -> Result<Vec<Job>, ExecutorError> {
    let started = Instant::now();
    let shared = &executor.shared;
    let row = claimed.step.clone();
    let guard = LeaseGuard {
        owner: shared.owner.clone(),
        attempt: row.attempt,
    };
    // The run and the outputs so far (for bindings): handed over by the transition that
    // claimed the step, or read (concurrently).
    let (run, outputs) = match context {
        Some(RunContext { run, outputs }) => (run, outputs),
        None => {
            let found = shared.store.runs_with_outputs(&[row.run_id]).await?;
            let RunOutputs { run, outputs } = found
                .into_iter()
                .next()
                .ok_or(ExecutorError::Store(StoreError::NotFound))?;
            (run, outputs)
        }
    };
    let spec = shared.definitions.get(run.definition_id).await?;
    let recorder = Recorder {
        executor,
        spec: &spec,
        row: &row,
        guard,
        permit,
    };
    let Some(step) = spec.step(&row.step_id).cloned() else {
        return recorder
            .record(
                None,
                "engine",
                Outcome::Failed(Failure::fatal(
                    "unknown_step",
                    format!("the definition has no step '{}'", row.step_id),
                )),
            )
            .await;
    };
    if run.status.is_terminal() {
        // The run ended (cancelled, failed) after this step was queued.
        let mut tx = shared.store.begin_run(run.id).await?;
        let steps = tx.steps().await?;
        let mut changes = weft_store::RunChanges::default();
        if let Some(current) = steps
            .iter()
            .find(|s| s.id == row.id && s.phase != StepPhase::Done)
        {
            changes.step_updates.push(plan::cancelled(current));
        }
        let tally = Tally::of(&run.definition_name, &changes, &steps);
        tx.apply(changes).await?;
        shared.metrics.record(tally);
        return Ok(Vec::new());
    }

    let span =
        shared
            .traces
            .step_attempt(run.id, &row.step_id, row.attempt, step.step_type.as_str());
    let span_fields = (run.id, row.step_id.clone(), row.attempt);
    tracing::debug!(run_id = %span_fields.0, step_id = %span_fields.1, attempt = span_fields.2, kind = step.step_type.as_str(), from = claimed.claimed_from.as_str(), "step started");

    let input = match bind_parameters(&step, &run.input, &outputs) {
        Ok(input) => input,
        Err(failure) => {
            return recorder
                .record(None, "engine", Outcome::Failed(failure))
                .await;
        }
    };
    // An expression can make a NUL character, which PostgreSQL cannot store: the step fails
    // before its task runs, alike on both backends.
    if plan::contains_nul(&input) {
        let failure = Failure::fatal(
            "invalid_value",
            "the step's input contains a NUL character, which cannot be stored",
        );
        return recorder
            .record(None, "engine", Outcome::Failed(failure))
            .await;
    }
    let now = Utc::now();
    if let Some(deadline) = run.deadline_at
        && deadline <= now
    {
        let failure = Failure::fatal(
            "deadline_exceeded",
            format!("the run's deadline ({}) has passed", deadline.to_rfc3339()),
        );
        return recorder
            .record(Some(input), "engine", Outcome::Failed(failure))
            .await;
    }
    let (runner, outcome) = match step.step_type {
        StepType::Task => {
            let (runner, outcome) = run_task(
                executor,
                &run,
                &row,
                &step,
                input.clone(),
                span.traceparent(),
                cancel,
            )
            .await;
            (runner, outcome)
        }
        StepType::Fork => ("engine", Outcome::Completed(json!({}))),
        StepType::Join => {
            let incoming: Map<String, Value> = step
                .join_config
                .iter()
                .flat_map(|c| c.incoming_step_ids.iter())
                .filter_map(|id| outputs.get(id).map(|o| (id.clone(), o.clone())))
                .collect();
            ("engine", Outcome::Completed(Value::Object(incoming)))
        }
        StepType::Decision => ("engine", decide(&step, &run.input, &outputs)),
        StepType::Wait => (
            "engine",
            wait(
                executor,
                &run,
                &row,
                &step,
                &outputs,
                claimed.claimed_from,
                now,
            )
            .await?,
        ),
        StepType::Workflow => (
            "engine",
            sub_workflow(executor, &run, &row, &step, input.clone(), now).await?,
        ),
    };
    shared.metrics.step_attempt(runner, started.elapsed());
    match &outcome {
        Outcome::Completed(_) => span.end(runner, "completed", None),
        Outcome::Failed(failure) => span.end(runner, "failed", Some(&failure.code)),
        Outcome::Parked { .. } => span.end(runner, "parked", None),
    }
    recorder.record(Some(input), runner, outcome).await
}

/// Records a step's outcome (see [`super::record`]).
struct Recorder<'a> {
    executor: &'a Executor,
    spec: &'a Arc<DefinitionSpec>,
    row: &'a StepRecord,
    guard: LeaseGuard,
    /// The step's slot: handed on to a step claimed with the outcome.
    permit: &'a mut Option<OwnedSemaphorePermit>,
}

impl Recorder<'_> {
    /// Record `outcome` (with the other outcomes of its run waiting to be recorded) in one
    /// transaction that also claims the oldest ready steps for the slots at hand (this step's,
    /// plus a free one for each further ready step of the run): usually the successors just
    /// made ready, which then run at once with the run as read there. Returns those steps.
    async fn record(
        self,
        input: Option<Value>,
        runner: &'static str,
        outcome: Outcome,
    ) -> Result<Vec<Job>, ExecutorError> {
        let pending = Pending {
            spec: self.spec.clone(),
            row: self.row.clone(),
            input,
            runner,
            guard: self.guard,
            outcome,
            permit: self.permit.take(),
        };
        record::record(self.executor, pending).await
    }
}

/// The step's input from its parameter bindings.
fn bind_parameters(
    step: &StepDefinition,
    input: &Value,
    outputs: &Map<String, Value>,
) -> Result<Value, Failure> {
    let mut bound = Map::new();
    for (name, binding) in &step.parameters {
        let value = binding
            .resolve(input, outputs)
            .map_err(|e| Failure::fatal("binding_failed", format!("parameter '{name}': {e}")))?;
        bound.insert(name.clone(), value);
    }
    Ok(Value::Object(bound))
}

async fn run_task(
    executor: &Executor,
    run: &RunRecord,
    row: &weft_store::StepRecord,
    step: &StepDefinition,
    input: Value,
    traceparent: Option<String>,
    cancel: CancellationToken,
) -> (&'static str, Outcome) {
    let Some(config) = &step.task_config else {
        return (
            "engine",
            Outcome::Failed(Failure::fatal(
                "invalid_step",
                "task step without taskConfig",
            )),
        );
    };
    let version = match config
        .version
        .as_deref()
        .map(weft_domain::version::parse_requirement)
    {
        Some(Ok(req)) => Some(req),
        Some(Err(e)) => {
            return (
                "engine",
                Outcome::Failed(Failure::fatal("invalid_version", e.to_string())),
            );
        }
        None => None,
    };
    let wanted = config.runner.map(|r| match r {
        weft_domain::Runner::Wasm => "wasm",
        weft_domain::Runner::Agent => "agent",
    });
    // The first runner that provides the task; none yet: wait for one (an agent may connect, a
    // plugin may be uploaded) up to the schedule time-out.
    let deadline = tokio::time::Instant::now() + executor.shared.options.schedule_timeout;
    let runner = loop {
        let found = executor
            .shared
            .runners
            .iter()
            .filter(|r| wanted.is_none_or(|w| w == r.name()))
            .find(|r| r.provides(&config.task_definition_id, version.as_ref()))
            .cloned();
        if let Some(runner) = found {
            break runner;
        }
        if tokio::time::Instant::now() >= deadline || cancel.is_cancelled() {
            return (
                "engine",
                Outcome::Failed(Failure::fatal(
                    "no_runner",
                    format!(
                        "no runner provided task '{}'{} within {:?}",
                        config.task_definition_id,
                        config
                            .version
                            .as_deref()
                            .map(|v| format!(" version {v}"))
                            .unwrap_or_default(),
                        executor.shared.options.schedule_timeout
                    ),
                )),
            );
        }
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    let request = TaskRequest {
        traceparent,
        task: config.task_definition_id.clone(),
        version,
        input,
        context: StepContext {
            run_id: run.id.to_string(),
            step_id: row.step_id.clone(),
            attempt: row.attempt,
        },
        // The step's per-attempt time-out, and never past the step's overall deadline
        // (`deadlineSeconds` from the step becoming ready) or the run's deadline.
        timeout: {
            let now = Utc::now();
            let until =
                |at: chrono::DateTime<Utc>| (at - now).to_std().unwrap_or(Duration::from_millis(1));
            let step_deadline = step
                .deadline_seconds
                .map(|d| until(plan::after_seconds(row.created_at, d as f64)));
            [
                step.timeout_seconds.map(Duration::from_secs),
                step_deadline,
                run.deadline_at.map(until),
            ]
            .into_iter()
            .flatten()
            .min()
        },
    };
    let outcome = match runner.run(request, cancel).await {
        Ok(output) => Outcome::Completed(output),
        Err(failure) => Outcome::Failed(failure),
    };
    (runner.name(), outcome)
}

fn decide(step: &StepDefinition, input: &Value, outputs: &Map<String, Value>) -> Outcome {
    let Some(config) = &step.decision_config else {
        return Outcome::Failed(Failure::fatal(
            "invalid_step",
            "decision step without decisionConfig",
        ));
    };
    for (index, case) in config.cases.iter().enumerate() {
        let matched =
            Expression::compile(&case.condition).and_then(|e| e.evaluate_condition(input, outputs));
        match matched {
            Ok(true) => {
                return Outcome::Completed(
                    json!({"case": case.name.clone().unwrap_or_else(|| index.to_string()),
                    "caseIndex": index, "nextStepId": case.next_step_id}),
                );
            }
            Ok(false) => {}
            Err(e) => {
                return Outcome::Failed(Failure::fatal(
                    "condition_failed",
                    format!("case {index} condition '{}': {e}", case.condition),
                ));
            }
        }
    }
    match &config.default_step_id {
        Some(default) => Outcome::Completed(json!({"case": "default", "nextStepId": default})),
        None => Outcome::Failed(Failure::fatal(
            "no_matching_case",
            "no decision case matched and the decision has no default",
        )),
    }
}

async fn wait(
    executor: &Executor,
    run: &RunRecord,
    row: &weft_store::StepRecord,
    step: &StepDefinition,
    outputs: &Map<String, Value>,
    from: StepPhase,
    now: DateTime<Utc>,
) -> Result<Outcome, ExecutorError> {
    let Some(config) = &step.wait_config else {
        return Ok(Outcome::Failed(Failure::fatal(
            "invalid_step",
            "wait step without waitConfig",
        )));
    };
    // A parked step keeps its `wait` state even if its wake-up claim was released (shutdown,
    // lost lease): it resumes from that state instead of starting over.
    let resumed = from == StepPhase::Waiting || row.wait.is_some();
    if let Some(signal) = &config.signal {
        let mut tx = executor.shared.store.begin_run(run.id).await?;
        let signals = tx.signals(signal).await?;
        tx.rollback().await?;
        if let Some(first) = signals.into_iter().next() {
            return Ok(Outcome::Completed(
                json!({"signal": signal, "payload": first.payload, "signalId": first.id}),
            ));
        }
        let timeout_at = match (&row.wait, config.timeout_seconds) {
            (Some(wait), _) if resumed => wait
                .get("timeoutAt")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<DateTime<Utc>>().ok()),
            (_, Some(secs)) => Some(plan::after_seconds(now, secs as f64)),
            _ => None,
        };
        if let Some(at) = timeout_at
            && at <= now
        {
            return Ok(Outcome::Failed(Failure::fatal(
                "signal_timeout",
                format!("no signal '{signal}' arrived before {}", at.to_rfc3339()),
            )));
        }
        return Ok(Outcome::Parked {
            wait: json!({"signal": signal, "timeoutAt": timeout_at.map(|t| t.to_rfc3339())}),
            due_at: timeout_at,
            start_runs: Vec::new(),
        });
    }
    let wake_at = match (&row.wait, resumed) {
        (Some(wait), true) => wait
            .get("wakeAt")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<DateTime<Utc>>().ok()),
        _ => None,
    };
    let wake_at = match wake_at {
        Some(at) => at,
        None => {
            let seconds = match &config.duration_seconds {
                Some(binding) => match binding.resolve(&run.input, outputs) {
                    Ok(value) => value.as_f64(),
                    Err(e) => {
                        return Ok(Outcome::Failed(Failure::fatal(
                            "binding_failed",
                            e.to_string(),
                        )));
                    }
                },
                None => Some(0.0),
            };
            let Some(seconds) = seconds.filter(|s| s.is_finite() && *s >= 0.0) else {
                return Ok(Outcome::Failed(Failure::fatal(
                    "invalid_duration",
                    "durationSeconds must be a non-negative number",
                )));
            };
            plan::after_seconds(now, seconds)
        }
    };
    if wake_at <= now {
        return Ok(Outcome::Completed(json!({"wokeAt": now.to_rfc3339()})));
    }
    Ok(Outcome::Parked {
        wait: json!({"wakeAt": wake_at.to_rfc3339()}),
        due_at: Some(wake_at),
        start_runs: Vec::new(),
    })
}

async fn sub_workflow(
    executor: &Executor,
    run: &RunRecord,
    row: &weft_store::StepRecord,
    step: &StepDefinition,
    input: Value,
    now: DateTime<Utc>,
) -> Result<Outcome, ExecutorError> {
    let store = &executor.shared.store;
    // Resume from the recorded child run, however the step was claimed (a released wake-up comes
    // back as queued): never start a second child.
    if let Some(child_id) = row
        .wait
        .as_ref()
        .and_then(|w| w.get("childRunId"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Uuid>().ok())
    {
        let Some(child) = store.get_run(child_id).await? else {
            return Ok(Outcome::Failed(Failure::fatal(
                "child_missing",
                format!("child run {child_id} is gone"),
            )));
        };
        return Ok(match child.status {
            RunStatus::Completed => Outcome::Completed(child.output.unwrap_or(Value::Null)),
            RunStatus::Failed | RunStatus::Cancelled => Outcome::Failed(Failure::fatal(
                "child_failed",
                format!(
                    "child run {child_id} ended {}: {}",
                    child.status.as_str(),
                    child
                        .error
                        .as_ref()
                        .and_then(|e| e.get("message"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                ),
            )),
            _ => Outcome::Parked {
                wait: json!({"childRunId": child_id}),
                due_at: None,
                start_runs: Vec::new(),
            },
        });
    }
    let Some(config) = &step.workflow_config else {
        return Ok(Outcome::Failed(Failure::fatal(
            "invalid_step",
            "workflow step without workflowConfig",
        )));
    };
    if run.depth + 1 > executor.shared.options.max_depth {
        return Ok(Outcome::Failed(Failure::fatal(
            "too_deep",
            format!(
                "sub-workflows nest at most {} deep",
                executor.shared.options.max_depth
            ),
        )));
    }
    let child_definition = match resolve_definition(executor, config).await? {
        Ok(record) => record,
        Err(message) => {
            return Ok(Outcome::Failed(Failure::fatal(
                "unknown_definition",
                message,
            )));
        }
    };
    let child_spec = executor.shared.definitions.get(child_definition.id).await?;
    let Some(entry) = child_spec.entry_step() else {
        return Ok(Outcome::Failed(Failure::fatal(
            "invalid_definition",
            "the child definition has no steps",
        )));
    };
    let child_input =
        match crate::runs::validate_input(&executor.shared.definitions, &child_spec, input) {
            Ok(input) => input,
            Err(issues) => {
                let text: Vec<String> = issues
                    .iter()
                    .map(|i| format!("{} {}", i.path, i.message))
                    .collect();
                return Ok(Outcome::Failed(Failure::fatal(
                    "invalid_input",
                    format!("child input: {}", text.join("; ")),
                )));
            }
        };
    let child_id = Uuid::now_v7();
    // A child of a capped definition waits for room like any run of it (held, PENDING, its
    // deadline from its admission); the parent step waits for it meanwhile. Not when that
    // definition is the run's own or an ancestor's (recursion): the slots it would wait for may
    // all be taken by those ancestors, each waiting for it.
    let held = child_spec.max_concurrent_runs.is_some()
        && !among_ancestors(executor, run, child_definition.id).await?;
    let (deadline_at, initial_steps) =
        plan::beginning(&child_spec, &entry.step_definition_id, held, now);
    let child = NewRun {
        id: child_id,
        definition_id: child_definition.id,
        definition_name: child_definition.name.clone(),
        definition_version: child_definition.version.clone(),
        input: child_input,
        idempotency_key: None,
        parent: Some(ParentRef {
            run_id: run.id,
            step_row_id: row.id,
        }),
        depth: run.depth + 1,
        deadline_at,
        initial_steps,
    };
    Ok(Outcome::Parked {
        wait: json!({"childRunId": child_id}),
        due_at: None,
        start_runs: vec![child],
    })
}

/// Whether definition `definition_id` is `run`'s or one of its ancestors' (at most `max_depth`
/// reads up the chain).
async fn among_ancestors(
    executor: &Executor,
    run: &RunRecord,
    definition_id: Uuid,
) -> Result<bool, StoreError> {
    if run.definition_id == definition_id {
        return Ok(true);
    }
    let mut parent = run.parent.map(|p| p.run_id);
    for _ in 0..executor.shared.options.max_depth {
        let Some(id) = parent else {
            return Ok(false);
        };
        let Some(ancestor) = executor.shared.store.get_run(id).await? else {
            return Ok(false);
        };
        if ancestor.definition_id == definition_id {
            return Ok(true);
        }
        parent = ancestor.parent.map(|p| p.run_id);
    }
    Ok(false)
}

/// The definition a workflow step names: by id, or by name (and optional version requirement):
/// the newest enabled, published version.
async fn resolve_definition(
    executor: &Executor,
    config: &weft_domain::WorkflowConfig,
) -> Result<Result<weft_store::DefinitionRecord, String>, StoreError> {
    let store = &executor.shared.store;
    if let Some(id) = &config.workflow_definition_id {
        let Ok(uuid) = id.parse::<Uuid>() else {
            return Ok(Err(format!("'{id}' is not a definition id")));
        };
        return Ok(store
            .get_definition(uuid)
            .await?
            .filter(|d| !d.is_draft)
            .ok_or_else(|| format!("no published definition with id {id}")));
    }
    let Some(name) = &config.workflow_name else {
        return Ok(Err("the step names no definition".into()));
    };
    let requirement = match config
        .version
        .as_deref()
        .map(weft_domain::version::parse_requirement)
    {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => return Ok(Err(e.to_string())),
        None => None,
    };
    Ok(
        crate::runs::latest_runnable(store.as_ref(), name, requirement.as_ref())
            .await?
            .ok_or_else(|| format!("no enabled, published version of '{name}' matches")),
    )
}
