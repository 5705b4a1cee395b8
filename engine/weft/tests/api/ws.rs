//! The live event stream, `GET /api/v1/ws`: exact event sequences (JSON and protobuf), resume
//! after a disconnect, slow clients, authentication, bad requests — on SQLite and PostgreSQL.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use weft_proto::events as pb;

use crate::both_backends;
use crate::helpers::*;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for one frame before failing.
const FRAME_WAIT: Duration = Duration::from_secs(60);

async fn app_with_add(
    backend: weft_store::Backend,
    adjust: impl FnOnce(&mut weft::Config),
) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    std::fs::copy(plugin_path("add"), dir.join("add.wasm")).expect("copy plugin");
    spawn_app_with(backend, move |c| {
        c.plugins_dir = Some(dir);
        adjust(c);
    })
    .await
}

async fn connect(app: &TestApp, protocol: Option<&str>, query: &str) -> Socket {
    let url = format!("ws://{}/api/v1/ws{query}", app.address);
    let mut request = url.into_client_request().expect("request");
    if let Some(protocol) = protocol {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(protocol).expect("header"),
        );
    }
    if let Some(token) = &app.token {
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
    }
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket connect");
    if let Some(protocol) = protocol {
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some(protocol)
        );
    }
    socket
}

async fn send_json(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .expect("send");
}

/// The next text frame as JSON (pings are skipped).
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(FRAME_WAIT, socket.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a valid frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Events until `run_id` ends (run.completed / failed / cancelled), in order.
async fn events_until_done(socket: &mut Socket, run_id: &str) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let frame = next_json(socket).await;
        assert_eq!(frame["type"], "event", "{frame}");
        let done = frame["runId"] == run_id
            && matches!(
                frame["kind"].as_str(),
                Some("run.completed" | "run.failed" | "run.cancelled")
            );
        events.push(frame);
        if done {
            return events;
        }
    }
}

/// The run's stored events, as the REST API gives them.
async fn stored_events(app: &TestApp, run_id: &str) -> Vec<Value> {
    let body = expect_status(
        app.get(&format!("/api/v1/workflow-instances/{run_id}/events"))
            .await,
        StatusCode::OK,
    )
    .await;
    body["items"].as_array().expect("items").clone()
}

fn seqs_and_kinds(events: &[Value]) -> Vec<(i64, String, Value)> {
    events
        .iter()
        .map(|e| {
            (
                e["seq"].as_i64().expect("seq"),
                e["kind"].as_str().expect("kind").to_string(),
                e["stepId"].clone(),
            )
        })
        .collect()
}

async fn start_run(app: &TestApp, definition_id: &str, value: i64) -> String {
    let run = expect_status(
        app.post_json(
            "/api/v1/workflow-instances",
            &json!({"workflowDefinitionId": definition_id, "input": {"value": value}}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    run["id"].as_str().expect("id").to_string()
}

both_backends!(
    async fn a_subscriber_receives_the_exact_event_sequence_of_a_run(backend: Backend) {
        let app = app_with_add(backend, |_| {}).await;
        let definition = deploy(&app, simple_definition("ws-exact")).await;

        let mut all = connect(&app, None, "").await;
        send_json(
            &mut all,
            json!({"type": "subscribe", "scope": {"kind": "all"}}),
        )
        .await;
        let subscribed = next_json(&mut all).await;
        assert_eq!(subscribed["type"], "subscribed");
        assert_eq!(subscribed["scope"], json!({"kind": "all"}));

        let run_id = start_run(&app, &definition, 1).await;
        let live = events_until_done(&mut all, &run_id).await;
        let stored = stored_events(&app, &run_id).await;
        assert_eq!(seqs_and_kinds(&live), seqs_and_kinds(&stored));
        assert!(
            live.iter()
                .all(|e| e["definitionId"] == definition.as_str())
        );
        let kinds: Vec<&str> = live.iter().filter_map(|e| e["kind"].as_str()).collect();
        assert_eq!(kinds.first(), Some(&"run.created"));
        assert_eq!(kinds.last(), Some(&"run.completed"));
        assert_eq!(kinds.iter().filter(|k| **k == "step.completed").count(), 2);
        // Payload summaries: each step's output, and the run's.
        let outputs: Vec<&Value> = live
            .iter()
            .filter(|e| e["kind"] == "step.completed" || e["kind"] == "run.completed")
            .map(|e| &e["data"]["output"])
            .collect();
        assert_eq!(
            outputs,
            [
                &json!({"value": 2}),
                &json!({"value": 3}),
                &json!({"value": 3})
            ]
        );

        // Protobuf frames, subscribing to the run afterwards with after=0: the same sequence.
        let mut binary = connect(&app, Some("weft.v1.protobuf"), "").await;
        let subscribe = pb::ClientMessage {
            message: Some(pb::client_message::Message::Subscribe(pb::Subscribe {
                scope: Some(pb::Scope {
                    kind: Some(pb::scope::Kind::RunId(run_id.clone())),
                }),
                after: Some(0),
            })),
        };
        binary
            .send(Message::binary(subscribe.encode_to_vec()))
            .await
            .expect("send");
        let mut replayed = Vec::new();
        let mut head = None;
        while replayed.len() < stored.len() {
            let frame = tokio::time::timeout(FRAME_WAIT, binary.next())
                .await
                .expect("a frame in time")
                .expect("open")
                .expect("valid");
            let Message::Binary(bytes) = frame else {
                continue;
            };
            let message = pb::ServerMessage::decode(bytes.as_ref()).expect("ServerMessage");
            match message.message.expect("a message") {
                pb::server_message::Message::Subscribed(s) => head = Some(s.head_seq),
                pb::server_message::Message::Event(e) => {
                    assert_eq!(e.run_id, run_id);
                    assert_eq!(e.definition_id, definition);
                    let data: Value = serde_json::from_str(&e.data_json).expect("data JSON");
                    assert!(data.is_object());
                    replayed.push(json!({"seq": e.seq, "kind": e.kind, "stepId": e.step_id}));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(head.is_some(), "subscribed comes first");
        assert_eq!(seqs_and_kinds(&replayed), seqs_and_kinds(&stored));
    }
);

both_backends!(
    async fn a_client_resumes_after_a_disconnect_without_gaps_or_duplicates(backend: Backend) {
        let app = app_with_add(backend, |_| {}).await;
        let definition = deploy(&app, simple_definition("ws-resume")).await;
        let scope = json!({"kind": "definition", "definitionId": definition});

        let mut socket = connect(&app, None, "").await;
        send_json(
            &mut socket,
            json!({"type": "subscribe", "scope": scope, "after": 0}),
        )
        .await;
        assert_eq!(next_json(&mut socket).await["type"], "subscribed");
        let first = start_run(&app, &definition, 1).await;
        let mut seen = events_until_done(&mut socket, &first).await;
        // Read a few events of a second run, then drop the connection mid-run.
        let second = start_run(&app, &definition, 2).await;
        for _ in 0..2 {
            seen.push(next_json(&mut socket).await);
        }
        drop(socket);
        wait_for(&app, &second, &["COMPLETED"]).await;
        let third = start_run(&app, &definition, 3).await;
        wait_for(&app, &third, &["COMPLETED"]).await;

        let last = seen.last().expect("events")["seq"].as_i64().expect("seq");
        let mut socket = connect(&app, None, "").await;
        send_json(
            &mut socket,
            json!({"type": "subscribe", "scope": scope, "after": last}),
        )
        .await;
        let subscribed = next_json(&mut socket).await;
        assert_eq!(subscribed["type"], "subscribed");
        seen.extend(events_until_done(&mut socket, &third).await);

        let mut expected = Vec::new();
        for run in [&first, &second, &third] {
            expected.extend(stored_events(&app, run).await);
        }
        expected.sort_by_key(|e| e["seq"].as_i64());
        assert_eq!(seqs_and_kinds(&seen), seqs_and_kinds(&expected));
    }
);

both_backends!(
    async fn a_slow_client_is_closed_while_others_keep_receiving(backend: Backend) {
        let app = app_with_add(backend, |c| {
            c.live.buffer_events = 64;
            c.live.send_timeout = Duration::from_millis(500);
            // The slow client starts reading only after every signal is posted, which can take
            // longer than the default linger on a loaded machine.
            c.live.close_linger = Duration::from_secs(600);
        })
        .await;
        // A run parked on a signal; each signal posted appends a `signal.received` event that
        // carries its payload: big events, to overflow the slow client's socket buffers.
        let definition = deploy(
            &app,
            json!({
                "name": "ws-slow",
                "steps": [{"stepDefinitionId": "hold", "type": "wait",
                           "waitConfig": {"signal": "never", "timeoutSeconds": 3600}}]
            }),
        )
        .await;
        let run = expect_status(
            app.post_json(
                "/api/v1/workflow-instances",
                &json!({"workflowDefinitionId": definition, "input": {}}),
            )
            .await,
            StatusCode::CREATED,
        )
        .await["id"]
            .as_str()
            .expect("id")
            .to_string();
        // Both clients resume after the events already logged, so only signals follow.
        let parked = wait_for_step_waiting(&app, &run).await;

        // The slow client: a tiny receive buffer, and it stops reading after subscribing.
        let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
        tcp.set_recv_buffer_size(4096).expect("recv buffer");
        let stream = tcp.connect(app.address).await.expect("connect");
        let url = format!("ws://{}/api/v1/ws", app.address);
        let (mut slow, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("handshake");
        send_json(
            &mut slow,
            json!({"type": "subscribe", "scope": {"kind": "run", "runId": run}, "after": parked}),
        )
        .await;
        assert_eq!(next_json(&mut slow).await["type"], "subscribed");

        // The fast client reads as events come.
        let mut fast = connect(&app, None, "").await;
        send_json(
            &mut fast,
            json!({"type": "subscribe", "scope": {"kind": "run", "runId": run}, "after": parked}),
        )
        .await;
        assert_eq!(next_json(&mut fast).await["type"], "subscribed");
        // 40 MiB: more than the kernel buffers between the server and a client that does not
        // read (the client's receive buffer may autotune up to `tcp_rmem`'s 32 MiB maximum),
        // so the server's sends to the slow client must block.
        const SIGNALS: usize = 160;
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            while received.len() < SIGNALS {
                let frame = next_json(&mut fast).await;
                assert_eq!(frame["kind"], "signal.received", "{frame}");
                received.push(frame["data"]["payload"]["n"].as_u64().expect("n"));
            }
            (fast, received)
        });

        let padding = "x".repeat(256 * 1024);
        for n in 0..SIGNALS {
            expect_status(
                app.post_json(
                    &format!("/api/v1/workflow-instances/{run}/signals/other"),
                    &json!({"n": n, "padding": padding}),
                )
                .await,
                StatusCode::ACCEPTED,
            )
            .await;
        }
        let (mut fast, received) = reader.await.expect("fast reader");
        assert_eq!(received, (0..SIGNALS as u64).collect::<Vec<_>>());

        // The slow client reads what was buffered for it, then finds a 4008 close that says
        // where to resume.
        let mut close = None;
        let mut slow_events = 0;
        let give_up = tokio::time::Instant::now() + FRAME_WAIT;
        while close.is_none() {
            assert!(
                tokio::time::Instant::now() < give_up,
                "no close frame after {slow_events} events"
            );
            match tokio::time::timeout(FRAME_WAIT, slow.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => close = Some(frame),
                Ok(Some(Ok(Message::Text(_)))) => slow_events += 1,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed))) | Ok(None) => {
                    panic!("closed without a close frame after {slow_events} events")
                }
                Ok(Some(Err(e))) => panic!("socket error after {slow_events} events: {e}"),
                Err(_) => panic!("no close frame after {slow_events} events"),
            }
        }
        let frame = close.flatten().expect("a close frame with a code");
        assert_eq!(frame.code, CloseCode::from(4008));
        assert!(frame.reason.contains("after="), "{}", frame.reason);
        assert!(slow_events < SIGNALS, "the slow client was not cut short");

        // The fast client is still served.
        expect_status(
            app.post_json(
                &format!("/api/v1/workflow-instances/{run}/signals/other"),
                &json!({"n": 99}),
            )
            .await,
            StatusCode::ACCEPTED,
        )
        .await;
        let next = next_json(&mut fast).await;
        assert_eq!(next["data"]["payload"]["n"], 99);
    }
);

/// Wait until the run's only step is parked (its `step.waiting` event is logged); returns the
/// last logged `seq`.
async fn wait_for_step_waiting(app: &TestApp, run: &str) -> i64 {
    for _ in 0..600 {
        let events = stored_events(app, run).await;
        if events.iter().any(|e| e["kind"] == "step.waiting") {
            return events.last().and_then(|e| e["seq"].as_i64()).expect("seq");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run} never parked");
}

both_backends!(
    async fn bad_requests_get_error_frames_and_the_socket_stays_open(backend: Backend) {
        let app = app_with_add(backend, |_| {}).await;
        let mut socket = connect(&app, None, "").await;
        for (message, code) in [
            (
                json!({"type": "subscribe", "scope": {"kind": "moon"}}),
                "invalid_message",
            ),
            (
                json!({"type": "subscribe", "scope": {"kind": "run", "runId": "x"}}),
                "invalid_message",
            ),
            (
                json!({"type": "unsubscribe", "scope": {"kind": "all"}}),
                "not_subscribed",
            ),
        ] {
            send_json(&mut socket, message).await;
            let frame = next_json(&mut socket).await;
            assert_eq!(frame["type"], "error");
            assert_eq!(frame["code"], code, "{frame}");
        }
        socket.send(Message::text("not json")).await.expect("send");
        assert_eq!(next_json(&mut socket).await["code"], "invalid_message");
        send_json(
            &mut socket,
            json!({"type": "subscribe", "scope": {"kind": "all"}}),
        )
        .await;
        assert_eq!(next_json(&mut socket).await["type"], "subscribed");
        send_json(
            &mut socket,
            json!({"type": "subscribe", "scope": {"kind": "all"}}),
        )
        .await;
        assert_eq!(next_json(&mut socket).await["code"], "already_subscribed");
        send_json(
            &mut socket,
            json!({"type": "unsubscribe", "scope": {"kind": "all"}}),
        )
        .await;
        assert_eq!(next_json(&mut socket).await["type"], "unsubscribed");

        // Agents: a snapshot on subscribe (none here), then nothing for runs.
        send_json(
            &mut socket,
            json!({"type": "subscribe", "scope": {"kind": "agents"}}),
        )
        .await;
        assert_eq!(next_json(&mut socket).await["type"], "subscribed");
        let definition = deploy(&app, simple_definition("ws-agents-only")).await;
        let run = start_run(&app, &definition, 1).await;
        wait_for(&app, &run, &["COMPLETED"]).await;
        send_json(
            &mut socket,
            json!({"type": "subscribe", "scope": {"kind": "run", "runId": run}, "after": 0}),
        )
        .await;
        assert_eq!(next_json(&mut socket).await["type"], "subscribed");
        // The first frame after that is the run's first event: nothing leaked from the
        // agents subscription.
        assert_eq!(next_json(&mut socket).await["kind"], "run.created");
    }
);

#[tokio::test]
async fn the_socket_needs_a_token_when_tokens_are_configured() {
    let app = spawn_app_with_auth(weft_store::Backend::Sqlite).await;
    let url = format!("ws://{}/api/v1/ws", app.address);
    match tokio_tungstenite::connect_async(url.clone()).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    match tokio_tungstenite::connect_async(format!("{url}?access_token=wrong")).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("{url}?access_token={READ_TOKEN}"))
            .await
            .expect("a read token may watch");
    send_json(
        &mut socket,
        json!({"type": "subscribe", "scope": {"kind": "all"}}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "subscribed");
}

both_backends!(
    async fn the_agents_scope_sees_agents_connect_and_leave(backend: Backend) {
        use tokio_stream::wrappers::ReceiverStream;
        use weft_proto::agent::agent_service_client::AgentServiceClient;
        use weft_proto::agent::{AgentMessage, Hello, TaskDefinition, agent_message};

        let app = spawn_app(backend).await;
        let mut socket = connect(&app, None, "").await;
        send_json(
            &mut socket,
            json!({"type": "subscribe", "scope": {"kind": "agents"}}),
        )
        .await;
        assert_eq!(next_json(&mut socket).await["type"], "subscribed");

        let mut client = AgentServiceClient::connect(format!("http://{}", app.grpc_address))
            .await
            .expect("channel");
        let (tx, outbound) = tokio::sync::mpsc::channel(8);
        tx.send(AgentMessage {
            message: Some(agent_message::Message::Hello(Hello {
                name: "watched".into(),
                version: "1.0.0".into(),
                capacity: 2,
                tasks: vec![TaskDefinition {
                    name: "echo".into(),
                    version: "1.0.0".into(),
                    ..Default::default()
                }],
            })),
        })
        .await
        .expect("hello");
        let inbound = client
            .open(tonic::Request::new(ReceiverStream::new(outbound)))
            .await
            .expect("open")
            .into_inner();
        let connected = next_json(&mut socket).await;
        assert_eq!(connected["type"], "agent", "{connected}");
        assert_eq!(connected["kind"], "agent.connected");
        assert_eq!(connected["agent"]["name"], "watched");
        assert_eq!(connected["agent"]["capacity"], 2);

        // A second socket subscribing now gets the agent as present.
        let mut late = connect(&app, None, "").await;
        send_json(
            &mut late,
            json!({"type": "subscribe", "scope": {"kind": "agents"}}),
        )
        .await;
        assert_eq!(next_json(&mut late).await["type"], "subscribed");
        let present = next_json(&mut late).await;
        assert_eq!(present["kind"], "agent.present");
        assert_eq!(present["agent"]["id"], connected["agent"]["id"]);

        drop(tx);
        drop(inbound);
        let left = next_json(&mut socket).await;
        assert_eq!(left["kind"], "agent.disconnected", "{left}");
        assert_eq!(left["agent"]["id"], connected["agent"]["id"]);
        assert_eq!(left["agent"]["connected"], false);
        assert!(left["reason"].is_string(), "{left}");
    }
);
