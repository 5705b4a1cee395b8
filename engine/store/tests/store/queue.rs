//! The ready queue: what `queue_stats` counts as ready, and its oldest entry.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use weft_store::{QueueStats, RunChanges, RunStatus, StepPhase, StepUpdate, Store};

use crate::support::{new_run, new_step, now, on_both_backends, step_named, update};

on_both_backends!(queue_counts_due_unclaimed_steps);

const LEASE: Duration = Duration::from_secs(30);

async fn queue_counts_due_unclaimed_steps(store: Arc<dyn Store>) {
    let empty = QueueStats {
        ready: 0,
        oldest_ready_at: None,
    };
    assert_eq!(store.queue_stats().await.unwrap(), empty);

    let mut new = new_run(&[]);
    let old = now() - TimeDelta::seconds(10);
    let recent = now() - TimeDelta::seconds(1);
    new.initial_steps.push(new_step("old", old));
    new.initial_steps.push(new_step("recent", recent));
    // Not due yet (a retry backing off, say): not ready.
    new.initial_steps
        .push(new_step("later", now() + TimeDelta::hours(1)));
    let run_id = store.create_run(new, Vec::new()).await.unwrap().0.id;
    assert_eq!(
        store.queue_stats().await.unwrap(),
        QueueStats {
            ready: 2,
            oldest_ready_at: Some(old),
        }
    );

    // A claimed step leaves the queue.
    let claimed = store.claim_steps("w1", LEASE, 1).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].step.step_id, "old");
    assert_eq!(
        store.queue_stats().await.unwrap(),
        QueueStats {
            ready: 1,
            oldest_ready_at: Some(recent),
        }
    );

    // Parked without a timer: not ready. Woken (due in the past): ready again.
    let park = |step: &weft_store::StepRecord, due_at| StepUpdate {
        due_at,
        ..update(step, RunStatus::Running, StepPhase::Waiting)
    };
    let tx = store.begin_run(run_id).await.unwrap();
    tx.apply(RunChanges {
        step_updates: vec![park(&claimed[0].step, None)],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(store.queue_stats().await.unwrap().ready, 1);
    let woken = now() - TimeDelta::seconds(5);
    let waiting = step_named(&store, run_id, "old").await;
    let tx = store.begin_run(run_id).await.unwrap();
    tx.apply(RunChanges {
        step_updates: vec![park(&waiting, Some(woken))],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        store.queue_stats().await.unwrap(),
        QueueStats {
            ready: 2,
            oldest_ready_at: Some(woken),
        }
    );

    // Done steps are never ready.
    let mut finished = Vec::new();
    for name in ["old", "recent", "later"] {
        let step = step_named(&store, run_id, name).await;
        finished.push(update(&step, RunStatus::Completed, StepPhase::Done));
    }
    let tx = store.begin_run(run_id).await.unwrap();
    tx.apply(RunChanges {
        step_updates: finished,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(store.queue_stats().await.unwrap(), empty);
}
