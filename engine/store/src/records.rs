//! What goes into and comes out of the store: plain data, no behaviour.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use uuid::Uuid;

use crate::StoreError;
use crate::filter::Filter;
use crate::runs::{RunStatus, StepPhase};

/// A workflow definition to insert. The store validates nothing in it beyond uniqueness.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDefinition {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub is_draft: bool,
    pub is_enabled: bool,
    pub spec: serde_json::Value,
}

/// The new content of a draft.
#[derive(Debug, Clone, PartialEq)]
pub struct DefinitionUpdate {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub spec: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DefinitionRecord {
    pub id: Uuid,
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub is_draft: bool,
    pub is_enabled: bool,
    pub spec: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which definitions [`crate::Store::list_definitions`] returns: every condition that is set
/// must hold. Ordered by `(created_at, id)`.
#[derive(Debug, Clone, PartialEq)]
pub struct DefinitionQuery {
    /// Exact name.
    pub name: Option<String>,
    /// Case-insensitive substring of the name (free-text search; `%` and `_` are plain text).
    pub name_contains: Option<String>,
    pub enabled: Option<bool>,
    pub draft: Option<bool>,
    pub filter: Option<Filter>,
    /// Page size; 0 returns no items, only the total.
    pub limit: u32,
    pub offset: u64,
}

impl Default for DefinitionQuery {
    /// No condition, first page of 50.
    fn default() -> Self {
        DefinitionQuery {
            name: None,
            name_contains: None,
            enabled: None,
            draft: None,
            filter: None,
            limit: 50,
            offset: 0,
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// How many items match the same conditions, over all pages.
    pub total: u64,
}

/// An API token to record; only its SHA-256 is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewToken {
    pub name: String,
    pub role: String,
    pub sha256_hex: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub sha256_hex: String,
    pub created_at: DateTime<Utc>,
}

/// A Wasm step plugin version to store, with its component bytes. The store neither computes
/// nor checks `sha256_hex` (the caller hashes `wasm`), nor parses the component.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPlugin {
    pub name: String,
    pub version: String,
    /// SHA-256 of `wasm`, lowercase hex: the key of the (shared) stored bytes.
    pub sha256_hex: String,
    pub wasm: Vec<u8>,
    pub description: String,
    pub input_schema: serde_json::Value,
    pub output_schema: serde_json::Value,
    pub limits: Option<serde_json::Value>,
}

/// A stored plugin version, without its bytes (see [`crate::Store::plugin_wasm`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginRecord {
    pub id: Uuid,
    pub name: String,
    pub version: String,
    pub sha256_hex: String,
    /// Length of the component in bytes.
    pub wasm_size: u64,
    pub description: String,
    pub input_schema: serde_json::Value,
    pub output_schema: serde_json::Value,
    pub limits: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

impl NewPlugin {
    /// The record [`crate::Store::insert_plugin`] writes (new id, `created_at` now), and the
    /// bytes, which go to their own table.
    pub(crate) fn into_record(self) -> (PluginRecord, Vec<u8>) {
        let record = PluginRecord {
            id: new_id(),
            name: self.name,
            version: self.version,
            sha256_hex: self.sha256_hex,
            wasm_size: self.wasm.len() as u64,
            description: self.description,
            input_schema: self.input_schema,
            output_schema: self.output_schema,
            limits: self.limits,
            created_at: now(),
        };
        (record, self.wasm)
    }
}

/// A size as the database stores it (`BIGINT` / 64-bit `INTEGER`).
pub(crate) fn encode_size(size: u64) -> Result<i64, StoreError> {
    i64::try_from(size).map_err(|_| {
        StoreError::Database(sqlx::Error::Encode(format!("size {size} too large").into()))
    })
}

/// A size read back from the database (the schema forbids negative ones).
pub(crate) fn decode_size(size: i64) -> Result<u64, StoreError> {
    u64::try_from(size).map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))
}

/// The current time as the store records it: UTC, truncated to microseconds (PostgreSQL's
/// precision), so a record returned by an insert equals the same record read back.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A new time-ordered id.
pub(crate) fn new_id() -> Uuid {
    Uuid::now_v7()
}

pub(crate) fn decode_error(message: impl Into<String>) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(message.into().into()))
}

/// A status column read back (the schema allows only the known ones).
pub(crate) fn decode_status(text: &str) -> Result<RunStatus, StoreError> {
    RunStatus::parse(text).ok_or_else(|| decode_error(format!("unknown status {text:?}")))
}

/// A phase column read back (the schema allows only the known ones).
pub(crate) fn decode_phase(text: &str) -> Result<StepPhase, StoreError> {
    StepPhase::parse(text).ok_or_else(|| decode_error(format!("unknown step phase {text:?}")))
}

/// An attempt number or depth read back (the schema forbids negative ones).
pub(crate) fn decode_count(n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))
}

/// `at + lease`, at the store's precision.
pub(crate) fn lease_until(at: DateTime<Utc>, lease: Duration) -> Result<DateTime<Utc>, StoreError> {
    TimeDelta::from_std(lease)
        .ok()
        .and_then(|lease| at.checked_add_signed(lease))
        .map(|until| until.trunc_subsecs(6))
        .ok_or_else(|| {
            StoreError::Database(sqlx::Error::Encode(
                format!("lease {lease:?} too long").into(),
            ))
        })
}

/// What a guarded step update that matched no row says.
pub(crate) fn stale(id: uuid::Uuid, owner: &str, attempt: u32) -> StoreError {
    StoreError::Stale(format!(
        "step row {id} is no longer executing under {owner:?} at attempt {attempt}"
    ))
}

/// Conflict messages from a unique violation's constraint (or SQLite's column list).
pub(crate) fn run_conflict(id: uuid::Uuid) -> impl FnOnce(&str) -> String {
    move |_| format!("a run with id {id} exists")
}

pub(crate) fn step_conflict(
    run_id: uuid::Uuid,
    step_id: &str,
    id: uuid::Uuid,
) -> impl FnOnce(&str) -> String {
    move |what| {
        if what.contains("step_id") || what.contains("run_step") {
            format!("run {run_id} already has a step {step_id:?}")
        } else {
            format!("a step row with id {id} exists")
        }
    }
}

pub(crate) fn attempt_conflict(
    step_row_id: uuid::Uuid,
    attempt: u32,
) -> impl FnOnce(&str) -> String {
    move |_| format!("attempt {attempt} of step row {step_row_id} is already recorded")
}

/// A run with this idempotency key exists (a child run of `apply`).
pub(crate) fn idempotency_conflict(key: &str) -> StoreError {
    StoreError::Conflict(format!("a run with idempotency key {key:?} exists"))
}

/// `post_signal` on a finished run.
pub(crate) fn terminal_run(run_id: uuid::Uuid, status: RunStatus) -> StoreError {
    StoreError::Conflict(format!(
        "run {run_id} is {}: it takes no more signals",
        status.as_str()
    ))
}

/// Commit if `result` is `Ok`; otherwise roll back at once (releasing the locks now rather than
/// when the connection is next used) and return the error.
pub(crate) async fn settle<DB: sqlx::Database, T>(
    tx: sqlx::Transaction<'static, DB>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(done) => {
            tx.commit().await.map_err(StoreError::from_sqlx)?;
            Ok(done)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}
