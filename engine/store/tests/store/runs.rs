//! Runs: creation and idempotency, reads and lists, claiming and leases.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use serde_json::json;
use uuid::Uuid;
use weft_store::{
    ParentRef, RunChanges, RunQuery, RunStatus, RunUpdate, StepPhase, StepStatus, Store, StoreError,
};

use crate::support::{
    DEFINITION, create, event, new_run, new_step, now, on_both_backends, step_named, update,
};

on_both_backends!(
    run_create_and_read,
    run_idempotency,
    run_start_retried_writes_nothing,
    run_create_conflicts_write_nothing,
    run_list_filters_and_paging,
    claim_due_and_not_due,
    claim_oldest_due_first,
    claim_attempts_by_origin,
    lease_renewal_release_and_reset,
);
on_both_backends!(
    multi_thread: claim_concurrently_never_twice,
    create_same_key_concurrently,
    create_many_concurrently,
    create_same_start_concurrently,
    create_one_bad_among_many
);

const LEASE: Duration = Duration::from_secs(30);

async fn run_create_and_read(store: Arc<dyn Store>) {
    let before = now();
    let mut new = new_run(&["start", "side"]);
    new.deadline_at = Some(before + TimeDelta::hours(1));
    let id = new.id;
    let steps = new.initial_steps.clone();
    let events = vec![
        event(id, None, "run.created"),
        event(id, None, "run.started"),
        event(id, Some("start"), "step.ready"),
    ];
    let (run, created) = store.create_run(new.clone(), events).await.unwrap();
    assert!(created);
    assert_eq!(run.id, id);
    assert_eq!(run.definition_id, DEFINITION);
    assert_eq!(run.definition_name, "orders");
    assert_eq!(run.definition_version, "1.0.0");
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.input, new.input);
    assert_eq!((run.output.clone(), run.error.clone()), (None, None));
    assert_eq!(run.idempotency_key, None);
    assert_eq!(run.parent, None);
    assert_eq!(run.depth, 0);
    assert_eq!(run.deadline_at, new.deadline_at);
    assert!(run.created_at >= before);
    assert_eq!(run.started_at, Some(run.created_at));
    assert_eq!(run.completed_at, None);
    assert_eq!(run.updated_at, run.created_at);
    // Read back exactly as returned.
    assert_eq!(store.get_run(id).await.unwrap(), Some(run.clone()));
    assert_eq!(store.get_run(Uuid::now_v7()).await.unwrap(), None);

    let rows = store.list_steps(id).await.unwrap();
    assert_eq!(rows.len(), 2);
    for (row, new) in rows.iter().zip(&steps) {
        assert_eq!(row.id, new.id);
        assert_eq!(row.run_id, id);
        assert_eq!(row.step_id, new.step_id);
        assert_eq!(row.status, StepStatus::Pending);
        assert_eq!(row.phase, StepPhase::Queued);
        assert_eq!(row.attempt, 0);
        assert_eq!(row.due_at, Some(new.due_at));
        assert_eq!((row.input.clone(), row.output.clone()), (None, None));
        assert_eq!((row.error.clone(), row.wait.clone()), (None, None));
        assert_eq!((row.runner.clone(), row.lease_owner.clone()), (None, None));
        assert_eq!(row.created_at, run.created_at);
        assert_eq!((row.started_at, row.completed_at), (None, None));
        assert_eq!(store.get_step(row.id).await.unwrap().as_ref(), Some(row));
    }
    assert_eq!(store.get_step(Uuid::now_v7()).await.unwrap(), None);
    assert!(store.list_steps(Uuid::now_v7()).await.unwrap().is_empty());
    assert!(store.list_attempts(id).await.unwrap().is_empty());

    let logged = store.list_events(0, Some(id), 100).await.unwrap();
    let kinds: Vec<&str> = logged.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["run.created", "run.started", "step.ready"]);
    assert_eq!(logged[2].step_id.as_deref(), Some("start"));
    assert_eq!(logged[2].data, json!({ "kind": "step.ready" }));
    assert!(
        logged
            .iter()
            .all(|e| e.run_id == id && e.created_at == run.created_at)
    );
}

async fn run_idempotency(store: Arc<dyn Store>) {
    let mut first = new_run(&["start"]);
    first.idempotency_key = Some("order-42".to_owned());
    let (run, created) = store
        .create_run(first.clone(), vec![event(first.id, None, "run.created")])
        .await
        .unwrap();
    assert!(created);
    assert_eq!(run.idempotency_key.as_deref(), Some("order-42"));

    // Same key, everything else different: the first run, nothing written.
    let mut second = new_run(&["other", "more"]);
    second.idempotency_key = Some("order-42".to_owned());
    second.input = json!({ "different": true });
    let (again, created) = store
        .create_run(second.clone(), vec![event(second.id, None, "run.created")])
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again, run);
    assert_eq!(store.get_run(second.id).await.unwrap(), None);
    assert!(store.list_steps(second.id).await.unwrap().is_empty());
    assert_eq!(store.list_steps(run.id).await.unwrap().len(), 1);
    assert_eq!(store.list_events(0, None, 100).await.unwrap().len(), 1);
    let page = store
        .list_runs(&RunQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 1);

    // Keys are case-sensitive; runs without a key never collide.
    let mut other = new_run(&["start"]);
    other.idempotency_key = Some("ORDER-42".to_owned());
    assert!(store.create_run(other, Vec::new()).await.unwrap().1);
    assert!(
        store
            .create_run(new_run(&["a"]), Vec::new())
            .await
            .unwrap()
            .1
    );
    assert!(
        store
            .create_run(new_run(&["a"]), Vec::new())
            .await
            .unwrap()
            .1
    );
}

async fn create_same_key_concurrently(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut new = new_run(&["start"]);
                new.idempotency_key = Some("same".to_owned());
                let events = vec![event(new.id, None, &format!("run.created.{i}"))];
                store.create_run(new, events).await.unwrap()
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
    let id = results[0].0.id;
    assert!(results.iter().all(|(run, _)| run.id == id));
    assert_eq!(store.list_events(0, None, 100).await.unwrap().len(), 1);
    assert_eq!(store.list_steps(id).await.unwrap().len(), 1);
}

/// Starts that arrive together (written together, in one transaction, when they meet): each
/// gets its own answer, and what one cannot write takes nothing from the others.
async fn create_many_concurrently(store: Arc<dyn Store>) {
    let mut taken = new_run(&["start"]);
    taken.idempotency_key = Some("taken".to_owned());
    let (taken, _) = store.create_run(taken, Vec::new()).await.unwrap();
    let existing = create(&store, &["start"]).await;

    enum Expect {
        Created,
        SameKey(&'static str),
        Taken,
        Conflict,
    }
    let mut starts = Vec::new();
    for _ in 0..24 {
        starts.push((new_run(&["start"]), Expect::Created));
    }
    for key in ["pair-0", "pair-1", "pair-2", "pair-0", "pair-1", "pair-2"] {
        let mut new = new_run(&["start"]);
        new.idempotency_key = Some(key.to_owned());
        starts.push((new, Expect::SameKey(key)));
    }
    for _ in 0..2 {
        let mut new = new_run(&["start"]);
        new.idempotency_key = Some("taken".to_owned());
        starts.push((new, Expect::Taken));
    }
    // Then, together again, starts that cannot be written among ones that can.
    let mut second = Vec::new();
    for _ in 0..6 {
        second.push((new_run(&["start"]), Expect::Created));
    }
    let mut same_id = new_run(&["start"]);
    same_id.id = existing;
    second.push((same_id, Expect::Conflict));
    let mut same_step = new_run(&["a", "a"]);
    same_step.idempotency_key = Some("same-step".to_owned());
    second.push((same_step, Expect::Conflict));

    let mut answers = start_together(&store, starts).await;
    answers.extend(start_together(&store, second).await);
    let mut created = Vec::new();
    let mut by_key: std::collections::HashMap<&str, Vec<(Uuid, bool)>> = Default::default();
    for (new, expect, result) in answers {
        match expect {
            Expect::Created => {
                let (run, was_created) = result.unwrap();
                assert!(was_created);
                assert_eq!(run.id, new.id);
                assert_eq!(run.input, new.input);
                assert_eq!(store.get_run(run.id).await.unwrap(), Some(run.clone()));
                created.push(run.id);
            }
            Expect::SameKey(key) => {
                let (run, was_created) = result.unwrap();
                by_key.entry(key).or_default().push((run.id, was_created));
                if was_created {
                    created.push(run.id);
                } else {
                    assert_eq!(store.get_run(new.id).await.unwrap(), None);
                }
            }
            Expect::Taken => {
                let (run, was_created) = result.unwrap();
                assert!(!was_created);
                assert_eq!(run, taken);
                assert_eq!(store.get_run(new.id).await.unwrap(), None);
            }
            Expect::Conflict => {
                let err = result.unwrap_err();
                assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
                if new.id != existing {
                    assert_eq!(store.get_run(new.id).await.unwrap(), None);
                }
                assert!(
                    store
                        .list_events(0, Some(new.id), 10)
                        .await
                        .unwrap()
                        .is_empty()
                );
            }
        }
    }
    // One run per key, the same for both of its starts.
    assert_eq!(by_key.len(), 3);
    for answers in by_key.values() {
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0].0, answers[1].0);
        assert_eq!(answers.iter().filter(|(_, c)| *c).count(), 1);
    }
    assert_eq!(created.len(), 33);
    // Starts that met were written together (one transaction, one clock reading for all).
    let mut times = HashSet::new();
    for id in &created {
        times.insert(store.get_run(*id).await.unwrap().unwrap().created_at);
    }
    assert!(
        times.len() < created.len(),
        "no two starts were written together"
    );
    // Every run written has its step and its two events, in order; nothing else was written.
    for id in &created {
        assert_eq!(store.list_steps(*id).await.unwrap().len(), 1);
        let kinds: Vec<String> = store
            .list_events(0, Some(*id), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["run.created", "step.ready"]);
    }
    let all = store.list_events(0, None, 1000).await.unwrap();
    assert_eq!(all.len(), 2 * created.len());
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let page = store
        .list_runs(&RunQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 2 + 33);
}

/// Each start's run, what was expected of it, and its answer: all started at once.
async fn start_together<E: Send + 'static>(
    store: &Arc<dyn Store>,
    starts: Vec<(weft_store::NewRun, E)>,
) -> Vec<(
    weft_store::NewRun,
    E,
    Result<(weft_store::RunRecord, bool), StoreError>,
)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(starts.len()));
    let tasks: Vec<_> = starts
        .into_iter()
        .map(|(new, expect)| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                let events = vec![
                    event(new.id, None, "run.created"),
                    event(new.id, Some("start"), "step.ready"),
                ];
                barrier.wait().await;
                (new.clone(), expect, store.create_run(new, events).await)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// A start sent again as it was (same run id, same key), here a held run's (no steps): the
/// run as it is, nothing written.
async fn run_start_retried_writes_nothing(store: Arc<dyn Store>) {
    let mut held = new_run(&[]);
    held.idempotency_key = Some("held".to_owned());
    let events = |id| vec![event(id, None, "run.created")];
    let (run, created) = store
        .create_run(held.clone(), events(held.id))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(run.status, RunStatus::Pending);
    let mut with_step = held.clone();
    with_step.initial_steps = vec![new_step("sneaky", now())];
    for again in [held.clone(), with_step] {
        let (same, created) = store.create_run(again, events(held.id)).await.unwrap();
        assert!(!created);
        assert_eq!(same, run);
    }
    assert_eq!(store.list_events(0, None, 100).await.unwrap().len(), 1);
    assert!(store.list_steps(held.id).await.unwrap().is_empty());
}

/// A start whose input the database refuses (PostgreSQL stores no NUL character in JSON;
/// SQLite does), among others at once: it fails alone, as itself, and the others are written.
async fn create_one_bad_among_many(store: Arc<dyn Store>) {
    let mut starts: Vec<_> = (0..11).map(|_| (new_run(&["start"]), false)).collect();
    let mut bad = new_run(&["start"]);
    bad.input = json!({ "x": "a\u{0}b" });
    starts.insert(5, (bad, true));
    let mut written = 0;
    for (new, is_bad, result) in start_together(&store, starts).await {
        match result {
            Ok((run, created)) => {
                assert!(created);
                assert_eq!(run.input, new.input);
                written += 1;
            }
            Err(e) => {
                assert!(is_bad, "a good start failed: {e:?}");
                assert!(matches!(e, StoreError::Database(_)), "{e:?}");
                assert_eq!(store.get_run(new.id).await.unwrap(), None);
            }
        }
    }
    assert!(written >= 11);
    assert_eq!(
        store.list_events(0, None, 100).await.unwrap().len(),
        2 * written
    );
}

/// One start sent eight times at once (a client retrying): one run, one set of rows.
async fn create_same_start_concurrently(store: Arc<dyn Store>) {
    let mut held = new_run(&[]);
    held.idempotency_key = Some("retried".to_owned());
    let starts = (0..8).map(|_| (held.clone(), ())).collect();
    let answers = start_together(&store, starts).await;
    let mut created = 0;
    for (_, (), result) in answers {
        let (run, was_created) = result.unwrap();
        assert_eq!(run.id, held.id);
        assert_eq!(store.get_run(run.id).await.unwrap(), Some(run));
        created += usize::from(was_created);
    }
    assert_eq!(created, 1);
    assert_eq!(store.list_events(0, None, 100).await.unwrap().len(), 2);
    assert!(store.list_steps(held.id).await.unwrap().is_empty());
}

async fn run_create_conflicts_write_nothing(store: Arc<dyn Store>) {
    let id = create(&store, &["start"]).await;

    // The same run id again.
    let mut same_id = new_run(&["x"]);
    same_id.id = id;
    let err = store.create_run(same_id, Vec::new()).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains(&id.to_string())),
        "{err:?}"
    );

    // Two initial steps with one step id: the run is not created either.
    let mut twice = new_run(&["a", "a"]);
    twice.idempotency_key = Some("twice".to_owned());
    let twice_id = twice.id;
    let err = store
        .create_run(twice, vec![event(twice_id, None, "run.created")])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("\"a\"")),
        "{err:?}"
    );
    assert_eq!(store.get_run(twice_id).await.unwrap(), None);
    assert!(store.list_events(0, None, 100).await.unwrap().is_empty());

    // An event of a run that does not exist: nothing is written.
    let new = new_run(&["a"]);
    let new_id = new.id;
    let err = store
        .create_run(new, vec![event(Uuid::now_v7(), None, "run.created")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    assert_eq!(store.get_run(new_id).await.unwrap(), None);
}

async fn run_list_filters_and_paging(store: Arc<dyn Store>) {
    let other_definition = Uuid::now_v7();
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut new = new_run(&["start"]);
        if i % 2 == 1 {
            new.definition_id = other_definition;
            new.definition_name = "billing".to_owned();
        }
        ids.push(store.create_run(new, Vec::new()).await.unwrap().0.id);
    }
    // ids[4] is a child of ids[0]; ids[2] completes.
    let mut child = new_run(&["start"]);
    child.parent = Some(ParentRef {
        run_id: ids[0],
        step_row_id: step_named(&store, ids[0], "start").await.id,
    });
    child.depth = 1;
    let child = store.create_run(child, Vec::new()).await.unwrap().0;
    assert_eq!(child.depth, 1);
    assert_eq!(store.get_run(child.id).await.unwrap(), Some(child.clone()));
    let tx = store.begin_run(ids[2]).await.unwrap();
    tx.apply(RunChanges {
        run: Some(RunUpdate {
            status: RunStatus::Completed,
            output: Some(json!({ "ok": true })),
            error: None,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let completed = store.get_run(ids[2]).await.unwrap().unwrap();
    assert_eq!(completed.status, RunStatus::Completed);
    assert_eq!(completed.output, Some(json!({ "ok": true })));
    assert!(completed.completed_at.is_some());
    assert!(completed.updated_at >= completed.created_at);

    let list = |q: RunQuery| {
        let store = store.clone();
        async move {
            let page = store.list_runs(&q).await.unwrap();
            let ids: Vec<Uuid> = page.items.iter().map(|r| r.id).collect();
            (ids, page.total)
        }
    };
    let all = RunQuery {
        limit: 100,
        ..Default::default()
    };
    // Newest first.
    let mut newest_first = ids.clone();
    newest_first.push(child.id);
    newest_first.reverse();
    assert_eq!(list(all.clone()).await, (newest_first.clone(), 6));

    assert_eq!(
        list(RunQuery {
            status: Some(RunStatus::Completed),
            ..all.clone()
        })
        .await,
        (vec![ids[2]], 1)
    );
    assert_eq!(
        list(RunQuery {
            definition_id: Some(other_definition),
            ..all.clone()
        })
        .await,
        (vec![ids[3], ids[1]], 2)
    );
    assert_eq!(
        list(RunQuery {
            definition_name: Some("orders".to_owned()),
            status: Some(RunStatus::Running),
            ..all.clone()
        })
        .await,
        (vec![child.id, ids[4], ids[0]], 3)
    );
    assert_eq!(
        list(RunQuery {
            parent_run_id: Some(ids[0]),
            ..all.clone()
        })
        .await,
        (vec![child.id], 1)
    );
    assert_eq!(
        list(RunQuery {
            parent_run_id: Some(ids[1]),
            ..all.clone()
        })
        .await,
        (vec![], 0)
    );

    // The creation window is half-open: [after, before).
    let created: Vec<_> = {
        let mut runs = Vec::new();
        for id in &ids {
            runs.push(store.get_run(*id).await.unwrap().unwrap().created_at);
        }
        runs
    };
    let (window, total) = list(RunQuery {
        created_after: Some(created[1]),
        created_before: Some(created[3]),
        ..all.clone()
    })
    .await;
    assert_eq!(total, window.len() as u64);
    assert!(
        window.contains(&ids[1]) && window.contains(&ids[2]),
        "{window:?}"
    );
    assert!(!window.contains(&ids[0]) || created[0] == created[1]);
    assert!(!window.contains(&ids[3]) && !window.contains(&ids[4]));

    // Pages.
    let page = |limit, offset| {
        list(RunQuery {
            limit,
            offset,
            ..all.clone()
        })
    };
    assert_eq!(page(2, 0).await, (newest_first[0..2].to_vec(), 6));
    assert_eq!(page(2, 2).await, (newest_first[2..4].to_vec(), 6));
    assert_eq!(page(4, 4).await, (newest_first[4..6].to_vec(), 6));
    assert_eq!(page(2, 6).await, (vec![], 6));
    assert_eq!(page(0, 0).await, (vec![], 6));
    assert_eq!(page(2, 100).await, (vec![], 6));
}

async fn claim_due_and_not_due(store: Arc<dyn Store>) {
    assert!(store.claim_steps("w1", LEASE, 10).await.unwrap().is_empty());
    assert_eq!(store.next_due_at().await.unwrap(), None);

    let mut new = new_run(&["due"]);
    let later = now() + TimeDelta::hours(1);
    new.initial_steps.push(new_step("later", later));
    let run_id = store.create_run(new, Vec::new()).await.unwrap().0.id;
    let due = step_named(&store, run_id, "due").await;
    assert_eq!(store.next_due_at().await.unwrap(), due.due_at);

    assert!(store.claim_steps("w1", LEASE, 0).await.unwrap().is_empty());
    let before = now();
    let claimed = store.claim_steps("w1", LEASE, 10).await.unwrap();
    let after = now();
    assert_eq!(claimed.len(), 1);
    let claim = &claimed[0];
    assert_eq!(claim.claimed_from, StepPhase::Queued);
    let step = &claim.step;
    assert_eq!(step.id, due.id);
    assert_eq!(step.phase, StepPhase::Executing);
    assert_eq!(step.status, StepStatus::Running);
    assert_eq!(step.attempt, 1);
    assert_eq!(step.lease_owner.as_deref(), Some("w1"));
    let lease_end = step.due_at.unwrap();
    assert!(
        lease_end >= before + LEASE && lease_end <= after + LEASE,
        "{lease_end}"
    );
    let started = step.started_at.unwrap();
    assert!(started >= before && started <= after);
    assert_eq!(step.updated_at, started);
    // The claim returns the row as stored.
    assert_eq!(store.get_step(step.id).await.unwrap().as_ref(), Some(step));

    // Nothing else is due: the other step's time has not come, this one is leased.
    assert!(store.claim_steps("w2", LEASE, 10).await.unwrap().is_empty());
    assert_eq!(store.next_due_at().await.unwrap(), Some(lease_end));
    // Done steps are never due.
    let tx = store.begin_run(run_id).await.unwrap();
    tx.apply(RunChanges {
        step_updates: vec![update(step, StepStatus::Completed, StepPhase::Done)],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(store.next_due_at().await.unwrap(), Some(later));
    assert!(store.claim_steps("w2", LEASE, 10).await.unwrap().is_empty());
}

async fn claim_oldest_due_first(store: Arc<dyn Store>) {
    let base = now() - TimeDelta::seconds(60);
    let mut new = new_run(&[]);
    for (name, offset) in [("c", 3), ("a", 1), ("d", 4), ("b", 2)] {
        new.initial_steps
            .push(new_step(name, base + TimeDelta::seconds(offset)));
    }
    store.create_run(new, Vec::new()).await.unwrap();
    let names = |claimed: Vec<weft_store::ClaimedStep>| -> Vec<String> {
        claimed.into_iter().map(|c| c.step.step_id).collect()
    };
    assert_eq!(
        names(store.claim_steps("w", LEASE, 2).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        names(store.claim_steps("w", LEASE, 5).await.unwrap()),
        ["c", "d"]
    );
}

async fn claim_attempts_by_origin(store: Arc<dyn Store>) {
    let run_id = create(&store, &["s"]).await;

    // From queued: attempt 1.
    let first = store.claim_steps("w1", Duration::ZERO, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].claimed_from, StepPhase::Queued);
    assert_eq!(first[0].step.attempt, 1);
    let started = first[0].step.started_at;

    // The lease (zero) has expired: another replica re-runs it, attempt 2.
    let second = store.claim_steps("w2", LEASE, 10).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].claimed_from, StepPhase::Executing);
    assert_eq!(second[0].step.attempt, 2);
    assert_eq!(second[0].step.lease_owner.as_deref(), Some("w2"));
    assert_eq!(second[0].step.started_at, started);

    // Parked with no timer: not claimable until woken.
    let tx = store.begin_run(run_id).await.unwrap();
    tx.apply(RunChanges {
        step_updates: vec![weft_store::StepUpdate {
            wait: Some(json!({ "childRunId": Uuid::now_v7() })),
            runner: Some("engine".to_owned()),
            ..update(&second[0].step, StepStatus::Running, StepPhase::Waiting)
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let parked = store.get_step(second[0].step.id).await.unwrap().unwrap();
    assert_eq!(parked.phase, StepPhase::Waiting);
    assert_eq!(parked.status, StepStatus::Running);
    assert_eq!(parked.due_at, None);
    assert_eq!(parked.lease_owner, None);
    assert_eq!(parked.runner.as_deref(), Some("engine"));
    assert!(store.claim_steps("w1", LEASE, 10).await.unwrap().is_empty());
    assert_eq!(store.next_due_at().await.unwrap(), None);

    // Woken (by another run's transition): claimed from waiting, attempt unchanged.
    let other = create(&store, &[]).await;
    let tx = store.begin_run(other).await.unwrap();
    tx.apply(RunChanges {
        wake: vec![parked.id],
        ..Default::default()
    })
    .await
    .unwrap();
    let woken = store.claim_steps("w3", LEASE, 10).await.unwrap();
    assert_eq!(woken.len(), 1);
    assert_eq!(woken[0].claimed_from, StepPhase::Waiting);
    assert_eq!(woken[0].step.attempt, 2);
    assert_eq!(woken[0].step.lease_owner.as_deref(), Some("w3"));
    assert_eq!(woken[0].step.wait, parked.wait);
    assert_eq!(woken[0].step.started_at, started);

    // Parked with a timer that has fired: claimable, from waiting.
    let tx = store.begin_run(run_id).await.unwrap();
    tx.apply(RunChanges {
        step_updates: vec![weft_store::StepUpdate {
            due_at: Some(now() - TimeDelta::milliseconds(1)),
            wait: Some(json!({ "wakeAt": "then" })),
            ..update(&woken[0].step, StepStatus::Running, StepPhase::Waiting)
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let timer = store.claim_steps("w1", LEASE, 10).await.unwrap();
    assert_eq!(timer.len(), 1);
    assert_eq!(timer[0].claimed_from, StepPhase::Waiting);
    assert_eq!(timer[0].step.attempt, 2);

    // Back to queued (a retry): the next claim is attempt 3.
    let tx = store.begin_run(run_id).await.unwrap();
    tx.apply(RunChanges {
        step_updates: vec![weft_store::StepUpdate {
            due_at: Some(now()),
            error: Some(json!({ "code": "boom" })),
            ..update(&timer[0].step, StepStatus::Pending, StepPhase::Queued)
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let retry = store.claim_steps("w1", LEASE, 10).await.unwrap();
    assert_eq!(retry[0].claimed_from, StepPhase::Queued);
    assert_eq!(retry[0].step.attempt, 3);
    assert_eq!(retry[0].step.error, Some(json!({ "code": "boom" })));
}

async fn lease_renewal_release_and_reset(store: Arc<dyn Store>) {
    let run_id = create(&store, &["a", "b", "c"]).await;
    let a = step_named(&store, run_id, "a").await.id;
    let b = step_named(&store, run_id, "b").await.id;
    let c = step_named(&store, run_id, "c").await.id;

    // w1 claims all three under an already expired lease; w2 takes the oldest over.
    assert_eq!(
        store
            .claim_steps("w1", Duration::ZERO, 10)
            .await
            .unwrap()
            .len(),
        3
    );
    let taken = store.claim_steps("w2", LEASE, 1).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].step.id, a);

    // w1 still holds b and c (expired but not taken): renewed; a and an unknown id are lost.
    let unknown = Uuid::now_v7();
    let before = now();
    let lost = store
        .renew_leases("w1", &[a, b, c, unknown], Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(lost, [a, unknown]);
    for id in [b, c] {
        let step = store.get_step(id).await.unwrap().unwrap();
        assert!(step.due_at.unwrap() >= before + TimeDelta::seconds(600));
        assert_eq!(step.lease_owner.as_deref(), Some("w1"));
    }
    assert!(store.claim_steps("w3", LEASE, 10).await.unwrap().is_empty());
    assert!(
        store
            .renew_leases("w1", &[], LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.renew_leases("w3", &[b], LEASE).await.unwrap(), [b]);

    // w1 shuts down: b and c are given back, due now; a stays with w2.
    assert_eq!(store.release_leases("w1").await.unwrap(), 2);
    assert_eq!(store.release_leases("w1").await.unwrap(), 0);
    assert_eq!(
        store.renew_leases("w1", &[b, c], LEASE).await.unwrap(),
        [b, c]
    );
    let released = store.get_step(b).await.unwrap().unwrap();
    assert_eq!(released.phase, StepPhase::Queued);
    assert_eq!(released.status, StepStatus::Pending);
    assert_eq!(released.lease_owner, None);
    assert!(released.due_at.unwrap() <= now());
    assert_eq!(released.attempt, 1);
    assert_eq!(
        store
            .get_step(a)
            .await
            .unwrap()
            .unwrap()
            .lease_owner
            .as_deref(),
        Some("w2")
    );

    // Start-up of a single-process (SQLite) engine: whatever was executing is queued again.
    assert_eq!(store.reset_executing().await.unwrap(), 1);
    assert_eq!(store.reset_executing().await.unwrap(), 0);
    let reset = store.get_step(a).await.unwrap().unwrap();
    assert_eq!(
        (reset.phase, reset.status),
        (StepPhase::Queued, StepStatus::Pending)
    );
    assert_eq!(reset.lease_owner, None);

    let mut again = store.claim_steps("w4", LEASE, 10).await.unwrap();
    again.sort_by_key(|c| c.step.step_id.clone());
    let attempts: Vec<(String, u32, StepPhase)> = again
        .iter()
        .map(|c| (c.step.step_id.clone(), c.step.attempt, c.claimed_from))
        .collect();
    assert_eq!(
        attempts,
        [
            ("a".to_owned(), 3, StepPhase::Queued),
            ("b".to_owned(), 2, StepPhase::Queued),
            ("c".to_owned(), 2, StepPhase::Queued),
        ]
    );
}

async fn claim_concurrently_never_twice(store: Arc<dyn Store>) {
    let mut all = HashSet::new();
    for _ in 0..20 {
        let names: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let id = create(&store, &names).await;
        all.extend(
            store
                .list_steps(id)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id),
        );
    }
    assert_eq!(all.len(), 200);

    let claimers: Vec<_> = (0..4)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let owner = format!("replica-{n}");
                let mut mine = Vec::new();
                loop {
                    let claimed = store.claim_steps(&owner, LEASE, 7).await.unwrap();
                    if claimed.is_empty() {
                        break;
                    }
                    for c in claimed {
                        assert_eq!(c.step.lease_owner.as_deref(), Some(owner.as_str()));
                        assert_eq!(c.step.attempt, 1);
                        mine.push(c.step.id);
                    }
                    tokio::task::yield_now().await;
                }
                mine
            })
        })
        .collect();
    let mut claimed = Vec::new();
    let mut per_claimer = Vec::new();
    for task in claimers {
        let mine = task.await.unwrap();
        per_claimer.push(mine.len());
        claimed.extend(mine);
    }
    let distinct: HashSet<Uuid> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), 200, "claimed twice: {per_claimer:?}");
    assert_eq!(distinct, all);
}
