//! The gRPC `AgentService`: one bidirectional stream per agent connection.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use weft_proto::agent::agent_service_server::AgentService;
use weft_proto::agent::{
    AgentMessage, EngineMessage, ResultAck, Welcome, agent_message, engine_message,
};

use super::AgentRegistry;
use crate::auth::TokenHash;

/// How long a new connection has to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves agent connections into the registry.
pub struct AgentGrpc {
    registry: Arc<AgentRegistry>,
    /// SHA-256 of the accepted agent tokens; empty: no token needed (loopback only).
    tokens: Arc<[TokenHash]>,
    shutdown: CancellationToken,
}

impl AgentGrpc {
    /// A service over `registry`, accepting `tokens`.
    pub fn new(
        registry: Arc<AgentRegistry>,
        tokens: Vec<TokenHash>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            registry,
            tokens: tokens.into(),
            shutdown,
        }
    }

    fn authenticate<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.tokens.is_empty() {
            return Ok(());
        }
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                Status::unauthenticated("an agent token is required (authorization: Bearer ...)")
            })?;
        let hash = TokenHash::of(token.trim());
        if self.tokens.contains(&hash) {
            Ok(())
        } else {
            Err(Status::unauthenticated("the agent token is not valid"))
        }
    }
}

type EngineStream = Pin<Box<dyn Stream<Item = Result<EngineMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AgentService for AgentGrpc {
    type OpenStream = EngineStream;

    async fn open(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        self.authenticate(&request)?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 10 s"))?;
        let hello = match first {
            Some(Ok(AgentMessage {
                message: Some(agent_message::Message::Hello(hello)),
            })) => hello,
            Some(Ok(_)) => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ));
            }
            Some(Err(status)) => return Err(status),
            None => {
                return Err(Status::cancelled(
                    "the agent closed the stream before saying Hello",
                ));
            }
        };
        let (outbound, receiver) = mpsc::channel(256);
        let agent = self.registry.register(hello, outbound.clone())?;
        let welcome = EngineMessage {
            message: Some(engine_message::Message::Welcome(Welcome {
                agent_id: agent.to_string(),
                heartbeat_interval_ms: u32::try_from(self.registry.heartbeat().as_millis())
                    .unwrap_or(u32::MAX),
            })),
        };
        outbound
            .send(Ok(welcome))
            .await
            .map_err(|_| Status::cancelled("the agent went away"))?;

        let registry = self.registry.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let reason = loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => break "the engine is shutting down",
                    message = inbound.next() => message,
                };
                let message = match message {
                    Some(Ok(message)) => message,
                    Some(Err(_)) => break "the stream failed",
                    None => break "closed the stream",
                };
                registry.seen(agent);
                match message.message {
                    Some(agent_message::Message::Result(result)) => {
                        let assignment_id = result.assignment_id.clone();
                        let ack = match registry.complete(agent, result) {
                            Ok(()) => ResultAck {
                                assignment_id,
                                accepted: true,
                                message: String::new(),
                            },
                            Err(message) => {
                                tracing::info!(agent_id = %agent, assignment_id = %assignment_id, %message, "result rejected");
                                ResultAck {
                                    assignment_id,
                                    accepted: false,
                                    message,
                                }
                            }
                        };
                        let _ = outbound.try_send(Ok(EngineMessage {
                            message: Some(engine_message::Message::Ack(ack)),
                        }));
                    }
                    Some(agent_message::Message::Progress(progress)) => {
                        tracing::debug!(agent_id = %agent, assignment_id = %progress.assignment_id, progress = progress.progress, message = %progress.message, "task progress");
                    }
                    Some(agent_message::Message::Heartbeat(_)) | None => {}
                    Some(agent_message::Message::Hello(_)) => break "said Hello twice",
                }
            };
            registry.disconnect(agent, reason);
        });
        let stream = ReceiverStream::new(receiver);
        Ok(Response::new(Box::pin(stream)))
    }
}
