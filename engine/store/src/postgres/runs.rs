//! Durable runs on PostgreSQL (see `migrations/postgres/0003_runs.sql`).
//!
//! Locks (READ COMMITTED):
//! * a transition holds its run row `FOR NO KEY UPDATE`: transitions of one run are serialised,
//!   while rows that merely reference the run (steps, events, signals, child runs: their foreign
//!   keys take `FOR KEY SHARE`) can still be inserted by others;
//! * `post_signal` holds the run row `FOR SHARE`, so it waits for a transition in progress and
//!   a transition waits for it;
//! * claims lock step rows `FOR UPDATE SKIP LOCKED` and never wait;
//! * every transaction that appends events takes one transaction-scoped advisory lock just
//!   before appending, and keeps it until it commits. Sequence numbers are therefore handed out
//!   in commit order, and a reader that has seen `seq` N will never later find a new event
//!   below N (no event is skipped by `list_events(after_seq)`). It is taken last, after every
//!   row lock, and its holder only inserts events (whose foreign key does not conflict with
//!   the run locks above), so it cannot deadlock with them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use super::PgStore;
use crate::filter::sql::{push_limit_offset, push_run_where};
use crate::records::{
    attempt_conflict, decode_count, decode_phase, decode_status, idempotency_conflict, lease_until,
    now, run_conflict, settle, stale, step_conflict, terminal_run,
};
use crate::runs::{
    AttemptRecord, BatchRows, ClaimRequest, ClaimedStep, EventQuery, EventRecord, EventScope,
    NewEvent, NewRun, NewStep, ParentRef, RunChanges, RunOutputs, RunQuery, RunRecord,
    RunTransaction, RunsTransaction, ScopedEvent, SignalRecord, StepPhase, StepRecord, StepUpdate,
};
use crate::starts::{self, GroupError, Start, StartAnswer, WriteStarts};
use crate::{Page, StoreError};

/// The advisory lock that serialises event appends ("weft" "ev" in ASCII).
const EVENTS_LOCK: i64 = 0x7765_6674_6576;

macro_rules! run_columns {
    () => {
        "id, definition_id, definition_name, definition_version, status, input, output, error, \
         idempotency_key, parent_run_id, parent_step_row_id, depth, deadline_at, created_at, \
         started_at, completed_at, updated_at"
    };
}

macro_rules! step_columns {
    () => {
        "id, run_id, step_id, status, phase, attempt, input, output, error, runner, lease_owner, \
         due_at, wait, created_at, started_at, completed_at, updated_at"
    };
}

/// [`step_columns`] of the table aliased `s`.
macro_rules! s_step_columns {
    () => {
        "s.id, s.run_id, s.step_id, s.status, s.phase, s.attempt, s.input, s.output, s.error, \
         s.runner, s.lease_owner, s.due_at, s.wait, s.created_at, s.started_at, s.completed_at, \
         s.updated_at"
    };
}

macro_rules! signal_columns {
    () => {
        "id, run_id, name, payload, created_at"
    };
}

macro_rules! event_columns {
    () => {
        "seq, run_id, step_id, kind, data, created_at"
    };
}

fn run(row: &PgRow) -> Result<RunRecord, StoreError> {
    let parent = match (
        row.try_get::<Option<Uuid>, _>("parent_run_id")?,
        row.try_get::<Option<Uuid>, _>("parent_step_row_id")?,
    ) {
        (Some(run_id), Some(step_row_id)) => Some(ParentRef {
            run_id,
            step_row_id,
        }),
        _ => None,
    };
    Ok(RunRecord {
        id: row.try_get("id")?,
        definition_id: row.try_get("definition_id")?,
        definition_name: row.try_get("definition_name")?,
        definition_version: row.try_get("definition_version")?,
        status: decode_status(row.try_get("status")?)?,
        input: row.try_get("input")?,
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        idempotency_key: row.try_get("idempotency_key")?,
        parent,
        depth: decode_count(row.try_get::<i32, _>("depth")?.into())?,
        deadline_at: row.try_get("deadline_at")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        completed_at: row.try_get("completed_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn step(row: &PgRow) -> Result<StepRecord, StoreError> {
    Ok(StepRecord {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        step_id: row.try_get("step_id")?,
        status: decode_status(row.try_get("status")?)?,
        phase: decode_phase(row.try_get("phase")?)?,
        attempt: decode_count(row.try_get::<i32, _>("attempt")?.into())?,
        input: row.try_get("input")?,
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        runner: row.try_get("runner")?,
        lease_owner: row.try_get("lease_owner")?,
        due_at: row.try_get("due_at")?,
        wait: row.try_get("wait")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        completed_at: row.try_get("completed_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn attempt(row: &PgRow) -> Result<AttemptRecord, StoreError> {
    Ok(AttemptRecord {
        step_row_id: row.try_get("step_row_id")?,
        attempt: decode_count(row.try_get::<i32, _>("attempt")?.into())?,
        status: decode_status(row.try_get("status")?)?,
        input: row.try_get("input")?,
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        runner: row.try_get("runner")?,
        lease_owner: row.try_get("lease_owner")?,
        started_at: row.try_get("started_at")?,
        completed_at: row.try_get("completed_at")?,
    })
}

fn signal(row: &PgRow) -> Result<SignalRecord, StoreError> {
    Ok(SignalRecord {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        name: row.try_get("name")?,
        payload: row.try_get("payload")?,
        created_at: row.try_get("created_at")?,
    })
}

fn event(row: &PgRow) -> Result<EventRecord, StoreError> {
    Ok(EventRecord {
        seq: row.try_get("seq")?,
        run_id: row.try_get("run_id")?,
        step_id: row.try_get("step_id")?,
        kind: row.try_get("kind")?,
        data: row.try_get("data")?,
        created_at: row.try_get("created_at")?,
    })
}

/// An attempt number or depth as the schema stores it (`INTEGER`).
fn encode_count(n: u32) -> Result<i32, StoreError> {
    i32::try_from(n)
        .map_err(|_| StoreError::Database(sqlx::Error::Encode(format!("{n} is too large").into())))
}

async fn run_by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<RunRecord>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        run_columns!(),
        " FROM workflow_runs WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::from_sqlx)?;
    row.as_ref().map(run).transpose()
}

async fn steps_of(conn: &mut PgConnection, run_id: Uuid) -> Result<Vec<StepRecord>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        step_columns!(),
        " FROM step_runs WHERE run_id = $1 ORDER BY created_at, id"
    ))
    .bind(run_id)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from_sqlx)?;
    rows.iter().map(step).collect()
}

/// Insert a run row; `false` (and nothing written) if its idempotency key exists. A concurrent
/// insert of the same key is waited for: if it commits, this one does nothing.
async fn insert_run(conn: &mut PgConnection, run: &RunRecord) -> Result<bool, StoreError> {
    let done = sqlx::query(concat!(
        "INSERT INTO workflow_runs (",
        run_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        " ON CONFLICT (idempotency_key) DO NOTHING"
    ))
    .bind(run.id)
    .bind(run.definition_id)
    .bind(&run.definition_name)
    .bind(&run.definition_version)
    .bind(run.status.as_str())
    .bind(&run.input)
    .bind(&run.output)
    .bind(&run.error)
    .bind(&run.idempotency_key)
    .bind(run.parent.map(|p| p.run_id))
    .bind(run.parent.map(|p| p.step_row_id))
    .bind(encode_count(run.depth)?)
    .bind(run.deadline_at)
    .bind(run.created_at)
    .bind(run.started_at)
    .bind(run.completed_at)
    .bind(run.updated_at)
    .execute(conn)
    .await
    .map_err(|e| StoreError::from_sqlx_unique(e, run_conflict(run.id)))?;
    Ok(done.rows_affected() == 1)
}

async fn insert_steps(
    conn: &mut PgConnection,
    run_id: Uuid,
    steps: &[NewStep],
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    if steps.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = steps.iter().map(|s| s.id).collect();
    let step_ids: Vec<&str> = steps.iter().map(|s| s.step_id.as_str()).collect();
    let due: Vec<DateTime<Utc>> = steps.iter().map(|s| s.due_at).collect();
    // One statement for all (a fork readies many).
    sqlx::query(
        "INSERT INTO step_runs \
         (id, run_id, step_id, status, phase, attempt, due_at, created_at, updated_at) \
         SELECT s.id, $4, s.step_id, 'PENDING', 'queued', 0, s.due_at, $5, $5 \
         FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[]) AS s (id, step_id, due_at)",
    )
    .bind(&ids)
    .bind(&step_ids)
    .bind(&due)
    .bind(run_id)
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(|e| match steps {
        [one] => StoreError::from_sqlx_unique(e, step_conflict(run_id, &one.step_id, one.id)),
        _ => {
            let names = step_ids
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            StoreError::from_sqlx_unique(e, |what| {
                if what.contains("step_id") || what.contains("run_step") {
                    format!("run {run_id} already has one of the steps {names}")
                } else {
                    format!("one of the step row ids {ids:?} exists")
                }
            })
        }
    })?;
    Ok(())
}

/// Append `events` in order (see the module docs for the lock).
async fn insert_events(
    conn: &mut PgConnection,
    events: Vec<NewEvent>,
    at: DateTime<Utc>,
) -> Result<Vec<EventRecord>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut run_ids = Vec::with_capacity(events.len());
    let mut step_ids = Vec::with_capacity(events.len());
    let mut kinds = Vec::with_capacity(events.len());
    let mut data = Vec::with_capacity(events.len());
    for event in &events {
        run_ids.push(event.run_id);
        step_ids.push(event.step_id.clone());
        kinds.push(event.kind.clone());
        data.push(event.data.clone());
    }
    // One statement, the lock included: every row the insert numbers is joined with the lock's
    // one row, so the lock is held before the first `seq` is drawn (`OFFSET 0` keeps it a
    // subquery of its own, run once). Rows are inserted (and numbered) in the order of the
    // list.
    let mut seqs: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO events (run_id, step_id, kind, data, created_at) \
         SELECT e.run_id, e.step_id, e.kind, e.data, $5 \
         FROM (SELECT pg_advisory_xact_lock($6) OFFSET 0) AS l, \
         UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[]) \
         WITH ORDINALITY AS e (run_id, step_id, kind, data, n) \
         ORDER BY e.n RETURNING seq",
    )
    .bind(run_ids)
    .bind(step_ids)
    .bind(kinds)
    .bind(data)
    .bind(at)
    .bind(EVENTS_LOCK)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from_sqlx)?;
    seqs.sort_unstable();
    Ok(events
        .into_iter()
        .zip(seqs)
        .map(|(new, seq)| new.recorded(seq, at))
        .collect())
}

/// The `step.started` events of a claim: one per new attempt (a step resumed from `waiting` is
/// the same attempt going on).
fn started_events(claimed: &[ClaimedStep], owner: &str) -> Vec<NewEvent> {
    claimed
        .iter()
        .filter(|c| c.claimed_from != StepPhase::Waiting)
        .map(|c| NewEvent {
            run_id: c.step.run_id,
            step_id: Some(c.step.step_id.clone()),
            kind: "step.started".to_owned(),
            data: json!({"attempt": c.step.attempt, "replica": owner}),
        })
        .collect()
}

/// A run and its initial steps (`false`: its idempotency key exists, nothing written).
async fn insert_new_run(
    conn: &mut PgConnection,
    new: NewRun,
    at: DateTime<Utc>,
) -> Result<(RunRecord, bool), StoreError> {
    let (record, steps) = new.into_record(at);
    if !insert_run(&mut *conn, &record).await? {
        return Ok((record, false));
    }
    insert_steps(conn, record.id, &steps, at).await?;
    Ok((record, true))
}

/// New runs, one statement; those whose idempotency key exists (in the table or earlier in
/// `runs`) are left out. Returns the ids written. Inserted in key order: two replicas' groups
/// that share keys wait for each other's keys in the same order (no deadlock).
async fn insert_runs(
    conn: &mut PgConnection,
    runs: &[&RunRecord],
) -> Result<HashSet<Uuid>, StoreError> {
    let mut ids = Vec::with_capacity(runs.len());
    let mut definitions = Vec::with_capacity(runs.len());
    let mut names = Vec::with_capacity(runs.len());
    let mut versions = Vec::with_capacity(runs.len());
    let mut statuses = Vec::with_capacity(runs.len());
    let mut inputs = Vec::with_capacity(runs.len());
    let mut keys = Vec::with_capacity(runs.len());
    let mut parent_runs = Vec::with_capacity(runs.len());
    let mut parent_steps = Vec::with_capacity(runs.len());
    let mut depths = Vec::with_capacity(runs.len());
    let mut deadlines = Vec::with_capacity(runs.len());
    let mut created = Vec::with_capacity(runs.len());
    let mut started = Vec::with_capacity(runs.len());
    let mut updated = Vec::with_capacity(runs.len());
    for run in runs {
        ids.push(run.id);
        definitions.push(run.definition_id);
        names.push(run.definition_name.as_str());
        versions.push(run.definition_version.as_str());
        statuses.push(run.status.as_str());
        inputs.push(run.input.clone());
        keys.push(run.idempotency_key.clone());
        parent_runs.push(run.parent.map(|p| p.run_id));
        parent_steps.push(run.parent.map(|p| p.step_row_id));
        depths.push(encode_count(run.depth)?);
        deadlines.push(run.deadline_at);
        created.push(run.created_at);
        started.push(run.started_at);
        updated.push(run.updated_at);
    }
    let written: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO workflow_runs (id, definition_id, definition_name, definition_version, \
         status, input, idempotency_key, parent_run_id, parent_step_row_id, depth, deadline_at, \
         created_at, started_at, updated_at) \
         SELECT r.id, r.definition_id, r.definition_name, r.definition_version, r.status, \
         r.input, r.idempotency_key, r.parent_run_id, r.parent_step_row_id, r.depth, \
         r.deadline_at, r.created_at, r.started_at, r.updated_at \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::jsonb[], \
         $7::text[], $8::uuid[], $9::uuid[], $10::int4[], $11::timestamptz[], \
         $12::timestamptz[], $13::timestamptz[], $14::timestamptz[]) WITH ORDINALITY \
         AS r (id, definition_id, definition_name, definition_version, status, input, \
         idempotency_key, parent_run_id, parent_step_row_id, depth, deadline_at, created_at, \
         started_at, updated_at, n) \
         ORDER BY r.idempotency_key, r.n ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
    )
    .bind(ids)
    .bind(definitions)
    .bind(names)
    .bind(versions)
    .bind(statuses)
    .bind(inputs)
    .bind(keys)
    .bind(parent_runs)
    .bind(parent_steps)
    .bind(depths)
    .bind(deadlines)
    .bind(created)
    .bind(started)
    .bind(updated)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from_sqlx)?;
    Ok(written.into_iter().collect())
}

/// New steps of several runs, one statement.
async fn insert_steps_of_runs(
    conn: &mut PgConnection,
    steps: &[(Uuid, &NewStep)],
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    if steps.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = steps.iter().map(|(_, s)| s.id).collect();
    let run_ids: Vec<Uuid> = steps.iter().map(|(run_id, _)| *run_id).collect();
    let step_ids: Vec<&str> = steps.iter().map(|(_, s)| s.step_id.as_str()).collect();
    let due: Vec<DateTime<Utc>> = steps.iter().map(|(_, s)| s.due_at).collect();
    sqlx::query(
        "INSERT INTO step_runs \
         (id, run_id, step_id, status, phase, attempt, due_at, created_at, updated_at) \
         SELECT s.id, s.run_id, s.step_id, 'PENDING', 'queued', 0, s.due_at, $5, $5 \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[]) \
         AS s (id, run_id, step_id, due_at)",
    )
    .bind(ids)
    .bind(run_ids)
    .bind(step_ids)
    .bind(due)
    .bind(at)
    .execute(conn)
    .await
    .map_err(StoreError::from_sqlx)?;
    Ok(())
}

/// Writes run starts ([`crate::starts`]); owns a handle on the pool, to run in a task of its
/// own.
struct StartWriter {
    pool: PgPool,
}

#[async_trait]
impl WriteStarts for StartWriter {
    async fn together(&self, starts: &[Start]) -> Result<HashMap<Uuid, RunRecord>, GroupError> {
        let at = now();
        let records = starts::records(starts, at);
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| GroupError::Group(StoreError::from_sqlx(e)))?;
        let written = write_starts(&mut tx, starts, &records, at).await;
        starts::settle(tx, written, records, group_wide).await
    }

    async fn alone(&self, new: NewRun, events: Vec<NewEvent>) -> StartAnswer {
        let at = now();
        let key = new.idempotency_key.clone();
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        let (record, created) = insert_new_run(&mut tx, new, at).await?;
        if !created {
            tx.rollback().await.map_err(StoreError::from_sqlx)?;
            let key = key.unwrap_or_default();
            return match self.run_by_key(&key).await? {
                Some(existing) => Ok((existing, false)),
                None => Err(idempotency_conflict(&key)),
            };
        }
        insert_events(&mut tx, events, at).await?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok((record, true))
    }

    async fn run_by_key(&self, key: &str) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM workflow_runs WHERE idempotency_key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(run).transpose()
    }
}

/// Whether a PostgreSQL SQLSTATE fails any start: its class is a connection exception (08),
/// insufficient resources (53), operator intervention (57), a system error (58) or an
/// internal error (XX).
fn group_wide(code: &str) -> bool {
    ["08", "53", "57", "58", "XX"]
        .iter()
        .any(|class| code.starts_with(class))
}

/// The runs of `records` (those whose idempotency key exists left out), then the steps and
/// the events (the lock of the event log taken last) of the starts whose run was written;
/// returns their ids.
async fn write_starts(
    conn: &mut PgConnection,
    starts: &[Start],
    records: &[(RunRecord, Vec<NewStep>)],
    at: DateTime<Utc>,
) -> Result<HashSet<Uuid>, StoreError> {
    let runs: Vec<&RunRecord> = records.iter().map(|(run, _)| run).collect();
    // A lone start: a plain insert (PostgreSQL plans the arrays' join anew at each execution).
    let written = match runs.as_slice() {
        [one] => {
            if insert_run(&mut *conn, one).await? {
                HashSet::from([one.id])
            } else {
                HashSet::new()
            }
        }
        _ => insert_runs(&mut *conn, &runs).await?,
    };
    let steps: Vec<(Uuid, &NewStep)> = records
        .iter()
        .filter(|(run, _)| written.contains(&run.id))
        .flat_map(|(run, steps)| steps.iter().map(|s| (run.id, s)))
        .collect();
    insert_steps_of_runs(&mut *conn, &steps, at).await?;
    let events: Vec<NewEvent> = starts
        .iter()
        .filter(|s| written.contains(&s.new.id))
        .flat_map(|s| s.events.iter().cloned())
        .collect();
    insert_events(conn, events, at).await?;
    Ok(written)
}

/// Everything [`RunTransaction::apply`] writes, in its order.
async fn apply_changes(
    conn: &mut PgConnection,
    run_id: Uuid,
    mut changes: RunChanges,
) -> Result<Vec<EventRecord>, StoreError> {
    let at = now();
    write_changes(&mut *conn, run_id, &mut changes, at, false).await?;
    finish_changes(conn, changes.events, None, at)
        .await
        .map(|(events, _)| events)
}

/// One or several runs' changes ([`crate::RunsTransaction::apply_and_claim`]): the new steps,
/// step updates and attempts of all of them with one statement ([`write_rows`]), the rest of
/// each in turn, then one claim, then all their events in order. A batch that updates one row
/// twice is written change by change instead.
async fn apply_many(
    conn: &mut PgConnection,
    changes: Vec<(Uuid, RunChanges)>,
    claim: Option<&ClaimRequest>,
) -> Result<(Vec<EventRecord>, Vec<ClaimedStep>), StoreError> {
    let at = now();
    // One round trip for the rows, whatever the number of runs.
    let rows = BatchRows::of(&changes);
    let merge = rows.is_some();
    if let Some(rows) = rows {
        write_rows(&mut *conn, &rows, at).await?;
    }
    let mut events = Vec::new();
    for (run_id, mut changes) in changes {
        write_changes(&mut *conn, run_id, &mut changes, at, merge).await?;
        events.append(&mut changes.events);
    }
    finish_changes(conn, events, claim, at).await
}

/// The new steps, step updates (each row at most once) and attempts of a batch, with one
/// statement (data-modifying `WITH` clauses). Each guarded update applies only if its row still
/// runs under that lease, as in [`RunTransaction::apply`]. The clauses all see the table as it
/// was before the statement, so an update of a step the same batch creates (a later outcome
/// cancelling a step an earlier one made ready) goes in a second statement, after the insert.
async fn write_rows(
    conn: &mut PgConnection,
    batch: &BatchRows<'_>,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let created: std::collections::HashSet<Uuid> =
        batch.new_steps.iter().map(|(_, s)| s.id).collect();
    let (later, now): (Vec<&StepUpdate>, Vec<&StepUpdate>) = batch
        .step_updates
        .iter()
        .copied()
        .partition(|u| created.contains(&u.id));
    let mut applied =
        write_rows_once(&mut *conn, &batch.new_steps, &now, &batch.attempts, at).await?;
    if !later.is_empty() {
        applied.extend(write_rows_once(&mut *conn, &[], &later, &[], at).await?);
    }
    batch.check_applied(applied)
}

/// One statement of [`write_rows`]: returns the ids of the updated rows (`NotFound` if an
/// attempt's step row does not exist, `Conflict` if a step or an attempt already does). A
/// unique violation aborts the statement before the updates are checked, so an attempt already
/// recorded by whoever took the step over is answered `Conflict` rather than `Stale`: either
/// way nothing is written.
async fn write_rows_once(
    conn: &mut PgConnection,
    new_steps: &[(Uuid, &NewStep)],
    updates: &[&StepUpdate],
    attempts: &[&AttemptRecord],
    at: DateTime<Utc>,
) -> Result<Vec<Uuid>, StoreError> {
    if new_steps.is_empty() && updates.is_empty() && attempts.is_empty() {
        return Ok(Vec::new());
    }
    let mut s_ids = Vec::with_capacity(new_steps.len());
    let mut s_runs = Vec::with_capacity(new_steps.len());
    let mut s_steps = Vec::with_capacity(new_steps.len());
    let mut s_due = Vec::with_capacity(new_steps.len());
    for (run_id, step) in new_steps {
        s_ids.push(step.id);
        s_runs.push(*run_id);
        s_steps.push(step.step_id.as_str());
        s_due.push(step.due_at);
    }

    let mut u_ids = Vec::with_capacity(updates.len());
    let mut u_statuses = Vec::with_capacity(updates.len());
    let mut u_phases = Vec::with_capacity(updates.len());
    let mut u_inputs = Vec::with_capacity(updates.len());
    let mut u_outputs = Vec::with_capacity(updates.len());
    let mut u_errors = Vec::with_capacity(updates.len());
    let mut u_runners = Vec::with_capacity(updates.len());
    let mut u_due = Vec::with_capacity(updates.len());
    let mut u_waits = Vec::with_capacity(updates.len());
    let mut u_resets = Vec::with_capacity(updates.len());
    let mut u_keeps = Vec::with_capacity(updates.len());
    let mut u_done = Vec::with_capacity(updates.len());
    let mut u_owners = Vec::with_capacity(updates.len());
    let mut u_attempts = Vec::with_capacity(updates.len());
    for u in updates {
        u_ids.push(u.id);
        u_statuses.push(u.status.as_str());
        u_phases.push(u.phase.as_str());
        u_inputs.push(u.input.as_ref());
        u_outputs.push(u.output.as_ref());
        u_errors.push(u.error.as_ref());
        u_runners.push(u.runner.as_deref());
        u_due.push(u.due_at);
        u_waits.push(u.wait.as_ref());
        u_resets.push(u.reset_attempt.map(encode_count).transpose()?);
        u_keeps.push(u.phase == StepPhase::Executing);
        u_done.push(u.status.is_terminal());
        u_owners.push(u.guard.as_ref().map(|g| g.owner.as_str()));
        u_attempts.push(
            u.guard
                .as_ref()
                .map(|g| encode_count(g.attempt))
                .transpose()?,
        );
    }

    let mut a_steps = Vec::with_capacity(attempts.len());
    let mut a_numbers = Vec::with_capacity(attempts.len());
    let mut a_statuses = Vec::with_capacity(attempts.len());
    let mut a_inputs = Vec::with_capacity(attempts.len());
    let mut a_outputs = Vec::with_capacity(attempts.len());
    let mut a_errors = Vec::with_capacity(attempts.len());
    let mut a_runners = Vec::with_capacity(attempts.len());
    let mut a_owners = Vec::with_capacity(attempts.len());
    let mut a_started = Vec::with_capacity(attempts.len());
    let mut a_completed = Vec::with_capacity(attempts.len());
    for a in attempts {
        a_steps.push(a.step_row_id);
        a_numbers.push(encode_count(a.attempt)?);
        a_statuses.push(a.status.as_str());
        a_inputs.push(a.input.as_ref());
        a_outputs.push(a.output.as_ref());
        a_errors.push(a.error.as_ref());
        a_runners.push(a.runner.as_deref());
        a_owners.push(a.lease_owner.as_deref());
        a_started.push(a.started_at);
        a_completed.push(a.completed_at);
    }

    let row = sqlx::query(
        "WITH new_steps AS ( \
           INSERT INTO step_runs \
           (id, run_id, step_id, status, phase, attempt, due_at, created_at, updated_at) \
           SELECT s.id, s.run_id, s.step_id, 'PENDING', 'queued', 0, s.due_at, $1, $1 \
           FROM UNNEST($2::uuid[], $3::uuid[], $4::text[], $5::timestamptz[]) \
           WITH ORDINALITY AS s (id, run_id, step_id, due_at, n) ORDER BY s.n \
         ), updated AS ( \
           UPDATE step_runs SET status = u.status, phase = u.phase, \
           input = COALESCE(u.input, step_runs.input), \
           output = COALESCE(u.output, step_runs.output), \
           error = COALESCE(u.error, step_runs.error), \
           runner = COALESCE(u.runner, step_runs.runner), due_at = u.due_at, wait = u.wait, \
           attempt = COALESCE(u.reset, step_runs.attempt), \
           lease_owner = CASE WHEN u.keep THEN step_runs.lease_owner END, \
           completed_at = CASE WHEN u.done THEN $1 END, updated_at = $1 \
           FROM UNNEST($6::uuid[], $7::text[], $8::text[], $9::jsonb[], $10::jsonb[], \
           $11::jsonb[], $12::text[], $13::timestamptz[], $14::jsonb[], $15::int4[], \
           $16::bool[], $17::bool[], $18::text[], $19::int4[]) \
           AS u (id, status, phase, input, output, error, runner, due_at, wait, reset, keep, \
           done, owner, attempt) \
           WHERE step_runs.id = u.id AND (u.owner IS NULL OR (step_runs.phase = 'executing' \
           AND step_runs.lease_owner = u.owner AND step_runs.attempt = u.attempt)) \
           RETURNING step_runs.id \
         ), attempts AS ( \
           INSERT INTO step_attempts (step_row_id, run_id, attempt, status, input, output, \
           error, runner, lease_owner, started_at, completed_at) \
           SELECT s.id, s.run_id, a.attempt, a.status, a.input, a.output, a.error, a.runner, \
           a.owner, a.started, a.completed \
           FROM UNNEST($20::uuid[], $21::int4[], $22::text[], $23::jsonb[], $24::jsonb[], \
           $25::jsonb[], $26::text[], $27::text[], $28::timestamptz[], $29::timestamptz[]) \
           WITH ORDINALITY AS a (step, attempt, status, input, output, error, runner, owner, \
           started, completed, n) \
           JOIN step_runs s ON s.id = a.step ORDER BY a.n \
           RETURNING 1 \
         ) \
         SELECT ARRAY(SELECT id FROM updated) AS applied, \
         (SELECT count(*) FROM attempts) AS attempts",
    )
    .bind(at)
    .bind(&s_ids)
    .bind(&s_runs)
    .bind(&s_steps)
    .bind(&s_due)
    .bind(&u_ids)
    .bind(&u_statuses)
    .bind(&u_phases)
    .bind(&u_inputs)
    .bind(&u_outputs)
    .bind(&u_errors)
    .bind(&u_runners)
    .bind(&u_due)
    .bind(&u_waits)
    .bind(&u_resets)
    .bind(&u_keeps)
    .bind(&u_done)
    .bind(&u_owners)
    .bind(&u_attempts)
    .bind(&a_steps)
    .bind(&a_numbers)
    .bind(&a_statuses)
    .bind(&a_inputs)
    .bind(&a_outputs)
    .bind(&a_errors)
    .bind(&a_runners)
    .bind(&a_owners)
    .bind(&a_started)
    .bind(&a_completed)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| {
        StoreError::from_sqlx_unique(e, |constraint| {
            if constraint.contains("attempt") {
                "an attempt of the batch is already recorded".to_owned()
            } else {
                "a step of the batch already exists in its run".to_owned()
            }
        })
    })?;
    let written: i64 = row.try_get("attempts").map_err(StoreError::from_sqlx)?;
    if written != attempts.len() as i64 {
        return Err(StoreError::NotFound);
    }
    row.try_get("applied").map_err(StoreError::from_sqlx)
}

/// Steps 1–8 of [`RunTransaction::apply`] (everything but the events, left in `changes`).
async fn write_changes(
    conn: &mut PgConnection,
    run_id: Uuid,
    changes: &mut RunChanges,
    at: DateTime<Utc>,
    rows_written: bool,
) -> Result<(), StoreError> {
    if let Some(update) = &changes.run {
        let completed_at = update.status.is_terminal().then_some(at);
        sqlx::query(
            "UPDATE workflow_runs SET status = $1, output = $2, error = $3, completed_at = $4, \
             updated_at = $5 WHERE id = $6",
        )
        .bind(update.status.as_str())
        .bind(&update.output)
        .bind(&update.error)
        .bind(completed_at)
        .bind(at)
        .bind(run_id)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx)?;
    }

    // Step updates, new steps and attempts: unless a batch wrote them for all its runs at once
    // (kept in `changes` all the same: the signal waits below are read from the updates).
    let step_updates: &[StepUpdate] = if rows_written {
        &[]
    } else {
        &changes.step_updates
    };
    for update in step_updates {
        let completed_at = update.status.is_terminal().then_some(at);
        let keep_lease = update.phase == StepPhase::Executing;
        let reset_attempt = update.reset_attempt.map(encode_count).transpose()?;
        let query = match &update.guard {
            Some(_) => sqlx::query(
                "UPDATE step_runs SET status = $1, phase = $2, input = COALESCE($3, input), \
                 output = COALESCE($4, output), error = COALESCE($5, error), \
                 runner = COALESCE($6, runner), due_at = $7, wait = $8, \
                 attempt = COALESCE($9, attempt), \
                 lease_owner = CASE WHEN $10 THEN lease_owner END, completed_at = $11, \
                 updated_at = $12 \
                 WHERE id = $13 AND phase = 'executing' AND lease_owner = $14 AND attempt = $15",
            ),
            None => sqlx::query(
                "UPDATE step_runs SET status = $1, phase = $2, input = COALESCE($3, input), \
                 output = COALESCE($4, output), error = COALESCE($5, error), \
                 runner = COALESCE($6, runner), due_at = $7, wait = $8, \
                 attempt = COALESCE($9, attempt), \
                 lease_owner = CASE WHEN $10 THEN lease_owner END, completed_at = $11, \
                 updated_at = $12 \
                 WHERE id = $13",
            ),
        };
        let mut query = query
            .bind(update.status.as_str())
            .bind(update.phase.as_str())
            .bind(&update.input)
            .bind(&update.output)
            .bind(&update.error)
            .bind(&update.runner)
            .bind(update.due_at)
            .bind(&update.wait)
            .bind(reset_attempt)
            .bind(keep_lease)
            .bind(completed_at)
            .bind(at)
            .bind(update.id);
        if let Some(guard) = &update.guard {
            query = query.bind(&guard.owner).bind(encode_count(guard.attempt)?);
        }
        let done = query
            .execute(&mut *conn)
            .await
            .map_err(StoreError::from_sqlx)?;
        if done.rows_affected() == 0 {
            return Err(match &update.guard {
                Some(guard) => stale(update.id, &guard.owner, guard.attempt),
                None => StoreError::NotFound,
            });
        }
    }

    let (new_steps, attempts): (&[NewStep], &[AttemptRecord]) = if rows_written {
        (&[], &[])
    } else {
        (&changes.new_steps, &changes.attempts)
    };
    insert_steps(&mut *conn, run_id, new_steps, at).await?;

    for record in attempts {
        let done = sqlx::query(
            "INSERT INTO step_attempts (step_row_id, run_id, attempt, status, input, output, \
             error, runner, lease_owner, started_at, completed_at) \
             SELECT id, run_id, $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM step_runs WHERE id = $10",
        )
        .bind(encode_count(record.attempt)?)
        .bind(record.status.as_str())
        .bind(&record.input)
        .bind(&record.output)
        .bind(&record.error)
        .bind(&record.runner)
        .bind(&record.lease_owner)
        .bind(record.started_at)
        .bind(record.completed_at)
        .bind(record.step_row_id)
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            StoreError::from_sqlx_unique(e, attempt_conflict(record.step_row_id, record.attempt))
        })?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
    }

    for new in std::mem::take(&mut changes.new_runs) {
        let key = new.idempotency_key.clone();
        let (_, created) = insert_new_run(&mut *conn, new, at).await?;
        if !created {
            return Err(idempotency_conflict(key.as_deref().unwrap_or_default()));
        }
    }

    if !changes.wake.is_empty() {
        sqlx::query(
            "UPDATE step_runs SET due_at = $1, updated_at = $1 \
             WHERE id = ANY($2) AND phase = 'waiting'",
        )
        .bind(at)
        .bind(&changes.wake)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx)?;
    }

    if !changes.consume_signals.is_empty() {
        sqlx::query(
            "UPDATE run_signals SET consumed_at = $1 \
             WHERE id = ANY($2) AND consumed_at IS NULL",
        )
        .bind(at)
        .bind(&changes.consume_signals)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx)?;
    }

    // Parked for a signal that is already pending: due now.
    for (id, name) in changes.signal_waits() {
        sqlx::query(
            "UPDATE step_runs SET due_at = $1, updated_at = $1 \
             WHERE id = $2 AND phase = 'waiting' AND (due_at IS NULL OR due_at > $1) \
             AND EXISTS (SELECT 1 FROM run_signals g WHERE g.run_id = step_runs.run_id \
             AND g.name = $3 AND g.consumed_at IS NULL)",
        )
        .bind(at)
        .bind(id)
        .bind(name)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx)?;
    }
    Ok(())
}

/// The claim (if asked) and the events that end a transition's writes.
async fn finish_changes(
    conn: &mut PgConnection,
    mut events: Vec<NewEvent>,
    claim: Option<&ClaimRequest>,
    at: DateTime<Utc>,
) -> Result<(Vec<EventRecord>, Vec<ClaimedStep>), StoreError> {
    let claimed = match claim {
        Some(claim) => {
            let claimed = claim_due(&mut *conn, &claim.owner, claim.lease, claim.limit, at).await?;
            events.extend(started_events(&claimed, &claim.owner));
            claimed
        }
        None => Vec::new(),
    };
    let events = insert_events(conn, events, at).await?;
    Ok((events, claimed))
}

/// A run whose row this transaction holds `FOR NO KEY UPDATE`.
struct PgRunTransaction {
    tx: Transaction<'static, Postgres>,
    run: RunRecord,
}

#[async_trait]
impl RunTransaction for PgRunTransaction {
    fn run(&self) -> &RunRecord {
        &self.run
    }

    async fn steps(&mut self) -> Result<Vec<StepRecord>, StoreError> {
        steps_of(&mut self.tx, self.run.id).await
    }

    async fn signals(&mut self, name: &str) -> Result<Vec<SignalRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            signal_columns!(),
            " FROM run_signals WHERE run_id = $1 AND name = $2 AND consumed_at IS NULL",
            " ORDER BY created_at, id"
        ))
        .bind(self.run.id)
        .bind(name)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(signal).collect()
    }

    async fn other_run(&mut self, id: Uuid) -> Result<Option<RunRecord>, StoreError> {
        run_by_id(&mut self.tx, id).await
    }

    async fn apply(self: Box<Self>, changes: RunChanges) -> Result<Vec<EventRecord>, StoreError> {
        let PgRunTransaction { mut tx, run } = *self;
        let result = apply_changes(&mut tx, run.id, changes).await;
        settle(tx, result).await
    }

    async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        self.tx.rollback().await.map_err(StoreError::from_sqlx)
    }
}

/// Several runs, their rows locked (`FOR NO KEY UPDATE`, in id order).
struct PgRunsTransaction {
    tx: Transaction<'static, Postgres>,
    runs: Vec<RunRecord>,
}

#[async_trait]
impl RunsTransaction for PgRunsTransaction {
    fn runs(&self) -> &[RunRecord] {
        &self.runs
    }

    async fn steps(&mut self) -> Result<Vec<StepRecord>, StoreError> {
        let ids: Vec<Uuid> = self.runs.iter().map(|r| r.id).collect();
        let rows = sqlx::query(concat!(
            "SELECT ",
            step_columns!(),
            " FROM step_runs WHERE run_id = ANY($1) ORDER BY created_at, id"
        ))
        .bind(&ids)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(step).collect()
    }

    async fn apply_and_claim(
        self: Box<Self>,
        changes: Vec<(Uuid, RunChanges)>,
        claim: Option<ClaimRequest>,
    ) -> Result<(Vec<EventRecord>, Vec<ClaimedStep>), StoreError> {
        let PgRunsTransaction { mut tx, .. } = *self;
        let result = apply_many(&mut tx, changes, claim.as_ref()).await;
        settle(tx, result).await
    }
}

/// Claim up to `limit` due steps for `owner` at `at`, oldest due first, inside the caller's
/// transaction. Rows another claim has locked are skipped, not waited for; a row that changed
/// since the statement's snapshot is re-checked against the WHERE clause once locked. No
/// events: the caller appends [`started_events`] (after the row locks, like every append).
async fn claim_due(
    conn: &mut PgConnection,
    owner: &str,
    lease: Duration,
    limit: u32,
    at: DateTime<Utc>,
) -> Result<Vec<ClaimedStep>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let until = lease_until(at, lease)?;
    // SET expressions see the row as it was: `claimed_from = s.phase` keeps the old phase.
    let rows = sqlx::query(concat!(
        "WITH picked AS (",
        " SELECT id, due_at FROM step_runs WHERE phase <> 'done' AND due_at <= $1",
        " ORDER BY due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
        ") UPDATE step_runs AS s SET phase = 'executing', status = 'RUNNING',",
        " lease_owner = $3, due_at = $4, started_at = COALESCE(s.started_at, $1),",
        " attempt = CASE WHEN s.phase = 'waiting' THEN s.attempt ELSE s.attempt + 1 END,",
        " claimed_from = s.phase, updated_at = $1",
        " FROM picked WHERE s.id = picked.id RETURNING ",
        s_step_columns!(),
        ", s.claimed_from, picked.due_at AS was_due"
    ))
    .bind(at)
    .bind(i64::from(limit))
    .bind(owner)
    .bind(until)
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::from_sqlx)?;
    let mut claimed = rows
        .iter()
        .map(|row| {
            let was_due: DateTime<Utc> = row.try_get("was_due")?;
            let claimed = ClaimedStep {
                step: step(row)?,
                claimed_from: decode_phase(row.try_get("claimed_from")?)?,
            };
            Ok((was_due, claimed))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    claimed.sort_by_key(|(was_due, c)| (*was_due, c.step.id));
    Ok(claimed.into_iter().map(|(_, c)| c).collect())
}

impl PgStore {
    /// Run starts that arrive while one is being written are written together
    /// ([`crate::starts`]): one transaction, one turn at the event log's lock.
    pub(super) async fn create_run_impl(
        &self,
        new: NewRun,
        events: Vec<NewEvent>,
    ) -> Result<(RunRecord, bool), StoreError> {
        let writer = StartWriter {
            pool: self.pool.clone(),
        };
        starts::start(&self.starts, self.starts_turn.clone(), writer, new, events).await
    }

    pub(super) async fn get_run_impl(&self, id: Uuid) -> Result<Option<RunRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from_sqlx)?;
        run_by_id(&mut conn, id).await
    }

    pub(super) async fn list_runs_impl(&self, q: &RunQuery) -> Result<Page<RunRecord>, StoreError> {
        let mut select = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            run_columns!(),
            ", COUNT(*) OVER () AS total FROM workflow_runs"
        ));
        push_run_where(&mut select, q);
        select.push(" ORDER BY created_at DESC, id DESC");
        push_limit_offset(&mut select, q.limit, q.offset);
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
                let mut count = QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM workflow_runs");
                push_run_where(&mut count, q);
                count
                    .build_query_scalar()
                    .fetch_one(&self.pool)
                    .await
                    .map_err(StoreError::from_sqlx)?
            }
        };
        Ok(Page {
            items: rows.iter().map(run).collect::<Result<_, _>>()?,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    pub(super) async fn list_steps_impl(
        &self,
        run_id: Uuid,
    ) -> Result<Vec<StepRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from_sqlx)?;
        steps_of(&mut conn, run_id).await
    }

    pub(super) async fn runs_with_outputs_impl(
        &self,
        run_ids: &[Uuid],
    ) -> Result<Vec<RunOutputs>, StoreError> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.acquire().await.map_err(StoreError::from_sqlx)?;
        let runs = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM workflow_runs WHERE id = ANY($1)"
        ))
        .bind(run_ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx)?;
        let outputs = sqlx::query(
            "SELECT run_id, step_id, output FROM step_runs \
             WHERE run_id = ANY($1) AND status = 'COMPLETED'",
        )
        .bind(run_ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx)?;
        let runs = runs.iter().map(run).collect::<Result<Vec<_>, _>>()?;
        let outputs = outputs
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("run_id")?,
                    row.try_get("step_id")?,
                    row.try_get("output")?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(RunOutputs::join(runs, outputs))
    }

    pub(super) async fn get_step_impl(&self, id: Uuid) -> Result<Option<StepRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            step_columns!(),
            " FROM step_runs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(step).transpose()
    }

    pub(super) async fn list_attempts_impl(
        &self,
        run_id: Uuid,
    ) -> Result<Vec<AttemptRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.step_row_id, a.attempt, a.status, a.input, a.output, a.error, a.runner, \
             a.lease_owner, a.started_at, a.completed_at \
             FROM step_attempts a JOIN step_runs s ON s.id = a.step_row_id \
             WHERE a.run_id = $1 ORDER BY s.created_at, s.id, a.attempt",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(attempt).collect()
    }

    pub(super) async fn claim_steps_impl(
        &self,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedStep>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let at = now();
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        let claimed = claim_due(&mut tx, owner, lease, limit, at).await?;
        if claimed.is_empty() {
            tx.rollback().await.map_err(StoreError::from_sqlx)?;
            return Ok(Vec::new());
        }
        // Taken after the step row locks, like every event append (module docs).
        insert_events(&mut tx, started_events(&claimed, owner), at).await?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(claimed)
    }

    pub(super) async fn renew_leases_impl(
        &self,
        owner: &str,
        ids: &[Uuid],
        lease: Duration,
    ) -> Result<Vec<Uuid>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let until = lease_until(now(), lease)?;
        let renewed: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE step_runs SET due_at = $1 \
             WHERE id = ANY($2) AND phase = 'executing' AND lease_owner = $3 RETURNING id",
        )
        .bind(until)
        .bind(ids)
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(ids
            .iter()
            .filter(|id| !renewed.contains(id))
            .copied()
            .collect())
    }

    pub(super) async fn release_leases_impl(&self, owner: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE step_runs SET phase = 'queued', status = 'PENDING', due_at = $1, \
             lease_owner = NULL, updated_at = $1 WHERE phase = 'executing' AND lease_owner = $2",
        )
        .bind(now())
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected())
    }

    pub(super) async fn reset_executing_impl(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE step_runs SET phase = 'queued', status = 'PENDING', due_at = $1, \
             lease_owner = NULL, updated_at = $1 WHERE phase = 'executing'",
        )
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected())
    }

    pub(super) async fn next_due_at_impl(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        sqlx::query_scalar(
            "SELECT due_at FROM step_runs WHERE phase <> 'done' AND due_at IS NOT NULL \
             ORDER BY due_at LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)
    }

    pub(super) async fn queue_stats_impl(&self) -> Result<crate::QueueStats, StoreError> {
        let (ready, oldest_ready_at): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(due_at) FROM step_runs \
             WHERE phase IN ('queued', 'waiting') AND due_at <= $1",
        )
        .bind(now())
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(crate::QueueStats {
            ready: u64::try_from(ready)
                .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))?,
            oldest_ready_at,
        })
    }

    pub(super) async fn begin_runs_impl(
        &self,
        run_ids: &[Uuid],
    ) -> Result<Box<dyn RunsTransaction>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM workflow_runs WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"
        ))
        .bind(run_ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        let runs = rows.iter().map(run).collect::<Result<_, _>>()?;
        Ok(Box::new(PgRunsTransaction { tx, runs }))
    }

    pub(super) async fn begin_run_impl(
        &self,
        run_id: Uuid,
    ) -> Result<Box<dyn RunTransaction>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        let row = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM workflow_runs WHERE id = $1 FOR NO KEY UPDATE"
        ))
        .bind(run_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        match row.as_ref().map(run).transpose()? {
            Some(run) => Ok(Box::new(PgRunTransaction { tx, run })),
            None => {
                tx.rollback().await.map_err(StoreError::from_sqlx)?;
                Err(StoreError::NotFound)
            }
        }
    }

    pub(super) async fn post_signal_impl(
        &self,
        run_id: Uuid,
        name: &str,
        payload: Value,
    ) -> Result<SignalRecord, StoreError> {
        let at = now();
        let record = SignalRecord {
            id: crate::records::new_id(),
            run_id,
            name: name.to_owned(),
            payload,
            created_at: at,
        };
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM workflow_runs WHERE id = $1 FOR SHARE")
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
        let status = match status {
            None => Err(StoreError::NotFound),
            Some(status) => match decode_status(&status)? {
                status if status.is_terminal() => Err(terminal_run(run_id, status)),
                _ => Ok(()),
            },
        };
        if let Err(e) = status {
            tx.rollback().await.map_err(StoreError::from_sqlx)?;
            return Err(e);
        }
        sqlx::query(concat!(
            "INSERT INTO run_signals (",
            signal_columns!(),
            ") VALUES ($1, $2, $3, $4, $5)"
        ))
        .bind(record.id)
        .bind(run_id)
        .bind(&record.name)
        .bind(&record.payload)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        sqlx::query(
            "UPDATE step_runs SET due_at = $1, updated_at = $1 \
             WHERE run_id = $2 AND phase = 'waiting' AND wait ->> 'signal' = $3",
        )
        .bind(at)
        .bind(run_id)
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        let event = NewEvent {
            run_id,
            step_id: None,
            kind: "signal.received".to_owned(),
            data: json!({ "signalId": record.id, "name": name, "payload": record.payload }),
        };
        insert_events(&mut tx, vec![event], at).await?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(record)
    }

    pub(super) async fn list_events_impl(
        &self,
        after_seq: i64,
        run_id: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let rows = match run_id {
            Some(run_id) => sqlx::query(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE run_id = $3 AND seq > $1 ORDER BY seq LIMIT $2"
            ))
            .bind(after_seq)
            .bind(i64::from(limit))
            .bind(run_id),
            None => sqlx::query(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"
            ))
            .bind(after_seq)
            .bind(i64::from(limit)),
        }
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(event).collect()
    }

    pub(super) async fn stream_events_impl(
        &self,
        q: &EventQuery,
    ) -> Result<Vec<ScopedEvent>, StoreError> {
        macro_rules! stream_sql {
            ($filter:literal) => {
                concat!(
                    "SELECT e.seq, e.run_id, e.step_id, e.kind, e.data, e.created_at, r.definition_id FROM events e JOIN workflow_runs r ON r.id = e.run_id WHERE e.seq > $1 AND e.seq <= $2",
                    $filter,
                    " ORDER BY e.seq LIMIT $3"
                )
            };
        }
        let (sql, id) = match q.scope {
            EventScope::All => (stream_sql!(""), None),
            EventScope::Run(id) => (stream_sql!(" AND e.run_id = $4"), Some(id)),
            EventScope::Definition(id) => (stream_sql!(" AND r.definition_id = $4"), Some(id)),
        };
        let mut query = sqlx::query(sql)
            .bind(q.after_seq)
            .bind(q.until_seq.unwrap_or(i64::MAX));
        query = query.bind(i64::from(q.limit));
        if let Some(id) = id {
            query = query.bind(id);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        rows.iter()
            .map(|row| {
                Ok(ScopedEvent {
                    event: event(row)?,
                    definition_id: row.try_get("definition_id")?,
                })
            })
            .collect()
    }

    pub(super) async fn admit_runs_impl(
        &self,
        definition_id: Uuid,
        cap: Option<u32>,
        entry_step_id: &str,
        timeout: Option<std::time::Duration>,
    ) -> Result<Vec<Uuid>, StoreError> {
        let at = now();
        let deadline = crate::runs::deadline_after(at, timeout);
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        // Admissions of one definition are serialised across replicas (taken before any row
        // lock; its holder then locks run rows of that definition only).
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("weft-admit:{definition_id}"))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        let running: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM workflow_runs WHERE definition_id = $1 AND status = 'RUNNING'",
        )
        .bind(definition_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        let room = cap.map_or(1000, |cap| (i64::from(cap) - running).clamp(0, 1000));
        let held: Vec<Uuid> = if room == 0 {
            Vec::new()
        } else {
            sqlx::query_scalar(
                "SELECT id FROM workflow_runs WHERE definition_id = $1 AND status = 'PENDING' \
                 ORDER BY created_at, id LIMIT $2 FOR NO KEY UPDATE",
            )
            .bind(definition_id)
            .bind(room)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?
        };
        if held.is_empty() {
            tx.rollback().await.map_err(StoreError::from_sqlx)?;
            return Ok(Vec::new());
        }
        let mut admitted = Vec::with_capacity(held.len());
        let mut events = Vec::with_capacity(held.len() * 2);
        for id in held {
            sqlx::query(
                "UPDATE workflow_runs SET status = 'RUNNING', started_at = $1, updated_at = $1, \
                 deadline_at = $2 WHERE id = $3",
            )
            .bind(at)
            .bind(deadline)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
            let entry = NewStep {
                id: Uuid::now_v7(),
                step_id: entry_step_id.to_owned(),
                due_at: at,
            };
            insert_steps(&mut tx, id, &[entry], at).await?;
            events.push(NewEvent {
                run_id: id,
                step_id: None,
                kind: "run.started".to_owned(),
                data: json!({}),
            });
            events.push(NewEvent {
                run_id: id,
                step_id: Some(entry_step_id.to_owned()),
                kind: "step.ready".to_owned(),
                data: json!({}),
            });
            admitted.push(id);
        }
        insert_events(&mut tx, events, at).await?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(admitted)
    }

    pub(super) async fn held_run_definitions_impl(&self) -> Result<Vec<Uuid>, StoreError> {
        sqlx::query_scalar(
            "SELECT DISTINCT definition_id FROM workflow_runs WHERE status = 'PENDING'",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)
    }

    pub(super) async fn last_event_seq_impl(&self) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(seq.unwrap_or(0))
    }
}
