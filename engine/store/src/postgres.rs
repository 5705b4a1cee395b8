//! The PostgreSQL backend: native `uuid`, `timestamptz`, `boolean` and `jsonb` columns.

mod runs;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::connect::{ACQUIRE_TIMEOUT, ConnectOptions, invalid_url, wait_until_reachable};
use crate::filter::FilterValue;
use crate::filter::sql::{Dialect, push_definition_where, push_page};
use crate::migration::{MIGRATIONS_TABLE, MigrationStatus, POSTGRES_MIGRATOR, migration_error};
use crate::records::{decode_size, encode_size, new_id, now};
use crate::runs::{
    AttemptRecord, ClaimedStep, EventQuery, EventRecord, NewEvent, NewRun, RunOutputs, RunQuery,
    RunRecord, RunTransaction, RunsTransaction, ScopedEvent, SignalRecord, StepRecord,
};
use crate::{
    Backend, DefinitionQuery, DefinitionRecord, DefinitionUpdate, NewDefinition, NewPlugin,
    NewToken, Page, PluginRecord, Store, StoreError, TokenRecord,
};

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

pub(crate) struct PgStore {
    pool: PgPool,
    /// Run starts waiting for their turn ([`crate::starts`]), and the turn.
    starts: Arc<crate::starts::Starts>,
    starts_turn: Arc<tokio::sync::Mutex<()>>,
}

impl PgStore {
    pub(crate) async fn connect(url: &str, opts: &ConnectOptions) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| invalid_url(url, &e))?
            .application_name("weft");

        wait_until_reachable(url, opts.connect_timeout, || async {
            PgConnection::connect_with(&options).await?.close().await
        })
        .await?;

        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(PgStore {
            pool,
            starts: Arc::default(),
            starts_turn: Arc::default(),
        })
    }

    async fn definition_by_id(&self, id: Uuid) -> Result<Option<DefinitionRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            definition_columns!(),
            " FROM workflow_definitions WHERE id = $1"
        ))
        .bind(id)
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

fn definition(row: &PgRow) -> Result<DefinitionRecord, StoreError> {
    Ok(DefinitionRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        description: row.try_get("description")?,
        is_draft: row.try_get("is_draft")?,
        is_enabled: row.try_get("is_enabled")?,
        spec: row.try_get("spec")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn token(row: &PgRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        sha256_hex: row.try_get("sha256_hex")?,
        created_at: row.try_get("created_at")?,
    })
}

fn plugin(row: &PgRow) -> Result<PluginRecord, StoreError> {
    Ok(PluginRecord {
        id: row.try_get("id")?,
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

impl Dialect for Postgres {
    // The database's default collation may order text by locale; SQLite orders byte-wise.
    const BYTEWISE: &'static str = " COLLATE \"C\"";

    fn push_value(qb: &mut QueryBuilder<Self>, value: &FilterValue) {
        match value {
            FilterValue::Bool(b) => qb.push_bind(*b),
            FilterValue::Text(s) => qb.push_bind(s.clone()),
            FilterValue::Uuid(id) => qb.push_bind(*id),
            FilterValue::Time(t) => qb.push_bind(*t),
            FilterValue::Null | FilterValue::List(_) => qb.push("NULL"),
        };
    }

    fn push_contains(qb: &mut QueryBuilder<Self>, column: &'static str, needle: &str) {
        // strpos() takes the needle as plain text: no LIKE wildcards to escape.
        qb.push("strpos(lower(")
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
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
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
        POSTGRES_MIGRATOR
            .run(&self.pool)
            .await
            .map_err(migration_error)
    }

    async fn migration_status(&self) -> Result<MigrationStatus, StoreError> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(MIGRATIONS_TABLE)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        let applied = if exists {
            sqlx::query_scalar(
                "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?
        } else {
            Vec::new()
        };
        Ok(MigrationStatus::new(&POSTGRES_MIGRATOR, applied))
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn insert_definition(&self, new: NewDefinition) -> Result<DefinitionRecord, StoreError> {
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
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(record.id)
        .bind(&record.name)
        .bind(&record.version)
        .bind(&record.description)
        .bind(record.is_draft)
        .bind(record.is_enabled)
        .bind(&record.spec)
        .bind(record.created_at)
        .bind(record.updated_at)
        .execute(&self.pool)
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
        let mut select = QueryBuilder::<Postgres>::new(concat!(
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
                    QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM workflow_definitions");
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
            " FROM workflow_definitions WHERE name = $1 ORDER BY created_at, id"
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
        let row = sqlx::query(concat!(
            "UPDATE workflow_definitions",
            " SET name = $1, version = $2, description = $3, spec = $4, updated_at = $5",
            " WHERE id = $6 AND is_draft RETURNING ",
            definition_columns!()
        ))
        .bind(&update.name)
        .bind(&update.version)
        .bind(&update.description)
        .bind(&update.spec)
        .bind(now())
        .bind(id)
        .fetch_optional(&self.pool)
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
        let row = sqlx::query(concat!(
            "UPDATE workflow_definitions SET is_draft = FALSE, updated_at = $1",
            " WHERE id = $2 AND is_draft RETURNING ",
            definition_columns!()
        ))
        .bind(now())
        .bind(id)
        .fetch_optional(&self.pool)
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
        let row = sqlx::query(concat!(
            "UPDATE workflow_definitions SET is_enabled = $1, updated_at = $2",
            " WHERE id = $3 RETURNING ",
            definition_columns!()
        ))
        .bind(enabled)
        .bind(now())
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.as_ref()
            .map(definition)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    async fn delete_definition(&self, id: Uuid) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM workflow_definitions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn insert_token(&self, new: NewToken) -> Result<TokenRecord, StoreError> {
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
            ") VALUES ($1, $2, $3, $4, $5)"
        ))
        .bind(record.id)
        .bind(&record.name)
        .bind(&record.role)
        .bind(&record.sha256_hex)
        .bind(record.created_at)
        .execute(&self.pool)
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
            " FROM api_tokens WHERE sha256_hex = $1"
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
        let done = sqlx::query("DELETE FROM api_tokens WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    // Concurrency (READ COMMITTED): whoever adds or drops a reference to a blob first locks the
    // blob's row, and always before any `plugins` row, so that "is this blob still used?" is
    // asked only once the other writers of that blob have committed (each statement sees the
    // commits made before it), and two such operations cannot deadlock.

    async fn insert_plugin(&self, new: NewPlugin) -> Result<PluginRecord, StoreError> {
        let (record, wasm) = new.into_record();
        let size = encode_size(record.wasm_size)?;
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        // Insert the blob, or lock the existing one (a no-op update) so that a concurrent
        // delete_plugin cannot remove it before this version references it. If such a delete
        // removes it first, PostgreSQL waits for it, then inserts the blob afresh.
        sqlx::query(
            "INSERT INTO plugin_blobs (sha256_hex, wasm, size, created_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sha256_hex) DO UPDATE SET size = plugin_blobs.size",
        )
        .bind(&record.sha256_hex)
        .bind(&wasm)
        .bind(size)
        .bind(record.created_at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        sqlx::query(concat!(
            "INSERT INTO plugins (",
            plugin_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(record.id)
        .bind(&record.name)
        .bind(&record.version)
        .bind(&record.sha256_hex)
        .bind(size)
        .bind(&record.description)
        .bind(&record.input_schema)
        .bind(&record.output_schema)
        .bind(&record.limits)
        .bind(record.created_at)
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
            " FROM plugins WHERE name = $1 AND version = $2"
        ))
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(plugin).transpose()
    }

    async fn list_plugins(&self) -> Result<Vec<PluginRecord>, StoreError> {
        // Byte-wise name order, as SQLite's.
        let rows = sqlx::query(concat!(
            "SELECT ",
            plugin_columns!(),
            " FROM plugins ORDER BY name COLLATE \"C\", created_at, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(plugin).collect()
    }

    async fn plugin_wasm(&self, sha256_hex: &str) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar("SELECT wasm FROM plugin_blobs WHERE sha256_hex = $1")
            .bind(sha256_hex)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)
    }

    async fn delete_plugin(&self, name: &str, version: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        let found: Option<(Uuid, String)> =
            sqlx::query_as("SELECT id, sha256_hex FROM plugins WHERE name = $1 AND version = $2")
                .bind(name)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
        let Some((id, sha256_hex)) = found else {
            return Err(StoreError::NotFound);
        };
        // The blob first (see above); it exists while this version references it.
        sqlx::query("SELECT 1 FROM plugin_blobs WHERE sha256_hex = $1 FOR UPDATE")
            .bind(&sha256_hex)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        let done = sqlx::query("DELETE FROM plugins WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        if done.rows_affected() == 0 {
            // Deleted by someone else in the meantime.
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "DELETE FROM plugin_blobs WHERE sha256_hex = $1 \
             AND NOT EXISTS (SELECT 1 FROM plugins WHERE sha256_hex = $1)",
        )
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
}
