//! Recording step outcomes: the outcomes of one run's steps that finish while that run's
//! previous transition is being written are recorded together, in one transaction.
//!
//! Each outcome is queued on its run; the task that then gets the run's turn takes the whole
//! queue (its own outcome and any others), plans each outcome in order against the run as read
//! in the transaction (each seeing the ones before it), writes them all with one
//! [`weft_store::RunTransaction::apply_and_claim`], and hands every other task its answer. A
//! fork's branches finishing together cost one transaction, not one each. An outcome whose
//! step no longer runs under its lease (an earlier outcome of the batch ended the run) is
//! answered `Stale`, as its own transaction would have been.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use uuid::Uuid;
use weft_domain::{DefinitionSpec, StepType};
use weft_store::{
    ClaimRequest, LeaseGuard, RunChanges, RunRecord, RunStatus, StepPhase, StepRecord, StoreError,
};

use super::plan::{self, Claimed, Outcome, RunView};
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

/// A run's queue of outcomes and its turn to write.
#[derive(Default)]
struct RunQueue {
    turn: tokio::sync::Mutex<()>,
    waiting: Mutex<Vec<(Pending, oneshot::Sender<Answer>)>>,
}

/// The queues of the runs with outcomes being recorded. One owner (the executor), lock inside.
#[derive(Default)]
pub struct Batches {
    runs: Mutex<HashMap<Uuid, Arc<RunQueue>>>,
}

impl Batches {
    fn queue(&self, run_id: Uuid) -> Arc<RunQueue> {
        self.runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(run_id)
            .or_default()
            .clone()
    }

    /// Forget `run_id`'s queue unless another task holds it.
    fn release(&self, run_id: Uuid, queue: Arc<RunQueue>) {
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        // Two references: the map's and ours.
        if Arc::strong_count(&queue) == 2 {
            runs.remove(&run_id);
        }
    }
}

/// Record `pending` (with whatever else of its run is waiting) and return the steps claimed
/// for this task to run next.
pub async fn record(executor: &Executor, pending: Pending) -> Answer {
    let shared = &executor.shared;
    let run_id = pending.row.run_id;
    let me = pending.row.id;
    let queue = shared.batches.queue(run_id);
    let (tell, answer) = oneshot::channel();
    queue
        .waiting
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((pending, tell));
    let answer = {
        let mut answer = answer;
        let _turn = queue.turn.lock().await;
        let batch: Vec<_> =
            std::mem::take(&mut *queue.waiting.lock().unwrap_or_else(PoisonError::into_inner));
        // Empty: a task before us took ours with its batch and has answered.
        if !batch.is_empty() {
            record_batch(executor, run_id, batch, me).await;
        }
        answer.try_recv()
    };
    shared.batches.release(run_id, queue);
    answer.unwrap_or_else(|_| Err(ExecutorError::Batch("the batch was dropped".into())))
}

/// Write `batch` (outcomes of run `run_id`, in arrival order) in as few transactions as its
/// contents allow, answering each outcome's task.
async fn record_batch(
    executor: &Executor,
    run_id: Uuid,
    mut batch: Vec<(Pending, oneshot::Sender<Answer>)>,
    me: Uuid,
) {
    while !batch.is_empty() {
        match record_some(executor, run_id, &mut batch, me).await {
            Ok(()) => {}
            Err(e) => {
                // The transaction failed as a whole: every outcome it carried is unrecorded
                // (their leases expire and the steps run again). Tell each.
                let message = e.to_string();
                for (pending, tell) in batch.drain(..) {
                    let _ = tell.send(Err(match &e {
                        ExecutorError::Store(StoreError::Stale(_)) => ExecutorError::Store(
                            StoreError::Stale(format!("step row {}: {message}", pending.row.id)),
                        ),
                        _ => ExecutorError::Batch(message.clone()),
                    }));
                }
            }
        }
    }
}

/// One transaction: take from the front of `batch` every outcome that can go together, write
/// them, answer their tasks. Outcomes left in `batch` need a transaction of their own.
async fn record_some(
    executor: &Executor,
    run_id: Uuid,
    batch: &mut Vec<(Pending, oneshot::Sender<Answer>)>,
    me: Uuid,
) -> Result<(), ExecutorError> {
    let shared = &executor.shared;
    let mut tx = shared.store.begin_run(run_id).await?;
    let mut steps = tx.steps().await?;
    let run = tx.run().clone();
    let now = Utc::now();

    let mut merged = RunChanges::default();
    let mut created: BTreeSet<Uuid> = BTreeSet::new();
    let mut taken: Vec<Taken> = Vec::new();
    let mut permits: Vec<OwnedSemaphorePermit> = Vec::new();
    let mut finished_run: Option<RunStatus> = None;
    let mut timer = false;
    let mut stale = Vec::new();
    let mut count = 0;
    for (pending, _) in batch.iter_mut() {
        // Still executing under its lease (an earlier outcome may have ended the run)?
        let current = steps.iter().find(|s| s.id == pending.row.id);
        let live = current.is_some_and(|s| {
            s.phase == StepPhase::Executing
                && s.lease_owner.as_deref() == Some(pending.guard.owner.as_str())
                && s.attempt == pending.guard.attempt
        });
        if !live {
            stale.push(count);
            count += 1;
            continue;
        }
        let changes = plan_one(&run, &steps, pending, now);
        // A change to a row this batch creates must come after the insert: next transaction.
        if changes.step_updates.iter().any(|u| created.contains(&u.id)) && count > 0 {
            break;
        }
        count += 1;
        created.extend(changes.new_steps.iter().map(|s| s.id));
        timer |= changes.step_updates.iter().any(|u| {
            matches!(u.phase, StepPhase::Queued | StepPhase::Waiting)
                && u.due_at.is_some_and(|d| d > now)
        }) || !changes.new_runs.is_empty();
        if let Some(update) = &changes.run {
            finished_run = Some(update.status);
        }
        taken.push(Taken {
            tally: Tally::of(&run.definition_name, &changes, &steps),
        });
        permits.extend(pending.permit.take());
        apply_in_memory(&mut steps, &changes, now);
        merge(&mut merged, changes);
    }
    let members: Vec<_> = batch.drain(..count).collect();

    // Slots for what is ready: those of the recorded steps, plus free ones for the rest.
    if shared.stopping.is_cancelled() {
        permits.clear();
    } else {
        let ready = steps
            .iter()
            .filter(|s| s.phase == StepPhase::Queued && s.due_at.is_some_and(|d| d <= now))
            .count();
        while permits.len() < ready {
            match shared.slots.clone().try_acquire_owned() {
                Ok(extra) => permits.push(extra),
                Err(_) => break,
            }
        }
    }
    let limit = u32::try_from(permits.len()).unwrap_or(u32::MAX);
    let claimed = if limit == 0 {
        tx.apply(merged).await?;
        Vec::new()
    } else {
        let request = ClaimRequest {
            owner: shared.owner.clone(),
            lease: shared.options.lease,
            limit,
        };
        tx.apply_and_claim(merged, request).await?.1
    };
    for taken in taken {
        shared.metrics.record(taken.tally);
    }
    if let Some(status) = finished_run {
        tracing::info!(run_id = %run.id, status = status.as_str(), "run finished");
        if status.is_terminal() {
            shared.traces.run_ended(&run, status);
            executor.interrupt_run(run.id);
            // A slot of its definition's `maxConcurrentRuns` may have freed up.
            executor.notify_admission();
        }
        if matches!(status, RunStatus::Failed | RunStatus::Cancelled)
            && let Err(e) = executor
                .cancel_tree(run.id, "the parent run ended", false)
                .await
        {
            tracing::warn!(run_id = %run.id, error = %e, "cannot cancel the child runs yet");
        }
    }
    // More may be ready than was claimed here, or a timer moved: the dispatcher looks.
    if limit == 0 || claimed.len() == permits.len() || timer {
        executor.notify();
    } else {
        executor.notify_commit();
    }

    // Steps of this run go on with the run as read here (under its lock) and the outputs
    // recorded; others read theirs.
    let outputs: Option<Map<String, Value>> = finished_run.is_none().then(|| {
        steps
            .iter()
            .filter(|s| s.status == RunStatus::Completed)
            .map(|s| (s.step_id.clone(), s.output.clone().unwrap_or(Value::Null)))
            .collect()
    });
    let jobs: Vec<Job> = claimed
        .into_iter()
        .zip(permits)
        .map(|(claimed, permit)| {
            let context = outputs
                .as_ref()
                .filter(|_| claimed.step.run_id == run.id)
                .map(|outputs| RunContext {
                    run: run.clone(),
                    outputs: outputs.clone(),
                });
            let cancel = shared
                .in_flight
                .insert(claimed.step.id, claimed.step.run_id);
            Job {
                claimed,
                permit,
                cancel,
                context,
            }
        })
        .collect();
    // The task recording the batch goes on with every claimed step (or, if its own outcome is
    // not in this transaction, the first recorded one's); the others end.
    let carrier = members
        .iter()
        .enumerate()
        .filter(|(index, _)| !stale.contains(index))
        .map(|(index, (pending, _))| (index, pending.row.id))
        .find(|(_, id)| *id == me)
        .or_else(|| {
            members
                .iter()
                .enumerate()
                .find(|(index, _)| !stale.contains(index))
                .map(|(index, (pending, _))| (index, pending.row.id))
        })
        .map(|(index, _)| index);
    let mut jobs = Some(jobs);
    for (index, (pending, tell)) in members.into_iter().enumerate() {
        let answer = if stale.contains(&index) {
            Err(ExecutorError::Store(StoreError::Stale(format!(
                "step row {} no longer runs under lease {} attempt {}",
                pending.row.id, pending.guard.owner, pending.guard.attempt
            ))))
        } else if Some(index) == carrier {
            Ok(jobs.take().unwrap_or_default())
        } else {
            Ok(Vec::new())
        };
        if let Err(Ok(unclaimed)) = tell.send(answer) {
            // That task is gone (it cannot be: it waits for this answer); release the steps.
            for job in unclaimed {
                shared.in_flight.remove(job.claimed.step.id);
            }
        }
    }
    Ok(())
}

/// What is kept of a recorded outcome until its transaction commits.
struct Taken {
    tally: Tally,
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
    let outcome = pending.outcome.clone();
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
    changes
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

/// `changes` appended to `into` (the store writes each kind in a fixed order; [`record_some`]
/// keeps an update of a row out of a batch that creates the row).
fn merge(into: &mut RunChanges, changes: RunChanges) {
    let RunChanges {
        run,
        step_updates,
        new_steps,
        attempts,
        events,
        new_runs,
        wake,
        consume_signals,
    } = changes;
    if run.is_some() {
        into.run = run;
    }
    into.step_updates.extend(step_updates);
    into.new_steps.extend(new_steps);
    into.attempts.extend(attempts);
    into.events.extend(events);
    into.new_runs.extend(new_runs);
    into.wake.extend(wake);
    into.consume_signals.extend(consume_signals);
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

        let mut merged = RunChanges::default();
        merge(&mut merged, changes.clone());
        merge(&mut merged, changes);
        assert_eq!(merged.step_updates.len(), 2);
        assert_eq!(merged.new_steps.len(), 2);
    }
}
