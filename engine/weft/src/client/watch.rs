//! Follow one run over the server's WebSocket (`GET /api/v1/ws`, JSON subprotocol) until it
//! ends.
//!
//! The watcher subscribes to the run's scope with `after` = the last sequence number it has
//! seen, so a dropped connection (or a `4008` slow-consumer close, or a `1001` server restart)
//! is resumed by reconnecting: the server replays what was missed, with no gap and no duplicate.
//! A run is over at `run.completed`, `run.failed` or `run.cancelled`, unless a later event of
//! the run exists (a replayed failure followed by `run.retried`): the caller's `is_final`
//! decides for terminal events seen during the replay.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

/// Close code of a server that dropped a client that fell behind.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code of a policy violation (not retried).
const CLOSE_POLICY: u16 = 1008;
/// Consecutive failed connections before giving up.
const MAX_RECONNECTS: u32 = 8;
/// Longest silence (the server pings periodically) before the connection is taken as dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `run.completed`.
    Completed,
    /// `run.failed`.
    Failed,
    /// `run.cancelled`.
    Cancelled,
}

impl Outcome {
    /// The outcome a run event kind announces, if it ends the run.
    pub fn of_kind(kind: &str) -> Option<Outcome> {
        match kind {
            "run.completed" => Some(Outcome::Completed),
            "run.failed" => Some(Outcome::Failed),
            "run.cancelled" => Some(Outcome::Cancelled),
            _ => None,
        }
    }

    /// The outcome of a run status, if the run is over.
    pub fn of_status(status: &str) -> Option<Outcome> {
        match status {
            "COMPLETED" => Some(Outcome::Completed),
            "FAILED" => Some(Outcome::Failed),
            "CANCELLED" => Some(Outcome::Cancelled),
            _ => None,
        }
    }
}

/// Why watching failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The server refused the WebSocket upgrade (no such endpoint, unauthorised...).
    #[error("the server refused the WebSocket connection to {url}: HTTP {status}{}", body_suffix(.body))]
    Refused {
        /// The endpoint.
        url: String,
        /// HTTP status of the refusal.
        status: u16,
        /// The error body, if any.
        body: String,
    },
    /// The server sent an `error` message.
    #[error("{code}: {message}")]
    Server {
        /// Its code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The server closed the connection for a policy violation.
    #[error("the server closed the event stream (policy): {0}")]
    Policy(String),
    /// Reconnecting kept failing.
    #[error("lost the event stream from {url} and could not reconnect: {last}")]
    Lost {
        /// The endpoint.
        url: String,
        /// The last failure.
        last: String,
    },
    /// The server URL cannot become a WebSocket URL.
    #[error("invalid server URL for WebSocket: {0}")]
    InvalidUrl(String),
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(" ({body})")
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    url: Url,
    token: Option<String>,
}

impl Endpoint {
    /// The WebSocket endpoint of the server at `base` (`http` → `ws`, `https` → `wss`).
    pub fn for_server(base: &Url, token: Option<&str>) -> Result<Endpoint, WatchError> {
        let mut url = base.clone();
        let scheme = match base.scheme() {
            "http" => "ws",
            "https" => "wss",
            other => return Err(WatchError::InvalidUrl(format!("scheme {other}"))),
        };
        url.set_scheme(scheme)
            .map_err(|()| WatchError::InvalidUrl(base.to_string()))?;
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| WatchError::InvalidUrl(base.to_string()))?;
            segments.pop_if_empty().extend(["api", "v1", "ws"]);
        }
        Ok(Endpoint {
            url,
            token: token.map(str::to_string),
        })
    }

    /// The URL connected to.
    pub fn url(&self) -> &Url {
        &self.url
    }
}

/// How one connection ended.
enum Session {
    /// The run ended.
    Finished(Outcome),
    /// The connection dropped (or was closed by the server for a reason worth a retry).
    Dropped {
        /// Whether the subscription had been confirmed (the connection worked).
        subscribed: bool,
        /// Why, for the error if reconnecting fails.
        reason: String,
    },
}

/// Follow run `run_id` from the event after `after` (0: from its first event) until it ends.
/// `on_event` gets each event message as the server sent it, in order, once. `is_final(seq)`
/// is asked about a terminal event seen while the server was still replaying (its `seq` below
/// the subscription's `headSeq`): whether no later event of the run exists.
pub async fn watch_run(
    endpoint: &Endpoint,
    run_id: &str,
    after: i64,
    mut on_event: impl FnMut(&Value),
    mut is_final: impl AsyncFnMut(i64) -> bool,
) -> Result<Outcome, WatchError> {
    let mut last_seq = after;
    let mut failures = 0u32;
    loop {
        let session = session(
            endpoint,
            run_id,
            &mut last_seq,
            &mut on_event,
            &mut is_final,
        )
        .await?;
        match session {
            Session::Finished(outcome) => return Ok(outcome),
            Session::Dropped { subscribed, reason } => {
                if subscribed {
                    failures = 0;
                } else {
                    failures += 1;
                }
                if failures > MAX_RECONNECTS {
                    return Err(WatchError::Lost {
                        url: endpoint.url.to_string(),
                        last: reason,
                    });
                }
                tracing::debug!(
                    run_id,
                    last_seq,
                    failures,
                    reason,
                    "event stream dropped; reconnecting"
                );
                tokio::time::sleep(backoff(failures)).await;
            }
        }
    }
}

/// 0 ms after a connection that worked, then 250 ms doubling up to 5 s.
fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let ms = 250u64.saturating_mul(1 << failures.min(5).saturating_sub(1));
    Duration::from_millis(ms.min(5_000))
}

async fn session(
    endpoint: &Endpoint,
    run_id: &str,
    last_seq: &mut i64,
    on_event: &mut impl FnMut(&Value),
    is_final: &mut impl AsyncFnMut(i64) -> bool,
) -> Result<Session, WatchError> {
    let dropped = |subscribed: bool, reason: String| Ok(Session::Dropped { subscribed, reason });
    let mut request = endpoint
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| WatchError::InvalidUrl(e.to_string()))?;
    if let Some(token) = &endpoint.token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| WatchError::InvalidUrl("the token is not a valid header value".into()))?;
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    let mut socket = match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => socket,
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            // 5xx (a restarting proxy, an overloaded server) is worth a retry; 4xx is not.
            if status >= 500 {
                return dropped(false, format!("HTTP {status}"));
            }
            let body = response
                .body()
                .as_ref()
                .map(|b| {
                    String::from_utf8_lossy(b)
                        .trim()
                        .chars()
                        .take(300)
                        .collect()
                })
                .unwrap_or_default();
            return Err(WatchError::Refused {
                url: endpoint.url.to_string(),
                status,
                body,
            });
        }
        Err(e) => return dropped(false, e.to_string()),
    };
    let subscribe = json!({
        "type": "subscribe",
        "scope": {"kind": "run", "runId": run_id},
        "after": *last_seq,
    });
    if let Err(e) = socket.send(Message::text(subscribe.to_string())).await {
        return dropped(false, e.to_string());
    }
    let mut subscribed = false;
    let mut head_seq = i64::MAX;
    loop {
        let message = match tokio::time::timeout(IDLE_TIMEOUT, socket.next()).await {
            Err(_) => return dropped(subscribed, "no message from the server for 90 s".into()),
            Ok(None) => return dropped(subscribed, "the connection closed".into()),
            Ok(Some(Err(e))) => return dropped(subscribed, e.to_string()),
            Ok(Some(Ok(message))) => message,
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => return closed(frame, subscribed),
            // Pings are answered by tungstenite; binary frames belong to the other subprotocol.
            _ => continue,
        };
        let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
            tracing::debug!(text = text.as_str(), "ignoring a message that is not JSON");
            continue;
        };
        match value.get("type").and_then(Value::as_str) {
            Some("subscribed") => {
                subscribed = true;
                head_seq = value
                    .get("headSeq")
                    .and_then(Value::as_i64)
                    .unwrap_or(i64::MAX);
            }
            Some("event") => {
                let Some(seq) = value.get("seq").and_then(Value::as_i64) else {
                    continue;
                };
                if seq <= *last_seq || value.get("runId").and_then(Value::as_str) != Some(run_id) {
                    continue;
                }
                *last_seq = seq;
                on_event(&value);
                let kind = value
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if let Some(outcome) = Outcome::of_kind(kind)
                    && (seq >= head_seq || is_final(seq).await)
                {
                    let _ = socket.close(None).await;
                    return Ok(Session::Finished(outcome));
                }
            }
            Some("unsubscribed") => {
                return dropped(subscribed, "unsubscribed by the server".into());
            }
            Some("error") => {
                let text = |key: &str| {
                    value
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                return Err(WatchError::Server {
                    code: text("code"),
                    message: text("message"),
                });
            }
            _ => {}
        }
    }
}

/// A close from the server: `1008` is final, anything else (`4008` slow consumer, `1001`
/// shutting down...) is resumed.
fn closed(frame: Option<CloseFrame>, subscribed: bool) -> Result<Session, WatchError> {
    let (code, reason) = frame
        .map(|f| (u16::from(f.code), f.reason.to_string()))
        .unwrap_or((1005, String::new()));
    if code == CLOSE_POLICY {
        return Err(WatchError::Policy(reason));
    }
    Ok(Session::Dropped {
        subscribed,
        reason: format!("closed by the server ({code} {reason})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    fn event(run: &str, seq: i64, kind: &str) -> Message {
        Message::text(
            json!({"type": "event", "seq": seq, "runId": run, "definitionId": "d",
                   "stepId": null, "kind": kind, "data": {}, "createdAt": "2026-01-01T00:00:00Z"})
            .to_string(),
        )
    }

    fn subscribed(head: i64) -> Message {
        Message::text(json!({"type": "subscribed", "scope": {}, "headSeq": head}).to_string())
    }

    /// A WebSocket server that runs `script` for each accepted connection, in order, and
    /// records the `after` of each subscription.
    async fn server(
        scripts: Vec<Vec<Message>>,
    ) -> (Endpoint, Arc<Mutex<Vec<i64>>>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let afters = Arc::new(Mutex::new(Vec::new()));
        let seen = afters.clone();
        let task = tokio::spawn(async move {
            for script in scripts {
                let (stream, _) = listener.accept().await.expect("accept");
                let mut socket = tokio_tungstenite::accept_async(stream)
                    .await
                    .expect("handshake");
                let Some(Ok(Message::Text(text))) = socket.next().await else {
                    panic!("no subscribe message");
                };
                let subscribe: Value = serde_json::from_str(text.as_str()).expect("JSON");
                assert_eq!(subscribe["type"], "subscribe");
                assert_eq!(subscribe["scope"]["kind"], "run");
                seen.lock()
                    .expect("lock")
                    .push(subscribe["after"].as_i64().expect("after"));
                for message in script {
                    if socket.send(message).await.is_err() {
                        break;
                    }
                }
                // Let the client read everything before the socket goes.
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_close() {
                        break;
                    }
                }
            }
        });
        let base = Url::parse(&format!("http://{address}")).expect("url");
        (
            Endpoint::for_server(&base, None).expect("endpoint"),
            afters,
            task,
        )
    }

    fn slow_consumer_close() -> Message {
        Message::Close(Some(CloseFrame {
            code: CloseCode::from(CLOSE_SLOW_CONSUMER),
            reason: "slow consumer".into(),
        }))
    }

    #[tokio::test]
    async fn a_4008_close_resumes_after_the_last_seen_event() {
        let run = "r1";
        let (endpoint, afters, server) = server(vec![
            vec![
                subscribed(10),
                event(run, 1, "run.created"),
                event(run, 2, "step.ready"),
                slow_consumer_close(),
            ],
            vec![
                subscribed(10),
                event(run, 3, "step.completed"),
                event("other-run", 4, "run.completed"),
                event(run, 11, "run.completed"),
            ],
        ])
        .await;
        let mut seqs = Vec::new();
        let outcome = watch_run(
            &endpoint,
            run,
            0,
            |e| seqs.push(e["seq"].as_i64().unwrap_or_default()),
            async |_| panic!("live terminal events need no check"),
        )
        .await
        .expect("watched");
        assert_eq!(outcome, Outcome::Completed);
        assert_eq!(seqs, [1, 2, 3, 11]);
        assert_eq!(*afters.lock().expect("lock"), [0, 2]);
        server.await.expect("server");
    }

    #[tokio::test]
    async fn a_replayed_failure_followed_by_a_retry_is_not_the_end() {
        let run = "r2";
        let (endpoint, _, server) = server(vec![vec![
            subscribed(6),
            event(run, 2, "run.failed"),
            event(run, 3, "run.retried"),
            event(run, 4, "run.cancelled"),
        ]])
        .await;
        let mut checked = Vec::new();
        let outcome = watch_run(
            &endpoint,
            run,
            0,
            |_| {},
            async |seq| {
                checked.push(seq);
                seq == 4
            },
        )
        .await
        .expect("watched");
        assert_eq!(outcome, Outcome::Cancelled);
        assert_eq!(checked, [2, 4]);
        server.await.expect("server");
    }

    #[tokio::test]
    async fn an_error_message_stops_the_watch_with_its_code() {
        let (endpoint, _, server) = server(vec![vec![Message::text(
            json!({"type": "error", "code": "invalid_message", "message": "bad scope"}).to_string(),
        )]])
        .await;
        let error = watch_run(&endpoint, "r3", 0, |_| {}, async |_| true)
            .await
            .expect_err("fails");
        assert_eq!(error.to_string(), "invalid_message: bad scope");
        server.abort();
    }

    #[tokio::test]
    async fn a_refused_upgrade_is_reported_without_retrying() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut buffer = [0u8; 2048];
            let _ = stream.read(&mut buffer).await;
            let body = r#"{"error":{"code":"not_found","message":"no route"}}"#;
            let response = format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).await.expect("write");
        });
        let base = Url::parse(&format!("http://{address}")).expect("url");
        let endpoint = Endpoint::for_server(&base, Some("t")).expect("endpoint");
        let error = watch_run(&endpoint, "r4", 0, |_| {}, async |_| true)
            .await
            .expect_err("refused");
        assert!(
            matches!(error, WatchError::Refused { status: 404, .. }),
            "{error}"
        );
        server.await.expect("server");
    }

    #[test]
    fn the_endpoint_follows_the_server_url() {
        let base = Url::parse("https://weft.example/prefix/").expect("url");
        let endpoint = Endpoint::for_server(&base, None).expect("endpoint");
        assert_eq!(
            endpoint.url().as_str(),
            "wss://weft.example/prefix/api/v1/ws"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(8), Duration::from_millis(4_000));
    }
}
