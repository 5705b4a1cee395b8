//! Weft's persistence: one [`Store`] trait, two backends (SQLite and PostgreSQL, through sqlx),
//! and the SQL migrations of each, embedded in the binary.
//!
//! The store knows nothing of the domain crate: a workflow definition is a handful of indexed
//! columns plus its body as JSON ([`NewDefinition::spec`]). Validation of that body is the
//! caller's business.
//!
//! ```no_run
//! # async fn demo() -> Result<(), weft_store::StoreError> {
//! let store = weft_store::connect("sqlite://weft-data/weft.db", &Default::default()).await?;
//! store.migrate().await?;
//! # Ok(()) }
//! ```
//!
//! Invariants:
//! * every SQL statement is a literal or built with `QueryBuilder` and bound parameters; no user
//!   text is ever spliced into SQL (filter fields come from the [`filter::Field`] enum);
//! * ids are UUID v7 generated here; timestamps are UTC, microsecond precision, generated here,
//!   so both backends return the same values;
//! * lists are ordered by `(created_at, id)` (plugins by name first, byte-wise);
//! * no error message contains a database password ([`redact_url`]).

mod connect;
mod database_url;
mod error;
pub mod filter;
mod migration;
mod postgres;
mod records;
pub mod runs;
mod sqlite;
mod starts;
pub mod testing;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

pub use connect::{ConnectOptions, connect};
pub use database_url::redact_url;
pub use error::StoreError;
pub use filter::{Filter, FilterError};
pub use migration::MigrationStatus;
pub use records::{
    DefinitionQuery, DefinitionRecord, DefinitionUpdate, NewDefinition, NewPlugin, NewToken, Page,
    PluginRecord, TokenRecord,
};
pub use runs::{
    AttemptRecord, ClaimRequest, ClaimedStep, EventQuery, EventRecord, EventScope, LeaseGuard,
    NewEvent, NewRun, NewStep, ParentRef, QueueStats, RunChanges, RunOutputs, RunQuery, RunRecord,
    RunStatus, RunTransaction, RunUpdate, RunsTransaction, ScopedEvent, SignalRecord, StepPhase,
    StepRecord, StepStatus, StepUpdate,
};

/// The database engine behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names: `sqlite:` / `sqlite://`, `postgres://` / `postgresql://`.
    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        database_url::backend_of(url)
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// Everything Weft persists. Every method does I/O on the database; none blocks a thread.
/// Obtain one with [`connect`]; it holds a connection pool, which [`Store::close`] shuts down.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    /// One round trip to the database. [`StoreError::Unavailable`] when it cannot be reached.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Apply the pending migrations embedded in this binary. Refuses (with
    /// [`StoreError::Migration`]) a database that has migrations this binary does not know, or
    /// whose applied migrations were modified.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Which migrations are applied, pending and unknown. Changes nothing.
    async fn migration_status(&self) -> Result<MigrationStatus, StoreError>;
    /// Close the pool, waiting for connections in use to be returned.
    async fn close(&self);

    /// [`StoreError::Conflict`] if `(name, version)` exists.
    async fn insert_definition(&self, new: NewDefinition) -> Result<DefinitionRecord, StoreError>;
    async fn get_definition(&self, id: Uuid) -> Result<Option<DefinitionRecord>, StoreError>;
    /// [`StoreError::InvalidFilter`] if `q.filter` was built by hand and breaks the rules that
    /// [`Filter::from_json`] enforces.
    async fn list_definitions(
        &self,
        q: &DefinitionQuery,
    ) -> Result<Page<DefinitionRecord>, StoreError>;
    /// All versions of one name, oldest first.
    async fn list_versions(&self, name: &str) -> Result<Vec<DefinitionRecord>, StoreError>;
    /// Replace a draft's name, version, description and spec. [`StoreError::NotFound`],
    /// [`StoreError::NotDraft`] when published (checked in the UPDATE itself), or
    /// [`StoreError::Conflict`] on a `(name, version)` collision.
    async fn update_draft(
        &self,
        id: Uuid,
        update: DefinitionUpdate,
    ) -> Result<DefinitionRecord, StoreError>;
    /// [`StoreError::NotFound`], or [`StoreError::NotDraft`] when already published.
    async fn publish_definition(&self, id: Uuid) -> Result<DefinitionRecord, StoreError>;
    /// [`StoreError::NotFound`].
    async fn set_definition_enabled(
        &self,
        id: Uuid,
        enabled: bool,
    ) -> Result<DefinitionRecord, StoreError>;
    /// [`StoreError::NotFound`].
    async fn delete_definition(&self, id: Uuid) -> Result<(), StoreError>;

    /// [`StoreError::Conflict`] on a duplicate hash or name.
    async fn insert_token(&self, new: NewToken) -> Result<TokenRecord, StoreError>;
    async fn find_token_by_hash(&self, sha256_hex: &str)
    -> Result<Option<TokenRecord>, StoreError>;
    /// All tokens, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// [`StoreError::NotFound`].
    async fn delete_token(&self, id: Uuid) -> Result<(), StoreError>;

    /// Store a plugin version and its bytes (the blob is shared by content: inserting bytes
    /// whose `sha256_hex` already exists reuses the stored blob). Atomic (one transaction).
    /// [`StoreError::Conflict`] if `(name, version)` exists, whatever its bytes: the caller
    /// decides whether an identical re-upload is fine. The hash is the caller's: the store
    /// neither computes nor checks it.
    async fn insert_plugin(&self, new: NewPlugin) -> Result<PluginRecord, StoreError>;
    async fn get_plugin(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<PluginRecord>, StoreError>;
    /// All plugin versions, ordered by name (byte-wise), then `(created_at, id)`.
    async fn list_plugins(&self) -> Result<Vec<PluginRecord>, StoreError>;
    /// The component bytes by content hash.
    async fn plugin_wasm(&self, sha256_hex: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Delete one version; its blob goes too when no other version references it (same
    /// transaction). [`StoreError::NotFound`].
    async fn delete_plugin(&self, name: &str, version: &str) -> Result<(), StoreError>;

    // Durable runs: see the module docs of [`runs`].

    /// Create a run (status RUNNING, `started_at` = `created_at` = now; or PENDING and not
    /// started when it has no initial steps: held) with its initial steps and append `events`,
    /// in one transaction; returns it and `true`. With an idempotency key that already exists:
    /// returns that run and `false`, writing nothing. [`StoreError::Conflict`] if the run's id,
    /// or a step row's id, exists. Starts that arrive together are usually written together,
    /// in one transaction; a start, once queued, is written even if its caller stops waiting
    /// (unless the store closes first). A failure no one start caused (the database
    /// unavailable, a commit whose outcome is unknown) answers every start it met with
    /// [`StoreError::Unavailable`].
    async fn create_run(
        &self,
        run: NewRun,
        events: Vec<NewEvent>,
    ) -> Result<(RunRecord, bool), StoreError>;
    async fn get_run(&self, id: Uuid) -> Result<Option<RunRecord>, StoreError>;
    /// Newest first: `(created_at, id)` descending.
    async fn list_runs(&self, q: &RunQuery) -> Result<Page<RunRecord>, StoreError>;
    /// A run's step rows, ordered by `(created_at, id)` (empty for an unknown run).
    async fn list_steps(&self, run_id: Uuid) -> Result<Vec<StepRecord>, StoreError>;
    /// The runs with these ids that exist (in no set order), each with the outputs of its
    /// completed steps by step id: what a step binds its input from. Two statements whatever
    /// the number of runs.
    async fn runs_with_outputs(&self, run_ids: &[Uuid]) -> Result<Vec<RunOutputs>, StoreError>;
    async fn get_step(&self, id: Uuid) -> Result<Option<StepRecord>, StoreError>;
    /// All attempts of the run's steps, by step row (`(created_at, id)`), then attempt.
    async fn list_attempts(&self, run_id: Uuid) -> Result<Vec<AttemptRecord>, StoreError>;
    /// Claim up to `limit` claimable steps (see [`runs`]) for `owner` under a lease of `lease`,
    /// oldest due first. Claimed rows: phase `executing`, status RUNNING, `lease_owner` =
    /// `owner`, `due_at` = now + `lease`, `started_at` set if unset; `attempt` + 1 when claimed
    /// from `queued` or an expired `executing`, unchanged when claimed from `waiting`.
    /// Concurrent claimers (other replicas) never claim the same row: PostgreSQL skips rows
    /// another claim has locked (`FOR UPDATE SKIP LOCKED`), SQLite claims under its write lock.
    async fn claim_steps(
        &self,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedStep>, StoreError>;
    /// Extend to now + `lease` the leases of `ids` that `owner` still holds (phase `executing`,
    /// `lease_owner` = `owner`, expired or not); returns the ids NOT renewed (lost).
    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[Uuid],
        lease: Duration,
    ) -> Result<Vec<Uuid>, StoreError>;
    /// Give back every executing step of `owner` (shutdown): phase `queued`, status PENDING,
    /// due now, lease cleared. Returns how many.
    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError>;
    /// Every executing step, whoever holds it, becomes `queued` (PENDING), due now, lease
    /// cleared (SQLite start-up: one process owns the file). Returns how many.
    async fn reset_executing(&self) -> Result<u64, StoreError>;
    /// The earliest `due_at` among not-done steps (for the dispatcher's timer).
    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// The ready queue now: due steps no one has claimed (see [`QueueStats`]). For metrics.
    async fn queue_stats(&self) -> Result<QueueStats, StoreError>;
    /// Lock one run for a transition (see [`RunTransaction`]). [`StoreError::NotFound`] if it
    /// does not exist.
    async fn begin_run(&self, run_id: Uuid) -> Result<Box<dyn RunTransaction>, StoreError>;
    /// Lock several runs for one transaction ([`RunsTransaction`]): PostgreSQL locks their rows
    /// in id order (two batches never deadlock), SQLite takes the write lock. Ids that name no
    /// run are left out of [`RunsTransaction::runs`].
    async fn begin_runs(&self, run_ids: &[Uuid]) -> Result<Box<dyn RunsTransaction>, StoreError>;
    /// Post a signal, in one transaction: insert it, make due now the run's `waiting` steps
    /// whose `wait` has `"signal": name`, append the event `signal.received` (data:
    /// `{"signalId", "name", "payload"}`). Serialised with the run's transitions.
    /// [`StoreError::NotFound`] if the run does not exist, [`StoreError::Conflict`] if it is
    /// terminal.
    async fn post_signal(
        &self,
        run_id: Uuid,
        name: &str,
        payload: Value,
    ) -> Result<SignalRecord, StoreError>;
    /// Events with `seq > after_seq`, of one run or all, ascending, at most `limit`. Resuming
    /// from the last `seq` seen misses nothing: events become visible in `seq` order.
    async fn list_events(
        &self,
        after_seq: i64,
        run_id: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError>;
    /// Events of `q.scope` with `q.after_seq < seq <= q.until_seq`, ascending, at most
    /// `q.limit`, each with its run's definition id (for live streams and their replays). Same
    /// visibility guarantee as [`Store::list_events`].
    async fn stream_events(&self, q: &EventQuery) -> Result<Vec<ScopedEvent>, StoreError>;
    /// Admit held runs of `definition_id` (status PENDING, see [`NewRun::initial_steps`]),
    /// oldest first, while fewer than `cap` of its runs are RUNNING (`None`: all of them): each
    /// becomes RUNNING with its entry step `entry_step_id` queued due now, and the events
    /// `run.started` and `step.ready`, in one transaction, serialised per definition across
    /// replicas. An admitted run's deadline is `timeout` after its admission (its start), not
    /// after its creation. Returns the admitted runs' ids.
    async fn admit_runs(
        &self,
        definition_id: Uuid,
        cap: Option<u32>,
        entry_step_id: &str,
        timeout: Option<std::time::Duration>,
    ) -> Result<Vec<Uuid>, StoreError>;
    /// The definitions that have held (PENDING) runs.
    async fn held_run_definitions(&self) -> Result<Vec<Uuid>, StoreError>;
    /// The highest `seq` of the log (0 when it is empty).
    async fn last_event_seq(&self) -> Result<i64, StoreError>;

    /// Housekeeping to run about once a second, off the paths that wait on it (SQLite: copy the
    /// write-ahead log back into the database; PostgreSQL: nothing).
    async fn maintain(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
