//! Recording step outcomes (group commit): the outcomes that finish while the replica's
//! previous recording transaction is being written are recorded together, in one transaction.
//!
//! Each outcome is queued; the task that then gets the turn takes the whole queue (its own
//! outcome and any others, of any runs), locks their runs ([`weft_store::Store::begin_runs`]),
//! plans each outcome in order against its run as read in the transaction (each seeing the
//! ones before it), writes them all with one [`weft_store::RunsTransaction::apply_and_claim`],
//! and hands every other task its answer. An outcome whose step no longer runs under its lease
//! (an earlier outcome of the batch ended its run) is answered `Stale`, as its own transaction
//! would have been. A batch whose transaction fails is recorded again one outcome at a time, so
//! one failing outcome does not take the others down with it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use uuid::Uuid;
use weft_domain::{DefinitionSpec, StepType};
use weft_store::{
    ClaimRequest, LeaseGuard, RunChanges, RunRecord, RunStatus, StepPhase, StepRecord, StoreError,
};

use super::plan::{self, Claimed, Failure, Outcome, RunView, contains_nul};
use super::worker::{Job, RunContext};
use super::{Executor, ExecutorError};
use crate::metrics::Tally;

/// One step's outcome waiting to be recorded.
pub struct Pending {
    pub spec: Arc<DefinitionSpec>,
    /// The step row as claimed.
    pub row: StepRecord,
    pub input: Option<Value>,
    pub runner: &'static str,
    pub guard: LeaseGuard,
    pub outcome: Outcome,
    /// The step's slot, handed on to a step claimed with the outcome.
    pub permit: Option<OwnedSemaphorePermit>,
}

type Answer = Result<Vec<Job>, ExecutorError>;

/// The outcomes waiting to be recorded, and the turn to record them. One owner (the executor),
/// locks inside.
#[derive(Default)]
pub struct Batches {
    turn: tokio::sync::Mutex<()>,
    waiting: Mutex<Vec<(Pending, oneshot::Sender<Answer>)>>,
}

/// A run that a recorded outcome ended.
struct Ended {
    run: RunRecord,
    status: RunStatus,
}

/// Record `pending` (with whatever else is waiting) and return the steps claimed for this task
/// to run next.
pub async fn record(executor: &Executor, pending: Pending) -> Answer {
    let batches = &executor.shared.batches;
    let me = pending.row.id;
    let (tell, mut answer) = oneshot::channel();
    batches
        .waiting
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((pending, tell));
    let ended = {
        let _turn = batches.turn.lock().await;
        let batch: Vec<_> = std::mem::take(
            &mut *batches
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        // Empty: a task before us took ours with its batch and has answered.
        if batch.is_empty() {
            Vec::new()
        } else {
            record_batch(executor, batch, me).await
        }
    };
    // Child runs of runs that failed or were cancelled have no one to report to any more (done
    // after the turn: it takes transactions of its own).
    for Ended { run, status } in ended {
        if matches!(status, RunStatus::Failed | RunStatus::Cancelled)
            && let Err(e) = executor
                .cancel_tree(run.id, "the parent run ended", false)
                .await
        {
            tracing::warn!(run_id = %run.id, error = %e, "cannot cancel the child runs yet");
        }
    }
    answer
        .try_recv()
        .unwrap_or_else(|_| Err(ExecutorError::Batch("the batch was dropped".into())))
}

/// Write `batch` (outcomes in arrival order) in one transaction, answering each outcome's
/// task. Returns the runs it ended.
async fn record_batch(
    executor: &Executor,
    mut batch: Vec<(Pending, oneshot::Sender<Answer>)>,
    me: Uuid,
) -> Vec<Ended> {
    match record_all(executor, &mut batch, me).await {
        Ok(ended) => ended,
        Err(e) if batch.len() > 1 => {
            // One outcome must not take the others down with it: each on its own.
            tracing::warn!(error = %e, outcomes = batch.len(), "a batch could not be recorded; recording its outcomes one by one");
            let mut ended = Vec::new();
            for member in std::mem::take(&mut batch) {
                ended.extend(Box::pin(record_batch(executor, vec![member], me)).await);
            }
            ended
        }
        Err(e) => {
            // The transaction failed as a whole: every outcome it carried is unrecorded (their
            // leases expire and the steps run again). Tell each.
            let message = e.to_string();
            for (pending, tell) in batch.drain(..) {
                let _ = tell.send(Err(match &e {
                    ExecutorError::Store(StoreError::Stale(_)) => ExecutorError::Store(
                        StoreError::Stale(format!("step row {}: {message}", pending.row.id)),
                    ),
                    _ => ExecutorError::Batch(message.clone()),
                }));
            }
            Vec::new()
        }
    }
}

/// One transaction for every outcome of `batch`; answers their tasks (on success: on failure
/// the caller does, with `batch` left as it was).
async fn record_all(
    executor: &Executor,
    batch: &mut Vec<(Pending, oneshot::Sender<Answer>)>,
    me: Uuid,
) -> Result<Vec<Ended>, ExecutorError> {
    let shared = &executor.shared;
    let mut run_ids: Vec<Uuid> = batch.iter().map(|(p, _)| p.row.run_id).collect();
    run_ids.sort_unstable();
    run_ids.dedup();
    let mut tx = shared.store.begin_runs(&run_ids).await?;
    let runs: HashMap<Uuid, RunRecord> = tx.runs().iter().map(|r| (r.id, r.clone())).collect();
    let mut steps: HashMap<Uuid, Vec<StepRecord>> = HashMap::new();
    for step in tx.steps().await? {
        steps.entry(step.run_id).or_default().push(step);
    }
    let now = Utc::now();

    let mut changes: Vec<(Uuid, RunChanges)> = Vec::new();
    let mut tallies: Vec<Tally> = Vec::new();
    let mut permits: Vec<OwnedSemaphorePermit> = Vec::new();
    let mut ended: HashMap<Uuid, RunStatus> = HashMap::new();
    let mut timer = false;
    let mut held_children = false;
    let mut refused: HashMap<usize, StoreError> = HashMap::new();
    for (index, (pending, _)) in batch.iter_mut().enumerate() {
        let run_id = pending.row.run_id;
        let Some(run) = runs.get(&run_id) else {
            refused.insert(index, StoreError::NotFound);
            continue;
        };
        let run_steps = steps.entry(run_id).or_default();
        // Still executing under its lease (an earlier outcome may have ended the run)?
        let live = run_steps
            .iter()
            .find(|s| s.id == pending.row.id)
            .is_some_and(|s| {
                s.phase == StepPhase::Executing
                    && s.lease_owner.as_deref() == Some(pending.guard.owner.as_str())
                    && s.attempt == pending.guard.attempt
            });
        if !live {
            refused.insert(
                index,
                StoreError::Stale(format!(
                    "step row {} no longer runs under lease {} attempt {}",
                    pending.row.id, pending.guard.owner, pending.guard.attempt
                )),
            );
            continue;
        }
        let planned = plan_one(run, run_steps, pending, now);
        timer |= planned.step_updates.iter().any(|u| {
            matches!(u.phase, StepPhase::Queued | StepPhase::Waiting)
                && u.due_at.is_some_and(|d| d > now)
        }) || !planned.new_runs.is_empty()
            // Steps made due by the store alone, not counted as this batch's ready steps: of
            // other runs (a parent woken by its child's end), or parked for a signal that may
            // already be pending (the write makes it due). The dispatcher looks.
            || !planned.wake.is_empty()
            || planned.step_updates.iter().any(|u| {
                u.phase == StepPhase::Waiting
                    && u.wait.as_ref().is_some_and(|w| w.get("signal").is_some())
            });
        if let Some(update) = &planned.run {
            ended.insert(run_id, update.status);
        }
        // A child run of a capped definition is created held: the admission looks.
        held_children |= planned.new_runs.iter().any(|r| r.initial_steps.is_empty());
        tallies.push(Tally::of(&run.definition_name, &planned, run_steps));
        permits.extend(pending.permit.take());
        apply_in_memory(run_steps, &planned, now);
        changes.push((run_id, planned));
    }

    // Slots for what is ready (what the claim may take of the batch's runs: any step not done
    // and due): those of the recorded steps, plus free ones for the rest.
    let ready: HashSet<Uuid> = steps
        .values()
        .flatten()
        .filter(|s| s.phase != StepPhase::Done && s.due_at.is_some_and(|d| d <= now))
        .map(|s| s.id)
        .collect();
    if shared.stopping.is_cancelled() {
        permits.clear();
    } else {
        while permits.len() < ready.len() {
            match shared.slots.clone().try_acquire_owned() {
                Ok(extra) => permits.push(extra),
                Err(_) => break,
            }
        }
    }
    let limit = u32::try_from(permits.len()).unwrap_or(u32::MAX);
    let claim = (limit > 0).then(|| ClaimRequest {
        owner: shared.owner.clone(),
        lease: shared.options.lease,
        limit,
    });
    let (_, claimed) = tx.apply_and_claim(changes, claim).await?;
    for tally in tallies {
        shared.metrics.record(tally);
    }
    if held_children {
        executor.notify_admission();
    }
    let mut finished = Vec::new();
    for (run_id, status) in &ended {
        let Some(run) = runs.get(run_id) else {
            continue;
        };
        tracing::info!(run_id = %run.id, status = status.as_str(), "run finished");
        if status.is_terminal() {
            shared.traces.run_ended(run, *status);
            executor.interrupt_run(run.id);
            // A slot of its definition's `maxConcurrentRuns` may have freed up.
            executor.notify_admission();
        }
        finished.push(Ended {
            run: run.clone(),
            status: *status,
        });
    }
    // More may be ready than was claimed here, or a timer moved: the dispatcher looks. Claims
    // are FIFO: a full claim that took another run's step (or that the dispatcher's backlog may
    // have been waiting for) may have left others; one that took exactly the batch's ready
    // steps, with nothing made due behind the batch's back (`timer` above), left none. No
    // slot to claim with (outcomes re-recorded one by one after a failed batch, their slots
    // gone): the dispatcher looks.
    let claimed_here = claimed
        .iter()
        .filter(|c| ready.contains(&c.step.id))
        .count();
    let left_behind = claimed_here < ready.len();
    let foreign = claimed.len() > claimed_here;
    let full = claimed.len() == permits.len();
    if limit == 0
        || timer
        || left_behind
        || (full && (foreign || shared.backlog.load(Ordering::Relaxed)))
    {
        executor.notify();
    } else {
        executor.notify_commit();
    }

    // Steps of the batch's runs go on with their run as read here (under its lock) and the
    // outputs recorded; others read theirs.
    let mut outputs: HashMap<Uuid, Map<String, Value>> = HashMap::new();
    let jobs: Vec<Job> = claimed
        .into_iter()
        .zip(permits)
        .map(|(claimed, permit)| {
            let run_id = claimed.step.run_id;
            let context = runs
                .get(&run_id)
                .filter(|_| !ended.contains_key(&run_id))
                .map(|run| RunContext {
                    run: run.clone(),
                    outputs: outputs
                        .entry(run_id)
                        .or_insert_with(|| {
                            steps
                                .get(&run_id)
                                .into_iter()
                                .flatten()
                                .filter(|s| s.status == RunStatus::Completed)
                                .map(|s| {
                                    (s.step_id.clone(), s.output.clone().unwrap_or(Value::Null))
                                })
                                .collect()
                        })
                        .clone(),
                });
            let cancel = shared.in_flight.insert(claimed.step.id, run_id);
            Job {
                claimed,
                permit,
                cancel,
                context,
            }
        })
        .collect();
    // The task recording the batch goes on with every claimed step (or, if its own outcome was
    // refused, the first recorded one's); the others end.
    let recorded = |index: &usize| !refused.contains_key(index);
    let carrier = batch
        .iter()
        .enumerate()
        .position(|(index, (pending, _))| recorded(&index) && pending.row.id == me)
        .or_else(|| (0..batch.len()).find(recorded));
    let mut jobs = Some(jobs);
    for (index, (_, tell)) in batch.drain(..).enumerate() {
        let answer = match refused.remove(&index) {
            Some(error) => Err(ExecutorError::Store(error)),
            None if Some(index) == carrier => Ok(jobs.take().unwrap_or_default()),
            None => Ok(Vec::new()),
        };
        if let Err(Ok(unclaimed)) = tell.send(answer) {
            // That task is gone (it cannot be: it waits for this answer); release the steps.
            for job in unclaimed {
                shared.in_flight.remove(job.claimed.step.id);
            }
        }
    }
    Ok(finished)
}

/// The changes recording `pending` against the run as it stands (`steps`).
fn plan_one(
    run: &RunRecord,
    steps: &[StepRecord],
    pending: &Pending,
    now: DateTime<Utc>,
) -> RunChanges {
    let spec = &pending.spec;
    let view = RunView { spec, run, steps };
    // A wait step completed by a signal consumes it.
    let is_wait = spec
        .step(&pending.row.step_id)
        .is_some_and(|s| s.step_type == StepType::Wait);
    let mut outcome = pending.outcome.clone();
    // A failure's code or message with a NUL character in it (a C plugin's fixed-size buffer,
    // say) keeps its meaning and its retry policy: the NUL characters become U+FFFD.
    if let Outcome::Failed(failure) = &mut outcome {
        for text in [&mut failure.code, &mut failure.message] {
            if text.contains('\0') {
                *text = text.replace('\0', "\u{FFFD}");
            }
        }
    }
    let consumed = match &outcome {
        Outcome::Completed(output) if is_wait => output
            .get("signalId")
            .and_then(Value::as_str)
            .and_then(|id| id.parse::<Uuid>().ok()),
        _ => None,
    };
    // A parked step wakes no later than the run's deadline, so the deadline is noticed.
    let outcome = match (outcome, run.deadline_at) {
        (
            Outcome::Parked {
                wait,
                due_at,
                start_runs,
            },
            Some(deadline),
        ) => Outcome::Parked {
            wait,
            due_at: Some(due_at.map_or(deadline, |d| d.min(deadline))),
            start_runs,
        },
        (outcome, _) => outcome,
    };
    let mut changes = plan::step_outcome(
        &view,
        &Claimed {
            row: &pending.row,
            input: pending.input.clone(),
            runner: pending.runner,
            guard: pending.guard.clone(),
        },
        outcome,
        now,
    );
    changes.consume_signals.extend(consumed);
    if let Some(place) = nul_in(&changes) {
        // PostgreSQL stores no NUL character (an expression or a plugin can make one): the step
        // fails, alike on both backends, and the value is not kept.
        let failure = Failure::fatal(
            "invalid_value",
            format!("{place} contains a NUL character, which cannot be stored"),
        );
        changes = plan::step_outcome(
            &view,
            &Claimed {
                row: &pending.row,
                input: None,
                runner: pending.runner,
                guard: pending.guard.clone(),
            },
            Outcome::Failed(failure),
            now,
        );
    }
    changes
}

/// Where `changes` would store a NUL character, if anywhere.
fn nul_in(changes: &RunChanges) -> Option<&'static str> {
    let has = |value: &Option<Value>| value.as_ref().is_some_and(contains_nul);
    for update in &changes.step_updates {
        if has(&update.input) {
            return Some("the step's input");
        }
        if has(&update.output) {
            return Some("the step's output");
        }
        if has(&update.error) {
            return Some("the step's error");
        }
        if has(&update.wait) {
            return Some("the step's wait");
        }
    }
    for attempt in &changes.attempts {
        if has(&attempt.input) {
            return Some("the step's input");
        }
        if has(&attempt.output) {
            return Some("the step's output");
        }
        if has(&attempt.error) {
            return Some("the step's error");
        }
    }
    if let Some(run) = &changes.run {
        if has(&run.output) {
            return Some("the run's output");
        }
        if has(&run.error) {
            return Some("the run's error");
        }
    }
    if changes.new_runs.iter().any(|r| contains_nul(&r.input)) {
        return Some("the child run's input");
    }
    if changes.events.iter().any(|e| contains_nul(&e.data)) {
        return Some("an event of the step");
    }
    None
}

/// `steps` as they will be once `changes` are written (what later plans of the batch read).
fn apply_in_memory(steps: &mut Vec<StepRecord>, changes: &RunChanges, now: DateTime<Utc>) {
    for update in &changes.step_updates {
        let Some(row) = steps.iter_mut().find(|s| s.id == update.id) else {
            continue;
        };
        row.status = update.status;
        row.phase = update.phase;
        if let Some(input) = &update.input {
            row.input = Some(input.clone());
        }
        if let Some(output) = &update.output {
            row.output = Some(output.clone());
        }
        if let Some(error) = &update.error {
            row.error = Some(error.clone());
        }
        if let Some(runner) = &update.runner {
            row.runner = Some(runner.clone());
        }
        row.due_at = update.due_at;
        row.wait = update.wait.clone();
        if let Some(attempt) = update.reset_attempt {
            row.attempt = attempt;
        }
        if update.phase != StepPhase::Executing {
            row.lease_owner = None;
        }
        row.completed_at = update.status.is_terminal().then_some(now);
        row.updated_at = now;
    }
    for new in &changes.new_steps {
        steps.push(StepRecord {
            id: new.id,
            run_id: steps.first().map_or(Uuid::nil(), |s| s.run_id),
            step_id: new.step_id.clone(),
            status: RunStatus::Pending,
            phase: StepPhase::Queued,
            attempt: 0,
            input: None,
            output: None,
            error: None,
            runner: None,
            lease_owner: None,
            due_at: Some(new.due_at),
            wait: None,
            created_at: now,
            started_at: None,
            completed_at: None,
            updated_at: now,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step_id: &str, phase: StepPhase) -> StepRecord {
        let now = Utc::now();
        StepRecord {
            id: Uuid::now_v7(),
            run_id: Uuid::nil(),
            step_id: step_id.into(),
            status: if phase == StepPhase::Executing {
                RunStatus::Running
            } else {
                RunStatus::Pending
            },
            phase,
            attempt: 1,
            input: None,
            output: None,
            error: None,
            runner: None,
            lease_owner: Some("me".into()),
            due_at: Some(now),
            wait: None,
            created_at: now,
            started_at: None,
            completed_at: None,
            updated_at: now,
        }
    }

    #[test]
    fn in_memory_application_mirrors_the_store() {
        let now = Utc::now();
        let mut steps = vec![row("a", StepPhase::Executing)];
        let id = steps[0].id;
        let changes = RunChanges {
            step_updates: vec![weft_store::StepUpdate {
                id,
                guard: None,
                status: RunStatus::Completed,
                phase: StepPhase::Done,
                input: None,
                output: Some(serde_json::json!({"v": 1})),
                error: None,
                runner: Some("wasm".into()),
                due_at: None,
                wait: None,
                reset_attempt: None,
            }],
            new_steps: vec![weft_store::NewStep {
                id: Uuid::now_v7(),
                step_id: "b".into(),
                due_at: now,
            }],
            ..RunChanges::default()
        };
        apply_in_memory(&mut steps, &changes, now);
        assert_eq!(steps[0].status, RunStatus::Completed);
        assert_eq!(steps[0].phase, StepPhase::Done);
        assert_eq!(steps[0].output, Some(serde_json::json!({"v": 1})));
        assert_eq!(steps[0].lease_owner, None);
        assert_eq!(steps[0].completed_at, Some(now));
        assert_eq!(steps[1].step_id, "b");
        assert_eq!(steps[1].phase, StepPhase::Queued);
    }
}
