//! The SQLite backend: one file (or memory), WAL journal, a small pool.
//!
//! Column encodings (see `migrations/sqlite/0001_init.sql`): ids are hyphenated TEXT,
//! timestamps fixed-width UTC TEXT (so that text order is time order), booleans 0/1, JSON TEXT.

mod runs;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection};
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;
use uuid::fmt::Hyphenated;

use crate::connect::{ACQUIRE_TIMEOUT, ConnectOptions, invalid_url, wait_until_reachable};
use crate::filter::FilterValue;
use crate::filter::sql::{Dialect, push_definition_where, push_page};
use crate::migration::{MIGRATIONS_TABLE, MigrationStatus, SQLITE_MIGRATOR, migration_error};
use crate::records::{decode_size, encode_size, new_id, now};
use crate::runs::{
    AttemptRecord, ClaimedStep, EventQuery, EventRecord, NewEvent, NewRun, RunOutputs, RunQuery,
    RunRecord, RunTransaction, RunsTransaction, ScopedEvent, SignalRecord, StepRecord,
};
use crate::{
    Backend, DefinitionQuery, DefinitionRecord, DefinitionUpdate, NewDefinition, NewPlugin,
    NewToken, Page, PluginRecord, Store, StoreError, TokenRecord,
};

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Write-ahead-log pages after which a commit checkpoints by itself (SQLite's default is 1,000;
/// [`Store::maintain`] normally checkpoints long before).
const WAL_BACKSTOP_PAGES: u32 = 16_384;
/// Log pages past which [`Store::maintain`] holds writers back for the end of its checkpoint, so
/// that the log starts over.
const WAL_RESTART_PAGES: i64 = 4_096;
/// Bytes the log file is cut back to when it starts over.
const WAL_FILE_LIMIT: u64 = 16 << 20;

macro_rules! definition_columns {
    () => {
        "id, name, version, description, is_draft, is_enabled, spec, created_at, updated_at"
    };
}

macro_rules! token_columns {
    () => {
        "id, name, role, sha256_hex, created_at"
    };
}

macro_rules! plugin_columns {
    () => {
        "id, name, version, sha256_hex, wasm_size, description, input_schema, output_schema, \
         limits, created_at"
    };
}

pub(crate) struct SqliteStore {
    /// Reads.
    pool: SqlitePool,
    /// Writes: one connection (the in-memory database's only one, shared with `pool`). A WAL
    /// connection drops its whole page cache when it finds that another connection wrote since
    /// its last transaction; one connection for every write keeps its cache from one write to
    /// the next.
    writes: SqlitePool,
    /// This process's writers take turns here (first come, first served) before they write:
    /// SQLite admits one writer at a time, and writers that meet in its busy handler sleep
    /// (1 ms, 2 ms, ... 100 ms) instead of queueing.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Run starts waiting for the write turn: the one that gets it writes them all
    /// ([`SqliteStore::create_run_impl`]).
    starts: Arc<crate::starts::Starts>,
}

impl SqliteStore {
    pub(crate) async fn connect(url: &str, opts: &ConnectOptions) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| invalid_url(url, &e))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // Checkpoints run in `maintain`, on a reading connection: a commit that has to
            // checkpoint (copy the log back and sync the file) stalls every writer behind it.
            // This is only the backstop if `maintain` does not run or falls behind.
            .pragma("wal_autocheckpoint", WAL_BACKSTOP_PAGES.to_string())
            .pragma("journal_size_limit", WAL_FILE_LIMIT.to_string());
        let in_memory = is_in_memory(url);
        if !in_memory
            && let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(dir).await.map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot create the database directory {}: {e}",
                    dir.display()
                ))
            })?;
        }

        wait_until_reachable(url, opts.connect_timeout, || async {
            SqliteConnection::connect_with(&options)
                .await?
                .close()
                .await
        })
        .await?;

        // A local file: no connection goes stale, so no ping before each use (a round trip to
        // the connection's thread).
        let pool_options = || {
            SqlitePoolOptions::new()
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .test_before_acquire(false)
        };
        // Connections that live as long as the store: a writer's page cache is worth keeping.
        let lasting = |options: SqlitePoolOptions| {
            options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        };
        let (pool, writes) = if in_memory {
            // The database lives as long as one connection to it: keep exactly one, forever.
            let pool = lasting(pool_options()).connect_lazy_with(options);
            (pool.clone(), pool)
        } else {
            (
                pool_options()
                    .max_connections(opts.max_connections.max(1))
                    .connect_lazy_with(options.clone()),
                lasting(pool_options()).connect_lazy_with(options),
            )
        };
        Ok(SqliteStore {
            pool,
            writes,
            writer: Arc::new(tokio::sync::Mutex::new(())),
            starts: Arc::default(),
        })
    }

    /// Wait for this process's turn to write (see [`SqliteStore::writer`]). Take it before a
    /// connection, never while holding one: a read holding a connection never waits for it.
    async fn write_turn(&self) -> OwnedMutexGuard<()> {
        self.writer.clone().lock_owned().await
    }

    async fn definition_by_id(&self, id: Uuid) -> Result<Option<DefinitionRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            definition_columns!(),
            " FROM workflow_definitions WHERE id = ?"
        ))
        .bind(id.hyphenated())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(definition).transpose()
    }

    /// After an UPDATE that matched no draft: was the row missing, or published?
    async fn not_draft_or_not_found(&self, id: Uuid) -> StoreError {
        match self.definition_by_id(id).await {
            Ok(Some(_)) => StoreError::NotDraft,
            Ok(None) => StoreError::NotFound,
            Err(e) => e,
        }
    }
}

/// `sqlite::memory:`, or `mode=memory` among the parameters.
fn is_in_memory(url: &str) -> bool {
    let rest = url
        .get("sqlite:".len()..)
        .unwrap_or_default()
        .trim_start_matches("//");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

/// The one text form of a time in SQLite: fixed width, so text order is time order.
fn encode_time(time: &DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn definition(row: &SqliteRow) -> Result<DefinitionRecord, StoreError> {
    let record = DefinitionRecord {
        id: row.try_get::<Hyphenated, _>("id")?.into_uuid(),
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        description: row.try_get("description")?,
        is_draft: row.try_get("is_draft")?,
        is_enabled: row.try_get("is_enabled")?,
        spec: row.try_get("spec")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    };
    Ok(record)
}

fn token(row: &SqliteRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: row.try_get::<Hyphenated, _>("id")?.into_uuid(),
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        sha256_hex: row.try_get("sha256_hex")?,
        created_at: row.try_get("created_at")?,
    })
}

fn plugin(row: &SqliteRow) -> Result<PluginRecord, StoreError> {
    Ok(PluginRecord {
        id: row.try_get::<Hyphenated, _>("id")?.into_uuid(),
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        sha256_hex: row.try_get("sha256_hex")?,
        wasm_size: decode_size(row.try_get("wasm_size")?)?,
        description: row.try_get("description")?,
        input_schema: row.try_get("input_schema")?,
        output_schema: row.try_get("output_schema")?,
        limits: row.try_get("limits")?,
        created_at: row.try_get("created_at")?,
    })
}

fn plugin_conflict(name: &str, version: &str) -> impl FnOnce(&str) -> String {
    move |_| format!("a plugin named {name:?} with version {version:?} exists")
}

fn definition_conflict(name: &str, version: &str) -> impl FnOnce(&str) -> String {
    move |_| format!("a workflow definition named {name:?} with version {version:?} exists")
}

fn token_conflict(name: &str) -> impl FnOnce(&str) -> String {
    move |constraint| {
        if constraint.contains("sha256") {
            "a token with the same hash exists".to_owned()
        } else {
            format!("a token named {name:?} exists")
        }
    }
}

impl Dialect for Sqlite {
    const BYTEWISE: &'static str = "";

    fn push_value(qb: &mut QueryBuilder<Self>, value: &FilterValue) {
        match value {
            FilterValue::Bool(b) => qb.push_bind(*b),
            FilterValue::Text(s) => qb.push_bind(s.clone()),
            FilterValue::Uuid(id) => qb.push_bind(id.hyphenated()),
            FilterValue::Time(t) => qb.push_bind(encode_time(t)),
            FilterValue::Null | FilterValue::List(_) => qb.push("NULL"),
        };
    }

    fn push_contains(qb: &mut QueryBuilder<Self>, column: &'static str, needle: &str) {
        // instr() takes the needle as plain text: no LIKE wildcards to escape.
        qb.push("instr(lower(")
            .push(column)
            .push("), lower(")
            .push_bind(needle.to_owned())
            .push(")) > 0");
    }

    fn push_i64(qb: &mut QueryBuilder<Self>, n: i64) {
        qb.push_bind(n);
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(|e| match StoreError::from_sqlx(e) {
                StoreError::Database(e) => StoreError::Unavailable(e.to_string()),
                other => other,
            })
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        SQLITE_MIGRATOR
            .run(&self.writes)
            .await
            .map_err(migration_error)
    }

    async fn migration_status(&self) -> Result<MigrationStatus, StoreError> {
        let exists: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
        )
        .bind(MIGRATIONS_TABLE)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        let applied = if exists > 0 {
            sqlx::query_scalar(
                "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?
        } else {
            Vec::new()
        };
        Ok(MigrationStatus::new(&SQLITE_MIGRATOR, applied))
    }

    async fn close(&self) {
        self.pool.close().await;
        self.writes.close().await;
    }

    async fn insert_definition(&self, new: NewDefinition) -> Result<DefinitionRecord, StoreError> {
        let _turn = self.write_turn().await;
        let at = now();
        let record = DefinitionRecord {
            id: new_id(),
            name: new.name,
            version: new.version,
            description: new.description,
            is_draft: new.is_draft,
            is_enabled: new.is_enabled,
            spec: new.spec,
            created_at: at,
            updated_at: at,
        };
        sqlx::query(concat!(
            "INSERT INTO workflow_definitions (",
            definition_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(record.id.hyphenated())
        .bind(&record.name)
        .bind(&record.version)
        .bind(&record.description)
        .bind(record.is_draft)
        .bind(record.is_enabled)
        .bind(&record.spec)
        .bind(encode_time(&record.created_at))
        .bind(encode_time(&record.updated_at))
        .execute(&self.writes)
        .await
        .map_err(|e| {
            StoreError::from_sqlx_unique(e, definition_conflict(&record.name, &record.version))
        })?;
        Ok(record)
    }

    async fn get_definition(&self, id: Uuid) -> Result<Option<DefinitionRecord>, StoreError> {
        self.definition_by_id(id).await
    }

    async fn list_definitions(
        &self,
        q: &DefinitionQuery,
    ) -> Result<Page<DefinitionRecord>, StoreError> {
        if let Some(filter) = &q.filter {
            filter.validate()?;
        }
        let mut select = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            definition_columns!(),
            ", COUNT(*) OVER () AS total FROM workflow_definitions"
        ));
        push_definition_where(&mut select, q);
        select.push(" ORDER BY created_at, id");
        push_page(&mut select, q);
        let rows = select
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;

        let total: i64 = match rows.first() {
            Some(row) => row.try_get("total")?,
            // An empty page says nothing of the total unless it is the first page.
            None if q.offset == 0 && q.limit > 0 => 0,
            None => {
                let mut count =
                    QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM workflow_definitions");
                push_definition_where(&mut count, q);
                count
                    .build_query_scalar()
                    .fetch_one(&self.pool)
                    .await
                    .map_err(StoreError::from_sqlx)?
            }
        };
        Ok(Page {
            items: rows.iter().map(definition).collect::<Result<_, _>>()?,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    async fn list_versions(&self, name: &str) -> Result<Vec<DefinitionRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            definition_columns!(),
            " FROM workflow_definitions WHERE name = ? ORDER BY created_at, id"
        ))
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(definition).collect()
    }

    async fn update_draft(
        &self,
        id: Uuid,
        update: DefinitionUpdate,
    ) -> Result<DefinitionRecord, StoreError> {
        let _turn = self.write_turn().await;
        let row = sqlx::query(concat!(
            "UPDATE workflow_definitions",
            " SET name = ?, version = ?, description = ?, spec = ?, updated_at = ?",
            " WHERE id = ? AND is_draft = 1 RETURNING ",
            definition_columns!()
        ))
        .bind(&update.name)
        .bind(&update.version)
        .bind(&update.description)
        .bind(&update.spec)
        .bind(encode_time(&now()))
        .bind(id.hyphenated())
        .fetch_optional(&self.writes)
        .await
        .map_err(|e| {
            StoreError::from_sqlx_unique(e, definition_conflict(&update.name, &update.version))
        })?;
        match row {
            Some(row) => definition(&row),
            None => Err(self.not_draft_or_not_found(id).await),
        }
    }

    async fn publish_definition(&self, id: Uuid) -> Result<DefinitionRecord, StoreError> {
        let _turn = self.write_turn().await;
        let row = sqlx::query(concat!(
            "UPDATE workflow_definitions SET is_draft = 0, updated_at = ?",
            " WHERE id = ? AND is_draft = 1 RETURNING ",
            definition_columns!()
        ))
        .bind(encode_time(&now()))
        .bind(id.hyphenated())
        .fetch_optional(&self.writes)
        .await
        .map_err(StoreError::from_sqlx)?;
        match row {
            Some(row) => definition(&row),
            None => Err(self.not_draft_or_not_found(id).await),
        }
    }

    async fn set_definition_enabled(
        &self,
        id: Uuid,
        enabled: bool,
    ) -> Result<DefinitionRecord, StoreError> {
        let _turn = self.write_turn().await;
        let row = sqlx::query(concat!(
            "UPDATE workflow_definitions SET is_enabled = ?, updated_at = ?",
            " WHERE id = ? RETURNING ",
            definition_columns!()
        ))
        .bind(enabled)
        .bind(encode_time(&now()))
        .bind(id.hyphenated())
        .fetch_optional(&self.writes)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.as_ref()
            .map(definition)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    async fn delete_definition(&self, id: Uuid) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("DELETE FROM workflow_definitions WHERE id = ?")
            .bind(id.hyphenated())
            .execute(&self.writes)
            .await
            .map_err(StoreError::from_sqlx)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn insert_token(&self, new: NewToken) -> Result<TokenRecord, StoreError> {
        let _turn = self.write_turn().await;
        let record = TokenRecord {
            id: new_id(),
            name: new.name,
            role: new.role,
            sha256_hex: new.sha256_hex,
            created_at: now(),
        };
        sqlx::query(concat!(
            "INSERT INTO api_tokens (",
            token_columns!(),
            ") VALUES (?, ?, ?, ?, ?)"
        ))
        .bind(record.id.hyphenated())
        .bind(&record.name)
        .bind(&record.role)
        .bind(&record.sha256_hex)
        .bind(encode_time(&record.created_at))
        .execute(&self.writes)
        .await
        .map_err(|e| StoreError::from_sqlx_unique(e, token_conflict(&record.name)))?;
        Ok(record)
    }

    async fn find_token_by_hash(
        &self,
        sha256_hex: &str,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE sha256_hex = ?"
        ))
        .bind(sha256_hex)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(token).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(token).collect()
    }

    async fn delete_token(&self, id: Uuid) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("DELETE FROM api_tokens WHERE id = ?")
            .bind(id.hyphenated())
            .execute(&self.writes)
            .await
            .map_err(StoreError::from_sqlx)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn insert_plugin(&self, new: NewPlugin) -> Result<PluginRecord, StoreError> {
        let _turn = self.write_turn().await;
        let (record, wasm) = new.into_record();
        let size = encode_size(record.wasm_size)?;
        // Both statements write, so the transaction holds SQLite's write lock from its first
        // statement: no other writer can slip in between.
        let mut tx = self.writes.begin().await.map_err(StoreError::from_sqlx)?;
        sqlx::query(
            "INSERT INTO plugin_blobs (sha256_hex, wasm, size, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (sha256_hex) DO NOTHING",
        )
        .bind(&record.sha256_hex)
        .bind(&wasm)
        .bind(size)
        .bind(encode_time(&record.created_at))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        sqlx::query(concat!(
            "INSERT INTO plugins (",
            plugin_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(record.id.hyphenated())
        .bind(&record.name)
        .bind(&record.version)
        .bind(&record.sha256_hex)
        .bind(size)
        .bind(&record.description)
        .bind(&record.input_schema)
        .bind(&record.output_schema)
        .bind(&record.limits)
        .bind(encode_time(&record.created_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            StoreError::from_sqlx_unique(e, plugin_conflict(&record.name, &record.version))
        })?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(record)
    }

    async fn get_plugin(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<PluginRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            plugin_columns!(),
            " FROM plugins WHERE name = ? AND version = ?"
        ))
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(plugin).transpose()
    }

    async fn list_plugins(&self) -> Result<Vec<PluginRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            plugin_columns!(),
            " FROM plugins ORDER BY name, created_at, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(plugin).collect()
    }

    async fn plugin_wasm(&self, sha256_hex: &str) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar("SELECT wasm FROM plugin_blobs WHERE sha256_hex = ?")
            .bind(sha256_hex)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)
    }

    async fn delete_plugin(&self, name: &str, version: &str) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        // Writes first, so the transaction holds SQLite's write lock throughout and the
        // "unreferenced?" check below cannot race another insert.
        let mut tx = self.writes.begin().await.map_err(StoreError::from_sqlx)?;
        let sha256_hex: Option<String> = sqlx::query_scalar(
            "DELETE FROM plugins WHERE name = ? AND version = ? RETURNING sha256_hex",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        let Some(sha256_hex) = sha256_hex else {
            return Err(StoreError::NotFound);
        };
        sqlx::query(
            "DELETE FROM plugin_blobs WHERE sha256_hex = ? \
             AND NOT EXISTS (SELECT 1 FROM plugins WHERE sha256_hex = ?)",
        )
        .bind(&sha256_hex)
        .bind(&sha256_hex)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        tx.commit().await.map_err(StoreError::from_sqlx)
    }

    async fn create_run(
        &self,
        run: NewRun,
        events: Vec<NewEvent>,
    ) -> Result<(RunRecord, bool), StoreError> {
        self.create_run_impl(run, events).await
    }

    async fn get_run(&self, id: Uuid) -> Result<Option<RunRecord>, StoreError> {
        self.get_run_impl(id).await
    }

    async fn list_runs(&self, q: &RunQuery) -> Result<Page<RunRecord>, StoreError> {
        self.list_runs_impl(q).await
    }

    async fn list_steps(&self, run_id: Uuid) -> Result<Vec<StepRecord>, StoreError> {
        self.list_steps_impl(run_id).await
    }

    async fn runs_with_outputs(&self, run_ids: &[Uuid]) -> Result<Vec<RunOutputs>, StoreError> {
        self.runs_with_outputs_impl(run_ids).await
    }

    async fn get_step(&self, id: Uuid) -> Result<Option<StepRecord>, StoreError> {
        self.get_step_impl(id).await
    }

    async fn list_attempts(&self, run_id: Uuid) -> Result<Vec<AttemptRecord>, StoreError> {
        self.list_attempts_impl(run_id).await
    }

    async fn claim_steps(
        &self,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedStep>, StoreError> {
        self.claim_steps_impl(owner, lease, limit).await
    }

    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[Uuid],
        lease: Duration,
    ) -> Result<Vec<Uuid>, StoreError> {
        self.renew_leases_impl(owner, ids, lease).await
    }

    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        self.release_leases_impl(owner).await
    }

    async fn reset_executing(&self) -> Result<u64, StoreError> {
        self.reset_executing_impl().await
    }

    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.next_due_at_impl().await
    }

    async fn queue_stats(&self) -> Result<crate::QueueStats, StoreError> {
        self.queue_stats_impl().await
    }

    async fn begin_run(&self, run_id: Uuid) -> Result<Box<dyn RunTransaction>, StoreError> {
        self.begin_run_impl(run_id).await
    }

    async fn begin_runs(&self, run_ids: &[Uuid]) -> Result<Box<dyn RunsTransaction>, StoreError> {
        self.begin_runs_impl(run_ids).await
    }

    async fn post_signal(
        &self,
        run_id: Uuid,
        name: &str,
        payload: Value,
    ) -> Result<SignalRecord, StoreError> {
        self.post_signal_impl(run_id, name, payload).await
    }

    async fn list_events(
        &self,
        after_seq: i64,
        run_id: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.list_events_impl(after_seq, run_id, limit).await
    }

    async fn stream_events(&self, q: &EventQuery) -> Result<Vec<ScopedEvent>, StoreError> {
        self.stream_events_impl(q).await
    }

    async fn admit_runs(
        &self,
        definition_id: Uuid,
        cap: Option<u32>,
        entry_step_id: &str,
        timeout: Option<std::time::Duration>,
    ) -> Result<Vec<Uuid>, StoreError> {
        self.admit_runs_impl(definition_id, cap, entry_step_id, timeout)
            .await
    }

    async fn held_run_definitions(&self) -> Result<Vec<Uuid>, StoreError> {
        self.held_run_definitions_impl().await
    }

    async fn last_event_seq(&self) -> Result<i64, StoreError> {
        self.last_event_seq_impl().await
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        let (_, log, copied) = passive_checkpoint(&self.pool).await?;
        // Not all copied (commits went on meanwhile, or a reader held an old snapshot): under
        // steady writes the log is never found all copied, so no write starts it over and it
        // grows to the backstop. Once it is long, copy the rest (and sync) while this process's
        // writers wait their turn, on the writer's own connection (idle under the turn): then
        // the next write usually starts the log over.
        if log > WAL_RESTART_PAGES && copied < log {
            let _turn = self.write_turn().await;
            passive_checkpoint(&self.writes).await?;
        }
        Ok(())
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)` on a connection of `pool`: copies what it can of the
/// write-ahead log without waiting for anyone (writers go on appending; it stops at the oldest
/// snapshot a reader still holds). Returns (busy, pages in the log, pages copied): -1s when the
/// database has no log (in memory) or another checkpoint is running.
async fn passive_checkpoint(pool: &SqlitePool) -> Result<(i64, i64, i64), StoreError> {
    sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await
        .map_err(StoreError::from_sqlx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every SQLite `LIMIT` is an expression (`? + 0`), never a bare parameter: see the docs of
    /// `sqlite/runs.rs` (a bare one makes SQLite prepare the statement again at every use).
    #[test]
    fn no_bare_limit_parameter() {
        let bare = ["LIMIT", " ?"].concat();
        for (file, text) in [
            ("sqlite.rs", include_str!("sqlite.rs")),
            ("sqlite/runs.rs", include_str!("sqlite/runs.rs")),
            ("filter/sql.rs", include_str!("filter/sql.rs")),
        ] {
            for (at, _) in text.match_indices(&bare) {
                let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                if text[line_start..at].trim_start().starts_with("//") {
                    continue;
                }
                let rest = &text[at + bare.len()..];
                assert!(
                    rest.starts_with(" + 0"),
                    "{file}: a bare LIMIT parameter at byte {at}"
                );
            }
        }
    }

    #[test]
    fn times_encode_fixed_width_and_in_order() {
        let a = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z").unwrap();
        let b = DateTime::parse_from_rfc3339("2024-01-01T00:00:00.5Z").unwrap();
        let (a, b) = (encode_time(&a.into()), encode_time(&b.into()));
        assert_eq!(a, "2024-01-01T00:00:00.000000Z");
        assert_eq!(b, "2024-01-01T00:00:00.500000Z");
        assert!(a < b);
    }

    #[test]
    fn in_memory_urls() {
        assert!(is_in_memory("sqlite::memory:"));
        assert!(is_in_memory("sqlite://:memory:"));
        assert!(is_in_memory("sqlite://x.db?mode=memory"));
        assert!(!is_in_memory("sqlite://x.db"));
    }
}
