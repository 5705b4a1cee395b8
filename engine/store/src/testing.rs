//! Throw-away databases for tests, of either backend (used by this crate's tests and others').
//!
//! PostgreSQL: the server at `WEFT_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each [`fresh_database`] creates a database named
//! `weft_t_<unix seconds>_<random hex>` and [`TestDatabase`]'s drop removes it. Databases left
//! behind by killed test runs are removed by a later run once they are 3 hours old. An
//! unreachable server is an error, so tests fail rather than skip.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tempfile::TempDir;
use uuid::Uuid;

use crate::{Backend, StoreError, redact_url};

/// The variable naming the PostgreSQL server tests use.
pub const POSTGRES_URL_VAR: &str = "WEFT_TEST_POSTGRES_URL";
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

const NAME_PREFIX: &str = "weft_t_";
const STALE_AFTER: Duration = Duration::from_secs(3 * 60 * 60);
const ADMIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An empty database (not migrated) that lives as long as this value.
#[derive(Debug)]
pub struct TestDatabase {
    /// Connect to it with [`crate::connect`].
    pub url: String,
    pub backend: Backend,
    place: Place,
}

#[derive(Debug)]
enum Place {
    /// The directory holding the file; removed on drop.
    Sqlite(#[allow(dead_code)] TempDir),
    /// The database, dropped on drop through the server at `admin_url`.
    Postgres { admin_url: String, name: String },
}

/// A new, empty database of `backend`.
pub async fn fresh_database(backend: Backend) -> Result<TestDatabase, StoreError> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::Builder::new()
                .prefix("weft-test-")
                .tempdir()
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot create a temporary directory: {e}"))
                })?;
            let url = format!("sqlite://{}", dir.path().join("weft.db").display());
            Ok(TestDatabase {
                url,
                backend,
                place: Place::Sqlite(dir),
            })
        }
        Backend::Postgres => fresh_postgres().await,
    }
}

async fn fresh_postgres() -> Result<TestDatabase, StoreError> {
    let admin_url =
        std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    let mut admin = admin_connection(&admin_url).await?;

    static SWEPT: AtomicBool = AtomicBool::new(false);
    if !SWEPT.swap(true, Ordering::SeqCst) {
        drop_stale_databases(&mut admin).await;
    }

    let seconds = unix_seconds();
    let random = Uuid::new_v4().simple().to_string();
    let name = format!("{NAME_PREFIX}{seconds}_{}", &random[..12]);
    // The name is ours (digits, hex, '_'): safe to put in the statement.
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create test database {name} on {}: {e}",
                redact_url(&admin_url)
            ))
        })?;
    let _ = admin.close().await;

    let url = with_database(&admin_url, &name);
    Ok(TestDatabase {
        url,
        backend: Backend::Postgres,
        place: Place::Postgres { admin_url, name },
    })
}

async fn admin_connection(admin_url: &str) -> Result<PgConnection, StoreError> {
    let unreachable = |why: String| {
        StoreError::Unavailable(format!(
            "PostgreSQL for tests is not reachable at {} (set {POSTGRES_URL_VAR} to another \
             server): {why}",
            redact_url(admin_url)
        ))
    };
    match tokio::time::timeout(ADMIN_CONNECT_TIMEOUT, PgConnection::connect(admin_url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(unreachable(crate::database_url::scrub(
            &e.to_string(),
            admin_url,
        ))),
        Err(_) => Err(unreachable(format!(
            "no answer within {ADMIN_CONNECT_TIMEOUT:?}"
        ))),
    }
}

/// Best effort: drop `weft_t_*` databases older than [`STALE_AFTER`].
async fn drop_stale_databases(admin: &mut PgConnection) {
    let names: Vec<String> =
        match sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
            .bind(NAME_PREFIX)
            .fetch_all(&mut *admin)
            .await
        {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list old test databases");
                return;
            }
        };
    let cutoff = unix_seconds().saturating_sub(STALE_AFTER.as_secs());
    for name in names {
        let Some(created) = created_at(&name) else {
            continue;
        };
        if created < cutoff
            && let Err(e) = drop_database(admin, &name).await
        {
            tracing::warn!(database = %name, error = %e, "cannot drop old test database");
        }
    }
}

/// The creation time in a test database's name, if it is one of ours.
fn created_at(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (seconds, random) = rest.split_once('_')?;
    let ours = !seconds.is_empty()
        && seconds.bytes().all(|b| b.is_ascii_digit())
        && !random.is_empty()
        && random.bytes().all(|b| b.is_ascii_hexdigit());
    if ours { seconds.parse().ok() } else { None }
}

async fn drop_database(admin: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    // Only names that `created_at` recognises (digits, hex, '_') reach this.
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(admin)
    .await
    .map(drop)
}

/// `admin_url` with its database replaced by `name`.
fn with_database(admin_url: &str, name: &str) -> String {
    let (head, query) = match admin_url.split_once('?') {
        Some((head, query)) => (head, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let base = match head[authority_start..].find('/') {
        Some(slash) => &head[..authority_start + slash],
        None => head,
    };
    format!("{base}/{name}{query}")
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TestDatabase {
    /// Drop a PostgreSQL test database now, terminating its connections (to test how a server
    /// behaves when its database goes away). A no-op for SQLite.
    pub async fn drop_now(&self) -> Result<(), StoreError> {
        let Place::Postgres { admin_url, name } = &self.place else {
            return Ok(());
        };
        if created_at(name).is_none() {
            return Ok(());
        }
        let mut admin = admin_connection(admin_url).await?;
        drop_database(&mut admin, name).await?;
        Ok(())
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Place::Postgres { admin_url, name } = &self.place else {
            return;
        };
        if created_at(name).is_none() {
            return;
        }
        // Drop runs in synchronous code, possibly inside a runtime: use a thread of our own.
        let (admin_url, name) = (admin_url.clone(), name.clone());
        let dropper = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot drop test database {name}");
                    return;
                }
            };
            runtime.block_on(async {
                let result = match admin_connection(&admin_url).await {
                    Ok(mut admin) => drop_database(&mut admin, &name)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "cannot drop test database {name}");
                }
            });
        });
        let _ = dropper.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            created_at("weft_t_1700000000_0123456789ab"),
            Some(1_700_000_000)
        );
        assert_eq!(created_at("weft_t_1700000000_xyz"), None);
        assert_eq!(created_at("weft_t_17\"; DROP_ab"), None);
        assert_eq!(created_at("test"), None);
    }

    #[test]
    fn database_in_url_is_replaced() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/test?sslmode=disable", "n"),
            "postgres://u:p@h:5432/n?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "n"), "postgres://h/n");
    }
}
