//! Run starts written together ([`crate::Store::create_run`]): the starts that arrive while
//! one is being written wait for their turn, and the task that gets it writes them all in one
//! transaction, instead of a transaction (and its round trips, and on PostgreSQL its turn at
//! the event log's lock) for each.
//!
//! Each start is queued and a task of its own waits for the turn for it: a queued start is
//! written promptly whether or not its caller still waits (a client that hangs up), and a
//! caller waits for its answer only, not for the turn once its start is written. Within a
//! group, starts are told apart by run id: a start whose id repeats in the group is written
//! alone after it. If a statement of the group fails because of what one start may hold (a
//! conflict, a value the database refuses), the transaction is rolled back and every start is
//! written one at a time, so that one start's error stays its own; if the group fails for
//! everyone (the database unavailable, or the commit's outcome unknown), every start is
//! answered with that error, as [`StoreError::Unavailable`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::StoreError;
use crate::records::{decode_error, idempotency_conflict};
use crate::runs::{NewEvent, NewRun, NewStep, RunRecord};

/// What a start is answered: the run, and whether this start created it.
pub(crate) type StartAnswer = Result<(RunRecord, bool), StoreError>;

/// The most starts one transaction writes (more wait for the next).
const MAX_GROUP: usize = 256;

/// A run start waiting for its turn to be written.
pub(crate) struct Start {
    pub(crate) new: NewRun,
    pub(crate) events: Vec<NewEvent>,
    answer: oneshot::Sender<StartAnswer>,
}

/// Why a group was not written.
pub(crate) enum GroupError {
    /// What one start holds may be the cause: each is written alone.
    Start(StoreError),
    /// None can be written now, or the commit's outcome is unknown: each is answered with it.
    Group(StoreError),
}

impl GroupError {
    /// A statement's error. Group-wide when no start can be written now: the database is
    /// unreachable, or its code is one that `group_wide` (the backend's) names (out of
    /// resources, read-only, locked...). Anything else may be what one start holds (a
    /// conflict, a value the database refuses): each start is then written alone, which is
    /// safe, as the group's transaction was rolled back.
    pub(crate) fn of_statement(error: StoreError, group_wide: fn(&str) -> bool) -> GroupError {
        let everyone = match &error {
            StoreError::Unavailable(_) => true,
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| group_wide(&code)),
                _ => false,
            },
            _ => false,
        };
        if everyone {
            GroupError::Group(error)
        } else {
            GroupError::Start(error)
        }
    }
}

/// The run rows `starts` write at `at`, with their initial steps.
pub(crate) fn records(starts: &[Start], at: DateTime<Utc>) -> Vec<(RunRecord, Vec<NewStep>)> {
    starts
        .iter()
        .map(|s| s.new.clone().into_record(at))
        .collect()
}

/// End a group's transaction: roll back on a statement's error (sorted by the backend's
/// `group_wide`), commit otherwise (a failed commit's outcome is unknown: group-wide). Returns
/// the runs of `records` that `written` names, by id.
pub(crate) async fn settle<DB: sqlx::Database>(
    tx: sqlx::Transaction<'static, DB>,
    written: Result<HashSet<Uuid>, StoreError>,
    records: Vec<(RunRecord, Vec<NewStep>)>,
    group_wide: fn(&str) -> bool,
) -> Result<HashMap<Uuid, RunRecord>, GroupError> {
    let written = match written {
        Ok(written) => written,
        Err(e) => {
            let _ = tx.rollback().await;
            return Err(GroupError::of_statement(e, group_wide));
        }
    };
    tx.commit()
        .await
        .map_err(|e| GroupError::Group(StoreError::from_sqlx(e)))?;
    Ok(records
        .into_iter()
        .map(|(record, _)| record)
        .filter(|record| written.contains(&record.id))
        .map(|record| (record.id, record))
        .collect())
}

/// How a backend writes starts.
#[async_trait]
pub(crate) trait WriteStarts: Send + Sync + 'static {
    /// Every start in one transaction (their run ids all differ), runs whose idempotency key
    /// exists (in the database or earlier in `starts`) left out; the runs written, by id.
    async fn together(&self, starts: &[Start]) -> Result<HashMap<Uuid, RunRecord>, GroupError>;

    /// One start in a transaction of its own.
    async fn alone(&self, new: NewRun, events: Vec<NewEvent>) -> StartAnswer;

    /// The run that has this idempotency key.
    async fn run_by_key(&self, key: &str) -> Result<Option<RunRecord>, StoreError>;
}

/// The starts waiting for their turn (one owner: the store; a lock inside).
#[derive(Default)]
pub(crate) struct Starts(Mutex<Vec<Start>>);

impl Starts {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<Start>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Queue a start; a task waits for `turn` and writes every start waiting then with `writer`.
/// Returns this start's answer.
pub(crate) async fn start<W: WriteStarts>(
    queue: &Arc<Starts>,
    turn: Arc<tokio::sync::Mutex<()>>,
    writer: W,
    new: NewRun,
    events: Vec<NewEvent>,
) -> StartAnswer {
    let (tell, answer) = oneshot::channel();
    queue.waiting().push(Start {
        new,
        events,
        answer: tell,
    });
    tokio::spawn(drain(queue.clone(), turn, writer));
    answer.await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(
            "the run start's writer stopped before it answered; the run may have been written"
                .into(),
        ))
    })
}

/// Take the turn and write what waits (nothing, if a task before took this task's start
/// along); answer the starts whose key exists after giving the turn up (reads).
async fn drain<W: WriteStarts>(queue: Arc<Starts>, turn: Arc<tokio::sync::Mutex<()>>, writer: W) {
    if queue.waiting().is_empty() {
        return;
    }
    let turn = turn.lock_owned().await;
    let starts = std::mem::take(&mut *queue.waiting());
    if starts.is_empty() {
        return;
    }
    let skipped = write(&writer, starts).await;
    drop(turn);
    for start in skipped {
        let answer = match start.new.idempotency_key.as_deref() {
            Some(key) => match writer.run_by_key(key).await {
                Ok(Some(existing)) => Ok((existing, false)),
                Ok(None) => Err(idempotency_conflict(key)),
                Err(e) => Err(e),
            },
            None => Err(decode_error(
                "a run start without an idempotency key was not written",
            )),
        };
        let _ = start.answer.send(answer);
    }
}

/// Write `starts` in groups and answer each, but those whose idempotency key exists: returned,
/// to be answered with the run that has it.
async fn write(writer: &impl WriteStarts, starts: Vec<Start>) -> Vec<Start> {
    let mut ids = HashSet::new();
    let (mut rest, repeated): (Vec<Start>, Vec<Start>) =
        starts.into_iter().partition(|s| ids.insert(s.new.id));
    let mut skipped = Vec::new();
    while !rest.is_empty() {
        let later = rest.split_off(rest.len().min(MAX_GROUP));
        let group = std::mem::replace(&mut rest, later);
        match writer.together(&group).await {
            Ok(mut written) => {
                for start in group {
                    match written.remove(&start.new.id) {
                        Some(record) => {
                            let _ = start.answer.send(Ok((record, true)));
                        }
                        None => skipped.push(start),
                    }
                }
            }
            Err(GroupError::Start(e)) => {
                tracing::debug!(error = %e, starts = group.len(), "run starts written one by one");
                for start in group {
                    let answer = writer.alone(start.new, start.events).await;
                    let _ = start.answer.send(answer);
                }
            }
            Err(GroupError::Group(e)) => {
                tracing::warn!(error = %e, starts = group.len(), "run starts could not be written");
                for start in group {
                    let _ = start.answer.send(Err(match &e {
                        StoreError::Unavailable(message) => {
                            StoreError::Unavailable(message.clone())
                        }
                        other => StoreError::Unavailable(format!(
                            "the run start could not be written: {other}"
                        )),
                    }));
                }
            }
        }
    }
    for start in repeated {
        let answer = writer.alone(start.new, start.events).await;
        let _ = start.answer.send(answer);
    }
    skipped
}
