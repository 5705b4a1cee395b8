//! The live event feed: one task tails the durable event log (every replica's events, in `seq`
//! order) and fans each event out to every subscriber (WebSocket connections) through one
//! bounded ring, together with this replica's agent changes.
//!
//! Memory is bounded whatever the clients do: the ring holds at most `buffer_events` events,
//! shared by all subscribers; a subscriber that falls further behind sees
//! [`broadcast::error::RecvError::Lagged`] and is closed (it resumes from the store by `seq`).
//!
//! A subscriber gets `(receiver, head)` atomically: the receiver yields exactly the events with
//! `seq > head`, so a replay of the store up to `head` followed by the receiver has no gap and
//! no duplicate.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use weft_proto::events as pb;
use weft_store::{EventQuery, EventScope, ScopedEvent, Store, StoreError};

use crate::agents::{AgentChange, AgentRegistry};
use crate::definitions::timestamp;

/// Events read from the store per query while catching up.
const PAGE: u32 = 1000;

/// One event of the durable log, with its frames rendered once for every subscriber.
#[derive(Debug)]
pub struct LogEvent {
    /// Global sequence.
    pub seq: i64,
    /// The run.
    pub run_id: Uuid,
    /// The run's definition version.
    pub definition_id: Uuid,
    step_id: Option<String>,
    kind: String,
    data: Value,
    created_at: String,
    json: OnceLock<Utf8Bytes>,
    proto: OnceLock<Bytes>,
}

impl LogEvent {
    /// From a stored event.
    pub fn new(scoped: ScopedEvent) -> LogEvent {
        let event = scoped.event;
        LogEvent {
            seq: event.seq,
            run_id: event.run_id,
            definition_id: scoped.definition_id,
            step_id: event.step_id,
            kind: event.kind,
            data: event.data,
            created_at: timestamp(event.created_at),
            json: OnceLock::new(),
            proto: OnceLock::new(),
        }
    }

    /// The event kind, e.g. `run.completed`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The JSON text frame: `{"type":"event",...}`.
    pub fn json_frame(&self) -> Utf8Bytes {
        self.json
            .get_or_init(|| {
                Utf8Bytes::from(
                    json!({
                        "type": "event",
                        "seq": self.seq,
                        "runId": self.run_id,
                        "definitionId": self.definition_id,
                        "stepId": self.step_id,
                        "kind": self.kind,
                        "data": self.data,
                        "createdAt": self.created_at,
                    })
                    .to_string(),
                )
            })
            .clone()
    }

    /// The protobuf binary frame: a `ServerMessage` holding an `Event`.
    pub fn proto_frame(&self) -> Bytes {
        self.proto
            .get_or_init(|| {
                let message = pb::ServerMessage {
                    message: Some(pb::server_message::Message::Event(pb::Event {
                        seq: self.seq,
                        run_id: self.run_id.to_string(),
                        definition_id: self.definition_id.to_string(),
                        step_id: self.step_id.clone(),
                        kind: self.kind.clone(),
                        data_json: self.data.to_string(),
                        created_at: self.created_at.clone(),
                    })),
                };
                Bytes::from(message.encode_to_vec())
            })
            .clone()
    }
}

/// What the feed carries.
#[derive(Debug)]
pub enum LiveEvent {
    /// An event of the durable log.
    Log(LogEvent),
    /// An agent connected to or left this replica (not durable, no sequence).
    Agent(AgentChange),
}

struct Inner {
    store: Arc<dyn Store>,
    sender: broadcast::Sender<Arc<LiveEvent>>,
    /// The `seq` of the last log event published; held while publishing.
    head: Mutex<i64>,
    agents: Arc<AgentRegistry>,
    poll: Duration,
    /// Woken after this replica commits a transition: read the log now, not at the next poll.
    wake: Arc<Notify>,
}

/// A handle on the feed. Cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

impl EventHub {
    /// A feed keeping at most `buffer_events` events for subscribers; it reads the log every
    /// `poll`. Nothing is published until [`EventHub::start`].
    pub fn new(
        store: Arc<dyn Store>,
        agents: Arc<AgentRegistry>,
        buffer_events: usize,
        poll: Duration,
    ) -> EventHub {
        let (sender, _) = broadcast::channel(buffer_events.max(1));
        EventHub {
            inner: Arc::new(Inner {
                store,
                sender,
                head: Mutex::new(0),
                agents,
                poll,
                wake: Arc::new(Notify::new()),
            }),
        }
    }

    /// Read the log's current end, then tail it on `tasks` until `shutdown`.
    pub async fn start(
        &self,
        tasks: &mut JoinSet<()>,
        shutdown: CancellationToken,
    ) -> Result<(), StoreError> {
        let last = self.inner.store.last_event_seq().await?;
        *self.lock_head() = last;
        tasks.spawn(self.clone().tail(shutdown));
        Ok(())
    }

    /// A receiver of every event published from now on, and the `seq` of the last log event
    /// published before it: the receiver yields exactly the log events with `seq > head`.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<LiveEvent>>, i64) {
        let head = self.lock_head();
        (self.inner.sender.subscribe(), *head)
    }

    /// What to wake after a commit on this replica (events of other replicas arrive by polling).
    pub fn waker(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }

    /// The store, for replays.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The agent registry, for snapshots.
    pub fn agents(&self) -> &Arc<AgentRegistry> {
        &self.inner.agents
    }

    fn lock_head(&self) -> std::sync::MutexGuard<'_, i64> {
        self.inner
            .head
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn tail(self, shutdown: CancellationToken) {
        let mut agent_changes = self.inner.agents.subscribe_changes();
        let mut tick = tokio::time::interval(self.inner.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => self.catch_up().await,
                // Commits only matter to subscribers; with none, the tick moves the head.
                () = self.inner.wake.notified(), if self.inner.sender.receiver_count() > 0 => {
                    self.catch_up().await;
                }
                change = agent_changes.recv() => match change {
                    Ok(change) => {
                        // Not part of the log: no head to move.
                        let _ = self.inner.sender.send(Arc::new(LiveEvent::Agent(change)));
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "agent changes were dropped from the live feed");
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        agent_changes = self.inner.agents.subscribe_changes();
                    }
                },
            }
        }
        tracing::debug!("live event feed stopped");
    }

    /// Publish every event of the log after the head; with no subscriber, just move the head to
    /// the log's end (one cheap query instead of reading events nobody receives).
    async fn catch_up(&self) {
        if self.inner.sender.receiver_count() == 0 {
            match self.inner.store.last_event_seq().await {
                Ok(last) => {
                    let mut head = self.lock_head();
                    // A subscriber that arrived meanwhile expects every event after the head
                    // it was given: then publish instead.
                    if self.inner.sender.receiver_count() == 0 {
                        *head = last;
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the event log; retrying");
                    return;
                }
            }
        }
        loop {
            let after = *self.lock_head();
            let query = EventQuery {
                scope: EventScope::All,
                after_seq: after,
                until_seq: None,
                limit: PAGE,
            };
            let page = match self.inner.store.stream_events(&query).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the event log; retrying");
                    return;
                }
            };
            let full = page.len() == PAGE as usize;
            if let Some(last) = page.last().map(|e| e.event.seq) {
                let mut head = self.lock_head();
                for event in page {
                    // No subscriber is not an error.
                    let _ = self
                        .inner
                        .sender
                        .send(Arc::new(LiveEvent::Log(LogEvent::new(event))));
                }
                *head = last;
            }
            if !full {
                return;
            }
        }
    }
}
