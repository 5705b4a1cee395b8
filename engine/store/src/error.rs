//! The store's one error type.

use crate::filter::FilterError;

/// What can go wrong in the store. No variant's message contains a database password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken; the message says which.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The definition is published; only drafts can be changed or published.
    #[error("the workflow definition is not a draft")]
    NotDraft,
    /// The database URL is malformed or of an unsupported kind (the message is redacted).
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// The database cannot be reached (connection refused, timed out, pool closed...).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// A [`crate::Filter`] built in code breaks the rules that [`crate::Filter::from_json`]
    /// enforces on user input.
    #[error("invalid filter: {0}")]
    InvalidFilter(#[from] FilterError),
    /// A guarded step update of [`crate::RunTransaction::apply`] matched no row: the lease it
    /// was made under was lost (expired and claimed again, released, or the step finished).
    /// Nothing was written.
    #[error("stale: {0}")]
    Stale(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// Sort a sqlx error from a statement: a lost database is [`StoreError::Unavailable`],
    /// the rest [`StoreError::Database`].
    pub(crate) fn from_sqlx(error: sqlx::Error) -> StoreError {
        match error {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                StoreError::Unavailable(error.to_string())
            }
            other => StoreError::Database(other),
        }
    }

    /// Like [`StoreError::from_sqlx`], but a unique violation becomes a
    /// [`StoreError::Conflict`] whose message `conflict` writes from the constraint's text.
    pub(crate) fn from_sqlx_unique(
        error: sqlx::Error,
        conflict: impl FnOnce(&str) -> String,
    ) -> StoreError {
        if let Some(db) = error.as_database_error()
            && db.is_unique_violation()
        {
            // PostgreSQL names the constraint; SQLite names the columns in its message.
            let what = db.constraint().unwrap_or_else(|| db.message());
            return StoreError::Conflict(conflict(what));
        }
        StoreError::from_sqlx(error)
    }
}
