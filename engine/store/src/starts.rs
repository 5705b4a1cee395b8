//! Run starts written together ([`crate::Store::create_run`]): the starts that arrive while
//! one is being written wait for their turn, and the one that gets it writes them all in one
//! transaction, instead of a transaction (and its round trips, and on PostgreSQL its turn at
//! the event log's lock) for each.
//!
//! The writing runs in a task of its own, so a caller that goes away (a client that hangs up)
//! takes no one's start with it. If the transaction fails, every start is written again in a
//! transaction of its own: one start's error (a `Conflict`) stays its own.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use tokio::sync::{OwnedMutexGuard, oneshot};
use uuid::Uuid;

use crate::StoreError;
use crate::records::idempotency_conflict;
use crate::runs::{NewEvent, NewRun, RunRecord};

/// What a start is answered: the run, and whether this start created it.
pub(crate) type StartAnswer = Result<(RunRecord, bool), StoreError>;

/// A run start waiting for its turn to be written.
pub(crate) struct Start {
    pub(crate) new: NewRun,
    pub(crate) events: Vec<NewEvent>,
    answer: oneshot::Sender<StartAnswer>,
}

/// How a backend writes starts.
#[async_trait]
pub(crate) trait WriteStarts: Send + Sync + 'static {
    /// Every start in one transaction, runs whose idempotency key exists (in the database or
    /// earlier in `starts`) left out; the runs written, by id. An error: nothing written.
    async fn together(&self, starts: &[Start]) -> Result<HashMap<Uuid, RunRecord>, StoreError>;

    /// One start in a transaction of its own.
    async fn alone(&self, new: NewRun, events: Vec<NewEvent>) -> StartAnswer;

    /// The run that has this idempotency key.
    async fn run_by_key(&self, key: &str) -> Result<Option<RunRecord>, StoreError>;
}

/// The starts waiting for their turn (one owner: the store; a lock inside).
#[derive(Default)]
pub(crate) struct Starts(Mutex<Vec<Start>>);

impl Starts {
    /// Queue a start, wait for `turn`, then write every start waiting (this one among them,
    /// unless a start before took it along) with the writer `writer` makes; return this start's
    /// answer.
    pub(crate) async fn start<W: WriteStarts>(
        &self,
        new: NewRun,
        events: Vec<NewEvent>,
        turn: impl Future<Output = OwnedMutexGuard<()>>,
        writer: impl FnOnce() -> W,
    ) -> StartAnswer {
        let (tell, answer) = oneshot::channel();
        self.waiting().push(Start {
            new,
            events,
            answer: tell,
        });
        let turn = turn.await;
        let starts = std::mem::take(&mut *self.waiting());
        if starts.is_empty() {
            // Written with another's, which answered before it gave the turn up.
            drop(turn);
        } else {
            let writer = writer();
            let _ = tokio::spawn(async move {
                write(&writer, starts).await;
                drop(turn);
            })
            .await;
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the run start was dropped before it was written".into(),
            ))
        })
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<Start>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Write `starts` together (or, if that fails, one by one) and answer each.
async fn write(writer: &impl WriteStarts, starts: Vec<Start>) {
    match writer.together(&starts).await {
        Ok(mut written) => {
            for start in starts {
                let answer = match written.remove(&start.new.id) {
                    Some(record) => Ok((record, true)),
                    None => {
                        // Its idempotency key exists: the run that has it.
                        let key = start.new.idempotency_key.clone().unwrap_or_default();
                        match writer.run_by_key(&key).await {
                            Ok(Some(existing)) => Ok((existing, false)),
                            Ok(None) => Err(idempotency_conflict(&key)),
                            Err(e) => Err(e),
                        }
                    }
                };
                let _ = start.answer.send(answer);
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, starts = starts.len(), "run starts written one by one");
            for start in starts {
                let answer = writer.alone(start.new, start.events).await;
                let _ = start.answer.send(answer);
            }
        }
    }
}
