//! What a step's outcome does to its run, computed without I/O: the successors it makes ready,
//! the joins it completes, the retry it schedules, the run's completion or failure, and the
//! events of each. The result is a [`RunChanges`] that the store applies in one transaction.
//!
//! Rules:
//! - each step of a definition runs at most once per run (retries are attempts of the same row);
//! - a join becomes ready when every incoming step it waits for is completed: all of them for a
//!   fork's join, those on the taken branch for a decision's join;
//! - the run completes when no step is left unfinished; its output comes from the definition's
//!   output parameters, or else is the output of the last step that completed;
//! - a step that fails for good fails its run and cancels every other unfinished step.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;
use weft_domain::graph::Graph;
use weft_domain::{DefinitionSpec, StepType};
use weft_store::{
    AttemptRecord, LeaseGuard, NewEvent, NewRun, NewStep, RunChanges, RunRecord, RunStatus,
    RunUpdate, StepPhase, StepRecord, StepStatus, StepUpdate,
};

/// A failure of a step attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Stable code (`timeout`, `invalid_input`, `no_match`...).
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
}

impl Failure {
    /// A failure that retrying cannot fix.
    pub fn fatal(code: &str, message: impl Into<String>) -> Failure {
        Failure {
            code: code.into(),
            message: message.into(),
            retryable: false,
        }
    }

    fn to_json(&self, step_id: &str, attempt: u32) -> Value {
        json!({"code": self.code, "message": self.message, "retryable": self.retryable,
               "stepId": step_id, "attempt": attempt})
    }
}

/// How a claimed step's execution ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done, with this output.
    Completed(Value),
    /// This attempt failed.
    Failed(Failure),
    /// Parked: a timer, a signal, a child run. `due_at` wakes it (`None`: only an explicit wake).
    Parked {
        /// What it waits for (stored on the row).
        wait: Value,
        /// When to wake it.
        due_at: Option<DateTime<Utc>>,
        /// Child runs to start now.
        start_runs: Vec<NewRun>,
    },
}

/// The run being changed, as read inside its transaction.
pub struct RunView<'a> {
    /// The pinned definition.
    pub spec: &'a DefinitionSpec,
    /// The run row.
    pub run: &'a RunRecord,
    /// All its step rows.
    pub steps: &'a [StepRecord],
}

impl RunView<'_> {
    fn row(&self, step_id: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.step_id == step_id)
    }

    /// Outputs of completed steps, by step id.
    pub fn outputs(&self) -> Map<String, Value> {
        self.steps
            .iter()
            .filter(|s| s.status == StepStatus::Completed)
            .map(|s| (s.step_id.clone(), s.output.clone().unwrap_or(Value::Null)))
            .collect()
    }
}

/// The claimed step whose outcome is being recorded.
pub struct Claimed<'a> {
    /// Its row as claimed.
    pub row: &'a StepRecord,
    /// The input it ran with (for the record).
    pub input: Option<Value>,
    /// `wasm`, `agent` or `engine`.
    pub runner: &'a str,
    /// The lease it ran under.
    pub guard: LeaseGuard,
}

/// The changes recording `outcome` for `claimed` in `view`.
pub fn step_outcome(
    view: &RunView<'_>,
    claimed: &Claimed<'_>,
    outcome: Outcome,
    now: DateTime<Utc>,
) -> RunChanges {
    let mut changes = RunChanges::default();
    let row = claimed.row;
    let run_id = view.run.id;
    let started = row.started_at.unwrap_or(now);
    match outcome {
        Outcome::Parked {
            wait,
            due_at,
            start_runs,
        } => {
            changes.step_updates.push(StepUpdate {
                id: row.id,
                guard: Some(claimed.guard.clone()),
                status: StepStatus::Running,
                phase: StepPhase::Waiting,
                input: claimed.input.clone(),
                output: None,
                error: None,
                runner: Some(claimed.runner.to_string()),
                due_at,
                wait: Some(wait.clone()),
                reset_attempt: None,
            });
            changes.events.push(event(
                run_id,
                Some(&row.step_id),
                "step.waiting",
                json!({"wait": wait}),
            ));
            for child in &start_runs {
                changes.events.push(event(
                    child.id,
                    None,
                    "run.created",
                    json!({
                    "definitionId": child.definition_id, "definitionName": child.definition_name,
                    "definitionVersion": child.definition_version, "parentRunId": run_id}),
                ));
                if !child.initial_steps.is_empty() {
                    changes
                        .events
                        .push(event(child.id, None, "run.started", json!({})));
                }
                for step in &child.initial_steps {
                    changes.events.push(event(
                        child.id,
                        Some(&step.step_id),
                        "step.ready",
                        json!({}),
                    ));
                }
            }
            changes.new_runs = start_runs;
        }
        Outcome::Completed(output) => {
            changes.step_updates.push(StepUpdate {
                id: row.id,
                guard: Some(claimed.guard.clone()),
                status: StepStatus::Completed,
                phase: StepPhase::Done,
                input: claimed.input.clone(),
                output: Some(output.clone()),
                error: None,
                runner: Some(claimed.runner.to_string()),
                due_at: None,
                wait: None,
                reset_attempt: None,
            });
            changes.attempts.push(attempt_record(
                claimed,
                StepStatus::Completed,
                Some(output.clone()),
                None,
                started,
                now,
            ));
            changes.events.push(event(
                run_id,
                Some(&row.step_id),
                "step.completed",
                json!({"attempt": row.attempt, "runner": claimed.runner,
                       "output": summary(&output)}),
            ));
            advance(view, &row.step_id, &output, now, &mut changes);
        }
        Outcome::Failed(failure) => {
            let step = view.spec.step(&row.step_id);
            let policy = step.map(|s| s.effective_retry_policy()).unwrap_or_default();
            let deadline_ok = step
                .and_then(|s| s.deadline_seconds)
                .is_none_or(|d| after_seconds(row.created_at, d as f64) > now);
            let error = failure.to_json(&row.step_id, row.attempt);
            changes.attempts.push(attempt_record(
                claimed,
                StepStatus::Failed,
                None,
                Some(error.clone()),
                started,
                now,
            ));
            if failure.retryable
                && row.attempt < policy.max_attempts
                && policy.is_retryable(&failure.code)
                && deadline_ok
            {
                let delay = jittered(policy.delay_seconds(row.attempt), policy.jitter, row.id);
                let due = after_seconds(now, delay);
                changes.step_updates.push(StepUpdate {
                    id: row.id,
                    guard: Some(claimed.guard.clone()),
                    status: StepStatus::Pending,
                    phase: StepPhase::Queued,
                    input: claimed.input.clone(),
                    output: None,
                    error: Some(error.clone()),
                    runner: Some(claimed.runner.to_string()),
                    due_at: Some(due),
                    wait: None,
                    reset_attempt: None,
                });
                changes.events.push(event(
                    run_id,
                    Some(&row.step_id),
                    "step.retrying",
                    json!({
                    "attempt": row.attempt, "error": error, "retryAt": due.to_rfc3339()}),
                ));
            } else {
                changes.step_updates.push(StepUpdate {
                    id: row.id,
                    guard: Some(claimed.guard.clone()),
                    status: StepStatus::Failed,
                    phase: StepPhase::Done,
                    input: claimed.input.clone(),
                    output: None,
                    error: Some(error.clone()),
                    runner: Some(claimed.runner.to_string()),
                    due_at: None,
                    wait: None,
                    reset_attempt: None,
                });
                changes.events.push(event(
                    run_id,
                    Some(&row.step_id),
                    "step.failed",
                    json!({"attempt": row.attempt, "error": error}),
                ));
                finish_run(
                    view,
                    RunStatus::Failed,
                    None,
                    Some(error),
                    Some(row.id),
                    &mut changes,
                );
            }
        }
    }
    changes
}

/// After `step_id` completed with `output`: make its successors ready, complete joins, and
/// complete the run when nothing is left.
fn advance(
    view: &RunView<'_>,
    step_id: &str,
    output: &Value,
    now: DateTime<Utc>,
    changes: &mut RunChanges,
) {
    let spec = view.spec;
    let graph = Graph::new(spec);
    let Some(step) = spec.step(step_id) else {
        return;
    };
    let run_id = view.run.id;
    // Statuses as they will be after this transition.
    let mut completed: BTreeSet<&str> = view
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Completed)
        .map(|s| s.step_id.as_str())
        .collect();
    completed.insert(step_id);
    let existing: BTreeSet<&str> = view.steps.iter().map(|s| s.step_id.as_str()).collect();
    let mut activate: Vec<String> = Vec::new();

    let successors: Vec<&str> = match step.step_type {
        StepType::Fork => graph::branch_starts_of(step),
        StepType::Decision => output
            .get("nextStepId")
            .and_then(Value::as_str)
            .and_then(|id| spec.step(id).map(|s| s.step_definition_id.as_str()))
            .into_iter()
            .collect(),
        _ => step.next_step_id().into_iter().collect(),
    };
    for next in successors {
        match spec.step(next).map(|s| s.step_type) {
            Some(StepType::Join) => {}
            Some(_) => activate.push(next.to_string()),
            None => {}
        }
    }
    // Joins that wait for this step (or, for a decision whose taken branch is empty, for the
    // decision itself).
    let mut joins: Vec<&str> = spec
        .steps
        .iter()
        .filter(|s| {
            s.join_config
                .as_ref()
                .is_some_and(|c| c.incoming_step_ids.iter().any(|i| i == step_id))
        })
        .map(|s| s.step_definition_id.as_str())
        .collect();
    if step.step_type == StepType::Decision
        && let Some(join) = step.join_step_id()
    {
        joins.push(join);
    }
    for join_id in joins {
        if existing.contains(join_id) || activate.iter().any(|a| a == join_id) {
            continue;
        }
        let Some(join) = spec.step(join_id) else {
            continue;
        };
        let Some(config) = &join.join_config else {
            continue;
        };
        let required: Vec<&str> = match graph.join_owner(join_id).and_then(|o| spec.step(o)) {
            Some(owner) if owner.step_type == StepType::Decision => {
                // Only the branch the decision took.
                let taken = view
                    .row(&owner.step_definition_id)
                    .and_then(|r| r.output.as_ref())
                    .or(if owner.step_definition_id == step_id {
                        Some(output)
                    } else {
                        None
                    })
                    .and_then(|o| o.get("nextStepId"))
                    .and_then(Value::as_str);
                let Some(taken) = taken else { continue };
                let branch = graph.reachable([taken], Some(join_id));
                config
                    .incoming_step_ids
                    .iter()
                    .map(String::as_str)
                    .filter(|i| branch.contains(i))
                    .collect()
            }
            _ => config
                .incoming_step_ids
                .iter()
                .map(String::as_str)
                .collect(),
        };
        let owner_done = graph
            .join_owner(join_id)
            .is_none_or(|o| completed.contains(o));
        if owner_done && required.iter().all(|i| completed.contains(i)) {
            activate.push(join_id.to_string());
        }
    }

    let mut activated = BTreeSet::new();
    for id in activate {
        if existing.contains(id.as_str()) || !activated.insert(id.clone()) {
            continue;
        }
        changes.new_steps.push(NewStep {
            id: Uuid::now_v7(),
            step_id: id.clone(),
            due_at: now,
        });
        changes
            .events
            .push(event(run_id, Some(&id), "step.ready", json!({})));
    }

    // Anything left unfinished?
    let unfinished = view
        .steps
        .iter()
        .any(|s| s.step_id != step_id && s.phase != StepPhase::Done);
    if !unfinished && changes.new_steps.is_empty() {
        let mut outputs = view.outputs();
        outputs.insert(step_id.to_string(), output.clone());
        match run_output(spec, &view.run.input, &outputs, output) {
            Ok(run_output) => finish_run(
                view,
                RunStatus::Completed,
                Some(run_output),
                None,
                None,
                changes,
            ),
            Err(message) => {
                let error = json!({"code": "output_binding_failed", "message": message});
                finish_run(view, RunStatus::Failed, None, Some(error), None, changes);
            }
        }
    }
}

/// The run's output: its output parameters, or the last output.
pub fn run_output(
    spec: &DefinitionSpec,
    input: &Value,
    outputs: &Map<String, Value>,
    last: &Value,
) -> Result<Value, String> {
    if spec.output_parameters.is_empty() {
        return Ok(last.clone());
    }
    let mut object = Map::new();
    for parameter in &spec.output_parameters {
        let value = parameter
            .value
            .resolve(input, outputs)
            .map_err(|e| format!("output parameter '{}': {e}", parameter.name))?;
        if contains_nul(&value) {
            return Err(format!(
                "output parameter '{}' contains a NUL character, which cannot be stored",
                parameter.name
            ));
        }
        object.insert(parameter.name.clone(), value);
    }
    Ok(Value::Object(object))
}

/// Whether a NUL character is anywhere in `value` (PostgreSQL stores none).
pub fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map
            .iter()
            .any(|(key, item)| key.contains('\0') || contains_nul(item)),
        _ => false,
    }
}

/// End the run with `status`, cancelling every other unfinished step.
fn finish_run(
    view: &RunView<'_>,
    status: RunStatus,
    output: Option<Value>,
    error: Option<Value>,
    except: Option<Uuid>,
    changes: &mut RunChanges,
) {
    let run_id = view.run.id;
    let updated: BTreeSet<Uuid> = changes.step_updates.iter().map(|u| u.id).collect();
    for step in view.steps {
        if step.phase == StepPhase::Done || Some(step.id) == except || updated.contains(&step.id) {
            continue;
        }
        changes.step_updates.push(cancelled(step));
        changes.events.push(event(
            run_id,
            Some(&step.step_id),
            "step.cancelled",
            json!({}),
        ));
    }
    let kind = match status {
        RunStatus::Completed => "run.completed",
        RunStatus::Failed => "run.failed",
        _ => "run.cancelled",
    };
    let data = match (&error, &output) {
        (Some(error), _) => json!({"error": error}),
        (None, Some(output)) => json!({"output": summary(output)}),
        (None, None) => json!({}),
    };
    changes.events.push(event(run_id, None, kind, data));
    changes.run = Some(RunUpdate {
        status,
        output,
        error,
    });
    if let Some(parent) = view.run.parent {
        changes.wake.push(parent.step_row_id);
    }
}

/// Cancel a run: every unfinished step and the run itself.
pub fn cancel_run(view: &RunView<'_>, reason: &str) -> RunChanges {
    let mut changes = RunChanges::default();
    let error = json!({"code": "cancelled", "message": reason});
    finish_run(
        view,
        RunStatus::Cancelled,
        None,
        Some(error),
        None,
        &mut changes,
    );
    changes
}

/// Retry a failed (or cancelled) run from its failed and cancelled steps, keeping completed ones.
pub fn retry_run(view: &RunView<'_>, now: DateTime<Utc>) -> RunChanges {
    let mut changes = RunChanges::default();
    let run_id = view.run.id;
    if view.run.started_at.is_none() {
        // Cancelled while held: it never started. Held again, to be admitted in its turn.
        changes.run = Some(RunUpdate {
            status: RunStatus::Pending,
            output: None,
            error: None,
        });
        changes
            .events
            .push(event(run_id, None, "run.retried", json!({})));
        return changes;
    }
    for step in view.steps {
        if matches!(step.status, StepStatus::Failed | StepStatus::Cancelled) {
            changes.step_updates.push(StepUpdate {
                id: step.id,
                guard: None,
                status: StepStatus::Pending,
                phase: StepPhase::Queued,
                input: None,
                output: None,
                error: None,
                runner: None,
                due_at: Some(now),
                wait: None,
                reset_attempt: None,
            });
            changes.events.push(event(
                run_id,
                Some(&step.step_id),
                "step.ready",
                json!({"retry": true}),
            ));
        }
    }
    changes.run = Some(RunUpdate {
        status: RunStatus::Running,
        output: None,
        error: None,
    });
    changes
        .events
        .push(event(run_id, None, "run.retried", json!({})));
    changes
}

/// A step row marked cancelled (unconditionally).
pub fn cancelled(step: &StepRecord) -> StepUpdate {
    StepUpdate {
        id: step.id,
        guard: None,
        status: StepStatus::Cancelled,
        phase: StepPhase::Done,
        input: None,
        output: None,
        error: None,
        runner: None,
        due_at: None,
        wait: None,
        reset_attempt: None,
    }
}

/// How a run of `spec` whose entry step is `entry` begins at `now`: held (for its definition's
/// `maxConcurrentRuns`: no step and no deadline yet, both come at its admission) or started (its
/// entry step due now, its deadline from now). Returns the deadline and the initial steps.
pub fn beginning(
    spec: &DefinitionSpec,
    entry: &str,
    held: bool,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, Vec<NewStep>) {
    if held {
        return (None, Vec::new());
    }
    let deadline = spec.timeout_seconds.map(|s| after_seconds(now, s as f64));
    let step = NewStep {
        id: Uuid::now_v7(),
        step_id: entry.to_owned(),
        due_at: now,
    };
    (deadline, vec![step])
}

/// Longest delay the engine schedules (100 years): later instants are clamped to it.
pub(crate) const MAX_DELAY_SECONDS: f64 = 3_153_600_000.0;

/// `at` plus `seconds`, never overflowing whatever a definition or an input says: negative or
/// NaN is 0, anything past [`MAX_DELAY_SECONDS`] (or infinite) is clamped to it.
pub fn after_seconds(at: DateTime<Utc>, seconds: f64) -> DateTime<Utc> {
    let seconds = if seconds.is_nan() {
        0.0
    } else {
        seconds.clamp(0.0, MAX_DELAY_SECONDS)
    };
    at.checked_add_signed(ChronoDuration::milliseconds((seconds * 1000.0) as i64))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Largest output an event carries whole (serialised bytes); the log and the live feed stay
/// small whatever steps return (the full output is on the step and run records).
pub const EVENT_OUTPUT_BYTES: usize = 1024;

/// An output as an event carries it: whole when small, else `{"truncated": true, "bytes": N}`.
pub fn summary(output: &Value) -> Value {
    let bytes = output.to_string().len();
    if bytes <= EVENT_OUTPUT_BYTES {
        output.clone()
    } else {
        json!({"truncated": true, "bytes": bytes})
    }
}

/// An event of run `run_id` (and step `step_id`).
pub fn event(run_id: Uuid, step_id: Option<&str>, kind: &str, data: Value) -> NewEvent {
    NewEvent {
        run_id,
        step_id: step_id.map(str::to_string),
        kind: kind.to_string(),
        data,
    }
}

fn attempt_record(
    claimed: &Claimed<'_>,
    status: StepStatus,
    output: Option<Value>,
    error: Option<Value>,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> AttemptRecord {
    AttemptRecord {
        step_row_id: claimed.row.id,
        attempt: claimed.row.attempt,
        status,
        input: claimed.input.clone(),
        output,
        error,
        runner: Some(claimed.runner.to_string()),
        lease_owner: Some(claimed.guard.owner.clone()),
        started_at: started,
        completed_at: now,
    }
}

/// `delay` ± `jitter` (a fraction), derived from the step id so it is reproducible.
fn jittered(delay: f64, jitter: f64, seed: Uuid) -> f64 {
    if jitter <= 0.0 {
        return delay;
    }
    let unit = f64::from(seed.as_u128() as u32) / f64::from(u32::MAX); // 0..=1
    (delay * (1.0 + jitter * (2.0 * unit - 1.0))).max(0.0)
}

/// Graph helpers missing from the domain crate.
mod graph {
    use weft_domain::StepDefinition;

    /// A fork's branch starts.
    pub fn branch_starts_of(step: &StepDefinition) -> Vec<&str> {
        weft_domain::graph::branch_starts(step)
    }
}

/// Step ids that exist in `steps`, by id (for tests and callers).
pub fn by_step_id(steps: &[StepRecord]) -> BTreeMap<&str, &StepRecord> {
    steps.iter().map(|s| (s.step_id.as_str(), s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_found_in_keys_and_values_at_any_depth() {
        assert!(!contains_nul(&json!({"a": ["b", {"c": 1}], "d": null})));
        assert!(contains_nul(&json!({"a": ["b", {"c": "x\u{0}"}]})));
        assert!(contains_nul(&json!({"a": {"k\u{0}": 1}})));
        assert!(contains_nul(&json!("\u{0}")));
    }

    #[test]
    fn a_held_run_begins_with_no_step_and_no_deadline() {
        let spec = spec(
            json!({"name": "d", "timeoutSeconds": 60, "maxConcurrentRuns": 1,
            "steps": [{"stepDefinitionId": "w", "type": "wait",
                       "waitConfig": {"durationSeconds": {"type": "constant", "value": 0}}}]}),
        );
        let now = Utc::now();
        assert_eq!(beginning(&spec, "w", true, now), (None, Vec::new()));
        let (deadline, steps) = beginning(&spec, "w", false, now);
        assert_eq!(deadline, Some(now + ChronoDuration::seconds(60)));
        assert_eq!(steps.len(), 1);
        assert_eq!((steps[0].step_id.as_str(), steps[0].due_at), ("w", now));
    }

    #[test]
    fn delays_never_overflow() {
        let now = Utc::now();
        assert_eq!(
            after_seconds(now, 1.5),
            now + ChronoDuration::milliseconds(1500)
        );
        assert_eq!(after_seconds(now, -3.0), now);
        assert_eq!(after_seconds(now, f64::NAN), now);
        let far = after_seconds(now, u64::MAX as f64);
        assert_eq!(far, after_seconds(now, f64::INFINITY));
        assert!(far > now + ChronoDuration::days(365 * 99));
    }

    #[test]
    fn events_carry_small_outputs_whole_and_large_ones_as_a_size() {
        assert_eq!(summary(&json!({"value": 3})), json!({"value": 3}));
        let large = json!({"text": "x".repeat(EVENT_OUTPUT_BYTES)});
        let bytes = large.to_string().len();
        assert_eq!(summary(&large), json!({"truncated": true, "bytes": bytes}));
    }

    fn spec(value: Value) -> DefinitionSpec {
        DefinitionSpec::from_json(value).expect("valid definition")
    }

    fn run() -> RunRecord {
        let now = Utc::now();
        RunRecord {
            id: Uuid::now_v7(),
            definition_id: Uuid::now_v7(),
            definition_name: "d".into(),
            definition_version: "0.1.0".into(),
            status: RunStatus::Running,
            input: json!({"n": 1}),
            output: None,
            error: None,
            idempotency_key: None,
            parent: None,
            depth: 0,
            deadline_at: None,
            created_at: now,
            started_at: Some(now),
            completed_at: None,
            updated_at: now,
        }
    }

    fn row(
        run: &RunRecord,
        step_id: &str,
        status: StepStatus,
        output: Option<Value>,
    ) -> StepRecord {
        let now = Utc::now();
        StepRecord {
            id: Uuid::now_v7(),
            run_id: run.id,
            step_id: step_id.into(),
            status,
            phase: match status {
                StepStatus::Pending => StepPhase::Queued,
                StepStatus::Running => StepPhase::Executing,
                _ => StepPhase::Done,
            },
            attempt: 1,
            input: None,
            output,
            error: None,
            runner: None,
            lease_owner: Some("me".into()),
            due_at: None,
            wait: None,
            created_at: now,
            started_at: Some(now),
            completed_at: None,
            updated_at: now,
        }
    }

    fn complete(
        spec: &DefinitionSpec,
        run: &RunRecord,
        steps: &[StepRecord],
        step_id: &str,
        output: Value,
    ) -> RunChanges {
        let claimed = steps
            .iter()
            .find(|s| s.step_id == step_id)
            .expect("claimed step");
        let view = RunView { spec, run, steps };
        step_outcome(
            &view,
            &Claimed {
                row: claimed,
                input: None,
                runner: "engine",
                guard: LeaseGuard {
                    owner: "me".into(),
                    attempt: 1,
                },
            },
            Outcome::Completed(output),
            Utc::now(),
        )
    }

    fn new_ids(changes: &RunChanges) -> Vec<&str> {
        changes
            .new_steps
            .iter()
            .map(|s| s.step_id.as_str())
            .collect()
    }

    fn fork_spec() -> DefinitionSpec {
        spec(json!({"name": "f", "steps": [
            {"stepDefinitionId": "f", "type": "fork", "forkConfig": {"joinStepId": "j", "branches": [{"nextStepId": "a"}, {"nextStepId": "b"}]}},
            {"stepDefinitionId": "a", "type": "task", "taskConfig": {"taskDefinitionId": "t", "nextStepId": "j"}},
            {"stepDefinitionId": "b", "type": "task", "taskConfig": {"taskDefinitionId": "t"}},
            {"stepDefinitionId": "j", "type": "join", "joinConfig": {"incomingStepIds": ["a", "b"]}}]}))
    }

    #[test]
    fn a_fork_readies_its_branches_and_the_join_waits_for_all() {
        let spec = fork_spec();
        let run = run();
        let steps = vec![row(&run, "f", StepStatus::Running, None)];
        let changes = complete(&spec, &run, &steps, "f", json!({}));
        assert_eq!(new_ids(&changes), ["a", "b"]);
        assert!(changes.run.is_none());

        let steps = vec![
            row(&run, "f", StepStatus::Completed, Some(json!({}))),
            row(&run, "a", StepStatus::Running, None),
            row(&run, "b", StepStatus::Pending, None),
        ];
        let changes = complete(&spec, &run, &steps, "a", json!({"x": 1}));
        assert!(new_ids(&changes).is_empty(), "b is not done yet");

        let steps = vec![
            row(&run, "f", StepStatus::Completed, Some(json!({}))),
            row(&run, "a", StepStatus::Completed, Some(json!({"x": 1}))),
            row(&run, "b", StepStatus::Running, None),
        ];
        let changes = complete(&spec, &run, &steps, "b", json!({"y": 2}));
        assert_eq!(
            new_ids(&changes),
            ["j"],
            "a branch tail without nextStepId still completes the join"
        );
    }

    #[test]
    fn the_last_step_completes_the_run_with_its_output() {
        let spec = fork_spec();
        let run = run();
        let steps = vec![
            row(&run, "f", StepStatus::Completed, Some(json!({}))),
            row(&run, "a", StepStatus::Completed, Some(json!({}))),
            row(&run, "b", StepStatus::Completed, Some(json!({}))),
            row(&run, "j", StepStatus::Running, None),
        ];
        let changes = complete(&spec, &run, &steps, "j", json!({"sum": 3}));
        let update = changes.run.expect("run finishes");
        assert_eq!(update.status, RunStatus::Completed);
        assert_eq!(update.output, Some(json!({"sum": 3})));
        assert_eq!(
            changes.events.last().map(|e| e.kind.as_str()),
            Some("run.completed")
        );
    }

    #[test]
    fn a_decision_join_waits_only_for_the_taken_branch() {
        let spec = spec(json!({"name": "d", "steps": [
            {"stepDefinitionId": "d", "type": "decision", "decisionConfig": {"joinStepId": "j",
                "cases": [{"condition": "true", "nextStepId": "a"}], "defaultStepId": "b"}},
            {"stepDefinitionId": "a", "type": "task", "taskConfig": {"taskDefinitionId": "t", "nextStepId": "j"}},
            {"stepDefinitionId": "b", "type": "task", "taskConfig": {"taskDefinitionId": "t", "nextStepId": "j"}},
            {"stepDefinitionId": "j", "type": "join", "joinConfig": {"incomingStepIds": ["a", "b"]}}]}));
        let run = run();
        let steps = vec![row(&run, "d", StepStatus::Running, None)];
        let changes = complete(&spec, &run, &steps, "d", json!({"nextStepId": "b"}));
        assert_eq!(new_ids(&changes), ["b"]);
        let steps = vec![
            row(
                &run,
                "d",
                StepStatus::Completed,
                Some(json!({"nextStepId": "b"})),
            ),
            row(&run, "b", StepStatus::Running, None),
        ];
        let changes = complete(&spec, &run, &steps, "b", json!({}));
        assert_eq!(new_ids(&changes), ["j"]);
    }

    #[test]
    fn a_retryable_failure_is_retried_with_backoff_then_fails_the_run() {
        let spec = spec(json!({"name": "r", "steps": [
            {"stepDefinitionId": "a", "type": "task", "taskConfig": {"taskDefinitionId": "t", "nextStepId": "b"},
             "retryPolicy": {"maxAttempts": 2, "initialIntervalSeconds": 10}},
            {"stepDefinitionId": "b", "type": "task", "taskConfig": {"taskDefinitionId": "t"}}]}));
        let run = run();
        let steps = vec![row(&run, "a", StepStatus::Running, None)];
        let failure = Failure {
            code: "timeout".into(),
            message: "slow".into(),
            retryable: true,
        };
        let view = RunView {
            spec: &spec,
            run: &run,
            steps: &steps,
        };
        let guard = LeaseGuard {
            owner: "me".into(),
            attempt: 1,
        };
        let now = Utc::now();
        let changes = step_outcome(
            &view,
            &Claimed {
                row: &steps[0],
                input: None,
                runner: "wasm",
                guard: guard.clone(),
            },
            Outcome::Failed(failure.clone()),
            now,
        );
        let update = &changes.step_updates[0];
        assert_eq!(update.phase, StepPhase::Queued);
        assert_eq!(update.due_at, Some(now + ChronoDuration::seconds(10)));
        assert!(changes.run.is_none());

        let mut second = steps[0].clone();
        second.attempt = 2;
        let steps = vec![second, row(&run, "other", StepStatus::Pending, None)];
        let view = RunView {
            spec: &spec,
            run: &run,
            steps: &steps,
        };
        let changes = step_outcome(
            &view,
            &Claimed {
                row: &steps[0],
                input: None,
                runner: "wasm",
                guard: LeaseGuard {
                    attempt: 2,
                    ..guard
                },
            },
            Outcome::Failed(failure),
            now,
        );
        assert_eq!(changes.step_updates[0].status, StepStatus::Failed);
        assert_eq!(
            changes.step_updates[1].status,
            StepStatus::Cancelled,
            "other unfinished steps are cancelled"
        );
        assert_eq!(
            changes.run.as_ref().map(|r| r.status),
            Some(RunStatus::Failed)
        );
    }

    #[test]
    fn a_child_run_wakes_its_parent_when_it_ends() {
        let spec = fork_spec();
        let mut run = run();
        let parent_step = Uuid::now_v7();
        run.parent = Some(weft_store::ParentRef {
            run_id: Uuid::now_v7(),
            step_row_id: parent_step,
        });
        let view = RunView {
            spec: &spec,
            run: &run,
            steps: &[],
        };
        let changes = cancel_run(&view, "test");
        assert_eq!(changes.wake, [parent_step]);
        assert_eq!(changes.run.map(|r| r.status), Some(RunStatus::Cancelled));
    }
}
