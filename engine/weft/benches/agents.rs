//! Agent dispatch benchmark (a bench binary, not a timed test): in-process protocol-level echo
//! agents on loopback gRPC. Reports the dispatch overhead (a step attempt's duration when the
//! agent answers at once: engine → agent → engine round trip) and W1 with agent steps (100 runs
//! × 10 sequential echo steps). Run with `cargo bench -p weft --bench agents`.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use weft::Application;
use weft::config::Config;
use weft_proto::agent::agent_service_client::AgentServiceClient;
use weft_proto::agent::{
    AgentMessage, Hello, TaskDefinition, TaskResult, agent_message, engine_message, task_result,
};
use weft_store::Backend;
use weft_store::testing::fresh_database;

/// An agent that echoes every assignment at once, until the stream ends.
async fn echo_agent(grpc: String, capacity: u32) {
    let mut client = AgentServiceClient::connect(grpc).await.expect("connect");
    let (tx, outbound) = mpsc::channel(1024);
    tx.send(AgentMessage {
        message: Some(agent_message::Message::Hello(Hello {
            name: "bench-echo".into(),
            version: "1.0.0".into(),
            capacity,
            tasks: vec![TaskDefinition {
                name: "echo".into(),
                version: "1.0.0".into(),
                description: String::new(),
                input_schema_json: "true".into(),
                output_schema_json: "true".into(),
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
    while let Some(Ok(message)) = inbound.next().await {
        if let Some(engine_message::Message::Assignment(a)) = message.message {
            let _ = tx
                .send(AgentMessage {
                    message: Some(agent_message::Message::Result(TaskResult {
                        assignment_id: a.assignment_id,
                        outcome: Some(task_result::Outcome::OutputJson(a.input_json)),
                    })),
                })
                .await;
        }
    }
}

struct Http {
    base: String,
    http: reqwest::Client,
}

impl Http {
    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("POST");
        assert!(
            response.status().is_success(),
            "POST {path}: {}",
            response.status()
        );
        response.json().await.expect("json")
    }
    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json")
    }
}

async fn bench(backend: Backend) {
    let database = match fresh_database(backend).await {
        Ok(db) => db,
        Err(e) => {
            println!("{backend}: skipped ({e})");
            return;
        }
    };
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = Config::for_tests(data.path(), &database.url);
    config.poll_interval = Duration::from_millis(500);
    let app = Application::build(config).await.expect("app");
    let http = Http {
        base: format!("http://{}", app.address()),
        http: reqwest::Client::new(),
    };
    let grpc = format!("http://{}", app.grpc_address());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    for _ in 0..2 {
        tokio::spawn(echo_agent(grpc.clone(), 64));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let steps: Vec<Value> = (0..10)
        .map(|i| {
            let mut config = json!({"taskDefinitionId": "echo"});
            if i < 9 {
                config["nextStepId"] = json!(format!("s{}", i + 1));
            }
            json!({"stepDefinitionId": format!("s{i}"), "type": "task", "taskConfig": config,
               "parameters": {"message": {"type": "constant", "value": i}}})
        })
        .collect();
    let created = http
        .post(
            "/api/v1/workflow-definitions",
            json!({"name": "w1-agent", "steps": steps}),
        )
        .await;
    let id = created["id"].as_str().expect("id");
    http.post(
        &format!("/api/v1/workflow-definitions/{id}/publish"),
        json!(null),
    )
    .await;
    http.post(
        &format!("/api/v1/workflow-definitions/{id}/enable"),
        json!(null),
    )
    .await;

    let run_all = |count: usize| {
        let http = &http;
        async move {
            let started = Instant::now();
            let mut ids = Vec::new();
            for _ in 0..count {
                let run = http
                    .post("/api/v1/workflow-instances", json!({"name": "w1-agent"}))
                    .await;
                ids.push(run["id"].as_str().expect("id").to_string());
            }
            loop {
                let open = http
                    .get("/api/v1/workflow-instances?name=w1-agent&status=RUNNING&limit=1")
                    .await;
                if open["totalCount"] == 0 {
                    return (started.elapsed(), ids);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    run_all(2).await;
    let (single, ids) = run_all(1).await;
    let mut durations = Vec::new();
    let steps = http
        .get(&format!("/api/v1/workflow-instances/{}/steps", ids[0]))
        .await;
    for step in steps["items"].as_array().expect("items") {
        let attempt = &step["attempts"][0];
        let start: DateTime<Utc> = attempt["startedAt"]
            .as_str()
            .expect("t")
            .parse()
            .expect("time");
        let end: DateTime<Utc> = attempt["completedAt"]
            .as_str()
            .expect("t")
            .parse()
            .expect("time");
        durations.push((end - start).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    durations.sort_by(f64::total_cmp);
    let (w1, _) = run_all(100).await;
    let failed = http
        .get("/api/v1/workflow-instances?name=w1-agent&status=FAILED&limit=1")
        .await;
    assert_eq!(failed["totalCount"], 0);
    println!(
        "{backend}: agent step attempt (dispatch + loopback round trip) p50 {:.2} ms, max {:.2} ms; single 10-step agent run {:.1} ms",
        durations[durations.len() / 2],
        durations[durations.len() - 1],
        single.as_secs_f64() * 1000.0
    );
    println!(
        "{backend}: W1 with agent steps, 100 x 10: {:.0} ms, {:.0} steps/s",
        w1.as_secs_f64() * 1000.0,
        1000.0 / w1.as_secs_f64()
    );
    shutdown.cancel();
    let _ = server.await;
}

#[tokio::main]
async fn main() {
    bench(Backend::Sqlite).await;
    bench(Backend::Postgres).await;
}
