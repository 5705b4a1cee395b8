//! The per-test database and the macro that runs one test body on both backends.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use weft_store::testing::{TestDatabase, fresh_database};
use weft_store::{Backend, ConnectOptions, DefinitionRecord, NewDefinition, Store, connect};

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
/// left empty.
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
