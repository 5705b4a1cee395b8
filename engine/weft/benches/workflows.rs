//! W1/W2 workflow benchmarks (a bench binary, not a timed test).
//!
//! W1: 100 runs × 10 sequential `add` steps, all started at once. W2: one run, a fork of 100
//! parallel `add` steps, then a join. Also: one 10-step run alone. Each on SQLite and, when
//! reachable, PostgreSQL. Reports wall time, steps/s and step-to-step latency (p50/p99: from a
//! step's completion to its successor's start). Run with `cargo bench -p weft --bench workflows`
//! after `cargo xtask plugins`. Runs are started by concurrent requests and their completion
//! is read from the live event feed (`/api/v1/ws`), as a client would watch them.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use weft::Application;
use weft::config::Config;
use weft_store::Backend;
use weft_store::testing::fresh_database;

/// The live event feed, subscribed to every run: which runs have completed.
struct Feed {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    finished: std::collections::HashSet<String>,
}

impl Feed {
    async fn connect(base: &str) -> Feed {
        let url = format!("{}/api/v1/ws", base.replacen("http://", "ws://", 1));
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
        let subscribe = json!({"type": "subscribe", "scope": {"kind": "all"}});
        socket
            .send(Message::text(subscribe.to_string()))
            .await
            .expect("subscribe");
        let mut feed = Feed {
            socket,
            finished: Default::default(),
        };
        assert_eq!(feed.next().await["type"], "subscribed");
        feed
    }

    /// The next frame; a completed run is noted, a failed one stops the bench.
    async fn next(&mut self) -> Value {
        loop {
            let frame = self.socket.next().await.expect("open").expect("frame");
            let Message::Text(text) = frame else { continue };
            let frame: Value = serde_json::from_str(text.as_str()).expect("json");
            match frame["kind"].as_str() {
                Some("run.completed") => {
                    self.finished
                        .insert(frame["runId"].as_str().expect("runId").to_string());
                }
                Some("run.failed" | "run.cancelled") => panic!("a run did not complete: {frame}"),
                _ => {}
            }
            return frame;
        }
    }
}

struct Bench {
    base: String,
    http: reqwest::Client,
}

impl Bench {
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
    /// Start `count` runs of `name` at once (concurrent requests) and wait until the live feed
    /// (`/api/v1/ws`, already subscribed to every run) reports each of them completed.
    async fn run_all(&self, feed: &mut Feed, name: &str, count: usize) -> (Duration, Vec<String>) {
        let started = Instant::now();
        let starts = (0..count).map(|_| {
            self.post(
                "/api/v1/workflow-instances",
                json!({"name": name, "input": {"value": 0}}),
            )
        });
        let ids: Vec<String> = futures_util::future::join_all(starts)
            .await
            .into_iter()
            .map(|run| run["id"].as_str().expect("id").to_string())
            .collect();
        while !ids.iter().all(|id| feed.finished.contains(id)) {
            feed.next().await;
        }
        (started.elapsed(), ids)
    }
    /// Gaps between a step's completion and the next step's start, in ms.
    async fn gaps(&self, ids: &[String]) -> Vec<f64> {
        let mut gaps = Vec::new();
        for id in ids {
            let steps = self
                .get(&format!("/api/v1/workflow-instances/{id}/steps"))
                .await;
            let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = steps["items"]
                .as_array()
                .expect("items")
                .iter()
                .filter_map(|s| {
                    let a = s["attempts"].as_array()?.last()?;
                    Some((
                        a["startedAt"].as_str()?.parse().ok()?,
                        a["completedAt"].as_str()?.parse().ok()?,
                    ))
                })
                .collect();
            spans.sort();
            for pair in spans.windows(2) {
                gaps.push((pair[1].0 - pair[0].1).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
        }
        gaps.sort_by(f64::total_cmp);
        gaps
    }
}

/// Where one run's time went, from its stored timestamps: its creation to its first step's
/// start, the steps (first start to last completion; each step's span covers its run's
/// transaction up to the write, the Wasm call and the next claim), its last step's completion to
/// its own, in ms.
async fn timeline(bench: &Bench, id: &str) -> String {
    let run = bench.get(&format!("/api/v1/workflow-instances/{id}")).await;
    let steps = bench
        .get(&format!("/api/v1/workflow-instances/{id}/steps"))
        .await;
    let time = |v: &Value| v.as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok());
    let spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = steps["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let a = s["attempts"].as_array()?.last()?;
            Some((time(&a["startedAt"])?, time(&a["completedAt"])?))
        })
        .collect();
    let ms = |from: DateTime<Utc>, to: DateTime<Utc>| {
        (to - from).num_microseconds().unwrap_or(0) as f64 / 1000.0
    };
    let (Some(created), Some(completed), Some(first), Some(last)) = (
        time(&run["createdAt"]),
        time(&run["completedAt"]),
        spans.iter().map(|s| s.0).min(),
        spans.iter().map(|s| s.1).max(),
    ) else {
        return "no timeline".to_string();
    };
    let mut each: Vec<f64> = spans.iter().map(|(a, b)| ms(*a, *b)).collect();
    each.sort_by(f64::total_cmp);
    format!(
        "created → first step {:.2} ms, steps {:.2} ms (each p50 {:.2} ms), last step → run \
         completed {:.2} ms",
        ms(created, first),
        ms(first, last),
        percentile(&each, 0.5),
        ms(last, completed)
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn chain(name: &str, n: usize) -> Value {
    let steps: Vec<Value> = (0..n).map(|i| {
        let mut config = json!({"taskDefinitionId": "add"});
        if i + 1 < n {
            config["nextStepId"] = json!(format!("s{}", i + 1));
        }
        let value = if i == 0 { json!({"type": "workflowInput", "value": "value"}) }
            else { json!({"type": "taskOutput", "value": {"taskId": format!("s{}", i - 1), "outputKey": "value"}}) };
        json!({"stepDefinitionId": format!("s{i}"), "type": "task", "taskConfig": config, "parameters": {"value": value}})
    }).collect();
    json!({"name": name, "inputParameters": [{"name": "value", "type": "number"}], "steps": steps})
}

fn fan(name: &str, n: usize) -> Value {
    let mut steps = vec![
        json!({"stepDefinitionId": "fork", "type": "fork", "forkConfig": {"joinStepId": "join",
        "branches": (0..n).map(|i| json!({"nextStepId": format!("b{i}")})).collect::<Vec<_>>()}}),
    ];
    for i in 0..n {
        steps.push(json!({"stepDefinitionId": format!("b{i}"), "type": "task",
            "taskConfig": {"taskDefinitionId": "add", "nextStepId": "join"},
            "parameters": {"value": {"type": "constant", "value": i}}}));
    }
    steps.push(json!({"stepDefinitionId": "join", "type": "join",
        "joinConfig": {"incomingStepIds": (0..n).map(|i| format!("b{i}")).collect::<Vec<_>>()}}));
    json!({"name": name, "steps": steps})
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
    let plugins = tempfile::tempdir().expect("tempdir");
    let add =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins/add.wasm");
    std::fs::copy(&add, plugins.path().join("add.wasm")).expect("run `cargo xtask plugins` first");
    let mut config = Config::for_tests(data.path(), &database.url);
    config.plugins_dir = Some(plugins.path().to_path_buf());
    config.poll_interval = Duration::from_millis(500);
    let app = Application::build(config).await.expect("app");
    let bench = Bench {
        base: format!("http://{}", app.address()),
        http: reqwest::Client::new(),
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    bench.deploy(chain("w1", 10)).await;
    bench.deploy(fan("w2", 100)).await;

    let mut feed = Feed::connect(&bench.base).await;

    // Warm-up (and the runs of each phase finish before the next phase starts).
    bench.run_all(&mut feed, "w1", 2).await;
    let (single, ids) = bench.run_all(&mut feed, "w1", 1).await;
    let single_gaps = bench.gaps(&ids).await;
    let single_timeline = timeline(&bench, &ids[0]).await;
    let (w1, ids) = bench.run_all(&mut feed, "w1", 100).await;
    let gaps = bench.gaps(&ids).await;
    bench.run_all(&mut feed, "w2", 1).await;
    let (w2, _) = bench.run_all(&mut feed, "w2", 1).await;
    // For a profiler: W1 again, as many times as `WEFT_BENCH_EXTRA_W1` says.
    let extra: usize = std::env::var("WEFT_BENCH_EXTRA_W1")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    for _ in 0..extra {
        bench.run_all(&mut feed, "w1", 100).await;
    }
    // And single runs, one after another, as many as `WEFT_BENCH_EXTRA_SINGLE` says.
    let extra: usize = std::env::var("WEFT_BENCH_EXTRA_SINGLE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    for _ in 0..extra {
        bench.run_all(&mut feed, "w1", 1).await;
    }

    println!(
        "{backend}: single 10-step run: {:.1} ms (step-to-step p50 {:.2} ms)",
        single.as_secs_f64() * 1000.0,
        percentile(&single_gaps, 0.5)
    );
    println!("{backend}: single run's timeline: {single_timeline}");
    println!(
        "{backend}: W1 100 x 10 steps: {:.0} ms, {:.0} steps/s, step-to-step p50 {:.2} ms p99 {:.2} ms",
        w1.as_secs_f64() * 1000.0,
        1000.0 / w1.as_secs_f64(),
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99)
    );
    println!(
        "{backend}: W2 fork 100 + join: {:.1} ms ({:.0} steps/s)",
        w2.as_secs_f64() * 1000.0,
        102.0 / w2.as_secs_f64()
    );
    shutdown.cancel();
    let _ = server.await;
}

#[tokio::main]
async fn main() {
    // `cargo bench -p weft --bench workflows -- sqlite` runs one backend.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if only.is_empty() || only.iter().any(|o| *o == backend.to_string()) {
            bench(backend).await;
        }
    }
}
