//! `GET /api/v1/ws`: the live event stream over WebSocket.
//!
//! A socket subscribes to scopes (all runs, one definition's runs, one run, agents); the
//! subscriptions belong to the socket (no client id to spoof). Frames are JSON text
//! (`weft.v1.json`, the default) or protobuf binary (`weft.v1.protobuf`, messages
//! `weft.events.v1.ClientMessage` / `ServerMessage`). A subscription with `after` first replays
//! the stored events of its scope with `seq > after` up to the feed's head, then live ones: no
//! gap, no duplicate (an event already sent for another subscription is not sent twice).
//!
//! Flow control: the socket reads the shared feed ([`EventHub`]); if it falls further behind
//! than the feed keeps, or one frame cannot leave within the send time-out, it is closed with
//! code 4008 and a reason naming the last `seq` sent. Pings go out every interval; a client
//! silent for two intervals is closed. Server shutdown closes sockets with 1001.

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use prost::Message as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use weft_proto::events as pb;
use weft_store::{EventQuery, EventScope};

use crate::agents::AgentChange;
use crate::config::LiveOptions;
use crate::events::{EventHub, LiveEvent, LogEvent};
use crate::http::error::ErrorBody;
use crate::http::{ApiError, AppState};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The JSON subprotocol (the default).
pub const JSON_PROTOCOL: &str = "weft.v1.json";
/// The protobuf subprotocol.
pub const PROTOBUF_PROTOCOL: &str = "weft.v1.protobuf";
/// Close code: the client fell too far behind.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code: the server is going away.
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: the client stopped answering pings.
const CLOSE_NO_PONG: u16 = 4000;
/// Subscriptions one socket may hold.
const MAX_SUBSCRIPTIONS: usize = 64;
/// Largest client message.
const MAX_CLIENT_MESSAGE_BYTES: usize = 64 * 1024;
/// Events read per replay query.
const REPLAY_PAGE: u32 = 500;

/// What the WebSocket endpoint needs from the application.
#[derive(Clone)]
pub struct LiveState {
    /// The live feed.
    pub hub: EventHub,
    /// Buffer, ping and time-out settings.
    pub options: LiveOptions,
    /// Cancelled when the server stops.
    pub shutdown: CancellationToken,
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(upgrade))
}

/// Live events over WebSocket: subscribe to all runs, one definition's runs, one run or
/// agents, and receive every event of the log (resumable by `seq`). See README, "Live events".
#[utoipa::path(
    get,
    path = "/ws",
    operation_id = "liveEvents",
    tag = "runs",
    responses(
        (status = 101, description = "Switching to WebSocket (subprotocol `weft.v1.json`, the \
            default, or `weft.v1.protobuf`)"),
        (status = 400, description = "Not a WebSocket upgrade request", body = ErrorBody),
        (status = 426, description = "The connection cannot be upgraded", body = ErrorBody),
    )
)]
async fn upgrade(
    State(state): State<AppState>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::new(
                rejection.status(),
                "websocket_upgrade_required",
                format!(
                    "this endpoint speaks WebSocket only: {}",
                    rejection.body_text()
                ),
            )
            .into_response();
        }
    };
    let ws = ws
        .protocols([JSON_PROTOCOL, PROTOBUF_PROTOCOL])
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES);
    let format = match ws.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some(PROTOBUF_PROTOCOL) => Format::Protobuf,
        _ => Format::Json,
    };
    let live = state.live.clone();
    let metrics = state.metrics.clone();
    ws.on_upgrade(move |socket| async move {
        // Counted in `weft_websocket_clients` while the socket lives.
        let _counted = metrics.websocket_connected();
        let id = Uuid::now_v7();
        tracing::debug!(socket_id = %id, ?format, "WebSocket client connected");
        let reason = Connection::new(socket, live, format).serve().await;
        tracing::debug!(socket_id = %id, reason, "WebSocket client left");
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Protobuf,
}

/// A subscription's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Runs(EventScope),
    Agents,
}

impl Scope {
    fn matches(&self, event: &LiveEvent) -> bool {
        match (self, event) {
            (Scope::Runs(EventScope::All), LiveEvent::Log(_)) => true,
            (Scope::Runs(EventScope::Run(id)), LiveEvent::Log(e)) => e.run_id == *id,
            (Scope::Runs(EventScope::Definition(id)), LiveEvent::Log(e)) => e.definition_id == *id,
            (Scope::Agents, LiveEvent::Agent(_)) => true,
            _ => false,
        }
    }

    fn to_json(self) -> Value {
        match self {
            Scope::Runs(EventScope::All) => json!({"kind": "all"}),
            Scope::Runs(EventScope::Run(id)) => json!({"kind": "run", "runId": id}),
            Scope::Runs(EventScope::Definition(id)) => {
                json!({"kind": "definition", "definitionId": id})
            }
            Scope::Agents => json!({"kind": "agents"}),
        }
    }

    fn to_proto(self) -> pb::Scope {
        use pb::scope::Kind;
        let kind = match self {
            Scope::Runs(EventScope::All) => Kind::All(pb::AllRuns {}),
            Scope::Runs(EventScope::Run(id)) => Kind::RunId(id.to_string()),
            Scope::Runs(EventScope::Definition(id)) => Kind::DefinitionId(id.to_string()),
            Scope::Agents => Kind::Agents(pb::AgentsScope {}),
        };
        pb::Scope { kind: Some(kind) }
    }
}

/// A client request, decoded from either format.
#[derive(Debug, PartialEq)]
enum Request {
    Subscribe { scope: Scope, after: Option<i64> },
    Unsubscribe { scope: Scope },
}

/// A request the server cannot take: sent back as an `error` frame, the socket stays open.
#[derive(Debug, PartialEq)]
struct Refusal {
    code: &'static str,
    message: String,
}

impl Refusal {
    fn invalid(message: impl Into<String>) -> Refusal {
        Refusal {
            code: "invalid_message",
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    #[serde(rename = "type")]
    kind: String,
    scope: JsonScope,
    #[serde(default)]
    after: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JsonScope {
    kind: String,
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    definition_id: Option<String>,
}

fn parse_uuid(text: &str, field: &str) -> Result<Uuid, Refusal> {
    Uuid::parse_str(text).map_err(|_| Refusal::invalid(format!("{field} '{text}' is not a UUID")))
}

fn decode_json(text: &str) -> Result<Request, Refusal> {
    let request: JsonRequest = serde_json::from_str(text)
        .map_err(|e| Refusal::invalid(format!("not a valid request: {e}")))?;
    let scope = match request.scope.kind.as_str() {
        "all" => Scope::Runs(EventScope::All),
        "agents" => Scope::Agents,
        "run" => {
            let id = request
                .scope
                .run_id
                .ok_or_else(|| Refusal::invalid("scope 'run' needs runId"))?;
            Scope::Runs(EventScope::Run(parse_uuid(&id, "runId")?))
        }
        "definition" => {
            let id = request
                .scope
                .definition_id
                .ok_or_else(|| Refusal::invalid("scope 'definition' needs definitionId"))?;
            Scope::Runs(EventScope::Definition(parse_uuid(&id, "definitionId")?))
        }
        other => {
            return Err(Refusal::invalid(format!(
                "unknown scope kind '{other}' (all, definition, run, agents)"
            )));
        }
    };
    request_of(&request.kind, scope, request.after)
}

fn decode_proto(bytes: &[u8]) -> Result<Request, Refusal> {
    use pb::client_message::Message as M;
    let message = pb::ClientMessage::decode(bytes)
        .map_err(|e| Refusal::invalid(format!("not a ClientMessage: {e}")))?;
    let scope_of = |scope: Option<pb::Scope>| -> Result<Scope, Refusal> {
        use pb::scope::Kind;
        match scope.and_then(|s| s.kind) {
            Some(Kind::All(_)) => Ok(Scope::Runs(EventScope::All)),
            Some(Kind::Agents(_)) => Ok(Scope::Agents),
            Some(Kind::RunId(id)) => Ok(Scope::Runs(EventScope::Run(parse_uuid(&id, "run_id")?))),
            Some(Kind::DefinitionId(id)) => Ok(Scope::Runs(EventScope::Definition(parse_uuid(
                &id,
                "definition_id",
            )?))),
            None => Err(Refusal::invalid("the scope is missing")),
        }
    };
    match message.message {
        Some(M::Subscribe(s)) => request_of("subscribe", scope_of(s.scope)?, s.after),
        Some(M::Unsubscribe(u)) => request_of("unsubscribe", scope_of(u.scope)?, None),
        None => Err(Refusal::invalid("the message is empty")),
    }
}

fn request_of(kind: &str, scope: Scope, after: Option<i64>) -> Result<Request, Refusal> {
    match kind {
        "subscribe" => {
            if after.is_some_and(|a| a < 0) {
                return Err(Refusal::invalid("after must be 0 or more"));
            }
            if after.is_some() && scope == Scope::Agents {
                return Err(Refusal::invalid(
                    "the agents scope is live only: it takes no 'after'",
                ));
            }
            Ok(Request::Subscribe { scope, after })
        }
        "unsubscribe" => Ok(Request::Unsubscribe { scope }),
        other => Err(Refusal::invalid(format!(
            "unknown type '{other}' (subscribe, unsubscribe)"
        ))),
    }
}

/// A subscription and the `seq` from which it has been served.
struct Subscription {
    scope: Scope,
    since: i64,
}

/// Why a connection ended (logged).
type Ended = &'static str;

struct Connection {
    socket: WebSocket,
    live: LiveState,
    format: Format,
    subscriptions: Vec<Subscription>,
    /// The last `seq` sent on this socket (for the close reason).
    last_sent: i64,
}

impl Connection {
    fn new(socket: WebSocket, live: LiveState, format: Format) -> Connection {
        Connection {
            socket,
            live,
            format,
            subscriptions: Vec::new(),
            last_sent: 0,
        }
    }

    async fn serve(mut self) -> Ended {
        let (mut feed, mut position) = self.live.hub.subscribe();
        let ping_every = self.live.options.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let mut heard_at = Instant::now();
        let shutdown = self.live.shutdown.clone();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.close(CLOSE_GOING_AWAY, "the server is shutting down").await;
                    return "shutdown";
                }
                incoming = self.socket.recv() => {
                    heard_at = Instant::now();
                    let message = match incoming {
                        Some(Ok(message)) => message,
                        Some(Err(_)) | None => return "disconnected",
                    };
                    let decoded = match message {
                        Message::Text(text) => decode_json(text.as_str()),
                        Message::Binary(bytes) if self.format == Format::Protobuf => {
                            decode_proto(&bytes)
                        }
                        Message::Binary(_) => Err(Refusal::invalid(
                            "binary frames need the weft.v1.protobuf subprotocol",
                        )),
                        Message::Close(_) => return "closed by the client",
                        Message::Ping(_) | Message::Pong(_) => continue,
                    };
                    let handled = match decoded {
                        Ok(request) => self.handle(request, position).await,
                        Err(refusal) => self.refuse(refusal).await,
                    };
                    if let Err(ended) = handled {
                        return ended;
                    }
                }
                received = feed.recv() => match received {
                    Ok(event) => {
                        if let LiveEvent::Log(log) = &*event {
                            position = log.seq;
                        }
                        if self.wants(&event)
                            && let Err(ended) = self.send_event(&event).await
                        {
                            return ended;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        self.close_slow().await;
                        return "slow consumer";
                    }
                    Err(RecvError::Closed) => {
                        self.close(CLOSE_GOING_AWAY, "the server is shutting down").await;
                        return "feed closed";
                    }
                },
                _ = ping.tick() => {
                    if heard_at.elapsed() > ping_every * 2 {
                        self.close(CLOSE_NO_PONG, "no pong for two ping intervals").await;
                        return "silent";
                    }
                    if let Err(ended) = self.send(Message::Ping(Bytes::new())).await {
                        return ended;
                    }
                }
            }
        }
    }

    /// Whether a live event goes out: some subscription covers it and has not served it yet.
    fn wants(&self, event: &LiveEvent) -> bool {
        let seq = match event {
            LiveEvent::Log(log) => log.seq,
            LiveEvent::Agent(_) => i64::MAX,
        };
        self.subscriptions
            .iter()
            .any(|s| seq > s.since && s.scope.matches(event))
    }

    async fn handle(&mut self, request: Request, position: i64) -> Result<(), Ended> {
        match request {
            Request::Subscribe { scope, after } => {
                if self.subscriptions.iter().any(|s| s.scope == scope) {
                    return self
                        .refuse(Refusal {
                            code: "already_subscribed",
                            message: "this socket already has that subscription".into(),
                        })
                        .await;
                }
                if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                    return self
                        .refuse(Refusal {
                            code: "too_many_subscriptions",
                            message: format!(
                                "a socket holds at most {MAX_SUBSCRIPTIONS} subscriptions"
                            ),
                        })
                        .await;
                }
                let head = position;
                self.send_control(
                    json!({"type": "subscribed", "scope": scope.to_json(), "headSeq": head}),
                    pb::server_message::Message::Subscribed(pb::Subscribed {
                        scope: Some(scope.to_proto()),
                        head_seq: head,
                    }),
                )
                .await?;
                match (scope, after) {
                    (Scope::Runs(runs), Some(after)) if after < head => {
                        self.replay(runs, after, head).await?;
                    }
                    (Scope::Agents, _) => self.send_agent_snapshot().await?,
                    _ => {}
                }
                // Live events up to `since` were replayed (or seen elsewhere, when the client
                // resumes from a `seq` this replica has not published yet).
                self.subscriptions.push(Subscription {
                    scope,
                    since: after.unwrap_or(head),
                });
                Ok(())
            }
            Request::Unsubscribe { scope } => {
                let before = self.subscriptions.len();
                self.subscriptions.retain(|s| s.scope != scope);
                if self.subscriptions.len() == before {
                    return self
                        .refuse(Refusal {
                            code: "not_subscribed",
                            message: "this socket has no such subscription".into(),
                        })
                        .await;
                }
                self.send_control(
                    json!({"type": "unsubscribed", "scope": scope.to_json()}),
                    pb::server_message::Message::Unsubscribed(pb::Unsubscribed {
                        scope: Some(scope.to_proto()),
                    }),
                )
                .await
            }
        }
    }

    /// Send the stored events of `scope` with `after < seq <= head` that no other subscription
    /// of this socket has already sent.
    async fn replay(&mut self, scope: EventScope, after: i64, head: i64) -> Result<(), Ended> {
        let mut cursor = after;
        loop {
            let query = EventQuery {
                scope,
                after_seq: cursor,
                until_seq: Some(head),
                limit: REPLAY_PAGE,
            };
            let page = match self.live.hub.store().stream_events(&query).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot replay events for a WebSocket client");
                    self.close(1011, "cannot read the event log; resume later")
                        .await;
                    return Err("store error");
                }
            };
            let full = page.len() == REPLAY_PAGE as usize;
            for scoped in page {
                cursor = scoped.event.seq;
                let event = LiveEvent::Log(LogEvent::new(scoped));
                let already_sent = self
                    .subscriptions
                    .iter()
                    .any(|s| cursor > s.since && s.scope.matches(&event));
                if !already_sent {
                    self.send_event(&event).await?;
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn send_agent_snapshot(&mut self) -> Result<(), Ended> {
        for agent in self.live.hub.agents().list() {
            let change = AgentChange {
                kind: "agent.present",
                agent,
                reason: None,
            };
            self.send_event(&LiveEvent::Agent(change)).await?;
        }
        Ok(())
    }

    async fn send_event(&mut self, event: &LiveEvent) -> Result<(), Ended> {
        let message = match (event, self.format) {
            (LiveEvent::Log(log), Format::Json) => Message::Text(log.json_frame()),
            (LiveEvent::Log(log), Format::Protobuf) => Message::Binary(log.proto_frame()),
            (LiveEvent::Agent(change), Format::Json) => {
                Message::Text(Utf8Bytes::from(agent_json(change).to_string()))
            }
            (LiveEvent::Agent(change), Format::Protobuf) => {
                let message = pb::ServerMessage {
                    message: Some(pb::server_message::Message::Agent(pb::AgentEvent {
                        kind: change.kind.to_string(),
                        agent_json: json!(change.agent).to_string(),
                        reason: change.reason.clone(),
                    })),
                };
                Message::Binary(Bytes::from(message.encode_to_vec()))
            }
        };
        self.send(message).await?;
        if let LiveEvent::Log(log) = event {
            self.last_sent = self.last_sent.max(log.seq);
        }
        Ok(())
    }

    async fn send_control(
        &mut self,
        json: Value,
        proto: pb::server_message::Message,
    ) -> Result<(), Ended> {
        let message = match self.format {
            Format::Json => Message::Text(Utf8Bytes::from(json.to_string())),
            Format::Protobuf => Message::Binary(Bytes::from(
                pb::ServerMessage {
                    message: Some(proto),
                }
                .encode_to_vec(),
            )),
        };
        self.send(message).await
    }

    async fn refuse(&mut self, refusal: Refusal) -> Result<(), Ended> {
        self.send_control(
            json!({"type": "error", "code": refusal.code, "message": refusal.message}),
            pb::server_message::Message::Error(pb::Error {
                code: refusal.code.to_string(),
                message: refusal.message,
            }),
        )
        .await
    }

    /// Send one frame; a frame that cannot leave in time means the client is stuck.
    async fn send(&mut self, message: Message) -> Result<(), Ended> {
        match timeout(self.live.options.send_timeout, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("disconnected"),
            Err(_) => {
                // The frame is queued whole in the socket's buffer: a close frame can follow.
                self.close_slow().await;
                Err("slow consumer")
            }
        }
    }

    async fn close_slow(&mut self) {
        let reason = format!(
            "slow consumer: resubscribe with after={} to resume",
            self.last_sent
        );
        self.close(CLOSE_SLOW_CONSUMER, &reason).await;
    }

    /// Send a close frame. A client that is behind gets it after what is already buffered for
    /// it, so the socket lingers (bounded, and not past shutdown) for it to read that far; the
    /// socket is dropped after anyway. The memory held meanwhile is one frame and the close.
    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        };
        let send_timeout = self.live.options.send_timeout;
        let sending = self.socket.send(Message::Close(Some(frame)));
        if code == CLOSE_GOING_AWAY {
            let _ = timeout(send_timeout, sending).await;
            return;
        }
        let shutdown = self.live.shutdown.clone();
        tokio::select! {
            _ = timeout(send_timeout.max(self.live.options.close_linger), sending) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

fn agent_json(change: &AgentChange) -> Value {
    match &change.reason {
        Some(reason) => {
            json!({"type": "agent", "kind": change.kind, "agent": change.agent, "reason": reason})
        }
        None => json!({"type": "agent", "kind": change.kind, "agent": change.agent}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_requests_decode_or_are_refused_with_a_reason() {
        let run = Uuid::now_v7();
        assert_eq!(
            decode_json(&format!(
                r#"{{"type":"subscribe","scope":{{"kind":"run","runId":"{run}"}},"after":7}}"#
            )),
            Ok(Request::Subscribe {
                scope: Scope::Runs(EventScope::Run(run)),
                after: Some(7)
            })
        );
        assert_eq!(
            decode_json(r#"{"type":"unsubscribe","scope":{"kind":"all"}}"#),
            Ok(Request::Unsubscribe {
                scope: Scope::Runs(EventScope::All)
            })
        );
        for (text, needle) in [
            ("nonsense", "not a valid request"),
            (
                r#"{"type":"subscribe","scope":{"kind":"run"}}"#,
                "needs runId",
            ),
            (
                r#"{"type":"subscribe","scope":{"kind":"run","runId":"x"}}"#,
                "not a UUID",
            ),
            (
                r#"{"type":"subscribe","scope":{"kind":"moon"}}"#,
                "unknown scope kind",
            ),
            (r#"{"type":"jump","scope":{"kind":"all"}}"#, "unknown type"),
            (
                r#"{"type":"subscribe","scope":{"kind":"all"},"after":-1}"#,
                "0 or more",
            ),
            (
                r#"{"type":"subscribe","scope":{"kind":"agents"},"after":1}"#,
                "live only",
            ),
            (
                r#"{"type":"subscribe","scope":{"kind":"all"},"extra":1}"#,
                "unknown field",
            ),
        ] {
            let refusal = decode_json(text).expect_err(text);
            assert_eq!(refusal.code, "invalid_message");
            assert!(
                refusal.message.contains(needle),
                "{text}: {}",
                refusal.message
            );
        }
    }

    #[test]
    fn protobuf_requests_decode() {
        let definition = Uuid::now_v7();
        let bytes = pb::ClientMessage {
            message: Some(pb::client_message::Message::Subscribe(pb::Subscribe {
                scope: Some(Scope::Runs(EventScope::Definition(definition)).to_proto()),
                after: Some(3),
            })),
        }
        .encode_to_vec();
        assert_eq!(
            decode_proto(&bytes),
            Ok(Request::Subscribe {
                scope: Scope::Runs(EventScope::Definition(definition)),
                after: Some(3)
            })
        );
        assert!(decode_proto(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode_proto(&pb::ClientMessage { message: None }.encode_to_vec()).is_err());
    }
}
