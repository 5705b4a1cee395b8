//! OTLP traces (`--otlp-endpoint`): a fake collector (an HTTP endpoint decoding protobuf
//! `ExportTraceServiceRequest`s) receives one span per run and one per step attempt, children of
//! the run's; an agent gets its attempt's span as a `traceparent`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use weft_proto::agent::agent_service_client::AgentServiceClient;
use weft_proto::agent::{
    AgentMessage, Hello, TaskDefinition, TaskResult, agent_message, engine_message, task_result,
};
use weft_store::Backend;

use crate::both_backends;
use crate::helpers::*;

type Received = Arc<Mutex<Vec<Span>>>;

/// A collector on its own thread and runtime (the exporter posts from a thread of its own).
struct Collector {
    address: SocketAddr,
    spans: Received,
}

impl Collector {
    fn start() -> Collector {
        let spans: Received = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let address = listener.local_addr().expect("address");
        let state = spans.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new()
                    .route("/v1/traces", post(receive))
                    .with_state(state);
                let _ = axum::serve(listener, app).await;
            });
        });
        Collector { address, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("lock").clone()
    }

    /// Wait until a span satisfies `found` (bounded), then return every span received.
    async fn wait_for(&self, what: &str, found: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let spans = self.spans();
            if found(&spans) {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(State(spans): State<Received>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut received = spans.lock().expect("lock");
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            received.extend(scope.spans);
        }
    }
    (StatusCode::OK, Vec::new())
}

fn attribute(span: &Span, key: &str) -> Option<any_value::Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.clone()?.value)
}

fn text(span: &Span, key: &str) -> String {
    match attribute(span, key) {
        Some(any_value::Value::StringValue(s)) => s,
        other => panic!("{key} of {}: {other:?}", span.name),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn traced_app(backend: Backend, collector: &Collector, plugins: bool) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    if plugins {
        std::fs::copy(plugin_path("add"), dir.join("add.wasm")).expect("copy plugin");
    }
    let endpoint = collector.endpoint();
    spawn_app_with(backend, move |c| {
        c.plugins_dir = Some(dir);
        c.otlp_endpoint = Some(endpoint);
        c.trace_flush_interval = Duration::from_millis(100);
    })
    .await
}

async fn start(app: &TestApp, body: serde_json::Value) -> String {
    let run = expect_status(
        app.post_json("/api/v1/workflow-instances", &body).await,
        StatusCode::CREATED,
    )
    .await;
    run["id"].as_str().expect("id").to_string()
}

both_backends! {
    async fn a_run_and_its_step_attempts_are_exported(backend: Backend) {
        let collector = Collector::start();
        let app = traced_app(backend, &collector, true).await;
        deploy(&app, simple_definition("traced")).await;
        let id = start(&app, json!({"name": "traced", "input": {"value": 1}})).await;
        let done = wait_for(&app, &id, &["COMPLETED", "FAILED"]).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");

        let spans = collector
            .wait_for("run span", |spans| spans.iter().any(|s| s.name == "run traced"))
            .await;
        let trace = hex(uuid::Uuid::parse_str(&id).expect("uuid").as_bytes());
        let run = spans.iter().find(|s| s.name == "run traced").expect("run span");
        assert_eq!(hex(&run.trace_id), trace);
        assert!(run.parent_span_id.is_empty(), "the run span is a root");
        assert_eq!(text(run, "weft.run_id"), id);
        assert_eq!(text(run, "weft.status"), "COMPLETED");
        assert!(run.end_time_unix_nano >= run.start_time_unix_nano);
        for step in ["first", "second"] {
            let span = spans
                .iter()
                .find(|s| s.name == format!("step {step}"))
                .unwrap_or_else(|| panic!("no span for step {step}"));
            assert_eq!(hex(&span.trace_id), trace, "{step}");
            assert_eq!(span.parent_span_id, run.span_id, "{step} is a child of the run");
            assert_eq!(text(span, "weft.run_id"), id);
            assert_eq!(text(span, "weft.step_id"), step);
            assert_eq!(attribute(span, "weft.attempt"), Some(any_value::Value::IntValue(1)));
            assert_eq!(text(span, "weft.runner"), "wasm");
            assert_eq!(text(span, "weft.outcome"), "completed");
        }
    }
}

#[tokio::test]
async fn agents_get_the_attempt_span_as_traceparent() {
    let collector = Collector::start();
    let app = traced_app(Backend::Sqlite, &collector, false).await;
    deploy(
        &app,
        json!({"name": "remote", "steps": [
            {"stepDefinitionId": "call", "type": "task",
             "taskConfig": {"taskDefinitionId": "echo", "runner": "agent"},
             "parameters": {"message": {"type": "constant", "value": "hi"}}}
        ]}),
    )
    .await;

    let mut client = AgentServiceClient::connect(format!("http://{}", app.grpc_address))
        .await
        .expect("channel");
    let (tx, outbound) = mpsc::channel(8);
    tx.send(AgentMessage {
        message: Some(agent_message::Message::Hello(Hello {
            name: "traced".into(),
            version: "1.0.0".into(),
            capacity: 1,
            tasks: vec![TaskDefinition {
                name: "echo".into(),
                version: "1.0.0".into(),
                ..Default::default()
            }],
        })),
    })
    .await
    .expect("hello");
    let mut inbound = client
        .open(tonic::Request::new(ReceiverStream::new(outbound)))
        .await
        .expect("open")
        .into_inner();

    let id = start(&app, json!({"name": "remote", "input": {}})).await;
    let assignment = loop {
        let message = tokio::time::timeout(Duration::from_secs(30), inbound.next())
            .await
            .expect("a message")
            .expect("open")
            .expect("ok");
        if let Some(engine_message::Message::Assignment(a)) = message.message {
            break a;
        }
    };
    let traceparent = assignment.traceparent.clone().expect("a traceparent");
    let trace = hex(uuid::Uuid::parse_str(&id).expect("uuid").as_bytes());
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace.as_str(), "01"));
    assert_eq!(parts[2].len(), 16, "{traceparent}");
    tx.send(AgentMessage {
        message: Some(agent_message::Message::Result(TaskResult {
            assignment_id: assignment.assignment_id.clone(),
            outcome: Some(task_result::Outcome::OutputJson(
                r#"{"message":"hi"}"#.into(),
            )),
        })),
    })
    .await
    .expect("result");
    let done = wait_for(&app, &id, &["COMPLETED", "FAILED"]).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");

    // The attempt's span is the one the agent was given.
    let spans = collector
        .wait_for("step span", |spans| {
            spans.iter().any(|s| s.name == "step call")
        })
        .await;
    let step = spans
        .iter()
        .find(|s| s.name == "step call")
        .expect("step span");
    assert_eq!(hex(&step.span_id), parts[2]);
    assert_eq!(text(step, "weft.runner"), "agent");
}

#[tokio::test]
async fn without_an_endpoint_agents_get_no_traceparent() {
    let app = spawn_app(Backend::Sqlite).await;
    deploy(
        &app,
        json!({"name": "untraced", "steps": [
            {"stepDefinitionId": "call", "type": "task",
             "taskConfig": {"taskDefinitionId": "echo", "runner": "agent"}}
        ]}),
    )
    .await;
    let mut client = AgentServiceClient::connect(format!("http://{}", app.grpc_address))
        .await
        .expect("channel");
    let (tx, outbound) = mpsc::channel(8);
    tx.send(AgentMessage {
        message: Some(agent_message::Message::Hello(Hello {
            name: "untraced".into(),
            version: "1.0.0".into(),
            capacity: 1,
            tasks: vec![TaskDefinition {
                name: "echo".into(),
                version: "1.0.0".into(),
                ..Default::default()
            }],
        })),
    })
    .await
    .expect("hello");
    let mut inbound = client
        .open(tonic::Request::new(ReceiverStream::new(outbound)))
        .await
        .expect("open")
        .into_inner();
    start(&app, json!({"name": "untraced", "input": {}})).await;
    let assignment = loop {
        let message = tokio::time::timeout(Duration::from_secs(30), inbound.next())
            .await
            .expect("a message")
            .expect("open")
            .expect("ok");
        if let Some(engine_message::Message::Assignment(a)) = message.message {
            break a;
        }
    };
    assert_eq!(assignment.traceparent, None);
}
