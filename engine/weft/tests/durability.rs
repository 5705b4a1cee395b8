//! Crash and replica tests with real server processes: SIGKILL mid-run, restart, and check that
//! every run finishes, completed steps never run again, interrupted ones run again.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::Server;
use serde_json::{Value, json};
use weft_store::Backend;
use weft_store::testing::fresh_database;

/// A plugins directory with just `add` (the build directory also holds Python and JavaScript
/// components, which take many seconds to compile at each server's first start).
fn plugins_dir() -> PathBuf {
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins/add.wasm");
    assert!(built.exists(), "run `cargo xtask plugins` first");
    let dir = tempfile::tempdir().expect("tempdir").keep();
    std::fs::copy(&built, dir.join("add.wasm")).expect("copy add.wasm");
    dir
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn new(address: &str) -> Client {
        Client {
            base: format!("http://{address}"),
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("json")
    }

    async fn deploy(&self, definition: Value) {
        let created = self.post("/api/v1/workflow-definitions", definition).await;
        let id = created["id"].as_str().expect("id");
        self.post(
            &format!("/api/v1/workflow-definitions/{id}/publish"),
            json!(null),
        )
        .await;
        self.post(
            &format!("/api/v1/workflow-definitions/{id}/enable"),
            json!(null),
        )
        .await;
    }

    /// step id → (status, number of attempts) for one run.
    async fn step_states(&self, run: &str) -> BTreeMap<String, (String, usize)> {
        let steps = self
            .get(&format!("/api/v1/workflow-instances/{run}/steps"))
            .await;
        steps["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|s| {
                (
                    s["stepId"].as_str().unwrap_or_default().to_string(),
                    (
                        s["status"].as_str().unwrap_or_default().to_string(),
                        s["attempts"].as_array().map_or(0, Vec::len),
                    ),
                )
            })
            .collect()
    }

    async fn wait_all(&self, runs: &[String], timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        for run in runs {
            loop {
                let body = self.get(&format!("/api/v1/workflow-instances/{run}")).await;
                match body["status"].as_str() {
                    Some("COMPLETED") => break,
                    Some("FAILED") | Some("CANCELLED") => panic!("run {run} ended badly: {body}"),
                    _ => {}
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "run {run} did not finish: {body}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn add(id: &str, next: Option<&str>, value: Value) -> Value {
    let mut config = json!({"taskDefinitionId": "add"});
    if let Some(next) = next {
        config["nextStepId"] = json!(next);
    }
    json!({"stepDefinitionId": id, "type": "task", "taskConfig": config, "parameters": {"value": value}})
}

/// A definition with a fork, a join, waits (timer and signal) and a sub-workflow in flight.
fn crash_definitions() -> (Value, Value) {
    let child = json!({"name": "crash-child", "steps": [
        {"stepDefinitionId": "pause", "type": "wait", "waitConfig": {"durationSeconds": {"type": "constant", "value": 1}, "nextStepId": "c1"}},
        add("c1", None, json!({"type": "constant", "value": 1}))]});
    let parent = json!({"name": "crash-parent", "steps": [
        {"stepDefinitionId": "fork", "type": "fork", "forkConfig": {"joinStepId": "join", "branches": [
            {"nextStepId": "t1"}, {"nextStepId": "sub"}, {"nextStepId": "signal"}]}},
        add("t1", Some("timer"), json!({"type": "constant", "value": 1})),
        {"stepDefinitionId": "timer", "type": "wait", "waitConfig": {"durationSeconds": {"type": "constant", "value": 1.5}, "nextStepId": "t2"}},
        add("t2", Some("join"), json!({"type": "taskOutput", "value": {"taskId": "t1", "outputKey": "value"}})),
        {"stepDefinitionId": "sub", "type": "workflow", "workflowConfig": {"workflowName": "crash-child", "nextStepId": "join"}},
        {"stepDefinitionId": "signal", "type": "wait", "waitConfig": {"signal": "go", "nextStepId": "join"}},
        {"stepDefinitionId": "join", "type": "join", "joinConfig": {"incomingStepIds": ["t2", "sub", "signal"], "nextStepId": "last"}},
        add("last", None, json!({"type": "taskOutput", "value": {"taskId": "t2", "outputKey": "value"}}))]});
    (child, parent)
}

fn serve_args<'a>(data: &'a str, db: &'a str, plugins: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "serve",
        "--http-addr",
        "127.0.0.1:0",
        "--grpc-addr",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--database-url",
        db,
        "--plugins-dir",
        plugins,
        "--poll-interval-ms",
        "100",
    ];
    args.extend_from_slice(extra);
    args
}

async fn crash_and_recover(backend: Backend) {
    let database = fresh_database(backend).await.expect("database");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf8").to_string();
    let plugins = plugins_dir();
    let plugins = plugins.to_str().expect("utf8").to_string();
    let args = serve_args(&data, &database.url, &plugins, &["--lease-secs", "2"]);

    let mut server = Server::start(&args, &[]);
    let client = Client::new(&server.address());
    let (child, parent) = crash_definitions();
    client.deploy(child).await;
    client.deploy(parent).await;
    let mut runs = Vec::new();
    for _ in 0..5 {
        let run = client
            .post(
                "/api/v1/workflow-instances",
                json!({"name": "crash-parent"}),
            )
            .await;
        runs.push(run["id"].as_str().expect("id").to_string());
    }
    // Let the runs get going: forks taken, waits parked, children started.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut before = BTreeMap::new();
    for run in &runs {
        before.insert(run.clone(), client.step_states(run).await);
    }
    server.kill();

    let mut server = Server::start(&args, &[]);
    let client = Client::new(&server.address());
    for run in &runs {
        client
            .post(
                &format!("/api/v1/workflow-instances/{run}/signals/go"),
                json!({"ok": true}),
            )
            .await;
    }
    client.wait_all(&runs, Duration::from_secs(180)).await;
    for run in &runs {
        let after = client.step_states(run).await;
        assert_eq!(after.len(), 8, "every step ran once: {after:?}");
        for (step, (status, attempts)) in &after {
            assert_eq!(status, "COMPLETED", "{run} {step}");
            if let Some((was, was_attempts)) = before[run].get(step)
                && was == "COMPLETED"
            {
                assert_eq!(
                    attempts, was_attempts,
                    "{run}: {step} completed before the kill and ran again"
                );
            }
        }
        let body = client
            .get(&format!("/api/v1/workflow-instances/{run}"))
            .await;
        assert_eq!(body["output"], json!({"value": 4}), "{body}");
    }
    let (code, logs) = server.terminate();
    assert_eq!(code, Some(0), "{logs}");
}

#[tokio::test]
async fn sigkill_mid_run_then_restart_sqlite() {
    crash_and_recover(Backend::Sqlite).await;
}

#[tokio::test]
async fn sigkill_mid_run_then_restart_postgres() {
    crash_and_recover(Backend::Postgres).await;
}

#[tokio::test]
async fn two_replicas_share_work_and_survive_one_dying() {
    let database = fresh_database(Backend::Postgres).await.expect("database");
    let dir_a = tempfile::tempdir().expect("tempdir");
    let dir_b = tempfile::tempdir().expect("tempdir");
    let plugins = plugins_dir();
    let plugins = plugins.to_str().expect("utf8").to_string();
    let data_a = dir_a.path().to_str().expect("utf8").to_string();
    let data_b = dir_b.path().to_str().expect("utf8").to_string();
    let mut a = Server::start(
        &serve_args(&data_a, &database.url, &plugins, &["--lease-secs", "2"]),
        &[],
    );
    let client_a = Client::new(&a.address());
    let mut b = Server::start(
        &serve_args(&data_b, &database.url, &plugins, &["--lease-secs", "2"]),
        &[],
    );
    let client_b = Client::new(&b.address());

    client_a.deploy(json!({"name": "relay", "steps": [
        add("s1", Some("w1"), json!({"type": "constant", "value": 0})),
        {"stepDefinitionId": "w1", "type": "wait", "waitConfig": {"durationSeconds": {"type": "constant", "value": 0.3}, "nextStepId": "s2"}},
        add("s2", Some("w2"), json!({"type": "taskOutput", "value": {"taskId": "s1", "outputKey": "value"}})),
        {"stepDefinitionId": "w2", "type": "wait", "waitConfig": {"durationSeconds": {"type": "constant", "value": 0.3}, "nextStepId": "s3"}},
        add("s3", None, json!({"type": "taskOutput", "value": {"taskId": "s2", "outputKey": "value"}}))]})).await;
    let mut runs = Vec::new();
    for i in 0..20 {
        let client = if i % 2 == 0 { &client_a } else { &client_b };
        let run = client
            .post("/api/v1/workflow-instances", json!({"name": "relay"}))
            .await;
        runs.push(run["id"].as_str().expect("id").to_string());
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.kill();
    client_b.wait_all(&runs, Duration::from_secs(180)).await;
    let mut replicas = std::collections::BTreeSet::new();
    for run in &runs {
        let body = client_b
            .get(&format!("/api/v1/workflow-instances/{run}"))
            .await;
        assert_eq!(body["output"], json!({"value": 3}), "{body}");
        let steps = client_b
            .get(&format!("/api/v1/workflow-instances/{run}/steps"))
            .await;
        for step in steps["items"].as_array().expect("items") {
            let completed = step["attempts"]
                .as_array()
                .expect("attempts")
                .iter()
                .filter(|a| a["status"] == "COMPLETED")
                .count();
            assert_eq!(completed, 1, "a step completed exactly once: {step}");
            for attempt in step["attempts"].as_array().expect("attempts") {
                if let Some(r) = attempt["replica"].as_str() {
                    replicas.insert(r.to_string());
                }
            }
        }
    }
    assert!(replicas.len() >= 2, "both replicas did work: {replicas:?}");
    let (code, logs) = b.terminate();
    assert_eq!(code, Some(0), "{logs}");
}
