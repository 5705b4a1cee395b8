//! Opening a store from a URL: pick the backend, wait (bounded) for the database to answer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::database_url::{redact_url, scrub};
use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::{Backend, Store, StoreError};

/// How long a statement waits for a free pooled connection once the store is open.
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How to open a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Pool size (at least 1; an in-memory SQLite database always uses 1). A SQLite file has
    /// one more connection, for writes.
    pub max_connections: u32,
    /// Total time [`connect`] waits for an unreachable database, retrying with exponential
    /// backoff, before giving up with [`StoreError::Unavailable`].
    pub connect_timeout: Duration,
}

impl Default for ConnectOptions {
    /// 10 connections, 30 s to connect.
    fn default() -> Self {
        ConnectOptions {
            max_connections: 10,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// Connect by URL: `sqlite://path/to/file.db` (the file and its directory are created if
/// missing), `sqlite::memory:`, or `postgres://...` / `postgresql://...`. Does NOT migrate.
///
/// Waits up to `opts.connect_timeout` for the database to answer (retrying what may be
/// transient: refused or reset connections, a server starting up); a refusal that retrying
/// cannot fix (bad password, unknown database) fails at once. Errors are
/// [`StoreError::InvalidUrl`] or [`StoreError::Unavailable`], their messages redacted.
pub async fn connect(url: &str, opts: &ConnectOptions) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> = match Backend::from_url(url)? {
        Backend::Sqlite => Arc::new(SqliteStore::connect(url, opts).await?),
        Backend::Postgres => Arc::new(PgStore::connect(url, opts).await?),
    };
    tracing::debug!(url = %redact_url(url), "connected to the database");
    Ok(store)
}

/// A driver's error about `url`, with the URL's password scrubbed from its message.
pub(crate) fn invalid_url(url: &str, error: &sqlx::Error) -> StoreError {
    StoreError::InvalidUrl(format!(
        "{}: {}",
        redact_url(url),
        scrub(&error.to_string(), url)
    ))
}

/// Run `attempt` (open and close one connection) until it succeeds, it fails in a way retrying
/// cannot fix, or `budget` is spent. Backoff doubles from 100 ms up to 5 s.
pub(crate) async fn wait_until_reachable<F, Fut>(
    url: &str,
    budget: Duration,
    mut attempt: F,
) -> Result<(), StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), sqlx::Error>>,
{
    let deadline = Instant::now() + budget;
    let mut backoff = FIRST_BACKOFF;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let error = match tokio::time::timeout(remaining, attempt()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) if !is_transient(&error) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot connect to {}: {}",
                    redact_url(url),
                    scrub(&error.to_string(), url)
                )));
            }
            Ok(Err(error)) => scrub(&error.to_string(), url),
            Err(_) => "timed out".to_owned(),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(StoreError::Unavailable(format!(
                "cannot connect to {} (gave up after {:?}, {tries} attempt(s)): {error}",
                redact_url(url),
                budget
            )));
        }
        tracing::warn!(url = %redact_url(url), %error, retry_in = ?backoff.min(remaining),
            "database not reachable yet");
        tokio::time::sleep(backoff.min(remaining)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Whether a failed connection attempt may succeed later.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => db.is_transient_in_connect_phase(),
        _ => false,
    }
}
