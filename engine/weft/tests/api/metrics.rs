//! `GET /metrics`: the Prometheus series exist and move as runs execute, agents connect and
//! requests are answered; the endpoint needs a `read` token when tokens are configured.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use weft_proto::agent::agent_service_client::AgentServiceClient;
use weft_proto::agent::{AgentMessage, Hello, TaskDefinition, agent_message, engine_message};
use weft_store::Backend;

use crate::both_backends;
use crate::helpers::*;

/// One scrape: series (name with its labels, exactly as exposed) → value.
struct Scrape {
    series: HashMap<String, f64>,
    text: String,
}

impl Scrape {
    /// The value of `series`; 0 when it is not exposed yet (a labelled series appears at its
    /// first increment).
    fn value(&self, series: &str) -> f64 {
        self.series.get(series).copied().unwrap_or(0.0)
    }

    /// Assert `series` is exposed and return its value.
    fn exposed(&self, series: &str) -> f64 {
        *self
            .series
            .get(series)
            .unwrap_or_else(|| panic!("{series} is not exposed:\n{}", self.text))
    }
}

async fn scrape(app: &TestApp) -> Scrape {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.expect("body");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let mut series = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample line: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("{line}: value: {e}"));
        series.insert(name.to_string(), value);
    }
    Scrape { series, text }
}

async fn app_with_add(backend: Backend) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    std::fs::copy(plugin_path("add"), dir.join("add.wasm")).expect("copy plugin");
    spawn_app_with(backend, move |c| c.plugins_dir = Some(dir)).await
}

both_backends! {
    async fn series_move_as_runs_execute(backend: Backend) {
        let app = app_with_add(backend).await;
        let before = scrape(&app).await;
        for gauge in [
            "weft_queue_depth",
            "weft_oldest_ready_step_age_seconds",
            "weft_agents_connected",
            "weft_websocket_clients",
            "weft_plugin_compiles_total",
            r#"weft_plugin_cache_hits_total{cache="memory"}"#,
            r#"weft_plugin_cache_hits_total{cache="disk"}"#,
            r#"weft_plugin_cache_misses_total{cache="disk"}"#,
            "weft_wasm_invocations_total",
        ] {
            before.exposed(gauge);
        }
        // The `add` plugin was loaded at start: compiled, or found in a cache.
        assert!(
            before.exposed("weft_plugin_compiles_total")
                + before.exposed(r#"weft_plugin_cache_hits_total{cache="disk"}"#)
                >= 1.0,
            "{}",
            before.text
        );
        assert_eq!(before.value(r#"weft_runs_total{definition="metered",status="started"}"#), 0.0);

        // A run of two Wasm task steps, and a run whose task no runner provides.
        deploy(&app, simple_definition("metered")).await;
        deploy(&app, json!({"name": "unrunnable", "steps": [
            {"stepDefinitionId": "only", "type": "task", "taskConfig": {"taskDefinitionId": "nowhere"}}
        ]})).await;
        let mut ids = Vec::new();
        for body in [
            json!({"name": "metered", "input": {"value": 1}}),
            json!({"name": "unrunnable", "input": {}}),
        ] {
            let run = expect_status(
                app.post_json("/api/v1/workflow-instances", &body).await,
                StatusCode::CREATED,
            )
            .await;
            ids.push(run["id"].as_str().expect("id").to_string());
        }
        let done = wait_for(&app, &ids[0], &["COMPLETED", "FAILED"]).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        let failed = wait_for(&app, &ids[1], &["COMPLETED", "FAILED"]).await;
        assert_eq!(failed["status"], "FAILED", "{failed}");

        let after = scrape(&app).await;
        for (series, expected) in [
            (r#"weft_runs_total{definition="metered",status="started"}"#, 1.0),
            (r#"weft_runs_total{definition="metered",status="completed"}"#, 1.0),
            (r#"weft_runs_total{definition="unrunnable",status="started"}"#, 1.0),
            (r#"weft_runs_total{definition="unrunnable",status="failed"}"#, 1.0),
            (r#"weft_steps_total{definition="metered",status="completed",runner="wasm"}"#, 2.0),
            (r#"weft_steps_total{definition="unrunnable",status="failed",runner="engine"}"#, 1.0),
            (r#"weft_wasm_fuel_consumed_count{plugin="add"}"#, 2.0),
            (r#"weft_wasm_memory_peak_bytes_count{plugin="add"}"#, 2.0),
            ("weft_queue_depth", 0.0),
            ("weft_oldest_ready_step_age_seconds", 0.0),
        ] {
            assert_eq!(after.exposed(series), expected, "{series} in\n{}", after.text);
        }
        assert_eq!(after.value(r#"weft_runs_total{definition="metered",status="failed"}"#), 0.0);
        let wasm_attempts = r#"weft_step_duration_seconds_count{runner="wasm"}"#;
        assert_eq!(after.exposed(wasm_attempts) - before.value(wasm_attempts), 2.0);
        assert!(after.exposed(r#"weft_step_duration_seconds_sum{runner="wasm"}"#) > 0.0);
        assert!(after.exposed(r#"weft_wasm_fuel_consumed_sum{plugin="add"}"#) > 0.0);
        assert!(after.exposed(r#"weft_wasm_memory_peak_bytes_sum{plugin="add"}"#) >= 65_536.0);
        assert!(
            after.exposed("weft_wasm_invocations_total")
                - before.exposed("weft_wasm_invocations_total")
                >= 2.0
        );
        assert!(after.exposed(r#"weft_http_requests_total{method="POST",status="201"}"#) >= 4.0);
        assert!(
            after.exposed(r#"weft_http_requests_total{method="GET",status="200"}"#)
                > before.value(r#"weft_http_requests_total{method="GET",status="200"}"#)
        );
    }
}

both_backends! {
    async fn agents_gauge_follows_connections(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_eq!(scrape(&app).await.exposed("weft_agents_connected"), 0.0);

        let mut client = AgentServiceClient::connect(format!("http://{}", app.grpc_address))
            .await
            .expect("channel");
        let (tx, outbound) = mpsc::channel(8);
        tx.send(AgentMessage {
            message: Some(agent_message::Message::Hello(Hello {
                name: "gauge".into(),
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
        let welcome = inbound.next().await.expect("welcome").expect("ok");
        assert!(matches!(welcome.message, Some(engine_message::Message::Welcome(_))));
        assert_eq!(scrape(&app).await.exposed("weft_agents_connected"), 1.0);

        // Closing the stream disconnects the agent.
        drop(tx);
        drop(inbound);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let connected = scrape(&app).await.exposed("weft_agents_connected");
            if connected == 0.0 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "agent still counted: {connected}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn metrics_need_a_read_token_when_tokens_are_configured() {
    let mut app = spawn_app_with_auth(Backend::Sqlite).await;
    app.token = None;
    expect_error(
        app.get("/metrics").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    app.token = Some(READ_TOKEN.to_string());
    scrape(&app).await.exposed("weft_queue_depth");
}

#[tokio::test]
async fn metrics_public_serves_them_without_a_token() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.tokens = vec![weft::config::ConfiguredToken {
            name: "admin".into(),
            role: weft::auth::Role::Admin,
            hash: weft::auth::TokenHash::of(ADMIN_TOKEN),
        }];
        c.metrics_public = true;
    })
    .await;
    scrape(&app).await.exposed("weft_queue_depth");
    // Only /metrics: the API still needs its token.
    expect_error(
        app.get("/api/v1/workflow-definitions").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
}
