//! A fake engine for tests of agents: a real `AgentService` gRPC server on `127.0.0.1:0` that
//! checks the token, answers `Hello` with `Welcome`, acknowledges results, and lets the test
//! send assignments and cancels and read what the agent sends.
//!
//! ```no_run
//! # async fn example() {
//! use weft_plugin_sdk::agent::testing::{FakeEngine, FakeEngineConfig, assignment};
//! let engine = FakeEngine::start(FakeEngineConfig::default()).await.unwrap();
//! // ... start the agent against engine.url() ...
//! let mut agent = engine.accept().await;
//! agent.assign(assignment("a-1", "echo", serde_json::json!({"message": "hi"}))).await;
//! let result = agent.next_result().await.unwrap();
//! # }
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Mutex as AsyncMutex, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use weft_proto::agent::agent_service_server::{AgentService, AgentServiceServer};
use weft_proto::agent::{
    AgentMessage, Assignment, Cancel, EngineMessage, Hello, ResultAck, TaskResult, Welcome,
    agent_message, engine_message,
};

/// How a [`FakeEngine`] behaves.
#[derive(Debug, Clone)]
pub struct FakeEngineConfig {
    /// The token agents must send (`authorization: Bearer <token>`); `None` accepts any.
    pub token: Option<String>,
    /// What `Welcome.heartbeat_interval_ms` says.
    pub heartbeat_interval: Duration,
}

impl Default for FakeEngineConfig {
    fn default() -> Self {
        Self {
            token: None,
            heartbeat_interval: Duration::from_secs(1),
        }
    }
}

/// The server; stopped when dropped.
pub struct FakeEngine {
    addr: SocketAddr,
    connections: AsyncMutex<mpsc::UnboundedReceiver<AgentConnection>>,
    opens: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

impl FakeEngine {
    /// Start on `127.0.0.1` and a free port.
    pub async fn start(config: FakeEngineConfig) -> std::io::Result<Self> {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Start on `addr` (to test an agent that was started before its engine).
    pub async fn start_at(addr: SocketAddr, config: FakeEngineConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (connections_tx, connections) = mpsc::unbounded_channel();
        let opens = Arc::new(AtomicUsize::new(0));
        let service = Service {
            config,
            connections: connections_tx,
            opens: opens.clone(),
            welcomed: AtomicUsize::new(0),
        };
        let server = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(AgentServiceServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
            if let Err(e) = served {
                tracing::error!("fake engine: {e}");
            }
        });
        Ok(Self {
            addr,
            connections: AsyncMutex::new(connections),
            opens,
            server,
        })
    }

    /// `http://127.0.0.1:PORT`, for [`AgentOptions::engine`](super::AgentOptions::engine).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next agent stream that was welcomed (token accepted, `Hello` received).
    pub async fn accept(&self) -> AgentConnection {
        self.connections
            .lock()
            .await
            .recv()
            .await
            .expect("the fake engine's service lives as long as the engine")
    }

    /// How many times agents called `Open`, refused ones included.
    pub fn opens(&self) -> usize {
        self.opens.load(Ordering::SeqCst)
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One welcomed agent stream. Dropping it ends the engine's side of the stream.
pub struct AgentConnection {
    /// The agent's `Hello`.
    pub hello: Hello,
    /// The `authorization` header the agent sent, if any.
    pub authorization: Option<String>,
    /// The id the engine gave it in `Welcome`.
    pub agent_id: String,
    tx: mpsc::Sender<Result<EngineMessage, Status>>,
    received: mpsc::UnboundedReceiver<AgentMessage>,
    held: Arc<Mutex<HashSet<String>>>,
}

impl AgentConnection {
    /// Send an assignment; the engine then holds it until its result or a cancel.
    pub async fn assign(&self, assignment: Assignment) {
        self.held_ids().insert(assignment.assignment_id.clone());
        self.send(engine_message::Message::Assignment(assignment))
            .await;
    }

    /// Cancel an assignment; a result for it is then rejected.
    pub async fn cancel(&self, assignment_id: &str, reason: &str) {
        self.held_ids().remove(assignment_id);
        self.send(engine_message::Message::Cancel(Cancel {
            assignment_id: assignment_id.to_owned(),
            reason: reason.to_owned(),
        }))
        .await;
    }

    /// Send any message (ignored if the agent is gone).
    pub async fn send(&self, message: engine_message::Message) {
        let _ = self
            .tx
            .send(Ok(EngineMessage {
                message: Some(message),
            }))
            .await;
    }

    /// End the stream with an error status, as a failing engine would.
    pub async fn fail(self, status: Status) {
        let _ = self.tx.send(Err(status)).await;
    }

    /// The next message from the agent; `None` once it has ended its side of the stream.
    pub async fn recv(&mut self) -> Option<AgentMessage> {
        self.received.recv().await
    }

    /// The next result, skipping heartbeats and progress; `None` once the stream has ended.
    pub async fn next_result(&mut self) -> Option<TaskResult> {
        loop {
            if let agent_message::Message::Result(result) = self.recv().await?.message? {
                return Some(result);
            }
        }
    }

    fn held_ids(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An assignment with the given id, task (any version) and input; run `run-1`, step `step-1`,
/// attempt 1, no time-out.
pub fn assignment(id: &str, task: &str, input: serde_json::Value) -> Assignment {
    Assignment {
        assignment_id: id.to_owned(),
        task: task.to_owned(),
        version: String::new(),
        input_json: input.to_string(),
        run_id: "run-1".to_owned(),
        step_id: "step-1".to_owned(),
        attempt: 1,
        timeout_ms: 0,
        traceparent: None,
    }
}

struct Service {
    config: FakeEngineConfig,
    connections: mpsc::UnboundedSender<AgentConnection>,
    opens: Arc<AtomicUsize>,
    welcomed: AtomicUsize,
}

#[tonic::async_trait]
impl AgentService for Service {
    type OpenStream = ReceiverStream<Result<EngineMessage, Status>>;

    async fn open(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        if let Some(token) = &self.config.token
            && authorization.as_deref() != Some(&format!("Bearer {token}"))
        {
            return Err(Status::unauthenticated("invalid agent token"));
        }
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(AgentMessage {
                message: Some(agent_message::Message::Hello(hello)),
            }) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ));
            }
        };

        let agent_id = format!("agent-{}", self.welcomed.fetch_add(1, Ordering::SeqCst) + 1);
        let (tx, mut rx) = mpsc::channel(64);
        let welcome = Welcome {
            agent_id: agent_id.clone(),
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u32,
        };
        let _ = tx
            .send(Ok(EngineMessage {
                message: Some(engine_message::Message::Welcome(welcome)),
            }))
            .await;

        // Forward what the agent sends to the test, acknowledging results on the way. A weak
        // sender, so that dropping the connection ends the engine's side.
        let (received_tx, received) = mpsc::unbounded_channel();
        let held = Arc::new(Mutex::new(HashSet::new()));
        let acks = tx.downgrade();
        let held_ids = held.clone();
        let agent_done = CancellationToken::new();
        let agent_done_tx = agent_done.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                if let Some(agent_message::Message::Result(result)) = &message.message {
                    let accepted = held_ids
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .remove(&result.assignment_id);
                    let ack = ResultAck {
                        assignment_id: result.assignment_id.clone(),
                        accepted,
                        message: if accepted { "" } else { "not held" }.to_owned(),
                    };
                    if let Some(acks) = acks.upgrade() {
                        let _ = acks
                            .send(Ok(EngineMessage {
                                message: Some(engine_message::Message::Ack(ack)),
                            }))
                            .await;
                    }
                }
                let _ = received_tx.send(message);
            }
            agent_done_tx.cancel();
        });

        // The engine's side ends when the test drops the connection or, as a real engine
        // would, once the agent has ended its side.
        let (response_tx, response) = mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    message = rx.recv() => message,
                    () = agent_done.cancelled() => None,
                };
                let Some(message) = message else { break };
                if response_tx.send(message).await.is_err() {
                    break;
                }
            }
        });

        let _ = self.connections.send(AgentConnection {
            hello,
            authorization,
            agent_id,
            tx,
            received,
            held,
        });
        Ok(Response::new(ReceiverStream::new(response)))
    }
}
