use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection;
use weft_store::{Backend, ConnectOptions, Store, StoreError, connect, redact_url};

use crate::support::{new_definition, on_both_backends, open};

on_both_backends!(unmigrated: migration_status_before_and_after, unknown_migration_is_refused);
on_both_backends!(ping_then_close);

async fn migration_status_before_and_after(store: Arc<dyn Store>, _url: String) {
    let before = store.migration_status().await.unwrap();
    assert!(before.applied.is_empty(), "{before:?}");
    assert_eq!(before.pending, [1, 2, 3]);
    assert!(before.unknown.is_empty());
    assert!(!before.is_current());
    // Reading the status changes nothing.
    assert_eq!(store.migration_status().await.unwrap(), before);

    store.migrate().await.unwrap();
    let after = store.migration_status().await.unwrap();
    assert_eq!(after.applied, [1, 2, 3]);
    assert!(after.pending.is_empty());
    assert!(after.unknown.is_empty());
    assert!(after.is_current());

    // Migrating again is a no-op.
    store.migrate().await.unwrap();
    assert_eq!(store.migration_status().await.unwrap(), after);
    store
        .insert_definition(new_definition("after-migrate", "1"))
        .await
        .unwrap();
}

/// A database migrated by a newer binary: its extra migration is reported, and `migrate`
/// refuses to touch it.
async fn unknown_migration_is_refused(store: Arc<dyn Store>, url: String) {
    store.migrate().await.unwrap();
    let insert = "INSERT INTO _sqlx_migrations \
         (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, $1, 0)";
    match store.backend() {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(insert)
                .bind(vec![0u8; 4])
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(insert)
                .bind(vec![0u8; 4])
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
    }
    let status = store.migration_status().await.unwrap();
    assert_eq!(status.applied, [1, 2, 3]);
    assert_eq!(status.unknown, [9999]);
    assert!(!status.is_current());
    let err = store.migrate().await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Migration(m) if m.contains("9999")),
        "{err:?}"
    );
}

async fn ping_then_close(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    store.close().await;
    let err = store.ping().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn postgres_unreachable_fails_within_its_timeout_without_the_password() {
    // Nothing listens on port 1: every attempt is refused, and retried until the budget is spent.
    let url = "postgres://weft:s3cr3t-pw@127.0.0.1:1/weft";
    let opts = ConnectOptions {
        max_connections: 2,
        connect_timeout: Duration::from_millis(1500),
    };
    let started = Instant::now();
    let err = connect(url, &opts).await.err().expect("must not connect");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1400),
        "gave up early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    let message = err.to_string();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(!message.contains("s3cr3t-pw"), "{message}");
    assert!(
        message.contains("postgres://weft:***@127.0.0.1:1/weft"),
        "{message}"
    );
}

#[tokio::test]
async fn postgres_bad_password_fails_at_once() {
    // The test server trusts every user; an unknown database is refused the same way a bad
    // password would be: by the server, which retrying does not change.
    let (db, _store) = open(Backend::Postgres).await;
    let base = db.url.rsplit_once('/').unwrap().0.to_owned();
    let url = format!("{base}/weft_no_such_database?password=hunter2");
    let started = Instant::now();
    let err = connect(&url, &ConnectOptions::default())
        .await
        .err()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn sqlite_unreachable_fails_with_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let url = format!("sqlite://{}/sub/weft.db", file.display());
    let err = connect(&url, &ConnectOptions::default())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn sqlite_creates_the_file_and_its_directory_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/weft.db");
    let url = format!("sqlite://{}", path.display());
    let store = connect(&url, &ConnectOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    store
        .insert_definition(new_definition("on-disk", "1"))
        .await
        .unwrap();
    assert!(path.is_file());
    store.close().await;

    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    conn.close().await.unwrap();

    // Reopening finds the data.
    let store = connect(&url, &ConnectOptions::default()).await.unwrap();
    assert!(store.migration_status().await.unwrap().is_current());
    assert_eq!(store.list_versions("on-disk").await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test]
async fn sqlite_in_memory_keeps_its_data() {
    let store = connect("sqlite::memory:", &ConnectOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    for i in 0..3 {
        store
            .insert_definition(new_definition(&format!("m{i}"), "1"))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let page = store.list_definitions(&Default::default()).await.unwrap();
    assert_eq!(page.total, 3);
    store.close().await;
}

#[tokio::test]
async fn unsupported_url_is_invalid_and_redacted() {
    let err = connect("mysql://root:topsecret@db/weft", &ConnectOptions::default())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::InvalidUrl(_)), "{err:?}");
    assert!(!err.to_string().contains("topsecret"), "{err}");
    let err = connect(
        "postgres://u:topsecret@h:notaport/db",
        &ConnectOptions::default(),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::InvalidUrl(_)), "{err:?}");
    assert!(!err.to_string().contains("topsecret"), "{err}");
}

#[test]
fn redact_url_hides_passwords_only() {
    let cases = [
        (
            "postgres://user:secret@host:5432/db",
            "postgres://user:***@host:5432/db",
        ),
        (
            "postgresql://user:p%40ss@host/db?sslmode=require",
            "postgresql://user:***@host/db?sslmode=require",
        ),
        ("postgres://user@host/db", "postgres://user@host/db"),
        ("postgres://host/db", "postgres://host/db"),
        ("postgres://user:@host/db", "postgres://user:@host/db"),
        (
            "postgres://host/db?user=u&password=secret&sslmode=disable",
            "postgres://host/db?user=u&password=***&sslmode=disable",
        ),
        // Unencoded '@', '/' or '?' in a password: still hidden.
        ("postgres://u:p@ss@host/db", "postgres://u:***@host/db"),
        ("postgres://u:pa/ss@host/db", "postgres://u:***@host/db"),
        ("postgres://u:pa?ss@host/db", "postgres://u:***@host/db"),
        ("sqlite://data/weft.db", "sqlite://data/weft.db"),
        ("sqlite::memory:", "sqlite::memory:"),
        ("", ""),
    ];
    for (url, redacted) in cases {
        assert_eq!(redact_url(url), redacted, "{url}");
    }
}
