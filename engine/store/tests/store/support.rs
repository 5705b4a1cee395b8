//! The per-test database and the macro that runs one test body on both backends.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::json;
use uuid::Uuid;
use weft_store::testing::{TestDatabase, fresh_database};
use weft_store::{
    Backend, ConnectOptions, DefinitionRecord, LeaseGuard, NewDefinition, NewEvent, NewRun,
    NewStep, StepPhase, StepRecord, StepStatus, StepUpdate, Store, connect,
};

pub fn options() -> ConnectOptions {
    ConnectOptions {
        max_connections: 4,
        connect_timeout: Duration::from_secs(10),
    }
}

/// A fresh database of `backend` and a store connected to it (not migrated).
pub async fn open(backend: Backend) -> (TestDatabase, Arc<dyn Store>) {
    let db = fresh_database(backend)
        .await
        .unwrap_or_else(|e| panic!("no {backend} test database: {e}"));
    let store = connect(&db.url, &options())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the {backend} test database: {e}"));
    assert_eq!(store.backend(), backend);
    (db, store)
}

/// Run `body` on a migrated store over a fresh database of `backend`.
pub async fn run<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let (db, store) = open(backend).await;
    store.migrate().await.expect("migrate");
    body(store.clone()).await;
    store.close().await;
    drop(db);
}

/// Run `body` on a store over a fresh, unmigrated database of `backend`.
pub async fn run_unmigrated<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(Arc<dyn Store>, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let (db, store) = open(backend).await;
    body(store.clone(), db.url.clone()).await;
    store.close().await;
    drop(db);
}

/// For each `async fn name(store: Arc<dyn Store>)` named, the tests `name::sqlite` and
/// `name::postgres`. With `unmigrated:`, the functions take `(store, url)` and the database is
/// left empty. With `multi_thread:`, they run on a multi-threaded runtime (4 workers).
macro_rules! on_both_backends {
    (unmigrated: $($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn sqlite() {
                    crate::support::run_unmigrated(weft_store::Backend::Sqlite, super::$test).await
                }
                #[tokio::test]
                async fn postgres() {
                    crate::support::run_unmigrated(weft_store::Backend::Postgres, super::$test).await
                }
            }
        )*
    };
    (multi_thread: $($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    crate::support::run(weft_store::Backend::Sqlite, super::$test).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    crate::support::run(weft_store::Backend::Postgres, super::$test).await
                }
            }
        )*
    };
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn sqlite() {
                    crate::support::run(weft_store::Backend::Sqlite, super::$test).await
                }
                #[tokio::test]
                async fn postgres() {
                    crate::support::run(weft_store::Backend::Postgres, super::$test).await
                }
            }
        )*
    };
}
pub(crate) use on_both_backends;

/// A draft, disabled definition with a small spec.
pub fn new_definition(name: &str, version: &str) -> NewDefinition {
    NewDefinition {
        name: name.to_owned(),
        version: version.to_owned(),
        description: None,
        is_draft: true,
        is_enabled: false,
        spec: json!({ "steps": [{ "id": "start", "type": "log" }] }),
    }
}

pub fn names(records: &[DefinitionRecord]) -> Vec<&str> {
    records.iter().map(|r| r.name.as_str()).collect()
}

/// Now, at the store's precision (microseconds).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A definition id shared by the runs of these tests (runs do not reference definitions).
pub const DEFINITION: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);

/// A top-level run of `DEFINITION` whose `steps` are due one second ago.
pub fn new_run(steps: &[&str]) -> NewRun {
    let due = now() - chrono::Duration::seconds(1);
    NewRun {
        id: Uuid::now_v7(),
        definition_id: DEFINITION,
        definition_name: "orders".to_owned(),
        definition_version: "1.0.0".to_owned(),
        input: json!({ "order": 42, "items": ["a", "b"] }),
        idempotency_key: None,
        parent: None,
        depth: 0,
        deadline_at: None,
        initial_steps: steps.iter().map(|s| new_step(s, due)).collect(),
    }
}

pub fn new_step(step_id: &str, due_at: DateTime<Utc>) -> NewStep {
    NewStep {
        id: Uuid::now_v7(),
        step_id: step_id.to_owned(),
        due_at,
    }
}

pub fn event(run_id: Uuid, step_id: Option<&str>, kind: &str) -> NewEvent {
    NewEvent {
        run_id,
        step_id: step_id.map(str::to_owned),
        kind: kind.to_owned(),
        data: json!({ "kind": kind }),
    }
}

/// Create a run (no key) with `steps`; returns its id.
pub async fn create(store: &Arc<dyn Store>, steps: &[&str]) -> Uuid {
    let (run, created) = store.create_run(new_run(steps), Vec::new()).await.unwrap();
    assert!(created);
    run.id
}

/// The step row of `run_id` named `step_id`.
pub async fn step_named(store: &Arc<dyn Store>, run_id: Uuid, step_id: &str) -> StepRecord {
    store
        .list_steps(run_id)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.step_id == step_id)
        .unwrap_or_else(|| panic!("no step {step_id} in run {run_id}"))
}

/// An update of `step` to `status`/`phase`, guarded by the lease it holds now (if executing).
pub fn update(step: &StepRecord, status: StepStatus, phase: StepPhase) -> StepUpdate {
    StepUpdate {
        id: step.id,
        guard: step.lease_owner.as_ref().map(|owner| LeaseGuard {
            owner: owner.clone(),
            attempt: step.attempt,
        }),
        status,
        phase,
        input: None,
        output: None,
        error: None,
        runner: None,
        due_at: None,
        wait: None,
        reset_attempt: None,
    }
}
