//! Where a database stands against the migrations embedded in this binary.

use sqlx::migrate::{MigrateError, Migrator};

use crate::StoreError;

/// The migrations embedded in this binary, per backend (`migrations/<backend>/NNNN_*.sql`).
pub(crate) static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");
pub(crate) static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// The table in which sqlx records applied migrations.
pub(crate) const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Which migration versions a database has, against the ones this binary knows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrationStatus {
    /// Applied, and known to this binary; ascending.
    pub applied: Vec<i64>,
    /// Known to this binary, not applied yet; ascending.
    pub pending: Vec<i64>,
    /// Applied in the database but not known to this binary (a newer binary migrated it);
    /// ascending. [`crate::Store::migrate`] refuses such a database.
    pub unknown: Vec<i64>,
}

impl MigrationStatus {
    /// Nothing to apply and nothing unknown.
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && self.unknown.is_empty()
    }

    /// Compare the versions applied in a database with those of `migrator`.
    pub(crate) fn new(migrator: &Migrator, mut applied_in_db: Vec<i64>) -> MigrationStatus {
        applied_in_db.sort_unstable();
        applied_in_db.dedup();
        let mut known: Vec<i64> = migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| m.version)
            .collect();
        known.sort_unstable();
        known.dedup();
        let (applied, pending) = known
            .into_iter()
            .partition(|v| applied_in_db.binary_search(v).is_ok());
        let unknown = applied_in_db
            .into_iter()
            .filter(|v| !migrator.version_exists(*v))
            .collect();
        MigrationStatus {
            applied,
            pending,
            unknown,
        }
    }
}

/// A lost database stays [`StoreError::Unavailable`]; anything else is a
/// [`StoreError::Migration`].
pub(crate) fn migration_error(error: MigrateError) -> StoreError {
    match error {
        MigrateError::Execute(sqlx) => match StoreError::from_sqlx(sqlx) {
            StoreError::Database(e) => StoreError::Migration(e.to_string()),
            other => other,
        },
        other => StoreError::Migration(other.to_string()),
    }
}
