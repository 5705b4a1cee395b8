//! Remote agents over gRPC, driven by a protocol-level fake agent (real sockets, real server):
//! register and list, mixed Wasm + agent workflows, failures and retries, a dead agent's task
//! finished by another, stale results, cancel, missing runners, bad tokens.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use weft_proto::agent::agent_service_client::AgentServiceClient;
use weft_proto::agent::{
    AgentMessage, Assignment, EngineMessage, Hello, TaskDefinition, TaskError, TaskResult,
    agent_message, engine_message, task_result,
};
use weft_store::Backend;

use crate::helpers::*;

const AGENT_TOKEN: &str = "agent-token-0123456789";

/// A protocol-level agent: sends what the test says, exposes what the engine sends.
struct FakeAgent {
    tx: mpsc::Sender<AgentMessage>,
    rx: Streaming<EngineMessage>,
    id: String,
}

async fn connect(
    app: &TestApp,
    token: Option<&str>,
    tasks: &[&str],
    capacity: u32,
) -> Result<FakeAgent, tonic::Status> {
    let mut client = AgentServiceClient::connect(format!("http://{}", app.grpc_address))
        .await
        .expect("channel");
    let (tx, outbound) = mpsc::channel(64);
    tx.send(AgentMessage {
        message: Some(agent_message::Message::Hello(Hello {
            name: "fake".into(),
            version: "1.0.0".into(),
            capacity,
            tasks: tasks
                .iter()
                .map(|t| TaskDefinition {
                    name: (*t).into(),
                    version: "1.0.0".into(),
                    description: format!("the {t} task"),
                    input_schema_json: r#"{"type":"object"}"#.into(),
                    output_schema_json: "true".into(),
                })
                .collect(),
        })),
    })
    .await
    .expect("hello");
    let mut request = tonic::Request::new(ReceiverStream::new(outbound));
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    let mut rx = client.open(request).await?.into_inner();
    let welcome = rx.next().await.expect("welcome").expect("ok");
    let Some(engine_message::Message::Welcome(welcome)) = welcome.message else {
        panic!("expected a Welcome")
    };
    Ok(FakeAgent {
        tx,
        rx,
        id: welcome.agent_id,
    })
}

impl FakeAgent {
    async fn next(&mut self) -> engine_message::Message {
        let message = tokio::time::timeout(Duration::from_secs(30), self.rx.next())
            .await
            .expect("a message from the engine")
            .expect("stream open")
            .expect("ok");
        message.message.expect("a message")
    }

    async fn assignment(&mut self) -> Assignment {
        loop {
            if let engine_message::Message::Assignment(a) = self.next().await {
                return a;
            }
        }
    }

    async fn reply(&mut self, assignment: &str, outcome: task_result::Outcome) -> bool {
        self.tx
            .send(AgentMessage {
                message: Some(agent_message::Message::Result(TaskResult {
                    assignment_id: assignment.into(),
                    outcome: Some(outcome),
                })),
            })
            .await
            .expect("send");
        loop {
            if let engine_message::Message::Ack(ack) = self.next().await {
                assert_eq!(ack.assignment_id, assignment);
                return ack.accepted;
            }
        }
    }

    /// Answer every `echo` assignment with its input, `n` times.
    async fn echo(&mut self, n: usize) {
        for _ in 0..n {
            let a = self.assignment().await;
            assert_eq!(a.task, "echo");
            assert!(
                self.reply(
                    &a.assignment_id,
                    task_result::Outcome::OutputJson(a.input_json.clone())
                )
                .await
            );
        }
    }
}

async fn start(app: &TestApp, name: &str, input: Value) -> String {
    let run = expect_status(
        app.post_json(
            "/api/v1/workflow-instances",
            &json!({"name": name, "input": input}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    run["id"].as_str().expect("id").to_string()
}

fn echo_step(id: &str, next: Option<&str>, message: Value) -> Value {
    let mut config = json!({"taskDefinitionId": "echo", "runner": "agent"});
    if let Some(next) = next {
        config["nextStepId"] = json!(next);
    }
    json!({"stepDefinitionId": id, "type": "task", "taskConfig": config, "parameters": {"message": message}})
}

async fn app_with_add(token: bool) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    std::fs::copy(plugin_path("add"), dir.join("add.wasm")).expect("copy plugin");
    spawn_app_with(Backend::Sqlite, move |c| {
        c.plugins_dir = Some(dir);
        c.schedule_timeout = Duration::from_millis(800);
        if token {
            c.agent_tokens = vec![weft::auth::TokenHash::of(AGENT_TOKEN)];
        }
    })
    .await
}

#[tokio::test]
async fn agents_register_are_listed_and_bad_tokens_are_refused() {
    let app = app_with_add(true).await;
    let error = connect(&app, Some("wrong-token-0123456789"), &["echo"], 2)
        .await
        .err()
        .expect("refused");
    assert_eq!(error.code(), tonic::Code::Unauthenticated);
    let error = connect(&app, None, &["echo"], 2)
        .await
        .err()
        .expect("refused");
    assert_eq!(error.code(), tonic::Code::Unauthenticated);
    let agents = expect_status(app.get("/api/v1/agents").await, StatusCode::OK).await;
    assert_eq!(agents["totalCount"], 0, "refused agents are never listed");

    let agent = connect(&app, Some(AGENT_TOKEN), &["echo", "resize"], 3)
        .await
        .expect("connects");
    let agents = expect_status(app.get("/api/v1/agents").await, StatusCode::OK).await;
    assert_eq!(agents["totalCount"], 1);
    assert_eq!(agents["items"][0]["id"], agent.id.as_str());
    assert_eq!(agents["items"][0]["connected"], true);
    assert_eq!(agents["items"][0]["capacity"], 3);
    assert_eq!(agents["items"][0]["inFlight"], 0);
    let tasks = expect_status(app.get("/api/v1/task-definitions").await, StatusCode::OK).await;
    let names: Vec<&str> = tasks["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["echo", "resize"]);
    expect_status(
        app.get("/api/v1/task-definitions/echo").await,
        StatusCode::OK,
    )
    .await;
    expect_error(
        app.get("/api/v1/task-definitions/nope").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let one = expect_status(
        app.get(&format!("/api/v1/agents/{}", agent.id)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(one["name"], "fake");

    drop(agent);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let agents = expect_status(app.get("/api/v1/agents").await, StatusCode::OK).await;
        if agents["totalCount"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed agent is forgotten"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_workflow_mixes_wasm_and_agent_steps() {
    let app = app_with_add(false).await;
    let mut agent = connect(&app, None, &["echo"], 2).await.expect("connects");
    deploy(&app, json!({"name": "mixed", "steps": [
        {"stepDefinitionId": "a", "type": "task", "taskConfig": {"taskDefinitionId": "add", "nextStepId": "e"},
         "parameters": {"value": {"type": "constant", "value": 1}}},
        echo_step("e", None, json!({"type": "taskOutput", "value": {"taskId": "a", "outputKey": "value"}}))]})).await;
    let id = start(&app, "mixed", json!({})).await;
    let assignment = agent.assignment().await;
    assert_eq!(assignment.run_id, id);
    assert_eq!(assignment.step_id, "e");
    assert_eq!(assignment.attempt, 1);
    assert_eq!(
        serde_json::from_str::<Value>(&assignment.input_json).expect("json"),
        json!({"message": 2})
    );
    assert!(
        agent
            .reply(
                &assignment.assignment_id,
                task_result::Outcome::OutputJson(r#"{"message": 2}"#.into())
            )
            .await
    );
    // The same result again is stale: rejected, and the run is not changed by it.
    assert!(
        !agent
            .reply(
                &assignment.assignment_id,
                task_result::Outcome::OutputJson(r#"{"message": 99}"#.into())
            )
            .await
    );
    assert!(
        !agent
            .reply("made-up", task_result::Outcome::OutputJson("{}".into()))
            .await
    );
    let done = wait_for(&app, &id, &["COMPLETED", "FAILED"]).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["output"], json!({"message": 2}));
    let steps = expect_status(
        app.get(&format!("/api/v1/workflow-instances/{id}/steps"))
            .await,
        StatusCode::OK,
    )
    .await;
    let runners: Vec<&str> = steps["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|s| s["runner"].as_str())
        .collect();
    assert_eq!(runners, ["wasm", "agent"]);
}

#[tokio::test]
async fn agent_failures_follow_the_retry_policy_and_a_dead_agents_task_moves_on() {
    let app = app_with_add(false).await;
    let mut first = connect(&app, None, &["echo"], 1).await.expect("connects");
    deploy(
        &app,
        json!({"name": "resilient", "steps": [{
        "stepDefinitionId": "e", "type": "task", "taskConfig": {"taskDefinitionId": "echo"},
        "retryPolicy": {"maxAttempts": 3, "initialIntervalSeconds": 0.05},
        "parameters": {"message": {"type": "constant", "value": "hi"}}}]}),
    )
    .await;
    let id = start(&app, "resilient", json!({})).await;
    // Attempt 1: the agent reports a retryable failure.
    let a = first.assignment().await;
    assert_eq!(a.attempt, 1);
    assert!(
        first
            .reply(
                &a.assignment_id,
                task_result::Outcome::Error(TaskError {
                    code: "busy".into(),
                    message: "try later".into(),
                    retryable: true
                })
            )
            .await
    );
    // Attempt 2 reaches the same agent, which dies holding it.
    let a = first.assignment().await;
    assert_eq!(a.attempt, 2);
    drop(first);
    // Attempt 3 goes to another agent.
    let mut second = connect(&app, None, &["echo"], 1).await.expect("connects");
    let a = second.assignment().await;
    assert_eq!(a.attempt, 3);
    assert!(
        second
            .reply(
                &a.assignment_id,
                task_result::Outcome::OutputJson(r#"{"message":"hi"}"#.into())
            )
            .await
    );
    let done = wait_for(&app, &id, &["COMPLETED", "FAILED"]).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let steps = expect_status(
        app.get(&format!("/api/v1/workflow-instances/{id}/steps"))
            .await,
        StatusCode::OK,
    )
    .await;
    let codes: Vec<Value> = steps["items"][0]["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["error"]["code"].clone())
        .collect();
    assert_eq!(codes, [json!("busy"), json!("agent_lost"), Value::Null]);

    // A non-retryable agent failure fails the run at once.
    let id = start(&app, "resilient", json!({})).await;
    let a = second.assignment().await;
    assert!(
        second
            .reply(
                &a.assignment_id,
                task_result::Outcome::Error(TaskError {
                    code: "bad_request".into(),
                    message: "no".into(),
                    retryable: false
                })
            )
            .await
    );
    let done = wait_for(&app, &id, &["COMPLETED", "FAILED"]).await;
    assert_eq!(done["status"], "FAILED");
    assert_eq!(done["error"]["code"], "bad_request");
}

#[tokio::test]
async fn tasks_spread_across_agents_and_cancel_reaches_the_agent() {
    let app = app_with_add(false).await;
    let mut one = connect(&app, None, &["echo"], 1).await.expect("connects");
    let mut two = connect(&app, None, &["echo"], 1).await.expect("connects");
    deploy(&app, json!({"name": "solo", "steps": [echo_step("e", None, json!({"type": "constant", "value": "x"}))]})).await;
    let first = start(&app, "solo", json!({})).await;
    let second = start(&app, "solo", json!({})).await;
    // Capacity 1 each: one assignment per agent.
    let a1 = one.assignment().await;
    let a2 = two.assignment().await;
    assert_ne!(a1.run_id, a2.run_id);
    // Cancel the run held by agent one: the agent is told.
    let held = a1.run_id.clone();
    let cancelled = expect_status(
        app.post(&format!("/api/v1/workflow-instances/{held}/cancel"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cancelled["status"], "CANCELLED");
    loop {
        if let engine_message::Message::Cancel(c) = one.next().await {
            assert_eq!(c.assignment_id, a1.assignment_id);
            break;
        }
    }
    assert!(
        two.reply(
            &a2.assignment_id,
            task_result::Outcome::OutputJson(r#"{"message":"x"}"#.into())
        )
        .await
    );
    let other = if held == first { &second } else { &first };
    let done = wait_for(&app, other, &["COMPLETED", "FAILED"]).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
}

#[tokio::test]
async fn a_task_nobody_provides_fails_after_the_schedule_timeout() {
    let app = app_with_add(false).await;
    deploy(&app, json!({"name": "orphan", "steps": [echo_step("e", None, json!({"type": "constant", "value": "x"}))]})).await;
    let id = start(&app, "orphan", json!({})).await;
    let done = wait_for(&app, &id, &["COMPLETED", "FAILED"]).await;
    assert_eq!(done["status"], "FAILED");
    assert_eq!(done["error"]["code"], "no_runner", "{done}");
    assert!(
        done["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("echo")),
        "{done}"
    );

    // An agent that connects within the schedule time-out gets the waiting step.
    let app = app_with_add(false).await;
    deploy(&app, json!({"name": "patient", "steps": [echo_step("e", None, json!({"type": "constant", "value": "y"}))]})).await;
    let id = start(&app, "patient", json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut late = connect(&app, None, &["echo"], 1).await.expect("connects");
    late.echo(1).await;
    let done = wait_for(&app, &id, &["COMPLETED", "FAILED"]).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
}

#[tokio::test]
async fn agents_connect_over_tls() {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let cert_pem = generated.cert.pem();
    let key_pem = generated.signing_key.serialize_pem();
    let tls = weft::config::TlsFiles {
        cert_pem: cert_pem.clone().into_bytes(),
        key_pem: key_pem.into_bytes(),
    };
    let app = spawn_app_with(Backend::Sqlite, move |c| c.grpc_tls = Some(tls)).await;
    let channel = tonic::transport::Channel::from_shared(format!(
        "https://localhost:{}",
        app.grpc_address.port()
    ))
    .expect("uri")
    .tls_config(
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(cert_pem))
            .domain_name("localhost"),
    )
    .expect("tls")
    .connect()
    .await
    .expect("TLS connection");
    let mut client = AgentServiceClient::new(channel);
    let (tx, outbound) = mpsc::channel(4);
    tx.send(AgentMessage {
        message: Some(agent_message::Message::Hello(Hello {
            name: "tls".into(),
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
        .open(ReceiverStream::new(outbound))
        .await
        .expect("open")
        .into_inner();
    let first = inbound.next().await.expect("message").expect("ok");
    assert!(matches!(
        first.message,
        Some(engine_message::Message::Welcome(_))
    ));
    // Plain text is refused on a TLS port.
    let plain = AgentServiceClient::connect(format!("http://{}", app.grpc_address)).await;
    if let Ok(mut plain) = plain {
        let (_tx, outbound) = mpsc::channel::<AgentMessage>(1);
        assert!(plain.open(ReceiverStream::new(outbound)).await.is_err());
    }
}

/// A real `echo-agent` process (built by `cargo test --workspace` / `cargo xtask test`).
fn echo_agent_process(app: &TestApp, name: &str) -> std::process::Child {
    let binary =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/echo-agent");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p echo-agent` (cargo xtask test does)",
        binary.display()
    );
    std::process::Command::new(binary)
        .args([
            "--engine",
            &format!("http://{}", app.grpc_address),
            "--name",
            name,
            "--capacity",
            "2",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("echo-agent starts")
}

async fn wait_agents(app: &TestApp, count: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let agents = expect_status(app.get("/api/v1/agents").await, StatusCode::OK).await;
        if agents["totalCount"] == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {count} agents: {agents}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn real_echo_agents_run_steps_and_a_killed_agents_task_is_finished_by_the_other() {
    let app = app_with_add(false).await;
    let mut first = echo_agent_process(&app, "echo-one");
    wait_agents(&app, 1).await;
    deploy(&app, json!({"name": "echoes", "inputParameters": [{"name": "delay", "type": "integer", "default": 0}],
        "steps": [{"stepDefinitionId": "e", "type": "task", "taskConfig": {"taskDefinitionId": "echo"},
            "retryPolicy": {"maxAttempts": 3, "initialIntervalSeconds": 0.05},
            "parameters": {"message": {"type": "constant", "value": "hello"}, "delayMs": {"type": "workflowInput", "value": "delay"}}}]})).await;
    let id = start(&app, "echoes", json!({})).await;
    let done = wait_for(&app, &id, &["COMPLETED", "FAILED"]).await;
    assert_eq!(done["output"], json!({"message": "hello"}), "{done}");

    // A slow task on the only agent; a second agent joins; the first is killed mid-task.
    let id = start(&app, "echoes", json!({"delay": 3000})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let agents = expect_status(app.get("/api/v1/agents").await, StatusCode::OK).await;
        if agents["items"][0]["inFlight"] == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task never reached the agent: {agents}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut second = echo_agent_process(&app, "echo-two");
    wait_agents(&app, 2).await;
    first.kill().expect("kill");
    let _ = first.wait();
    let done = wait_for(&app, &id, &["COMPLETED", "FAILED"]).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let steps = expect_status(
        app.get(&format!("/api/v1/workflow-instances/{id}/steps"))
            .await,
        StatusCode::OK,
    )
    .await;
    let codes: Vec<Value> = steps["items"][0]["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["error"]["code"].clone())
        .collect();
    assert_eq!(codes, [json!("agent_lost"), Value::Null], "{steps}");
    second.kill().expect("kill");
    let _ = second.wait();
}
