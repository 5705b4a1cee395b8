//! One stream to the engine, from `Hello` to its end: the session owns the stream, the
//! heartbeat, and the assignments that came on it (held until their result is queued). When the
//! stream ends, whatever it still holds is stopped: its results could not be delivered any more.

use std::collections::{HashMap, HashSet};
use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at, sleep, timeout};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Endpoint;
use tonic::{Code, Request, Status, Streaming};
use tracing::Instrument as _;
use weft_proto::agent::agent_service_client::AgentServiceClient;
use weft_proto::agent::{
    self as proto, AgentMessage, EngineMessage, agent_message, engine_message,
};

use super::assignment::{self, Job, Outcome};
use super::backoff::Backoff;
use super::context::{Stop, Stopper};
use super::registry::Registry;
use super::{AgentError, TaskContext, TaskError};

/// The largest message either side may send: inputs and outputs are JSON documents.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// How long the engine has to answer `Hello` with `Welcome`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);
/// If a `Welcome` says 0.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// Progress reports waiting to be sent; more are dropped.
const PROGRESS_QUEUE: usize = 64;
/// On shutdown: how long to wait for the engine's acks of the last results.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// On shutdown: how long to wait for the engine to end its side of the stream.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What every session of one agent shares; built once by [`Agent`](super::Agent).
pub(crate) struct Shared {
    pub url: String,
    pub endpoint: Endpoint,
    pub authorization: Option<AsciiMetadataValue>,
    pub hello: proto::Hello,
    pub registry: Registry,
    /// The agent's capacity, across streams.
    pub slots: Arc<Semaphore>,
    /// Every assignment task, so that the agent can wait for them before returning.
    pub tracker: TaskTracker,
    pub grace: Duration,
    pub cancel_grace: Duration,
}

/// Why a session ended, if not by a completed shutdown.
#[derive(Debug)]
pub(crate) enum SessionError {
    /// Give up: retrying cannot help.
    Fatal(AgentError),
    /// Reconnect after a backoff; the reason is for the log.
    Retry(String),
}

impl SessionError {
    fn from_status(status: Status) -> Self {
        if status.code() == Code::Unauthenticated {
            return Self::Fatal(AgentError::Unauthenticated(status.message().to_owned()));
        }
        let mut reason = format!("{:?}: {}", status.code(), status.message());
        if let Some(source) = status.source() {
            reason = format!("{reason} ({})", error_chain(source));
        }
        Self::Retry(reason)
    }
}

/// Open a stream and serve it until it ends or `shutdown` has been carried out (`Ok`).
pub(crate) async fn run(
    shared: &Shared,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), SessionError> {
    let session = tokio::select! {
        biased;
        () = shutdown.cancelled() => return Ok(()),
        opened = Session::open(shared) => opened?,
    };
    backoff.reset();
    session.serve(shutdown).await
}

/// An assignment task's report to its session.
struct Finished {
    assignment_id: String,
    outcome: Outcome,
}

struct Session<'a> {
    shared: &'a Shared,
    /// Results and heartbeats, in order; dropping it ends the agent's side of the stream.
    control: Option<mpsc::UnboundedSender<AgentMessage>>,
    /// Progress reports, lossy (see [`TaskContext::progress`]).
    progress: mpsc::Sender<AgentMessage>,
    inbound: Streaming<EngineMessage>,
    finished_tx: mpsc::UnboundedSender<Finished>,
    finished_rx: mpsc::UnboundedReceiver<Finished>,
    /// Assignments running (or waiting for a slot), by id.
    held: HashMap<String, Stopper>,
    /// Results sent that the engine has not acknowledged yet.
    unacked: HashSet<String>,
    /// Assignments the engine cancelled: it is expected to reject their results.
    cancelled: HashSet<String>,
    heartbeat: Interval,
    /// Shutting down: new assignments are refused.
    draining: bool,
}

impl<'a> Session<'a> {
    /// Connect, send `Hello`, and wait for `Welcome`.
    async fn open(shared: &'a Shared) -> Result<Self, SessionError> {
        let (control, control_rx) = mpsc::unbounded_channel();
        let (progress, progress_rx) = mpsc::channel(PROGRESS_QUEUE);
        // Queued before the call: an engine may wait for it before answering.
        let _ = control.send(agent_message(agent_message::Message::Hello(
            shared.hello.clone(),
        )));
        let mut request = Request::new(Outbound {
            control: control_rx,
            progress: progress_rx,
        });
        if let Some(authorization) = &shared.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }

        let channel = shared.endpoint.connect().await.map_err(|e| {
            SessionError::Retry(format!(
                "cannot connect to {}: {}",
                shared.url,
                error_chain(&e)
            ))
        })?;
        let mut client = AgentServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut inbound = client
            .open(request)
            .await
            .map_err(SessionError::from_status)?
            .into_inner();

        let welcome = match timeout(WELCOME_TIMEOUT, inbound.message()).await {
            Err(_) => {
                return Err(SessionError::Retry(format!(
                    "no Welcome within {} s",
                    WELCOME_TIMEOUT.as_secs()
                )));
            }
            Ok(Err(status)) => return Err(SessionError::from_status(status)),
            Ok(Ok(Some(EngineMessage {
                message: Some(engine_message::Message::Welcome(welcome)),
            }))) => welcome,
            Ok(Ok(Some(_))) => {
                return Err(SessionError::Retry(
                    "the engine's first message was not a Welcome".into(),
                ));
            }
            Ok(Ok(None)) => {
                return Err(SessionError::Retry(
                    "the engine closed the stream before its Welcome".into(),
                ));
            }
        };

        let period = match welcome.heartbeat_interval_ms {
            0 => DEFAULT_HEARTBEAT,
            ms => Duration::from_millis(ms.into()),
        };
        let mut heartbeat = interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tracing::Span::current().record("agent_id", welcome.agent_id.as_str());
        tracing::info!(
            heartbeat_ms = period.as_millis() as u64,
            "connected to the engine"
        );

        let (finished_tx, finished_rx) = mpsc::unbounded_channel();
        Ok(Self {
            shared,
            control: Some(control),
            progress,
            inbound,
            finished_tx,
            finished_rx,
            held: HashMap::new(),
            unacked: HashSet::new(),
            cancelled: HashSet::new(),
            heartbeat,
            draining: false,
        })
    }

    /// Serve the stream until it fails (`Err`) or `shutdown` fires; then finish the running
    /// assignments within the grace period, deliver their results and close the stream.
    async fn serve(mut self, shutdown: &CancellationToken) -> Result<(), SessionError> {
        self.pump(shutdown.cancelled(), |_| false).await?;

        self.draining = true;
        let grace = self.shared.grace;
        tracing::info!(
            running = self.held.len(),
            grace_ms = grace.as_millis() as u64,
            "shutting down: finishing the running assignments"
        );
        self.pump(sleep(grace), |s| s.held.is_empty()).await?;
        if !self.held.is_empty() {
            tracing::warn!(
                running = self.held.len(),
                "grace period over: interrupting the assignments still running"
            );
            for stopper in self.held.values() {
                stopper.stop(Stop::Shutdown);
            }
            let wind_down = self.shared.cancel_grace + Duration::from_secs(1);
            self.pump(sleep(wind_down), |s| s.held.is_empty()).await?;
        }
        self.pump(sleep(ACK_TIMEOUT), |s| s.unacked.is_empty())
            .await?;
        self.close().await;
        Ok(())
    }

    /// Handle engine messages, finished assignments and heartbeats until `until` resolves or
    /// `done` holds.
    async fn pump(
        &mut self,
        until: impl Future<Output = ()>,
        done: impl Fn(&Self) -> bool,
    ) -> Result<(), SessionError> {
        tokio::pin!(until);
        loop {
            if done(self) {
                return Ok(());
            }
            tokio::select! {
                biased;
                () = &mut until => return Ok(()),
                Some(finished) = self.finished_rx.recv() => self.on_finished(finished),
                message = self.inbound.message() => self.on_message(message)?,
                _ = self.heartbeat.tick() => {
                    self.send(agent_message::Message::Heartbeat(proto::Heartbeat {}));
                }
            }
        }
    }

    fn on_message(
        &mut self,
        message: Result<Option<EngineMessage>, Status>,
    ) -> Result<(), SessionError> {
        let message = match message {
            Ok(Some(message)) => message,
            Ok(None) => return Err(SessionError::Retry("the engine closed the stream".into())),
            Err(status) => return Err(SessionError::from_status(status)),
        };
        match message.message {
            Some(engine_message::Message::Assignment(assignment)) => {
                self.on_assignment(assignment);
            }
            Some(engine_message::Message::Cancel(cancel)) => {
                match self.held.get(&cancel.assignment_id) {
                    Some(stopper) => {
                        tracing::info!(
                            assignment_id = %cancel.assignment_id,
                            reason = %cancel.reason,
                            "the engine cancelled an assignment"
                        );
                        stopper.stop(Stop::Cancelled(cancel.reason));
                        self.cancelled.insert(cancel.assignment_id);
                    }
                    None => tracing::debug!(
                        assignment_id = %cancel.assignment_id,
                        "cancel for an assignment not held: ignored"
                    ),
                }
            }
            Some(engine_message::Message::Ack(ack)) => {
                self.unacked.remove(&ack.assignment_id);
                let was_cancelled = self.cancelled.remove(&ack.assignment_id);
                if ack.accepted {
                    tracing::debug!(assignment_id = %ack.assignment_id, "result accepted");
                } else if was_cancelled {
                    tracing::debug!(
                        assignment_id = %ack.assignment_id,
                        "result of a cancelled assignment rejected, as expected"
                    );
                } else {
                    tracing::warn!(
                        assignment_id = %ack.assignment_id,
                        message = %ack.message,
                        "the engine rejected a result"
                    );
                }
            }
            Some(engine_message::Message::Welcome(_)) => {
                tracing::warn!("a second Welcome on the same stream: ignored");
            }
            None => tracing::debug!("an engine message this agent does not know: ignored"),
        }
        Ok(())
    }

    fn on_assignment(&mut self, assignment: proto::Assignment) {
        let proto::Assignment {
            assignment_id,
            task,
            version,
            input_json,
            run_id,
            step_id,
            attempt,
            timeout_ms,
            traceparent,
        } = assignment;
        let span = tracing::info_span!(
            "assignment",
            assignment_id = %assignment_id,
            run_id = %run_id,
            step_id = %step_id,
            task = %task,
            attempt,
        );
        if self.draining {
            span.in_scope(|| tracing::info!("refused: the agent is shutting down"));
            let refusal = TaskError::retryable(
                "agent_shutting_down",
                "the agent is shutting down; run the step elsewhere",
            );
            self.send_result(assignment_id, Err(refusal));
            return;
        }
        if self.held.contains_key(&assignment_id) {
            span.in_scope(|| tracing::warn!("the same assignment twice: ignored"));
            return;
        }
        let runnable = match self.shared.registry.find(&task, &version) {
            Ok(runnable) => runnable,
            Err(e) => {
                span.in_scope(|| tracing::warn!(version = %version, "refused: {e}"));
                self.send_result(assignment_id, Err(e));
                return;
            }
        };

        let stopper = Stopper::new();
        let ctx = TaskContext::new(
            assignment_id.clone(),
            run_id,
            step_id,
            attempt,
            traceparent,
            stopper.token(),
            self.progress.clone(),
        );
        let deadline = match timeout_ms {
            0 => None,
            ms => Instant::now().checked_add(Duration::from_millis(ms)),
        };
        let job = Job {
            task: runnable,
            ctx,
            stopper: stopper.clone(),
            input: input_json,
            deadline,
            timeout_ms,
            slots: self.shared.slots.clone(),
            cancel_grace: self.shared.cancel_grace,
        };
        let finished = self.finished_tx.clone();
        let id = assignment_id.clone();
        self.shared.tracker.spawn(
            async move {
                let outcome = assignment::run(job).await;
                let _ = finished.send(Finished {
                    assignment_id: id,
                    outcome,
                });
            }
            .instrument(span),
        );
        self.held.insert(assignment_id, stopper);
    }

    fn on_finished(&mut self, finished: Finished) {
        self.held.remove(&finished.assignment_id);
        if let Some(outcome) = finished.outcome {
            self.send_result(finished.assignment_id, outcome);
        }
    }

    fn send_result(&mut self, assignment_id: String, outcome: Result<String, TaskError>) {
        let outcome = match outcome {
            Ok(json) => proto::task_result::Outcome::OutputJson(json),
            Err(e) => proto::task_result::Outcome::Error(proto::TaskError {
                code: e.code,
                message: e.message,
                retryable: e.retryable,
            }),
        };
        self.send(agent_message::Message::Result(proto::TaskResult {
            assignment_id: assignment_id.clone(),
            outcome: Some(outcome),
        }));
        self.unacked.insert(assignment_id);
    }

    fn send(&self, message: agent_message::Message) {
        if let Some(control) = &self.control {
            // Fails only once the stream is gone, which the inbound side reports.
            let _ = control.send(agent_message(message));
        }
    }

    /// End the agent's side of the stream, then give the engine a moment to end its own.
    async fn close(mut self) {
        self.control = None;
        let inbound = &mut self.inbound;
        let ended = timeout(CLOSE_TIMEOUT, async {
            while let Ok(Some(_)) = inbound.message().await {}
        })
        .await;
        match ended {
            Ok(()) => tracing::info!("stream closed"),
            Err(_) => tracing::info!("stream closed (the engine did not end its side)"),
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        for stopper in self.held.values() {
            stopper.stop(Stop::Disconnected);
        }
    }
}

fn agent_message(message: agent_message::Message) -> AgentMessage {
    AgentMessage {
        message: Some(message),
    }
}

/// The agent's side of the stream: control messages (Hello, results, heartbeats) first, then
/// progress; ends when the control sender is dropped.
struct Outbound {
    control: mpsc::UnboundedReceiver<AgentMessage>,
    progress: mpsc::Receiver<AgentMessage>,
}

impl Stream for Outbound {
    type Item = AgentMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AgentMessage>> {
        if let Poll::Ready(message) = self.control.poll_recv(cx) {
            return Poll::Ready(message);
        }
        match self.progress.poll_recv(cx) {
            Poll::Ready(Some(message)) => Poll::Ready(Some(message)),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

/// `e` and its sources, for one log line (tonic's transport errors say little on their own).
fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
