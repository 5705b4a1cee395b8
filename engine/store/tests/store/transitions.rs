//! Run transitions (`begin_run` / `apply`), child runs and wake-ups, signals, the event log.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use serde_json::json;
use uuid::Uuid;
use weft_store::{
    AttemptRecord, ClaimRequest, ClaimedStep, EventQuery, EventScope, LeaseGuard, NewRun,
    ParentRef, RunChanges, RunStatus, RunUpdate, StepPhase, StepStatus, StepUpdate, Store,
    StoreError,
};

use crate::support::{
    DEFINITION, create, event, new_run, new_step, now, on_both_backends, step_named, update,
};

on_both_backends!(
    apply_with_guard,
    apply_stale_guard_writes_nothing,
    apply_errors_roll_back,
    retry_clears_outcome,
    rollback_writes_nothing,
    child_runs_and_wake_across_runs,
    signals_wake_only_their_waiters,
    signal_not_found_and_conflict,
    parking_for_a_pending_signal_wakes_at_once,
    events_resume_exactly,
    stream_events_by_scope_and_bounds,
    batches_write_several_runs_at_once,
    a_stale_batch_writes_nothing,
    a_batch_parking_for_a_pending_signal_wakes_at_once,
    a_batch_may_cancel_a_step_it_creates,
    housekeeping_keeps_everything,
    a_batch_claims_older_ready_work_before_its_successors,
    runs_with_outputs_reads_completed_outputs_of_many_runs,
    a_batch_reads_its_rows_as_every_other_read_does,
    a_batch_claim_logs_what_it_returns,
    of_two_run_updates_in_a_batch_the_later_wins,
);
on_both_backends!(multi_thread: events_resume_exactly_under_concurrent_writers);

const LEASE: Duration = Duration::from_secs(30);

/// `done` is `claim`'s step as a completed first attempt by the `wasm` runner (input
/// `{"in": 1}`, output `{"out": 2}`) leaves it.
fn assert_completed_by_wasm(done: &weft_store::StepRecord, claim: &ClaimedStep) {
    assert_eq!(
        (done.phase, done.status),
        (StepPhase::Done, StepStatus::Completed)
    );
    assert_eq!(done.lease_owner, None);
    assert_eq!(done.due_at, None);
    assert_eq!(done.attempt, 1);
    assert_eq!(done.input, Some(json!({ "in": 1 })));
    assert_eq!(done.output, Some(json!({ "out": 2 })));
    assert_eq!(done.runner.as_deref(), Some("wasm"));
    assert_eq!(done.completed_at, Some(done.updated_at));
    assert_eq!(done.started_at, claim.step.started_at);
}

/// Create a run with `steps` and claim them all (as `owner`).
async fn claimed_run(
    store: &Arc<dyn Store>,
    steps: &[&str],
    owner: &str,
) -> (Uuid, Vec<ClaimedStep>) {
    let run_id = create(store, steps).await;
    let claimed = store.claim_steps(owner, LEASE, 100).await.unwrap();
    assert_eq!(claimed.len(), steps.len());
    (run_id, claimed)
}

fn attempt_of(
    claim: &ClaimedStep,
    status: StepStatus,
    at: chrono::DateTime<chrono::Utc>,
) -> AttemptRecord {
    AttemptRecord {
        step_row_id: claim.step.id,
        attempt: claim.step.attempt,
        status,
        input: Some(json!({ "in": 1 })),
        output: Some(json!({ "out": 2 })),
        error: None,
        runner: Some("wasm".to_owned()),
        lease_owner: claim.step.lease_owner.clone(),
        started_at: claim.step.started_at.unwrap(),
        completed_at: at,
    }
}

async fn apply_with_guard(store: Arc<dyn Store>) {
    let (run_id, claimed) = claimed_run(&store, &["start"], "w1").await;
    let claim = &claimed[0];
    let run_before = store.get_run(run_id).await.unwrap().unwrap();

    let mut tx = store.begin_run(run_id).await.unwrap();
    assert_eq!(tx.run(), &run_before);
    assert_eq!(tx.steps().await.unwrap(), vec![claim.step.clone()]);
    assert_eq!(
        tx.other_run(run_id).await.unwrap(),
        Some(run_before.clone())
    );
    assert_eq!(tx.other_run(Uuid::now_v7()).await.unwrap(), None);
    let finished = now();
    let next = new_step("next", finished);
    let events = tx
        .apply(RunChanges {
            run: Some(RunUpdate {
                status: RunStatus::Completed,
                output: Some(json!({ "total": 3 })),
                error: None,
            }),
            step_updates: vec![StepUpdate {
                input: Some(json!({ "in": 1 })),
                output: Some(json!({ "out": 2 })),
                runner: Some("wasm".to_owned()),
                ..update(&claim.step, StepStatus::Completed, StepPhase::Done)
            }],
            new_steps: vec![next.clone()],
            attempts: vec![attempt_of(claim, StepStatus::Completed, finished)],
            events: vec![
                event(run_id, Some("start"), "step.completed"),
                event(run_id, Some("next"), "step.ready"),
                event(run_id, None, "run.completed"),
            ],
            ..Default::default()
        })
        .await
        .unwrap();

    // Events come back numbered, in order, as listed afterwards.
    assert_eq!(events.len(), 3);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(events[1].step_id.as_deref(), Some("next"));
    // The claim logged the attempt's start; the transition's events follow it.
    let logged = store.list_events(0, Some(run_id), 10).await.unwrap();
    assert_eq!(logged.len(), 4);
    assert_eq!(logged[0].kind, "step.started");
    assert_eq!(logged[0].step_id.as_deref(), Some("start"));
    assert_eq!(logged[0].data, json!({"attempt": 1, "replica": "w1"}));
    assert_eq!(logged[1..], events[..]);

    let run = store.get_run(run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.output, Some(json!({ "total": 3 })));
    assert_eq!(run.error, None);
    assert_eq!(run.completed_at, Some(run.updated_at));
    assert!(run.updated_at >= finished);
    assert_eq!(run.started_at, run_before.started_at);

    let steps = store.list_steps(run_id).await.unwrap();
    assert_eq!(steps.len(), 2);
    let done = &steps[0];
    assert_completed_by_wasm(done, claim);
    let queued = &steps[1];
    assert_eq!(queued.id, next.id);
    assert_eq!(queued.step_id, "next");
    assert_eq!(
        (queued.phase, queued.status),
        (StepPhase::Queued, StepStatus::Pending)
    );
    assert_eq!(queued.attempt, 0);
    assert_eq!(queued.due_at, Some(finished));

    assert_eq!(
        store.list_attempts(run_id).await.unwrap(),
        [attempt_of(claim, StepStatus::Completed, finished)]
    );
}

async fn apply_stale_guard_writes_nothing(store: Arc<dyn Store>) {
    let run_id = create(&store, &["s"]).await;
    let first = store.claim_steps("w1", Duration::ZERO, 10).await.unwrap();
    // w1's lease expired; w2 claimed the step again (attempt 2).
    let second = store.claim_steps("w2", LEASE, 10).await.unwrap();
    assert_eq!(second[0].step.attempt, 2);
    let run_before = store.get_run(run_id).await.unwrap().unwrap();
    let events_before = store.list_events(0, None, 100).await.unwrap();
    let mut child = new_run(&["c"]);
    child.parent = Some(ParentRef {
        run_id,
        step_row_id: first[0].step.id,
    });
    let child_id = child.id;

    let everything = |guard: LeaseGuard| RunChanges {
        run: Some(RunUpdate {
            status: RunStatus::Failed,
            output: None,
            error: Some(json!({ "code": "x" })),
        }),
        step_updates: vec![StepUpdate {
            guard: Some(guard),
            output: Some(json!("late")),
            ..update(&first[0].step, StepStatus::Completed, StepPhase::Done)
        }],
        new_steps: vec![new_step("next", now())],
        attempts: vec![attempt_of(&first[0], StepStatus::Completed, now())],
        new_runs: vec![child.clone()],
        events: vec![event(run_id, Some("s"), "step.completed")],
        ..Default::default()
    };
    for guard in [
        LeaseGuard {
            owner: "w1".into(),
            attempt: 1,
        },
        LeaseGuard {
            owner: "w1".into(),
            attempt: 2,
        },
        LeaseGuard {
            owner: "w2".into(),
            attempt: 1,
        },
    ] {
        let tx = store.begin_run(run_id).await.unwrap();
        let err = tx.apply(everything(guard)).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Stale(m) if m.contains(&first[0].step.id.to_string())),
            "{err:?}"
        );
    }
    assert_eq!(store.get_run(run_id).await.unwrap().unwrap(), run_before);
    assert_eq!(
        store.list_steps(run_id).await.unwrap(),
        vec![second[0].step.clone()]
    );
    assert!(store.list_attempts(run_id).await.unwrap().is_empty());
    assert_eq!(store.get_run(child_id).await.unwrap(), None);
    assert_eq!(
        store.list_events(0, None, 100).await.unwrap(),
        events_before
    );

    // The lease holder's own update goes through (and the lock was released).
    let tx = store.begin_run(run_id).await.unwrap();
    let guard = LeaseGuard {
        owner: "w2".into(),
        attempt: 2,
    };
    tx.apply(everything(guard)).await.unwrap();
    let step = store.get_step(first[0].step.id).await.unwrap().unwrap();
    assert_eq!(step.output, Some(json!("late")));
    assert_eq!(
        store.get_run(run_id).await.unwrap().unwrap().status,
        RunStatus::Failed
    );
    assert_eq!(
        store
            .get_run(child_id)
            .await
            .unwrap()
            .unwrap()
            .parent
            .unwrap()
            .run_id,
        run_id
    );

    // A done step is not executing any more: its old guard is stale.
    let tx = store.begin_run(run_id).await.unwrap();
    let err = tx
        .apply(RunChanges {
            step_updates: vec![StepUpdate {
                guard: Some(LeaseGuard {
                    owner: "w2".into(),
                    attempt: 2,
                }),
                ..update(&step, StepStatus::Failed, StepPhase::Done)
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Stale(_)), "{err:?}");
}

async fn apply_errors_roll_back(store: Arc<dyn Store>) {
    let err = store.begin_run(Uuid::now_v7()).await.err().unwrap();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");

    let (run_id, claimed) = claimed_run(&store, &["a"], "w1").await;
    let step_a = claimed[0].step.clone();
    let mut existing = new_run(&["x"]);
    existing.idempotency_key = Some("taken".to_owned());
    store.create_run(existing, Vec::new()).await.unwrap();
    let snapshot = |store: Arc<dyn Store>| async move {
        (
            store.get_run(run_id).await.unwrap(),
            store.list_steps(run_id).await.unwrap(),
            store.list_attempts(run_id).await.unwrap(),
            store.list_events(0, None, 1000).await.unwrap(),
            store
                .list_runs(&weft_store::RunQuery {
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap(),
        )
    };
    let before = snapshot(store.clone()).await;

    // Every case carries a valid step update and event first: all must be rolled back.
    let base = || RunChanges {
        step_updates: vec![update(&step_a, StepStatus::Running, StepPhase::Waiting)],
        events: vec![event(run_id, None, "step.waiting")],
        ..Default::default()
    };
    let mut same_step_id = base();
    same_step_id.new_steps.push(new_step("a", now()));
    let mut unknown_step = base();
    unknown_step.step_updates.push(update(
        &weft_store::StepRecord {
            id: Uuid::now_v7(),
            lease_owner: None,
            ..step_a.clone()
        },
        StepStatus::Cancelled,
        StepPhase::Done,
    ));
    let mut unknown_attempt = base();
    unknown_attempt.attempts.push(AttemptRecord {
        step_row_id: Uuid::now_v7(),
        ..attempt_of(&claimed[0], StepStatus::Failed, now())
    });
    let mut taken_key = base();
    let mut child: NewRun = new_run(&["c"]);
    child.idempotency_key = Some("taken".to_owned());
    taken_key.new_runs.push(child);
    let mut taken_id = base();
    let mut child: NewRun = new_run(&["c"]);
    child.id = run_id;
    taken_id.new_runs.push(child);
    let mut bad_event = base();
    bad_event.events.push(event(Uuid::now_v7(), None, "orphan"));
    let mut executing_without_lease = base();
    executing_without_lease.step_updates = vec![StepUpdate {
        guard: None,
        ..update(&step_a, StepStatus::Running, StepPhase::Waiting)
    }];
    executing_without_lease.step_updates.push(StepUpdate {
        guard: None,
        due_at: Some(now()),
        ..update(&step_a, StepStatus::Running, StepPhase::Executing)
    });

    type Expected = fn(&StoreError) -> bool;
    let cases: Vec<(&str, RunChanges, Expected)> = vec![
        (
            "same step id",
            same_step_id,
            |e| matches!(e, StoreError::Conflict(m) if m.contains("\"a\"")),
        ),
        ("unknown step", unknown_step, |e| {
            matches!(e, StoreError::NotFound)
        }),
        ("unknown attempt step", unknown_attempt, |e| {
            matches!(e, StoreError::NotFound)
        }),
        (
            "taken key",
            taken_key,
            |e| matches!(e, StoreError::Conflict(m) if m.contains("taken")),
        ),
        ("taken run id", taken_id, |e| {
            matches!(e, StoreError::Conflict(_))
        }),
        ("event of no run", bad_event, |e| {
            matches!(e, StoreError::Database(_))
        }),
        ("executing, no lease", executing_without_lease, |e| {
            matches!(e, StoreError::Database(_))
        }),
    ];
    for (name, changes, expected) in cases {
        let tx = store.begin_run(run_id).await.unwrap();
        let err = tx.apply(changes).await.unwrap_err();
        assert!(expected(&err), "{name}: {err:?}");
        assert!(
            snapshot(store.clone()).await == before,
            "{name} wrote something"
        );
    }

    // The same attempt twice.
    let tx = store.begin_run(run_id).await.unwrap();
    tx.apply(RunChanges {
        attempts: vec![attempt_of(&claimed[0], StepStatus::Failed, now())],
        ..Default::default()
    })
    .await
    .unwrap();
    let tx = store.begin_run(run_id).await.unwrap();
    let err = tx
        .apply(RunChanges {
            attempts: vec![attempt_of(&claimed[0], StepStatus::Failed, now())],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("attempt 1")),
        "{err:?}"
    );
}

async fn retry_clears_outcome(store: Arc<dyn Store>) {
    let (run_id, claimed) = claimed_run(&store, &["s"], "w1").await;
    let error = json!({ "code": "boom", "message": "it broke" });
    let tx = store.begin_run(run_id).await.unwrap();
    tx.apply(RunChanges {
        run: Some(RunUpdate {
            status: RunStatus::Failed,
            output: None,
            error: Some(error.clone()),
        }),
        step_updates: vec![StepUpdate {
            error: Some(error.clone()),
            ..update(&claimed[0].step, StepStatus::Failed, StepPhase::Done)
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let failed = store.get_run(run_id).await.unwrap().unwrap();
    assert_eq!(failed.error, Some(error.clone()));
    assert!(failed.completed_at.is_some());
    let step = store.get_step(claimed[0].step.id).await.unwrap().unwrap();
    assert!(step.completed_at.is_some());

    // Retry from failure: the run runs again; the step is queued with its attempts reset.
    let tx = store.begin_run(run_id).await.unwrap();
    tx.apply(RunChanges {
        run: Some(RunUpdate {
            status: RunStatus::Running,
            output: None,
            error: None,
        }),
        step_updates: vec![StepUpdate {
            due_at: Some(now()),
            reset_attempt: Some(0),
            ..update(&step, StepStatus::Pending, StepPhase::Queued)
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let running = store.get_run(run_id).await.unwrap().unwrap();
    assert_eq!(
        (running.status, running.error, running.completed_at),
        (RunStatus::Running, None, None)
    );
    let step = store.get_step(step.id).await.unwrap().unwrap();
    assert_eq!(
        (step.phase, step.status, step.attempt),
        (StepPhase::Queued, StepStatus::Pending, 0)
    );
    assert_eq!(step.completed_at, None);
    // Step fields left as `None` are kept.
    assert_eq!(step.error, Some(error));
    let again = store.claim_steps("w2", LEASE, 10).await.unwrap();
    assert_eq!(again[0].step.attempt, 1);
}

async fn rollback_writes_nothing(store: Arc<dyn Store>) {
    let run_id = create(&store, &["a"]).await;
    let mut tx = store.begin_run(run_id).await.unwrap();
    assert_eq!(tx.steps().await.unwrap().len(), 1);
    tx.rollback().await.unwrap();
    // Dropped without apply: rolled back too, and the run can be locked again.
    let tx = store.begin_run(run_id).await.unwrap();
    drop(tx);
    let tx = store.begin_run(run_id).await.unwrap();
    tx.apply(RunChanges::default()).await.unwrap();
    assert!(store.list_events(0, None, 10).await.unwrap().is_empty());
}

async fn child_runs_and_wake_across_runs(store: Arc<dyn Store>) {
    let (parent_id, claimed) = claimed_run(&store, &["call"], "w1").await;
    let call = &claimed[0].step;

    // The parent step starts a child run and parks until it finishes.
    let mut child = new_run(&["c1"]);
    child.parent = Some(ParentRef {
        run_id: parent_id,
        step_row_id: call.id,
    });
    child.depth = 1;
    child.input = json!({ "from": "parent" });
    let child_id = child.id;
    let tx = store.begin_run(parent_id).await.unwrap();
    let events = tx
        .apply(RunChanges {
            step_updates: vec![StepUpdate {
                wait: Some(json!({ "childRunId": child_id })),
                ..update(call, StepStatus::Running, StepPhase::Waiting)
            }],
            new_runs: vec![child],
            events: vec![
                event(parent_id, Some("call"), "step.waiting"),
                event(child_id, None, "run.created"),
                event(child_id, Some("c1"), "step.ready"),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events[1].run_id, child_id);

    let child_run = store.get_run(child_id).await.unwrap().unwrap();
    assert_eq!(
        child_run.parent,
        Some(ParentRef {
            run_id: parent_id,
            step_row_id: call.id
        })
    );
    assert_eq!(child_run.depth, 1);
    assert_eq!(child_run.status, RunStatus::Running);
    assert_eq!(child_run.input, json!({ "from": "parent" }));
    let children = store
        .list_runs(&weft_store::RunQuery {
            parent_run_id: Some(parent_id),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(children.items, std::slice::from_ref(&child_run));

    // Only the child's step is claimable; the parked parent step is not due.
    let c1 = store.claim_steps("w2", LEASE, 10).await.unwrap();
    assert_eq!(c1.len(), 1);
    assert_eq!(c1[0].step.run_id, child_id);

    // Another run's wake-up of a step that is not waiting changes nothing.
    let bystander = create(&store, &[]).await;
    let mut future = new_run(&[]);
    future
        .initial_steps
        .push(new_step("later", now() + TimeDelta::hours(1)));
    let later_run = store.create_run(future, Vec::new()).await.unwrap().0.id;
    let later = step_named(&store, later_run, "later").await;
    let tx = store.begin_run(bystander).await.unwrap();
    tx.apply(RunChanges {
        wake: vec![later.id, c1[0].step.id, Uuid::now_v7()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(store.get_step(later.id).await.unwrap().unwrap(), later);
    assert_eq!(
        store.get_step(c1[0].step.id).await.unwrap().unwrap(),
        c1[0].step
    );

    // The child completes and wakes its parent's step, in the child's transaction.
    let mut tx = store.begin_run(child_id).await.unwrap();
    let parent_seen = tx.other_run(parent_id).await.unwrap().unwrap();
    assert_eq!(parent_seen.status, RunStatus::Running);
    tx.apply(RunChanges {
        run: Some(RunUpdate {
            status: RunStatus::Completed,
            output: Some(json!({ "child": "done" })),
            error: None,
        }),
        step_updates: vec![update(&c1[0].step, StepStatus::Completed, StepPhase::Done)],
        wake: vec![child_run.parent.unwrap().step_row_id],
        events: vec![event(child_id, None, "run.completed")],
        ..Default::default()
    })
    .await
    .unwrap();

    let woken = store.claim_steps("w3", LEASE, 10).await.unwrap();
    assert_eq!(woken.len(), 1);
    assert_eq!(woken[0].step.id, call.id);
    assert_eq!(woken[0].claimed_from, StepPhase::Waiting);
    assert_eq!(woken[0].step.attempt, call.attempt);
    assert_eq!(woken[0].step.wait, Some(json!({ "childRunId": child_id })));
    let mut tx = store.begin_run(parent_id).await.unwrap();
    let child_seen = tx.other_run(child_id).await.unwrap().unwrap();
    assert_eq!(child_seen.output, Some(json!({ "child": "done" })));
    tx.rollback().await.unwrap();
}

/// Park the claimed `step` waiting with `wait` (no timer unless `due_at`).
async fn park(
    store: &Arc<dyn Store>,
    claim: &ClaimedStep,
    wait: serde_json::Value,
    due_at: Option<chrono::DateTime<chrono::Utc>>,
) {
    let tx = store.begin_run(claim.step.run_id).await.unwrap();
    tx.apply(RunChanges {
        step_updates: vec![StepUpdate {
            wait: Some(wait),
            due_at,
            ..update(&claim.step, StepStatus::Running, StepPhase::Waiting)
        }],
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn signals_wake_only_their_waiters(store: Arc<dyn Store>) {
    let (run_id, claimed) = claimed_run(&store, &["approve", "reject", "timer"], "w1").await;
    let by_name = |name: &str| claimed.iter().find(|c| c.step.step_id == name).unwrap();
    park(
        &store,
        by_name("approve"),
        json!({ "signal": "approve", "timeoutAt": null }),
        None,
    )
    .await;
    park(
        &store,
        by_name("reject"),
        json!({ "signal": "reject" }),
        None,
    )
    .await;
    let far = now() + TimeDelta::hours(1);
    park(
        &store,
        by_name("timer"),
        json!({ "wakeAt": far.to_rfc3339() }),
        Some(far),
    )
    .await;
    // Another run waiting for the same signal name is not woken either.
    let (other_run, other) = claimed_run(&store, &["approve"], "w1").await;
    park(&store, &other[0], json!({ "signal": "approve" }), None).await;
    assert!(store.claim_steps("w2", LEASE, 10).await.unwrap().is_empty());

    let events_before = store.list_events(0, None, 100).await.unwrap().len();
    let before = now();
    let signal = store
        .post_signal(run_id, "approve", json!({ "by": "alice" }))
        .await
        .unwrap();
    assert_eq!(signal.run_id, run_id);
    assert_eq!(signal.name, "approve");
    assert_eq!(signal.payload, json!({ "by": "alice" }));
    assert!(signal.created_at >= before);
    assert_eq!(signal.id.get_version_num(), 7);

    let logged = store.list_events(0, Some(run_id), 100).await.unwrap();
    let received = logged.last().unwrap();
    assert_eq!(received.kind, "signal.received");
    assert_eq!(received.step_id, None);
    assert_eq!(
        received.data,
        json!({ "signalId": signal.id, "name": "approve", "payload": { "by": "alice" } })
    );
    assert_eq!(
        store.list_events(0, None, 100).await.unwrap().len(),
        events_before + 1
    );

    // Only the step waiting for "approve" in this run is due.
    let woken = store.claim_steps("w2", LEASE, 10).await.unwrap();
    assert_eq!(woken.len(), 1, "{woken:?}");
    assert_eq!(woken[0].step.id, by_name("approve").step.id);
    assert_eq!(woken[0].claimed_from, StepPhase::Waiting);
    assert_eq!(
        store
            .get_step(other[0].step.id)
            .await
            .unwrap()
            .unwrap()
            .due_at,
        None
    );
    assert_eq!(
        store
            .get_step(by_name("timer").step.id)
            .await
            .unwrap()
            .unwrap()
            .due_at,
        Some(far)
    );

    // A second signal of the same name; then one of another name.
    let second = store
        .post_signal(run_id, "approve", json!(2))
        .await
        .unwrap();
    let mut tx = store.begin_run(run_id).await.unwrap();
    assert_eq!(
        tx.signals("approve").await.unwrap(),
        [signal.clone(), second.clone()]
    );
    assert!(tx.signals("reject").await.unwrap().is_empty());
    assert!(tx.signals("APPROVE").await.unwrap().is_empty());
    tx.apply(RunChanges {
        step_updates: vec![StepUpdate {
            output: Some(json!({ "signalId": signal.id })),
            ..update(&woken[0].step, StepStatus::Completed, StepPhase::Done)
        }],
        consume_signals: vec![signal.id],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut tx = store.begin_run(run_id).await.unwrap();
    assert_eq!(tx.signals("approve").await.unwrap(), [second]);
    tx.rollback().await.unwrap();
    let mut tx = store.begin_run(other_run).await.unwrap();
    assert!(tx.signals("approve").await.unwrap().is_empty());
    tx.rollback().await.unwrap();

    store
        .post_signal(run_id, "reject", json!(null))
        .await
        .unwrap();
    let woken = store.claim_steps("w2", LEASE, 10).await.unwrap();
    assert_eq!(woken.len(), 1);
    assert_eq!(woken[0].step.id, by_name("reject").step.id);
}

/// A signal posted while its step was still executing (it looked, found none, and is about to
/// park): parking makes the step due at once instead of missing the signal.
async fn parking_for_a_pending_signal_wakes_at_once(store: Arc<dyn Store>) {
    let (run_id, claimed) = claimed_run(&store, &["approve", "other"], "w1").await;
    let by_name = |name: &str| claimed.iter().find(|c| c.step.step_id == name).unwrap();
    let early = store
        .post_signal(run_id, "approve", json!(1))
        .await
        .unwrap();
    // Nothing was waiting: nothing woken.
    assert!(store.claim_steps("w2", LEASE, 10).await.unwrap().is_empty());

    let far = now() + TimeDelta::hours(1);
    park(
        &store,
        by_name("approve"),
        json!({ "signal": "approve" }),
        Some(far),
    )
    .await;
    park(&store, by_name("other"), json!({ "signal": "other" }), None).await;
    let woken = store.claim_steps("w2", LEASE, 10).await.unwrap();
    assert_eq!(woken.len(), 1, "{woken:?}");
    assert_eq!(woken[0].step.id, by_name("approve").step.id);
    assert_eq!(woken[0].claimed_from, StepPhase::Waiting);

    // Consumed in the very transition that parks the step again: not woken.
    let tx = store.begin_run(run_id).await.unwrap();
    tx.apply(RunChanges {
        step_updates: vec![StepUpdate {
            wait: Some(json!({ "signal": "approve" })),
            ..update(&woken[0].step, StepStatus::Running, StepPhase::Waiting)
        }],
        consume_signals: vec![early.id],
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(store.claim_steps("w2", LEASE, 10).await.unwrap().is_empty());
}

async fn signal_not_found_and_conflict(store: Arc<dyn Store>) {
    let err = store
        .post_signal(Uuid::now_v7(), "approve", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");

    let run_id = create(&store, &[]).await;
    let tx = store.begin_run(run_id).await.unwrap();
    tx.apply(RunChanges {
        run: Some(RunUpdate {
            status: RunStatus::Cancelled,
            output: None,
            error: Some(json!({ "code": "cancelled" })),
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = store
        .post_signal(run_id, "approve", json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("CANCELLED")),
        "{err:?}"
    );
    assert!(store.list_events(0, None, 100).await.unwrap().is_empty());
    let mut tx = store.begin_run(run_id).await.unwrap();
    assert!(tx.signals("approve").await.unwrap().is_empty());
    tx.rollback().await.unwrap();
}

async fn events_resume_exactly(store: Arc<dyn Store>) {
    assert!(store.list_events(0, None, 10).await.unwrap().is_empty());
    let mut expected = Vec::new();
    let mut runs = Vec::new();
    for r in 0..3 {
        let new = new_run(&[]);
        let id = new.id;
        let events = (0..2)
            .map(|i| event(id, None, &format!("created.{r}.{i}")))
            .collect();
        store.create_run(new, events).await.unwrap();
        runs.push(id);
    }
    for (r, id) in runs.iter().enumerate() {
        let tx = store.begin_run(*id).await.unwrap();
        let appended = tx
            .apply(RunChanges {
                events: (0..3)
                    .map(|i| event(*id, Some("s"), &format!("applied.{r}.{i}")))
                    .collect(),
                ..Default::default()
            })
            .await
            .unwrap();
        expected.extend(appended);
    }
    let all = store.list_events(0, None, 1000).await.unwrap();
    assert_eq!(all.len(), 15);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(all[6..], expected[..]);
    assert_eq!(all[0].kind, "created.0.0");

    // Paging by the last seq seen gives every event once, in order.
    let mut resumed = Vec::new();
    let mut after = 0;
    loop {
        let page = store.list_events(after, None, 4).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        after = page.last().unwrap().seq;
        resumed.extend(page);
    }
    assert_eq!(resumed, all);
    assert!(store.list_events(after, None, 10).await.unwrap().is_empty());
    assert!(store.list_events(0, None, 0).await.unwrap().is_empty());

    // One run's events, resumed the same way.
    let of_run: Vec<_> = all
        .iter()
        .filter(|e| e.run_id == runs[1])
        .cloned()
        .collect();
    assert_eq!(of_run.len(), 5);
    assert_eq!(
        store.list_events(0, Some(runs[1]), 100).await.unwrap(),
        of_run
    );
    let first_two = store.list_events(0, Some(runs[1]), 2).await.unwrap();
    assert_eq!(first_two, of_run[..2]);
    assert_eq!(
        store
            .list_events(first_two[1].seq, Some(runs[1]), 100)
            .await
            .unwrap(),
        of_run[2..]
    );
    assert!(
        store
            .list_events(0, Some(Uuid::now_v7()), 100)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Writers append events concurrently while a reader tails the log by `after_seq`: the reader
/// sees every event exactly once (PostgreSQL: events become visible in `seq` order).
async fn events_resume_exactly_under_concurrent_writers(store: Arc<dyn Store>) {
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let run_id = create(&store, &[]).await;
                for i in 0..15 {
                    let tx = store.begin_run(run_id).await.unwrap();
                    tx.apply(RunChanges {
                        events: vec![
                            event(run_id, None, &format!("w{w}.{i}.a")),
                            event(run_id, None, &format!("w{w}.{i}.b")),
                        ],
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    let reader = {
        let store = store.clone();
        let done = Arc::new(tokio::sync::Notify::new());
        let finished = done.clone();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = 0;
            let mut last_round = false;
            loop {
                let page = store.list_events(after, None, 7).await.unwrap();
                if let Some(last) = page.last() {
                    after = last.seq;
                }
                let empty = page.is_empty();
                seen.extend(page);
                if empty {
                    if last_round {
                        break;
                    }
                    tokio::select! {
                        () = finished.notified() => last_round = true,
                        () = tokio::time::sleep(Duration::from_millis(1)) => {}
                    }
                }
            }
            seen
        });
        (task, done)
    };
    for writer in writers {
        writer.await.unwrap();
    }
    reader.1.notify_one();
    let seen = reader.0.await.unwrap();
    let all = store.list_events(0, None, 10_000).await.unwrap();
    assert_eq!(all.len(), 6 * 15 * 2);
    assert_eq!(seen.len(), all.len(), "the reader missed events");
    assert_eq!(seen, all);
}

async fn stream_events_by_scope_and_bounds(store: Arc<dyn Store>) {
    assert_eq!(store.last_event_seq().await.unwrap(), 0);
    let mut runs = Vec::new();
    for r in 0..2 {
        let new = new_run(&[]);
        runs.push(new.id);
        let events = (0..3)
            .map(|i| event(new.id, Some("s"), &format!("e.{r}.{i}")))
            .collect();
        store.create_run(new, events).await.unwrap();
    }
    let all = store.list_events(0, None, 100).await.unwrap();
    assert_eq!(all.len(), 6);
    let last = all.last().unwrap().seq;
    assert_eq!(store.last_event_seq().await.unwrap(), last);

    let query = |scope, after_seq, until_seq, limit| EventQuery {
        scope,
        after_seq,
        until_seq,
        limit,
    };
    let streamed = store
        .stream_events(&query(EventScope::All, 0, None, 100))
        .await
        .unwrap();
    assert_eq!(
        streamed.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        all
    );
    assert!(streamed.iter().all(|e| e.definition_id == DEFINITION));

    // Bounds: after < seq <= until, at most limit.
    let middle = store
        .stream_events(&query(EventScope::All, all[1].seq, Some(all[4].seq), 100))
        .await
        .unwrap();
    assert_eq!(
        middle.iter().map(|e| e.event.seq).collect::<Vec<_>>(),
        all[2..=4].iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    let limited = store
        .stream_events(&query(EventScope::All, 0, None, 2))
        .await
        .unwrap();
    assert_eq!(limited.len(), 2);

    // One run; one definition; an unknown definition.
    let of_run = store
        .stream_events(&query(EventScope::Run(runs[1]), 0, None, 100))
        .await
        .unwrap();
    assert_eq!(of_run.len(), 3);
    assert!(of_run.iter().all(|e| e.event.run_id == runs[1]));
    assert!(of_run.windows(2).all(|w| w[0].event.seq < w[1].event.seq));
    let of_definition = store
        .stream_events(&query(
            EventScope::Definition(DEFINITION),
            all[0].seq,
            None,
            100,
        ))
        .await
        .unwrap();
    assert_eq!(of_definition.len(), 5);
    assert!(
        store
            .stream_events(&query(EventScope::Definition(Uuid::now_v7()), 0, None, 100))
            .await
            .unwrap()
            .is_empty()
    );
}

/// `maintain` (SQLite: a checkpoint of the write-ahead log) between transitions loses nothing.
async fn housekeeping_keeps_everything(store: Arc<dyn Store>) {
    let (run_id, claimed) = claimed_run(&store, &["a"], "w1").await;
    store.maintain().await.unwrap();
    let tx = store.begin_runs(&[run_id]).await.unwrap();
    let at = now();
    let changes = vec![(
        run_id,
        RunChanges {
            step_updates: vec![update(
                &claimed[0].step,
                StepStatus::Completed,
                StepPhase::Done,
            )],
            attempts: vec![attempt_of(&claimed[0], StepStatus::Completed, at)],
            events: vec![event(run_id, Some("a"), "step.completed")],
            ..Default::default()
        },
    )];
    let (events, _) = tx.apply_and_claim(changes, None).await.unwrap();
    store.maintain().await.unwrap();
    assert_eq!(
        step_named(&store, run_id, "a").await.status,
        StepStatus::Completed
    );
    let log = store.list_events(0, Some(run_id), 100).await.unwrap();
    assert_eq!(log.last().map(|e| e.seq), events.last().map(|e| e.seq));
}

/// A later outcome of a batch may update a step an earlier outcome created (a failure that
/// cancels the successor another branch just made ready): the step is created, then updated.
async fn a_batch_may_cancel_a_step_it_creates(store: Arc<dyn Store>) {
    let (run_id, claimed) = claimed_run(&store, &["a", "b"], "w1").await;
    let a = claimed.iter().find(|c| c.step.step_id == "a").unwrap();
    let b = claimed.iter().find(|c| c.step.step_id == "b").unwrap();
    let tx = store.begin_runs(&[run_id]).await.unwrap();
    let at = now();
    let next = new_step("next", at);
    let failure = json!({"code": "boom", "message": "b failed"});
    let changes = vec![
        (
            run_id,
            RunChanges {
                step_updates: vec![update(&a.step, StepStatus::Completed, StepPhase::Done)],
                new_steps: vec![next.clone()],
                attempts: vec![attempt_of(a, StepStatus::Completed, at)],
                events: vec![
                    event(run_id, Some("a"), "step.completed"),
                    event(run_id, Some("next"), "step.ready"),
                ],
                ..Default::default()
            },
        ),
        (
            run_id,
            RunChanges {
                step_updates: vec![
                    StepUpdate {
                        error: Some(failure.clone()),
                        ..update(&b.step, StepStatus::Failed, StepPhase::Done)
                    },
                    StepUpdate {
                        id: next.id,
                        guard: None,
                        ..update(&b.step, StepStatus::Cancelled, StepPhase::Done)
                    },
                ],
                attempts: vec![AttemptRecord {
                    output: None,
                    error: Some(failure.clone()),
                    ..attempt_of(b, StepStatus::Failed, at)
                }],
                run: Some(RunUpdate {
                    status: RunStatus::Failed,
                    output: None,
                    error: Some(failure.clone()),
                }),
                events: vec![
                    event(run_id, Some("b"), "step.failed"),
                    event(run_id, None, "run.failed"),
                ],
                ..Default::default()
            },
        ),
    ];
    let (events, claimed) = tx.apply_and_claim(changes, None).await.unwrap();
    assert_eq!(events.len(), 4);
    assert!(claimed.is_empty());
    let status = |step_id: &str| {
        let store = store.clone();
        let step_id = step_id.to_owned();
        async move { step_named(&store, run_id, &step_id).await }
    };
    let created = status("next").await;
    assert_eq!(created.id, next.id);
    assert_eq!(created.status, StepStatus::Cancelled);
    assert_eq!(created.phase, StepPhase::Done);
    assert!(created.completed_at.is_some());
    assert_eq!(status("a").await.status, StepStatus::Completed);
    assert_eq!(status("b").await.status, StepStatus::Failed);
    assert_eq!(store.list_attempts(run_id).await.unwrap().len(), 2);
    assert_eq!(
        store.get_run(run_id).await.unwrap().unwrap().status,
        RunStatus::Failed
    );
}

/// Two runs' transitions in one transaction: each run's changes in turn (a later one may update
/// a row an earlier one created), one claim for the steps made ready, every event in order.
async fn batches_write_several_runs_at_once(store: Arc<dyn Store>) {
    let (first, a) = claimed_run(&store, &["a"], "w1").await;
    let (second, b) = claimed_run(&store, &["b"], "w1").await;
    let missing = Uuid::now_v7();
    let mut tx = store.begin_runs(&[second, missing, first]).await.unwrap();
    let mut ids: Vec<Uuid> = tx.runs().iter().map(|r| r.id).collect();
    ids.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(ids, expected, "a missing run is left out");
    let steps = tx.steps().await.unwrap();
    assert_eq!(steps.len(), 2);
    let at = now();
    let next = new_step("next", at);
    let changes = vec![
        (
            second,
            RunChanges {
                step_updates: vec![StepUpdate {
                    input: Some(json!({ "in": 1 })),
                    output: Some(json!({ "out": 2 })),
                    runner: Some("wasm".to_owned()),
                    ..update(&b[0].step, StepStatus::Completed, StepPhase::Done)
                }],
                attempts: vec![attempt_of(&b[0], StepStatus::Completed, at)],
                events: vec![
                    event(second, Some("b"), "step.completed"),
                    event(second, None, "run.completed"),
                ],
                run: Some(RunUpdate {
                    status: RunStatus::Completed,
                    output: Some(json!(2)),
                    error: None,
                }),
                ..Default::default()
            },
        ),
        (
            first,
            RunChanges {
                step_updates: vec![update(&a[0].step, StepStatus::Completed, StepPhase::Done)],
                new_steps: vec![next.clone()],
                events: vec![
                    event(first, Some("a"), "step.completed"),
                    event(first, Some("next"), "step.ready"),
                ],
                ..Default::default()
            },
        ),
    ];
    let claim = ClaimRequest {
        owner: "w2".to_owned(),
        lease: LEASE,
        limit: 5,
    };
    let (events, claimed) = tx.apply_and_claim(changes, Some(claim)).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "step.completed",
            "run.completed",
            "step.completed",
            "step.ready",
            "step.started"
        ]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].step.id, next.id);
    assert_eq!(claimed[0].step.lease_owner.as_deref(), Some("w2"));
    assert_eq!(claimed[0].step.attempt, 1);
    assert_eq!(
        store.get_run(second).await.unwrap().unwrap().status,
        RunStatus::Completed
    );
    assert_eq!(
        store.get_run(first).await.unwrap().unwrap().status,
        RunStatus::Running
    );
    assert_eq!(
        store.list_attempts(second).await.unwrap(),
        vec![attempt_of(&b[0], StepStatus::Completed, at)]
    );
    // Written as a transition of its own would have written it.
    let done = &store.list_steps(second).await.unwrap()[0];
    assert_completed_by_wasm(done, &b[0]);
}

/// A step parked for a signal posted while it ran, recorded in a batch with another run's
/// outcome (the rows written for all runs at once): due at once all the same.
async fn a_batch_parking_for_a_pending_signal_wakes_at_once(store: Arc<dyn Store>) {
    let (first, a) = claimed_run(&store, &["approve"], "w1").await;
    let (second, b) = claimed_run(&store, &["b"], "w1").await;
    store.post_signal(first, "approve", json!(1)).await.unwrap();
    let tx = store.begin_runs(&[first, second]).await.unwrap();
    let changes = vec![
        (
            first,
            RunChanges {
                step_updates: vec![StepUpdate {
                    wait: Some(json!({ "signal": "approve" })),
                    ..update(&a[0].step, StepStatus::Running, StepPhase::Waiting)
                }],
                ..Default::default()
            },
        ),
        (
            second,
            RunChanges {
                step_updates: vec![update(&b[0].step, StepStatus::Completed, StepPhase::Done)],
                ..Default::default()
            },
        ),
    ];
    tx.apply_and_claim(changes, None).await.unwrap();
    let woken = store.claim_steps("w2", LEASE, 10).await.unwrap();
    assert_eq!(woken.len(), 1, "{woken:?}");
    assert_eq!(woken[0].step.id, a[0].step.id);
    assert_eq!(woken[0].claimed_from, StepPhase::Waiting);
    assert_eq!(
        store.list_steps(second).await.unwrap()[0].phase,
        StepPhase::Done
    );
}

/// One stale guard in a batch: nothing of any run is written.
async fn a_stale_batch_writes_nothing(store: Arc<dyn Store>) {
    let (first, a) = claimed_run(&store, &["a"], "w1").await;
    let (second, b) = claimed_run(&store, &["b"], "w1").await;
    let before = store.list_events(0, None, 100).await.unwrap();
    let tx = store.begin_runs(&[first, second]).await.unwrap();
    let mut wrong = update(&b[0].step, StepStatus::Completed, StepPhase::Done);
    wrong.guard = Some(LeaseGuard {
        owner: "someone-else".to_owned(),
        attempt: 1,
    });
    let changes = vec![
        (
            first,
            RunChanges {
                step_updates: vec![update(&a[0].step, StepStatus::Completed, StepPhase::Done)],
                events: vec![event(first, Some("a"), "step.completed")],
                ..Default::default()
            },
        ),
        (
            second,
            RunChanges {
                step_updates: vec![wrong],
                events: vec![event(second, Some("b"), "step.completed")],
                ..Default::default()
            },
        ),
    ];
    let err = tx.apply_and_claim(changes, None).await.unwrap_err();
    assert!(matches!(err, StoreError::Stale(_)), "{err:?}");
    assert_eq!(store.list_events(0, None, 100).await.unwrap(), before);
    assert_eq!(
        store.list_steps(first).await.unwrap()[0].phase,
        StepPhase::Executing
    );
}

/// The claim at the end of a batch is FIFO: older ready work (another run's queued step) is
/// taken before the successor the batch just made ready.
async fn a_batch_claims_older_ready_work_before_its_successors(store: Arc<dyn Store>) {
    let (first, a) = claimed_run(&store, &["a"], "w1").await;
    let older = create(&store, &["waiting"]).await;
    let tx = store.begin_runs(&[first]).await.unwrap();
    let next = new_step("next", now());
    let changes = vec![(
        first,
        RunChanges {
            step_updates: vec![update(&a[0].step, StepStatus::Completed, StepPhase::Done)],
            new_steps: vec![next.clone()],
            ..Default::default()
        },
    )];
    let claim = ClaimRequest {
        owner: "w1".to_owned(),
        lease: LEASE,
        limit: 1,
    };
    let (_, claimed) = tx.apply_and_claim(changes, Some(claim)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].step.run_id, older, "the older ready step first");
    let successor = step_named(&store, first, "next").await;
    assert_eq!(
        successor.phase,
        StepPhase::Queued,
        "the successor waits its turn"
    );
}

/// Two runs, each with a completed, a failed and a running step (one completed without an
/// output), and an unknown id: each run comes back once with exactly its completed outputs.
async fn runs_with_outputs_reads_completed_outputs_of_many_runs(store: Arc<dyn Store>) {
    assert!(store.runs_with_outputs(&[]).await.unwrap().is_empty());
    let mut expected = Vec::new();
    for (n, owner) in [(1, "w1"), (2, "w2")] {
        let (run_id, claimed) =
            claimed_run(&store, &["done", "bare", "failed", "busy"], owner).await;
        let step = |name: &str| {
            claimed
                .iter()
                .find(|c| c.step.step_id == name)
                .map(|c| c.step.clone())
                .unwrap()
        };
        let tx = store.begin_run(run_id).await.unwrap();
        tx.apply(RunChanges {
            step_updates: vec![
                StepUpdate {
                    output: Some(json!({ "run": n })),
                    ..update(&step("done"), StepStatus::Completed, StepPhase::Done)
                },
                update(&step("bare"), StepStatus::Completed, StepPhase::Done),
                StepUpdate {
                    output: Some(json!({ "partial": true })),
                    error: Some(json!({ "code": "boom" })),
                    ..update(&step("failed"), StepStatus::Failed, StepPhase::Done)
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap();
        expected.push((run_id, json!({ "done": { "run": n }, "bare": null })));
    }
    let ids: Vec<Uuid> = expected
        .iter()
        .map(|(id, _)| *id)
        .chain([Uuid::now_v7()])
        .collect();
    let mut found = store.runs_with_outputs(&ids).await.unwrap();
    found.sort_by_key(|r| r.run.id);
    expected.sort_by_key(|(id, _)| *id);
    assert_eq!(found.len(), 2);
    for (found, (run_id, outputs)) in found.iter().zip(&expected) {
        assert_eq!(found.run, store.get_run(*run_id).await.unwrap().unwrap());
        assert_eq!(serde_json::Value::Object(found.outputs.clone()), *outputs);
    }
}

/// What a batch reads (its runs and their steps, in one go) is what the other reads return,
/// to the field: a JSON `null` output stays apart from no output, times keep their precision,
/// a parked step keeps its wait.
async fn a_batch_reads_its_rows_as_every_other_read_does(store: Arc<dyn Store>) {
    let (run_id, claimed) = claimed_run(&store, &["a", "b", "c"], "w1").await;
    let by_name = |name: &str| {
        claimed
            .iter()
            .find(|c| c.step.step_id == name)
            .map(|c| c.step.clone())
            .unwrap()
    };
    let tx = store.begin_run(run_id).await.unwrap();
    let changes = RunChanges {
        step_updates: vec![
            StepUpdate {
                input: Some(json!({ "text": "quote \" and \\ back" })),
                output: Some(serde_json::Value::Null),
                runner: Some("wasm".to_owned()),
                ..update(&by_name("a"), StepStatus::Completed, StepPhase::Done)
            },
            StepUpdate {
                error: Some(json!({ "code": "boom", "message": "ünïcödé" })),
                ..update(&by_name("b"), StepStatus::Failed, StepPhase::Done)
            },
            StepUpdate {
                wait: Some(json!({ "signal": "go" })),
                due_at: None,
                ..update(&by_name("c"), StepStatus::Running, StepPhase::Waiting)
            },
        ],
        ..Default::default()
    };
    tx.apply(changes).await.unwrap();

    let mut tx = store.begin_runs(&[run_id]).await.unwrap();
    assert_eq!(
        tx.runs(),
        [store.get_run(run_id).await.unwrap().unwrap()].as_slice()
    );
    let steps = tx.steps().await.unwrap();
    assert_eq!(tx.steps().await.unwrap(), steps, "read again, the same");
    tx.apply_and_claim(Vec::new(), None).await.unwrap();
    assert_eq!(steps, store.list_steps(run_id).await.unwrap());
    let a = steps.iter().find(|s| s.step_id == "a").unwrap();
    assert_eq!(a.output, Some(serde_json::Value::Null));
    assert_eq!(a.error, None);
    let c = steps.iter().find(|s| s.step_id == "c").unwrap();
    assert_eq!(c.wait, Some(json!({ "signal": "go" })));
    assert_eq!(c.output, None);
}

/// A batch that claims a step it woke (the same attempt going on: no `step.started`) and one it
/// created (a new attempt): the events it returns are the ones stored, in order, to the field.
async fn a_batch_claim_logs_what_it_returns(store: Arc<dyn Store>) {
    let (first, a) = claimed_run(&store, &["approve"], "w1").await;
    let (second, b) = claimed_run(&store, &["b"], "w1").await;
    store.post_signal(first, "approve", json!(1)).await.unwrap();
    let before = store.list_events(0, None, 1000).await.unwrap();
    let tx = store.begin_runs(&[first, second]).await.unwrap();
    let next = new_step("next", now());
    let changes = vec![
        (
            first,
            RunChanges {
                step_updates: vec![StepUpdate {
                    wait: Some(json!({ "signal": "approve" })),
                    ..update(&a[0].step, StepStatus::Running, StepPhase::Waiting)
                }],
                events: vec![event(first, Some("approve"), "step.waiting")],
                ..Default::default()
            },
        ),
        (
            second,
            RunChanges {
                step_updates: vec![update(&b[0].step, StepStatus::Completed, StepPhase::Done)],
                new_steps: vec![next.clone()],
                events: vec![
                    event(second, Some("b"), "step.completed"),
                    event(second, Some("next"), "step.ready"),
                ],
                ..Default::default()
            },
        ),
    ];
    let claim = ClaimRequest {
        owner: "w2".to_owned(),
        lease: LEASE,
        limit: 10,
    };
    let (events, claimed) = tx.apply_and_claim(changes, Some(claim)).await.unwrap();
    let mut from: Vec<(Uuid, StepPhase)> = claimed
        .iter()
        .map(|c| (c.step.id, c.claimed_from))
        .collect();
    from.sort_by_key(|(id, _)| *id);
    let mut expected = vec![
        (a[0].step.id, StepPhase::Waiting),
        (next.id, StepPhase::Queued),
    ];
    expected.sort_by_key(|(id, _)| *id);
    assert_eq!(from, expected);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "step.waiting",
            "step.completed",
            "step.ready",
            "step.started"
        ]
    );
    let started = &events[3];
    assert_eq!(started.step_id.as_deref(), Some("next"));
    assert_eq!(started.data, json!({ "attempt": 1, "replica": "w2" }));
    let after = store.list_events(0, None, 1000).await.unwrap();
    assert_eq!(&after[..before.len()], before.as_slice());
    assert_eq!(&after[before.len()..], events.as_slice());
}

/// Two transitions of one run in a batch, each updating the run: the later one is what stays.
async fn of_two_run_updates_in_a_batch_the_later_wins(store: Arc<dyn Store>) {
    let (run_id, _) = claimed_run(&store, &["a"], "w1").await;
    let (other, _) = claimed_run(&store, &["b"], "w1").await;
    let update = |status, output| RunChanges {
        run: Some(RunUpdate {
            status,
            output,
            error: None,
        }),
        ..Default::default()
    };
    let tx = store.begin_runs(&[run_id, other]).await.unwrap();
    tx.apply_and_claim(
        vec![
            (run_id, update(RunStatus::Failed, None)),
            (other, update(RunStatus::Completed, Some(json!(1)))),
            (run_id, update(RunStatus::Completed, Some(json!(7)))),
        ],
        None,
    )
    .await
    .unwrap();
    let run = store.get_run(run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.output, Some(json!(7)));
    assert!(run.completed_at.is_some());
    let other = store.get_run(other).await.unwrap().unwrap();
    assert_eq!(other.output, Some(json!(1)));
}
