use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use weft_store::{AttemptRecord, Backend, ConnectOptions, RunChanges, StepPhase, StepStatus, StepUpdate, Store, connect};
use weft_store::testing::fresh_database;

use crate::support::{event, new_run, now, update};

async fn bench(backend: Backend, workers: usize) {
    let db = fresh_database(backend).await.unwrap();
    let store = connect(&db.url, &ConnectOptions { max_connections: (workers as u32) + 2, connect_timeout: Duration::from_secs(10) }).await.unwrap();
    store.migrate().await.unwrap();
    let names: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    for _ in 0..300 {
        store.create_run(new_run(&names), vec![]).await.unwrap();
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers).map(|w| {
        let store: Arc<dyn Store> = store.clone();
        tokio::spawn(async move {
            let owner = format!("w{w}");
            let mut done = 0;
            loop {
                let claimed = store.claim_steps(&owner, Duration::from_secs(60), 16).await.unwrap();
                if claimed.is_empty() { break; }
                for c in claimed {
                    let mut tx = store.begin_run(c.step.run_id).await.unwrap();
                    let _steps = tx.steps().await.unwrap();
                    tx.apply(RunChanges {
                        step_updates: vec![StepUpdate { output: Some(json!({"ok": true})), ..update(&c.step, StepStatus::Completed, StepPhase::Done) }],
                        attempts: vec![AttemptRecord { step_row_id: c.step.id, attempt: c.step.attempt, status: StepStatus::Completed, input: None, output: Some(json!({"ok": true})), error: None, runner: Some("wasm".into()), lease_owner: Some(owner.clone()), started_at: c.step.started_at.unwrap(), completed_at: now() }],
                        events: vec![event(c.step.run_id, Some(&c.step.step_id), "step.completed")],
                        ..Default::default()
                    }).await.unwrap();
                    done += 1;
                }
            }
            done
        })
    }).collect();
    let mut total = 0;
    for t in tasks { total += t.await.unwrap(); }
    let elapsed = started.elapsed();
    println!("BENCH {backend} workers={workers}: {total} steps in {elapsed:?} = {:.0} steps/s", total as f64 / elapsed.as_secs_f64());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
#[ignore]
async fn throughput() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for workers in [1, 4, 8] {
            bench(backend, workers).await;
        }
    }
}
