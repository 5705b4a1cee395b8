//! Durable runs on SQLite (see `migrations/sqlite/0003_runs.sql`).
//!
//! SQLite has one writer at a time: every transaction that reads before it writes starts with
//! `BEGIN IMMEDIATE`, taking the write lock at once (waiting up to the busy timeout), so what
//! it read cannot change before it writes. Lists of ids are bound as one JSON array and read
//! back with `json_each`, so every statement stays a literal. A `LIMIT` is written `? + 0`:
//! SQLite's planner reads a bare `LIMIT ?`, and a statement whose plan used a parameter is
//! prepared again (parsed and planned) every time that parameter is bound: at every claim and
//! every read of the live feed.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Either;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, Transaction};
use uuid::Uuid;
use uuid::fmt::Hyphenated;

use super::{SqliteStore, encode_time};
use crate::filter::sql::{push_limit_offset, push_run_where};
use crate::records::{
    attempt_conflict, decode_count, decode_error, decode_phase, decode_status,
    idempotency_conflict, lease_until, now, run_conflict, settle, stale, step_conflict,
    terminal_run,
};
use crate::runs::{
    AttemptRecord, BatchRows, ClaimRequest, ClaimedStep, EventQuery, EventRecord, EventScope,
    NewEvent, NewRun, NewStep, ParentRef, RunChanges, RunOutputs, RunQuery, RunRecord,
    RunTransaction, RunsTransaction, ScopedEvent, SignalRecord, StepPhase, StepRecord,
};
use crate::starts::{self, GroupError, Start, StartAnswer, WriteStarts};
use crate::{Page, StoreError};

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

// Reads of many rows build one JSON text in SQLite instead: it crosses from the connection's
// thread as one value, where rows cross one message each, every column copied. Each row is an
// array of its columns in the order of the `*_columns!` lists; a JSON column goes as a string
// (so SQL NULL and a stored JSON `null` stay apart).

macro_rules! run_json {
    () => {
        "json_array(id, definition_id, definition_name, definition_version, status, input, \
         output, error, idempotency_key, parent_run_id, parent_step_row_id, depth, deadline_at, \
         created_at, started_at, completed_at, updated_at)"
    };
}

macro_rules! step_json {
    () => {
        "json_array(id, run_id, step_id, status, phase, attempt, input, output, error, runner, \
         lease_owner, due_at, wait, created_at, started_at, completed_at, updated_at)"
    };
}

/// New steps from a JSON array of `[id, run, step id, due]` (binds: created, updated, array).
macro_rules! insert_new_steps {
    () => {
        "INSERT INTO step_runs \
         (id, run_id, step_id, status, phase, attempt, due_at, created_at, updated_at) \
         SELECT value ->> 0, value ->> 1, value ->> 2, 'PENDING', 'queued', 0, value ->> 3, ?, ? \
         FROM json_each(?) ORDER BY key"
    };
}

/// Events from a JSON array of `[run, step, kind, data]`, in its order (binds: created,
/// array).
macro_rules! insert_events {
    () => {
        "INSERT INTO events (run_id, step_id, kind, data, created_at) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value -> 3, ? \
         FROM json_each(?) ORDER BY key"
    };
}

type Time = DateTime<Utc>;

/// A run row as [`run_json!`] builds it.
#[derive(Deserialize)]
struct RunJson(
    Uuid,
    Uuid,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Uuid>,
    Option<Uuid>,
    i64,
    Option<Time>,
    Time,
    Option<Time>,
    Option<Time>,
    Time,
);

/// A step row as [`step_json!`] builds it.
#[derive(Deserialize)]
struct StepJson(
    Uuid,
    Uuid,
    String,
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Time>,
    Option<String>,
    Time,
    Option<Time>,
    Option<Time>,
    Time,
);

fn json_decode_error(e: serde_json::Error) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(Box::new(e)))
}

/// A JSON column's text.
fn json_column(text: Option<String>) -> Result<Option<Value>, StoreError> {
    text.map(|t| serde_json::from_str(&t).map_err(json_decode_error))
        .transpose()
}

impl RunJson {
    fn record(self) -> Result<RunRecord, StoreError> {
        let RunJson(
            id,
            definition_id,
            definition_name,
            definition_version,
            status,
            input,
            output,
            error,
            idempotency_key,
            parent_run_id,
            parent_step_row_id,
            depth,
            deadline_at,
            created_at,
            started_at,
            completed_at,
            updated_at,
        ) = self;
        Ok(RunRecord {
            id,
            definition_id,
            definition_name,
            definition_version,
            status: decode_status(&status)?,
            input: serde_json::from_str(&input).map_err(json_decode_error)?,
            output: json_column(output)?,
            error: json_column(error)?,
            idempotency_key,
            parent: parent_run_id
                .zip(parent_step_row_id)
                .map(|(run_id, step_row_id)| ParentRef {
                    run_id,
                    step_row_id,
                }),
            depth: decode_count(depth)?,
            deadline_at,
            created_at,
            started_at,
            completed_at,
            updated_at,
        })
    }
}

impl StepJson {
    fn record(self) -> Result<StepRecord, StoreError> {
        let StepJson(
            id,
            run_id,
            step_id,
            status,
            phase,
            attempt,
            input,
            output,
            error,
            runner,
            lease_owner,
            due_at,
            wait,
            created_at,
            started_at,
            completed_at,
            updated_at,
        ) = self;
        Ok(StepRecord {
            id,
            run_id,
            step_id,
            status: decode_status(&status)?,
            phase: decode_phase(&phase)?,
            attempt: decode_count(attempt)?,
            input: json_column(input)?,
            output: json_column(output)?,
            error: json_column(error)?,
            runner,
            lease_owner,
            due_at,
            wait: json_column(wait)?,
            created_at,
            started_at,
            completed_at,
            updated_at,
        })
    }
}

/// The rows of a `json_group_array` of [`run_json!`] arrays.
fn runs_from_json(text: &str) -> Result<Vec<RunRecord>, StoreError> {
    serde_json::from_str::<Vec<RunJson>>(text)
        .map_err(json_decode_error)?
        .into_iter()
        .map(RunJson::record)
        .collect()
}

/// The rows of a `json_group_array` of [`step_json!`] arrays.
fn steps_from_json(text: &str) -> Result<Vec<StepRecord>, StoreError> {
    serde_json::from_str::<Vec<StepJson>>(text)
        .map_err(json_decode_error)?
        .into_iter()
        .map(StepJson::record)
        .collect()
}

fn uuid(row: &SqliteRow, column: &str) -> Result<Uuid, StoreError> {
    Ok(row.try_get::<Hyphenated, _>(column)?.into_uuid())
}

fn optional_uuid(row: &SqliteRow, column: &str) -> Result<Option<Uuid>, StoreError> {
    Ok(row
        .try_get::<Option<Hyphenated>, _>(column)?
        .map(Hyphenated::into_uuid))
}

fn run(row: &SqliteRow) -> Result<RunRecord, StoreError> {
    let parent = match (
        optional_uuid(row, "parent_run_id")?,
        optional_uuid(row, "parent_step_row_id")?,
    ) {
        (Some(run_id), Some(step_row_id)) => Some(ParentRef {
            run_id,
            step_row_id,
        }),
        _ => None,
    };
    Ok(RunRecord {
        id: uuid(row, "id")?,
        definition_id: uuid(row, "definition_id")?,
        definition_name: row.try_get("definition_name")?,
        definition_version: row.try_get("definition_version")?,
        status: decode_status(row.try_get("status")?)?,
        input: row.try_get("input")?,
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        idempotency_key: row.try_get("idempotency_key")?,
        parent,
        depth: decode_count(row.try_get("depth")?)?,
        deadline_at: row.try_get("deadline_at")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        completed_at: row.try_get("completed_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn step(row: &SqliteRow) -> Result<StepRecord, StoreError> {
    Ok(StepRecord {
        id: uuid(row, "id")?,
        run_id: uuid(row, "run_id")?,
        step_id: row.try_get("step_id")?,
        status: decode_status(row.try_get("status")?)?,
        phase: decode_phase(row.try_get("phase")?)?,
        attempt: decode_count(row.try_get("attempt")?)?,
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

fn attempt(row: &SqliteRow) -> Result<AttemptRecord, StoreError> {
    Ok(AttemptRecord {
        step_row_id: uuid(row, "step_row_id")?,
        attempt: decode_count(row.try_get("attempt")?)?,
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

fn signal(row: &SqliteRow) -> Result<SignalRecord, StoreError> {
    Ok(SignalRecord {
        id: uuid(row, "id")?,
        run_id: uuid(row, "run_id")?,
        name: row.try_get("name")?,
        payload: row.try_get("payload")?,
        created_at: row.try_get("created_at")?,
    })
}

fn event(row: &SqliteRow) -> Result<EventRecord, StoreError> {
    Ok(EventRecord {
        seq: row.try_get("seq")?,
        run_id: uuid(row, "run_id")?,
        step_id: row.try_get("step_id")?,
        kind: row.try_get("kind")?,
        data: row.try_get("data")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Ids as one JSON array of hyphenated strings, for `IN (SELECT value FROM json_each(?))`.
fn id_list(ids: impl IntoIterator<Item = Uuid>) -> String {
    Value::Array(
        ids.into_iter()
            .map(|id| Value::String(id.hyphenated().to_string()))
            .collect(),
    )
    .to_string()
}

fn optional_time(time: Option<&DateTime<Utc>>) -> Option<String> {
    time.map(encode_time)
}

async fn run_by_id(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<RunRecord>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        run_columns!(),
        " FROM workflow_runs WHERE id = ?"
    ))
    .bind(id.hyphenated())
    .fetch_optional(conn)
    .await
    .map_err(StoreError::from_sqlx)?;
    row.as_ref().map(run).transpose()
}

async fn steps_of(
    conn: &mut SqliteConnection,
    run_id: Uuid,
) -> Result<Vec<StepRecord>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        step_columns!(),
        " FROM step_runs WHERE run_id = ? ORDER BY created_at, id"
    ))
    .bind(run_id.hyphenated())
    .fetch_all(conn)
    .await
    .map_err(StoreError::from_sqlx)?;
    rows.iter().map(step).collect()
}

/// Insert a run row; `false` (and nothing written) if its idempotency key exists.
async fn insert_run(conn: &mut SqliteConnection, run: &RunRecord) -> Result<bool, StoreError> {
    let done = sqlx::query(concat!(
        "INSERT INTO workflow_runs (",
        run_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        " ON CONFLICT (idempotency_key) DO NOTHING"
    ))
    .bind(run.id.hyphenated())
    .bind(run.definition_id.hyphenated())
    .bind(&run.definition_name)
    .bind(&run.definition_version)
    .bind(run.status.as_str())
    .bind(&run.input)
    .bind(&run.output)
    .bind(&run.error)
    .bind(&run.idempotency_key)
    .bind(run.parent.map(|p| p.run_id.hyphenated()))
    .bind(run.parent.map(|p| p.step_row_id.hyphenated()))
    .bind(i64::from(run.depth))
    .bind(optional_time(run.deadline_at.as_ref()))
    .bind(encode_time(&run.created_at))
    .bind(optional_time(run.started_at.as_ref()))
    .bind(optional_time(run.completed_at.as_ref()))
    .bind(encode_time(&run.updated_at))
    .execute(conn)
    .await
    .map_err(|e| StoreError::from_sqlx_unique(e, run_conflict(run.id)))?;
    Ok(done.rows_affected() == 1)
}

async fn insert_steps(
    conn: &mut SqliteConnection,
    run_id: Uuid,
    steps: &[NewStep],
    at: &str,
) -> Result<(), StoreError> {
    match steps {
        [] => return Ok(()),
        [one] => return insert_step(conn, run_id, one, at).await,
        _ => {}
    }
    // One statement for all (a fork readies many); a duplicate is found row by row below (a
    // failed statement changes nothing in SQLite, the transaction goes on).
    let rows: Vec<(Uuid, &NewStep)> = steps.iter().map(|s| (run_id, s)).collect();
    match insert_steps_of_runs(&mut *conn, &rows, at).await {
        Err(StoreError::Conflict(message)) => {
            for new in steps {
                insert_step(conn, run_id, new, at).await?;
            }
            Err(StoreError::Conflict(message))
        }
        done => done,
    }
}

/// New steps as the JSON array [`BATCH_SQL`] and [`insert_steps_of_runs`] read.
fn new_steps_json(steps: &[(Uuid, &NewStep)]) -> Result<String, StoreError> {
    let rows: Vec<(Uuid, Uuid, &str, String)> = steps
        .iter()
        .map(|(run_id, s)| (s.id, *run_id, s.step_id.as_str(), encode_time(&s.due_at)))
        .collect();
    to_json(&rows)
}

/// Events as the JSON array of `[run, step, kind, data]` the event inserts read.
fn events_json(events: &[NewEvent]) -> Result<String, StoreError> {
    let rows: Vec<(Uuid, Option<&str>, &str, &Value)> = events
        .iter()
        .map(|e| (e.run_id, e.step_id.as_deref(), e.kind.as_str(), &e.data))
        .collect();
    to_json(&rows)
}

/// New steps of several runs, one statement.
async fn insert_steps_of_runs(
    conn: &mut SqliteConnection,
    steps: &[(Uuid, &NewStep)],
    at: &str,
) -> Result<(), StoreError> {
    sqlx::query(insert_new_steps!())
        .bind(at)
        .bind(at)
        .bind(new_steps_json(steps)?)
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            StoreError::from_sqlx_unique(e, |_| {
                "a step of the batch already exists in its run".to_owned()
            })
        })?;
    Ok(())
}

async fn insert_step(
    conn: &mut SqliteConnection,
    run_id: Uuid,
    new: &NewStep,
    at: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO step_runs \
         (id, run_id, step_id, status, phase, attempt, due_at, created_at, updated_at) \
         VALUES (?, ?, ?, 'PENDING', 'queued', 0, ?, ?, ?)",
    )
    .bind(new.id.hyphenated())
    .bind(run_id.hyphenated())
    .bind(&new.step_id)
    .bind(encode_time(&new.due_at))
    .bind(at)
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(|e| StoreError::from_sqlx_unique(e, step_conflict(run_id, &new.step_id, new.id)))?;
    Ok(())
}

async fn insert_events(
    conn: &mut SqliteConnection,
    events: Vec<NewEvent>,
    at: DateTime<Utc>,
) -> Result<Vec<EventRecord>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    // One statement: the events as one JSON array, inserted in its order.
    let done = sqlx::query(insert_events!())
        .bind(encode_time(&at))
        .bind(events_json(&events)?)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx)?;
    // One statement of the one writer: its rows took the sequence numbers that end at the
    // last one it inserted, one after the other (AUTOINCREMENT: max + 1 for each row).
    let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
    if i64::try_from(done.rows_affected()).ok() != Some(count) {
        return Err(decode_error(
            "the event insert wrote another number of rows",
        ));
    }
    let first = done.last_insert_rowid() - count + 1;
    Ok(events
        .into_iter()
        .zip(first..)
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
    conn: &mut SqliteConnection,
    new: NewRun,
    at: DateTime<Utc>,
) -> Result<(RunRecord, bool), StoreError> {
    let (record, steps) = new.into_record(at);
    if !insert_run(&mut *conn, &record).await? {
        return Ok((record, false));
    }
    insert_steps(conn, record.id, &steps, &encode_time(&at)).await?;
    Ok((record, true))
}

/// New runs of starts written together ([`crate::starts`]): those whose idempotency key
/// exists (in the table or earlier in the array) are left out; returns the ids written.
const STARTS_RUNS_SQL: &str = concat!(
    "INSERT INTO workflow_runs (id, definition_id, definition_name, definition_version, ",
    "status, input, idempotency_key, parent_run_id, parent_step_row_id, depth, deadline_at, ",
    "created_at, started_at, updated_at) ",
    "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value -> 5, ",
    "value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11, ",
    "value ->> 12, value ->> 13 ",
    // `WHERE true`: an upsert after `INSERT ... SELECT` needs a WHERE clause to parse.
    "FROM json_each(?) WHERE true ORDER BY key ",
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
);

/// The steps and the events of the starts whose run [`STARTS_RUNS_SQL`] wrote, in their order.
const STARTS_ROWS_SQL: &str = concat!(insert_new_steps!(), "; ", insert_events!());

/// A new run row as [`STARTS_RUNS_SQL`] reads it.
#[derive(Serialize)]
struct NewRunJson<'a>(
    Uuid,
    Uuid,
    &'a str,
    &'a str,
    &'static str,
    &'a Value,
    Option<&'a str>,
    Option<Uuid>,
    Option<Uuid>,
    u32,
    Option<String>,
    String,
    Option<String>,
    String,
);

impl<'a> NewRunJson<'a> {
    fn of(run: &'a RunRecord) -> Self {
        NewRunJson(
            run.id,
            run.definition_id,
            &run.definition_name,
            &run.definition_version,
            run.status.as_str(),
            &run.input,
            run.idempotency_key.as_deref(),
            run.parent.map(|p| p.run_id),
            run.parent.map(|p| p.step_row_id),
            run.depth,
            optional_time(run.deadline_at.as_ref()),
            encode_time(&run.created_at),
            optional_time(run.started_at.as_ref()),
            encode_time(&run.updated_at),
        )
    }
}

/// Writes run starts ([`crate::starts`]); owns handles on the pools, to run in a task of its
/// own.
struct StartWriter {
    pool: SqlitePool,
    writes: SqlitePool,
}

#[async_trait]
impl WriteStarts for StartWriter {
    /// Four hand-overs to the writer's thread whatever the number of starts, instead of five
    /// for each: `BEGIN IMMEDIATE`, the runs, their steps and events, `COMMIT`.
    async fn together(&self, starts: &[Start]) -> Result<HashMap<Uuid, RunRecord>, GroupError> {
        let at = now();
        let records = starts::records(starts, at);
        let mut tx = self
            .writes
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| GroupError::Group(StoreError::from_sqlx(e)))?;
        let written = write_starts(&mut tx, starts, &records, &encode_time(&at)).await;
        starts::settle(tx, written, records, group_wide).await
    }

    async fn alone(&self, new: NewRun, events: Vec<NewEvent>) -> StartAnswer {
        let at = now();
        let key = new.idempotency_key.clone();
        // The first statement writes: the transaction holds the write lock from there on.
        let mut tx = self.writes.begin().await.map_err(StoreError::from_sqlx)?;
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
            " FROM workflow_runs WHERE idempotency_key = ?"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(run).transpose()
    }
}

/// Whether a SQLite result code (extended; its primary code is the low byte) fails any start:
/// busy, locked, out of memory, read-only, I/O, corrupt, full, cannot open.
fn group_wide(code: &str) -> bool {
    code.parse::<i32>()
        .is_ok_and(|code| matches!(code & 0xff, 5 | 6 | 7 | 8 | 10 | 11 | 13 | 14))
}

/// The runs of `records` (those whose idempotency key exists left out), then the steps and
/// events of the starts whose run was written; returns their ids.
async fn write_starts(
    conn: &mut SqliteConnection,
    starts: &[Start],
    records: &[(RunRecord, Vec<NewStep>)],
    at: &str,
) -> Result<std::collections::HashSet<Uuid>, StoreError> {
    let runs: Vec<NewRunJson<'_>> = records.iter().map(|(r, _)| NewRunJson::of(r)).collect();
    let written = sqlx::query(STARTS_RUNS_SQL)
        .bind(to_json(&runs)?)
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx)?
        .iter()
        .map(|row| uuid(row, "id"))
        .collect::<Result<std::collections::HashSet<Uuid>, _>>()?;
    let steps: Vec<(Uuid, &NewStep)> = records
        .iter()
        .filter(|(run, _)| written.contains(&run.id))
        .flat_map(|(run, steps)| steps.iter().map(|s| (run.id, s)))
        .collect();
    let events: Vec<NewEvent> = starts
        .iter()
        .filter(|s| written.contains(&s.new.id))
        .flat_map(|s| s.events.iter().cloned())
        .collect();
    if !steps.is_empty() || !events.is_empty() {
        sqlx::query(STARTS_ROWS_SQL)
            .bind(at)
            .bind(at)
            .bind(new_steps_json(&steps)?)
            .bind(at)
            .bind(events_json(&events)?)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::from_sqlx)?;
    }
    Ok(written)
}

/// Everything [`RunTransaction::apply`] writes, in its order.
async fn apply_changes(
    conn: &mut SqliteConnection,
    run_id: Uuid,
    changes: RunChanges,
) -> Result<Vec<EventRecord>, StoreError> {
    apply_many(conn, vec![(run_id, changes)], None)
        .await
        .map(|(events, _)| events)
}

/// One or several runs' changes ([`crate::RunsTransaction::apply_and_claim`]), then the claim,
/// then all their events in order. Child runs first (each with its own statements: rare); then
/// everything else of the batch, the claim and every event as one multi-statement query
/// ([`BATCH_SQL`]): one hand-over to the connection's thread, where a statement per kind and
/// per run cost one each. A batch that updates one step row twice is written change by change
/// instead. A child run that cannot be written (`Conflict`) is reported before a guard that
/// no longer holds (`Stale`), as it is written first.
async fn apply_many(
    conn: &mut SqliteConnection,
    mut changes: Vec<(Uuid, RunChanges)>,
    claim: Option<&ClaimRequest>,
) -> Result<(Vec<EventRecord>, Vec<ClaimedStep>), StoreError> {
    let at = now();
    for (_, changes) in &mut changes {
        for new in std::mem::take(&mut changes.new_runs) {
            let key = new.idempotency_key.clone();
            let (_, created) = insert_new_run(&mut *conn, new, at).await?;
            if !created {
                return Err(idempotency_conflict(key.as_deref().unwrap_or_default()));
            }
        }
    }
    let events: Vec<NewEvent> = changes
        .iter_mut()
        .flat_map(|(_, c)| std::mem::take(&mut c.events))
        .collect();
    let Some(rows) = BatchRows::of(&changes) else {
        for (run_id, changes) in &mut changes {
            write_changes(&mut *conn, *run_id, changes, at).await?;
        }
        return finish_changes(conn, events, claim, at).await;
    };
    let batch = BatchParams::of(&rows, &changes)?;
    let (first_seq, started, claimed) =
        write_batch(conn, &rows, &batch, &events, claim, at).await?;
    let recorded = events
        .into_iter()
        .zip(first_seq..)
        .chain(started)
        .map(|(new, seq)| new.recorded(seq, at))
        .collect();
    Ok((recorded, claimed))
}

/// The statements of a batch ([`write_batch`]), in order; each reads its rows from a JSON array
/// (`json_each`; an empty one costs next to nothing): new steps, step updates (returning the
/// ids written; each guarded one applies only if its row still runs under that lease, as in
/// [`RunTransaction::apply`]), attempts, run updates, steps woken (parked steps of other
/// runs), signals consumed, steps parked for a signal (due at once if one is pending), events,
/// the claim's `step.started` events, and the claim (returning the claimed rows; limit 0: no
/// claim). SET expressions see the row as it was: `claimed_from = phase` keeps the old phase.
///
/// Parameters are plain `?`, bound in the order they appear across all the statements (sqlx
/// numbers `?NNN` within one statement only: a statement that skips a number would take the
/// next statement's values). Several statements in one prepared query is SQLite's alone among
/// sqlx's drivers, and sqlx calls it deprecated (launchbadge/sqlx#3108) while keeping it; the
/// store tests run every transition through it.
const BATCH_SQL: &str = concat!(
    // 0: new steps
    insert_new_steps!(),
    "; ",
    // 1: step updates (returns the ids written)
    "UPDATE step_runs SET status = u.value ->> 'status', phase = u.value ->> 'phase', ",
    "input = COALESCE(u.value -> 'input', input), ",
    "output = COALESCE(u.value -> 'output', output), ",
    "error = COALESCE(u.value -> 'error', error), ",
    "runner = COALESCE(u.value ->> 'runner', runner), due_at = u.value ->> 'due', ",
    "wait = u.value -> 'wait', attempt = COALESCE(u.value ->> 'reset', attempt), ",
    "lease_owner = CASE WHEN u.value ->> 'keep' THEN lease_owner END, ",
    "completed_at = CASE WHEN u.value ->> 'done' THEN ? END, updated_at = ? ",
    "FROM json_each(?) AS u ",
    "WHERE step_runs.id = u.value ->> 'id' AND (u.value ->> 'owner' IS NULL ",
    "OR (step_runs.phase = 'executing' AND step_runs.lease_owner = u.value ->> 'owner' ",
    "AND step_runs.attempt = u.value ->> 'attempt')) ",
    "RETURNING step_runs.id; ",
    // 2: attempts
    "INSERT INTO step_attempts (step_row_id, run_id, attempt, status, input, output, ",
    "error, runner, lease_owner, started_at, completed_at) ",
    "SELECT s.id, s.run_id, u.value ->> 'attempt', u.value ->> 'status', ",
    "u.value -> 'input', u.value -> 'output', u.value -> 'error', u.value ->> 'runner', ",
    "u.value ->> 'owner', u.value ->> 'started', u.value ->> 'completed' ",
    "FROM json_each(?) AS u JOIN step_runs s ON s.id = u.value ->> 'step' ORDER BY u.key; ",
    // 3: run updates
    "UPDATE workflow_runs SET status = u.value ->> 'status', output = u.value -> 'output', ",
    "error = u.value -> 'error', completed_at = CASE WHEN u.value ->> 'done' THEN ? END, ",
    "updated_at = ? FROM json_each(?) AS u WHERE workflow_runs.id = u.value ->> 'id'; ",
    // 4: wake-ups
    "UPDATE step_runs SET due_at = ?, updated_at = ? ",
    "WHERE id IN (SELECT value FROM json_each(?)) AND phase = 'waiting'; ",
    // 5: signals consumed
    "UPDATE run_signals SET consumed_at = ? ",
    "WHERE id IN (SELECT value FROM json_each(?)) AND consumed_at IS NULL; ",
    // 6: parked for a signal that is already pending: due now
    "UPDATE step_runs SET due_at = ?, updated_at = ? FROM json_each(?) AS w ",
    "WHERE step_runs.id = w.value ->> 0 AND phase = 'waiting' ",
    "AND (due_at IS NULL OR due_at > ?) ",
    "AND EXISTS (SELECT 1 FROM run_signals g WHERE g.run_id = step_runs.run_id ",
    "AND g.name = w.value ->> 1 AND g.consumed_at IS NULL); ",
    // 7: events
    insert_events!(),
    "; ",
    // 8: the claim's `step.started` events (as `started_events` makes them: one per new
    // attempt, by step id), of the rows the claim takes next (the same subquery, nothing
    // written between)
    "INSERT INTO events (run_id, step_id, kind, data, created_at) ",
    "SELECT run_id, step_id, 'step.started', json_object('attempt', attempt + 1, 'replica', ?), ? ",
    "FROM (SELECT id, run_id, step_id, attempt, phase FROM step_runs ",
    "WHERE phase <> 'done' AND due_at <= ? ORDER BY due_at, id LIMIT ? + 0) ",
    "WHERE phase <> 'waiting' ORDER BY id; ",
    // 9: the claim (returns the claimed rows)
    "UPDATE step_runs SET phase = 'executing', status = 'RUNNING', lease_owner = ?, ",
    "due_at = ?, started_at = COALESCE(started_at, ?), ",
    "attempt = CASE WHEN phase = 'waiting' THEN attempt ELSE attempt + 1 END, ",
    "claimed_from = phase, updated_at = ? ",
    "WHERE id IN (SELECT id FROM step_runs WHERE phase <> 'done' AND due_at <= ? ",
    "ORDER BY due_at, id LIMIT ? + 0) RETURNING ",
    step_json!(),
    ", claimed_from"
);

/// The statements of [`BATCH_SQL`] whose results or errors [`write_batch`] tells apart.
const BATCH_NEW_STEPS: usize = 0;
const BATCH_UPDATES: usize = 1;
const BATCH_ATTEMPTS: usize = 2;
const BATCH_EVENTS: usize = 7;
const BATCH_STARTED: usize = 8;
const BATCH_CLAIM: usize = 9;

/// The JSON arrays [`BATCH_SQL`] reads, but the events.
struct BatchParams {
    new_steps: String,
    step_updates: String,
    attempts: String,
    runs: String,
    wake: String,
    consume: String,
    signal_waits: String,
}

/// A step update as [`BATCH_SQL`] reads it (an absent key reads as SQL NULL through `->`).
#[derive(Serialize)]
struct StepUpdateJson<'a> {
    id: Uuid,
    status: &'static str,
    phase: &'static str,
    keep: bool,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    due: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wait: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reset: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
}

/// An attempt as [`BATCH_SQL`] reads it.
#[derive(Serialize)]
struct AttemptJson<'a> {
    step: Uuid,
    attempt: u32,
    status: &'static str,
    started: String,
    completed: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
}

/// A run update as [`BATCH_SQL`] reads it.
#[derive(Serialize)]
struct RunUpdateJson<'a> {
    id: Uuid,
    status: &'static str,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a Value>,
}

/// `value` as JSON text (the parameters' types always serialize).
fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))
}

impl BatchParams {
    fn of(rows: &BatchRows<'_>, changes: &[(Uuid, RunChanges)]) -> Result<Self, StoreError> {
        let step_updates: Vec<StepUpdateJson<'_>> = rows
            .step_updates
            .iter()
            .map(|u| StepUpdateJson {
                id: u.id,
                status: u.status.as_str(),
                phase: u.phase.as_str(),
                keep: u.phase == StepPhase::Executing,
                done: u.status.is_terminal(),
                input: u.input.as_ref(),
                output: u.output.as_ref(),
                error: u.error.as_ref(),
                runner: u.runner.as_deref(),
                due: u.due_at.as_ref().map(encode_time),
                wait: u.wait.as_ref(),
                reset: u.reset_attempt,
                owner: u.guard.as_ref().map(|g| g.owner.as_str()),
                attempt: u.guard.as_ref().map(|g| g.attempt),
            })
            .collect();
        let attempts: Vec<AttemptJson<'_>> = rows
            .attempts
            .iter()
            .map(|a| AttemptJson {
                step: a.step_row_id,
                attempt: a.attempt,
                status: a.status.as_str(),
                started: encode_time(&a.started_at),
                completed: encode_time(&a.completed_at),
                input: a.input.as_ref(),
                output: a.output.as_ref(),
                error: a.error.as_ref(),
                runner: a.runner.as_deref(),
                owner: a.lease_owner.as_deref(),
            })
            .collect();
        // One update per run, the batch's last: an update sets every field it writes, and of
        // several rows of `json_each` matching one row, SQLite applies one it picks.
        let mut last_update: HashMap<Uuid, usize> = HashMap::new();
        for (index, (run_id, c)) in changes.iter().enumerate() {
            if c.run.is_some() {
                last_update.insert(*run_id, index);
            }
        }
        let runs: Vec<RunUpdateJson<'_>> = changes
            .iter()
            .enumerate()
            .filter(|(index, (run_id, _))| last_update.get(run_id) == Some(index))
            .filter_map(|(_, (run_id, c))| {
                let update = c.run.as_ref()?;
                Some(RunUpdateJson {
                    id: *run_id,
                    status: update.status.as_str(),
                    done: update.status.is_terminal(),
                    output: update.output.as_ref(),
                    error: update.error.as_ref(),
                })
            })
            .collect();
        let wake: Vec<Uuid> = changes
            .iter()
            .flat_map(|(_, c)| c.wake.iter().copied())
            .collect();
        let consume: Vec<Uuid> = changes
            .iter()
            .flat_map(|(_, c)| c.consume_signals.iter().copied())
            .collect();
        let signal_waits: Vec<(Uuid, &str)> =
            changes.iter().flat_map(|(_, c)| c.signal_waits()).collect();
        Ok(BatchParams {
            new_steps: new_steps_json(&rows.new_steps)?,
            step_updates: to_json(&step_updates)?,
            attempts: to_json(&attempts)?,
            runs: to_json(&runs)?,
            wake: to_json(&wake)?,
            consume: to_json(&consume)?,
            signal_waits: to_json(&signal_waits)?,
        })
    }
}

/// [`BATCH_SQL`] with the batch's rows, its events and the claim: the sequence number of the
/// first event (the others follow it one by one: one statement of the one writer, each row
/// max + 1 under AUTOINCREMENT), the claim's `step.started` events with their sequence
/// numbers, and the claimed steps (by step id: UUID v7, creation order, the order they became
/// ready in the common case).
async fn write_batch(
    conn: &mut SqliteConnection,
    rows: &BatchRows<'_>,
    batch: &BatchParams,
    events: &[NewEvent],
    claim: Option<&ClaimRequest>,
    at: DateTime<Utc>,
) -> Result<(i64, Vec<(NewEvent, i64)>, Vec<ClaimedStep>), StoreError> {
    let at_text = encode_time(&at);
    let events_json = events_json(events)?;
    let (owner, until, limit) = match claim {
        Some(claim) => (
            claim.owner.as_str(),
            encode_time(&lease_until(at, claim.lease)?),
            i64::from(claim.limit),
        ),
        None => ("", at_text.clone(), 0),
    };
    let at = at_text.as_str();
    let query = sqlx::query(BATCH_SQL)
        // new steps
        .bind(at)
        .bind(at)
        .bind(&batch.new_steps)
        // step updates
        .bind(at)
        .bind(at)
        .bind(&batch.step_updates)
        // attempts
        .bind(&batch.attempts)
        // run updates
        .bind(at)
        .bind(at)
        .bind(&batch.runs)
        // wake-ups
        .bind(at)
        .bind(at)
        .bind(&batch.wake)
        // signals consumed
        .bind(at)
        .bind(&batch.consume)
        // parked for a pending signal
        .bind(at)
        .bind(at)
        .bind(&batch.signal_waits)
        .bind(at)
        // events
        .bind(at)
        .bind(&events_json)
        // the claim's events
        .bind(owner)
        .bind(at)
        .bind(at)
        .bind(limit)
        // the claim
        .bind(owner)
        .bind(&until)
        .bind(at)
        .bind(at)
        .bind(at)
        .bind(limit);
    let mut results = sqlx::Executor::fetch_many(&mut *conn, query);
    let mut statement = 0;
    let mut applied: Vec<Uuid> = Vec::new();
    let mut attempts_written = 0;
    let mut last_event = 0;
    let (mut last_started, mut started_count) = (0, 0);
    let mut claimed: Vec<ClaimedStep> = Vec::new();
    let mut failure = None;
    while let Some(result) = results.next().await {
        match result {
            Ok(Either::Left(done)) => {
                match statement {
                    BATCH_ATTEMPTS => attempts_written = done.rows_affected(),
                    BATCH_EVENTS => last_event = done.last_insert_rowid(),
                    BATCH_STARTED => {
                        last_started = done.last_insert_rowid();
                        started_count = done.rows_affected();
                    }
                    _ => {}
                }
                statement += 1;
            }
            Ok(Either::Right(row)) => match statement {
                BATCH_UPDATES => applied.push(row.try_get::<Hyphenated, _>(0)?.into_uuid()),
                BATCH_CLAIM => {
                    let step: StepJson =
                        serde_json::from_str(row.try_get(0)?).map_err(json_decode_error)?;
                    claimed.push(ClaimedStep {
                        step: step.record()?,
                        claimed_from: decode_phase(row.try_get(1)?)?,
                    });
                }
                _ => {}
            },
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(results);
    // A guard that no longer holds says why first, then an attempt of no step: what failed
    // after them may be their effect.
    if statement > BATCH_UPDATES {
        rows.check_applied(applied)?;
    }
    if statement > BATCH_ATTEMPTS && attempts_written != rows.attempts.len() as u64 {
        return Err(StoreError::NotFound);
    }
    if let Some(e) = failure {
        let conflict = e
            .as_database_error()
            .is_some_and(|db| db.is_unique_violation());
        // Which row conflicts: found row by row (a failed statement changes nothing in
        // SQLite; the transaction is rolled back all the same).
        match statement {
            BATCH_NEW_STEPS if conflict => {
                for (run_id, new) in &rows.new_steps {
                    insert_step(&mut *conn, *run_id, new, &at_text).await?;
                }
            }
            BATCH_ATTEMPTS if conflict => {
                for record in &rows.attempts {
                    insert_attempt(&mut *conn, record).await?;
                }
            }
            _ => {}
        }
        return Err(StoreError::from_sqlx_unique(e, |what| {
            format!("a row of the batch already exists ({what})")
        }));
    }
    if statement <= BATCH_CLAIM {
        return Err(decode_error("the batch ended before its last statement"));
    }
    claimed.sort_by_key(|c| c.step.id);
    let started = match claim {
        Some(claim) => started_events(&claimed, &claim.owner),
        None => Vec::new(),
    };
    if started_count != started.len() as u64 {
        return Err(decode_error(
            "the claim's events and the claim took different rows",
        ));
    }
    let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
    let started_first = last_started - i64::try_from(started_count).unwrap_or(i64::MAX) + 1;
    Ok((
        last_event - count + 1,
        started.into_iter().zip(started_first..).collect(),
        claimed,
    ))
}

/// One attempt (`NotFound` if its step row does not exist, `Conflict` if it is recorded).
async fn insert_attempt(
    conn: &mut SqliteConnection,
    record: &AttemptRecord,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "INSERT INTO step_attempts (step_row_id, run_id, attempt, status, input, output, \
         error, runner, lease_owner, started_at, completed_at) \
         SELECT id, run_id, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM step_runs WHERE id = ?",
    )
    .bind(i64::from(record.attempt))
    .bind(record.status.as_str())
    .bind(&record.input)
    .bind(&record.output)
    .bind(&record.error)
    .bind(&record.runner)
    .bind(&record.lease_owner)
    .bind(encode_time(&record.started_at))
    .bind(encode_time(&record.completed_at))
    .bind(record.step_row_id.hyphenated())
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        StoreError::from_sqlx_unique(e, attempt_conflict(record.step_row_id, record.attempt))
    })?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Steps 1–8 of [`RunTransaction::apply`] row by row (everything but the child runs, written
/// before, and the events, left in `changes`): for a batch that updates one row twice.
async fn write_changes(
    conn: &mut SqliteConnection,
    run_id: Uuid,
    changes: &mut RunChanges,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let at_text = encode_time(&at);

    if let Some(update) = &changes.run {
        let completed_at = update.status.is_terminal().then(|| at_text.clone());
        sqlx::query(
            "UPDATE workflow_runs SET status = ?, output = ?, error = ?, completed_at = ?, \
             updated_at = ? WHERE id = ?",
        )
        .bind(update.status.as_str())
        .bind(&update.output)
        .bind(&update.error)
        .bind(completed_at)
        .bind(&at_text)
        .bind(run_id.hyphenated())
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx)?;
    }

    for update in &changes.step_updates {
        let completed_at = update.status.is_terminal().then(|| at_text.clone());
        let keep_lease = update.phase == StepPhase::Executing;
        let reset_attempt = update.reset_attempt.map(i64::from);
        let query = match &update.guard {
            Some(_) => sqlx::query(
                "UPDATE step_runs SET status = ?, phase = ?, input = COALESCE(?, input), \
                 output = COALESCE(?, output), error = COALESCE(?, error), \
                 runner = COALESCE(?, runner), due_at = ?, wait = ?, \
                 attempt = COALESCE(?, attempt), \
                 lease_owner = CASE WHEN ? THEN lease_owner END, completed_at = ?, \
                 updated_at = ? \
                 WHERE id = ? AND phase = 'executing' AND lease_owner = ? AND attempt = ?",
            ),
            None => sqlx::query(
                "UPDATE step_runs SET status = ?, phase = ?, input = COALESCE(?, input), \
                 output = COALESCE(?, output), error = COALESCE(?, error), \
                 runner = COALESCE(?, runner), due_at = ?, wait = ?, \
                 attempt = COALESCE(?, attempt), \
                 lease_owner = CASE WHEN ? THEN lease_owner END, completed_at = ?, \
                 updated_at = ? \
                 WHERE id = ?",
            ),
        };
        let mut query = query
            .bind(update.status.as_str())
            .bind(update.phase.as_str())
            .bind(&update.input)
            .bind(&update.output)
            .bind(&update.error)
            .bind(&update.runner)
            .bind(optional_time(update.due_at.as_ref()))
            .bind(&update.wait)
            .bind(reset_attempt)
            .bind(keep_lease)
            .bind(completed_at)
            .bind(&at_text)
            .bind(update.id.hyphenated());
        if let Some(guard) = &update.guard {
            query = query.bind(&guard.owner).bind(i64::from(guard.attempt));
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

    insert_steps(&mut *conn, run_id, &changes.new_steps, &at_text).await?;

    for record in &changes.attempts {
        insert_attempt(&mut *conn, record).await?;
    }

    if !changes.wake.is_empty() {
        sqlx::query(
            "UPDATE step_runs SET due_at = ?, updated_at = ? \
             WHERE id IN (SELECT value FROM json_each(?)) AND phase = 'waiting'",
        )
        .bind(&at_text)
        .bind(&at_text)
        .bind(id_list(changes.wake.iter().copied()))
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx)?;
    }

    if !changes.consume_signals.is_empty() {
        sqlx::query(
            "UPDATE run_signals SET consumed_at = ? \
             WHERE id IN (SELECT value FROM json_each(?)) AND consumed_at IS NULL",
        )
        .bind(&at_text)
        .bind(id_list(changes.consume_signals.iter().copied()))
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx)?;
    }

    // Parked for a signal that is already pending: due now.
    for (id, name) in changes.signal_waits() {
        sqlx::query(
            "UPDATE step_runs SET due_at = ?, updated_at = ? \
             WHERE id = ? AND phase = 'waiting' AND (due_at IS NULL OR due_at > ?) \
             AND EXISTS (SELECT 1 FROM run_signals g WHERE g.run_id = step_runs.run_id \
             AND g.name = ? AND g.consumed_at IS NULL)",
        )
        .bind(&at_text)
        .bind(&at_text)
        .bind(id.hyphenated())
        .bind(&at_text)
        .bind(name)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx)?;
    }
    Ok(())
}

/// The claim (if asked) and the events that end a transition's writes.
async fn finish_changes(
    conn: &mut SqliteConnection,
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

/// A run locked by `BEGIN IMMEDIATE` (the database's write lock).
struct SqliteRunTransaction {
    tx: Transaction<'static, Sqlite>,
    run: RunRecord,
    /// This process's write turn, held until the transaction ends (dropped after `tx`).
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

#[async_trait]
impl RunTransaction for SqliteRunTransaction {
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
            " FROM run_signals WHERE run_id = ? AND name = ? AND consumed_at IS NULL",
            " ORDER BY created_at, id"
        ))
        .bind(self.run.id.hyphenated())
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
        let SqliteRunTransaction { mut tx, run, _turn } = *self;
        let result = apply_changes(&mut tx, run.id, changes).await;
        settle(tx, result).await
    }

    async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        self.tx.rollback().await.map_err(StoreError::from_sqlx)
    }
}

/// Several runs under the database's write lock (`BEGIN IMMEDIATE`).
struct SqliteRunsTransaction {
    tx: Transaction<'static, Sqlite>,
    runs: Vec<RunRecord>,
    /// Their steps as read with them, until [`RunsTransaction::steps`] takes them.
    steps: Option<Vec<StepRecord>>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

#[async_trait]
impl RunsTransaction for SqliteRunsTransaction {
    fn runs(&self) -> &[RunRecord] {
        &self.runs
    }

    async fn steps(&mut self) -> Result<Vec<StepRecord>, StoreError> {
        if let Some(steps) = self.steps.take() {
            return Ok(steps);
        }
        let (steps,): (String,) = sqlx::query_as(concat!(
            "SELECT json_group_array(",
            step_json!(),
            " ORDER BY created_at, id) FROM step_runs ",
            "WHERE run_id IN (SELECT value FROM json_each(?))"
        ))
        .bind(id_list(self.runs.iter().map(|r| r.id)))
        .fetch_one(&mut *self.tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        steps_from_json(&steps)
    }

    async fn apply_and_claim(
        self: Box<Self>,
        changes: Vec<(Uuid, RunChanges)>,
        claim: Option<ClaimRequest>,
    ) -> Result<(Vec<EventRecord>, Vec<ClaimedStep>), StoreError> {
        let SqliteRunsTransaction { mut tx, _turn, .. } = *self;
        let result = apply_many(&mut tx, changes, claim.as_ref()).await;
        settle(tx, result).await
    }
}

/// Claim up to `limit` due steps for `owner` at `at`, oldest due first (inside the caller's
/// write transaction). No events: the caller appends [`started_events`].
async fn claim_due(
    conn: &mut SqliteConnection,
    owner: &str,
    lease: Duration,
    limit: u32,
    at: DateTime<Utc>,
) -> Result<Vec<ClaimedStep>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let until = lease_until(at, lease)?;
    let at_text = encode_time(&at);
    // One statement. SET expressions see the row as it was: `claimed_from = phase` keeps the
    // old phase.
    let rows = sqlx::query(concat!(
        "UPDATE step_runs SET phase = 'executing', status = 'RUNNING', lease_owner = ?, ",
        "due_at = ?, started_at = COALESCE(started_at, ?), ",
        "attempt = CASE WHEN phase = 'waiting' THEN attempt ELSE attempt + 1 END, ",
        "claimed_from = phase, updated_at = ? ",
        "WHERE id IN (SELECT id FROM step_runs WHERE phase <> 'done' AND due_at <= ? ",
        "ORDER BY due_at, id LIMIT ? + 0) RETURNING ",
        step_json!(),
        ", claimed_from"
    ))
    .bind(owner)
    .bind(encode_time(&until))
    .bind(&at_text)
    .bind(&at_text)
    .bind(&at_text)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::from_sqlx)?;
    let mut claimed = rows
        .iter()
        .map(|row| {
            let step: StepJson =
                serde_json::from_str(row.try_get(0)?).map_err(json_decode_error)?;
            Ok(ClaimedStep {
                step: step.record()?,
                claimed_from: decode_phase(row.try_get(1)?)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // Step ids are UUID v7: creation order, the order they became ready in the common case.
    claimed.sort_by_key(|c| c.step.id);
    Ok(claimed)
}

impl SqliteStore {
    async fn immediate(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.writes
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::from_sqlx)
    }

    /// Run starts that meet at the write turn are written together ([`crate::starts`]).
    pub(super) async fn create_run_impl(
        &self,
        new: NewRun,
        events: Vec<NewEvent>,
    ) -> Result<(RunRecord, bool), StoreError> {
        let writer = StartWriter {
            pool: self.pool.clone(),
            writes: self.writes.clone(),
        };
        starts::start(&self.starts, self.writer.clone(), writer, new, events).await
    }

    pub(super) async fn get_run_impl(&self, id: Uuid) -> Result<Option<RunRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from_sqlx)?;
        run_by_id(&mut conn, id).await
    }

    pub(super) async fn list_runs_impl(&self, q: &RunQuery) -> Result<Page<RunRecord>, StoreError> {
        let mut select = QueryBuilder::<Sqlite>::new(concat!(
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
                let mut count = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM workflow_runs");
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
        // One statement, one row: the runs and their completed steps' outputs.
        let (runs, outputs): (String, String) = sqlx::query_as(concat!(
            "SELECT (SELECT json_group_array(",
            run_json!(),
            ") FROM workflow_runs WHERE id IN (SELECT value FROM json_each(?1))), ",
            "(SELECT json_group_array(json_array(run_id, step_id, output)) FROM step_runs ",
            "WHERE run_id IN (SELECT value FROM json_each(?1)) AND status = 'COMPLETED')"
        ))
        .bind(id_list(run_ids.iter().copied()))
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        let runs = runs_from_json(&runs)?;
        let outputs = serde_json::from_str::<Vec<(Uuid, String, Option<String>)>>(&outputs)
            .map_err(json_decode_error)?
            .into_iter()
            .map(|(run_id, step_id, output)| Ok((run_id, step_id, json_column(output)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(RunOutputs::join(runs, outputs))
    }

    pub(super) async fn get_step_impl(&self, id: Uuid) -> Result<Option<StepRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            step_columns!(),
            " FROM step_runs WHERE id = ?"
        ))
        .bind(id.hyphenated())
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
             WHERE a.run_id = ? ORDER BY s.created_at, s.id, a.attempt",
        )
        .bind(run_id.hyphenated())
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
        let _turn = self.write_turn().await;
        let at = now();
        let mut tx = self.immediate().await?;
        let claimed = claim_due(&mut tx, owner, lease, limit, at).await?;
        if claimed.is_empty() {
            tx.rollback().await.map_err(StoreError::from_sqlx)?;
            return Ok(Vec::new());
        }
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
        let _turn = self.write_turn().await;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let until = lease_until(now(), lease)?;
        let renewed: Vec<Hyphenated> = sqlx::query_scalar(
            "UPDATE step_runs SET due_at = ? \
             WHERE id IN (SELECT value FROM json_each(?)) AND phase = 'executing' \
             AND lease_owner = ? RETURNING id",
        )
        .bind(encode_time(&until))
        .bind(id_list(ids.iter().copied()))
        .bind(owner)
        .fetch_all(&self.writes)
        .await
        .map_err(StoreError::from_sqlx)?;
        let renewed: Vec<Uuid> = renewed.into_iter().map(Hyphenated::into_uuid).collect();
        Ok(ids
            .iter()
            .filter(|id| !renewed.contains(id))
            .copied()
            .collect())
    }

    pub(super) async fn release_leases_impl(&self, owner: &str) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        let at = encode_time(&now());
        let done = sqlx::query(
            "UPDATE step_runs SET phase = 'queued', status = 'PENDING', due_at = ?, \
             lease_owner = NULL, updated_at = ? WHERE phase = 'executing' AND lease_owner = ?",
        )
        .bind(&at)
        .bind(&at)
        .bind(owner)
        .execute(&self.writes)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected())
    }

    pub(super) async fn reset_executing_impl(&self) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        let at = encode_time(&now());
        let done = sqlx::query(
            "UPDATE step_runs SET phase = 'queued', status = 'PENDING', due_at = ?, \
             lease_owner = NULL, updated_at = ? WHERE phase = 'executing'",
        )
        .bind(&at)
        .bind(&at)
        .execute(&self.writes)
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
             WHERE phase IN ('queued', 'waiting') AND due_at <= ?",
        )
        .bind(encode_time(&now()))
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
        let turn = self.write_turn().await;
        let mut tx = self.immediate().await?;
        // The runs and their steps (which the caller reads next) in one statement, one row.
        let (runs, steps): (String, String) = sqlx::query_as(concat!(
            "SELECT (SELECT json_group_array(",
            run_json!(),
            " ORDER BY id) FROM workflow_runs WHERE id IN (SELECT value FROM json_each(?1))), ",
            "(SELECT json_group_array(",
            step_json!(),
            " ORDER BY created_at, id) FROM step_runs ",
            "WHERE run_id IN (SELECT value FROM json_each(?1)))"
        ))
        .bind(id_list(run_ids.iter().copied()))
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(Box::new(SqliteRunsTransaction {
            tx,
            runs: runs_from_json(&runs)?,
            steps: Some(steps_from_json(&steps)?),
            _turn: turn,
        }))
    }

    pub(super) async fn begin_run_impl(
        &self,
        run_id: Uuid,
    ) -> Result<Box<dyn RunTransaction>, StoreError> {
        let turn = self.write_turn().await;
        let mut tx = self.immediate().await?;
        match run_by_id(&mut tx, run_id).await? {
            Some(run) => Ok(Box::new(SqliteRunTransaction {
                tx,
                run,
                _turn: turn,
            })),
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
        let _turn = self.write_turn().await;
        let at = now();
        let at_text = encode_time(&at);
        let record = SignalRecord {
            id: crate::records::new_id(),
            run_id,
            name: name.to_owned(),
            payload,
            created_at: at,
        };
        let mut tx = self.immediate().await?;
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM workflow_runs WHERE id = ?")
                .bind(run_id.hyphenated())
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
            ") VALUES (?, ?, ?, ?, ?)"
        ))
        .bind(record.id.hyphenated())
        .bind(run_id.hyphenated())
        .bind(&record.name)
        .bind(&record.payload)
        .bind(&at_text)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        sqlx::query(
            "UPDATE step_runs SET due_at = ?, updated_at = ? \
             WHERE run_id = ? AND phase = 'waiting' AND json_extract(wait, '$.signal') = ?",
        )
        .bind(&at_text)
        .bind(&at_text)
        .bind(run_id.hyphenated())
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
                " FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ? + 0"
            ))
            .bind(run_id.hyphenated()),
            None => sqlx::query(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE seq > ? ORDER BY seq LIMIT ? + 0"
            )),
        }
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(event).collect()
    }

    pub(super) async fn stream_events_impl(
        &self,
        q: &EventQuery,
    ) -> Result<Vec<ScopedEvent>, StoreError> {
        // One row: the page as one JSON array of [seq, run, step, kind, data, time, definition].
        macro_rules! stream_sql {
            ($filter:literal) => {
                concat!(
                    "SELECT json_group_array(json_array(seq, run_id, step_id, kind, data, ",
                    "created_at, definition_id) ORDER BY seq) FROM (",
                    "SELECT e.seq, e.run_id, e.step_id, e.kind, e.data, e.created_at, r.definition_id FROM events e JOIN workflow_runs r ON r.id = e.run_id WHERE e.seq > ? AND e.seq <= ?",
                    $filter,
                    " ORDER BY e.seq LIMIT ? + 0)"
                )
            };
        }
        let (sql, id) = match q.scope {
            EventScope::All => (stream_sql!(""), None),
            EventScope::Run(id) => (stream_sql!(" AND e.run_id = ?"), Some(id)),
            EventScope::Definition(id) => (stream_sql!(" AND r.definition_id = ?"), Some(id)),
        };
        let mut query = sqlx::query_scalar(sql)
            .bind(q.after_seq)
            .bind(q.until_seq.unwrap_or(i64::MAX));
        if let Some(id) = id {
            query = query.bind(id.hyphenated());
        }
        let page: String = query
            .bind(i64::from(q.limit))
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        #[derive(Deserialize)]
        struct EventJson(i64, Uuid, Option<String>, String, String, Time, Uuid);
        serde_json::from_str::<Vec<EventJson>>(&page)
            .map_err(json_decode_error)?
            .into_iter()
            .map(
                |EventJson(seq, run_id, step_id, kind, data, created_at, definition_id)| {
                    Ok(ScopedEvent {
                        event: EventRecord {
                            seq,
                            run_id,
                            step_id,
                            kind,
                            data: serde_json::from_str(&data).map_err(json_decode_error)?,
                            created_at,
                        },
                        definition_id,
                    })
                },
            )
            .collect()
    }

    pub(super) async fn admit_runs_impl(
        &self,
        definition_id: Uuid,
        cap: Option<u32>,
        entry_step_id: &str,
        timeout: Option<std::time::Duration>,
    ) -> Result<Vec<Uuid>, StoreError> {
        let _turn = self.write_turn().await;
        let at = now();
        let at_text = encode_time(&at);
        let deadline = optional_time(crate::runs::deadline_after(at, timeout).as_ref());
        // The write lock serialises admissions (one process owns the file).
        let mut tx = self.immediate().await?;
        let running: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM workflow_runs WHERE definition_id = ? AND status = 'RUNNING'",
        )
        .bind(definition_id.hyphenated())
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        let room = cap.map_or(1000, |cap| (i64::from(cap) - running).clamp(0, 1000));
        let held: Vec<Hyphenated> = if room == 0 {
            Vec::new()
        } else {
            sqlx::query_scalar(
                "SELECT id FROM workflow_runs WHERE definition_id = ? AND status = 'PENDING' \
                 ORDER BY created_at, id LIMIT ? + 0",
            )
            .bind(definition_id.hyphenated())
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
            let id = id.into_uuid();
            sqlx::query(
                "UPDATE workflow_runs SET status = 'RUNNING', started_at = ?, updated_at = ?, \
                 deadline_at = ? WHERE id = ?",
            )
            .bind(&at_text)
            .bind(&at_text)
            .bind(&deadline)
            .bind(id.hyphenated())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
            let entry = NewStep {
                id: Uuid::now_v7(),
                step_id: entry_step_id.to_owned(),
                due_at: at,
            };
            insert_steps(&mut tx, id, &[entry], &at_text).await?;
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
        let ids: Vec<Hyphenated> = sqlx::query_scalar(
            "SELECT DISTINCT definition_id FROM workflow_runs WHERE status = 'PENDING'",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(ids.into_iter().map(Hyphenated::into_uuid).collect())
    }

    pub(super) async fn last_event_seq_impl(&self) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(seq.unwrap_or(0))
    }
}
