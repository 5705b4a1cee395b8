//! Durable execution through HTTP: every step type, bindings, failures, retries, cancel,
//! signals, idempotency, version pinning — on SQLite and PostgreSQL.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

/// An app with the example plugins loaded from the build directory.
async fn app_with_plugins(backend: weft_store::Backend) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    for name in ["add", "hash", "template", "json-transform", "hostile-loop"] {
        std::fs::copy(plugin_path(name), dir.join(format!("{name}.wasm"))).expect("copy plugin");
    }
    spawn_app_with(backend, move |c| c.plugins_dir = Some(dir)).await
}

async fn start(app: &TestApp, body: Value) -> Value {
    expect_status(
        app.post_json("/api/v1/workflow-instances", &body).await,
        StatusCode::CREATED,
    )
    .await
}

async fn steps(app: &TestApp, id: &str) -> Vec<Value> {
    let body = expect_status(
        app.get(&format!("/api/v1/workflow-instances/{id}/steps"))
            .await,
        StatusCode::OK,
    )
    .await;
    body["items"].as_array().expect("items").clone()
}

fn step<'a>(steps: &'a [Value], id: &str) -> &'a Value {
    steps
        .iter()
        .find(|s| s["stepId"] == id)
        .unwrap_or_else(|| panic!("no step {id}: {steps:?}"))
}

fn add(id: &str, next: Option<&str>, value: Value) -> Value {
    let mut config = json!({"taskDefinitionId": "add"});
    if let Some(next) = next {
        config["nextStepId"] = json!(next);
    }
    json!({"stepDefinitionId": id, "type": "task", "taskConfig": config, "parameters": {"value": value}})
}

fn from_input(key: &str) -> Value {
    json!({"type": "workflowInput", "value": key})
}

fn from_step(step: &str, key: &str) -> Value {
    json!({"type": "taskOutput", "value": {"taskId": step, "outputKey": key}})
}

both_backends! {
    async fn a_task_chain_runs_to_completion(backend: Backend) {
        let app = app_with_plugins(backend).await;
        deploy(&app, json!({"name": "chain",
            "inputParameters": [{"name": "value", "type": "number", "required": true}],
            "outputParameters": [{"name": "total", "value": {"type": "expression", "value": "steps.c.value * 10"}}],
            "steps": [add("a", Some("b"), from_input("value")), add("b", Some("c"), from_step("a", "value")), add("c", None, from_step("b", "value"))]})).await;
        let run = start(&app, json!({"name": "chain", "input": {"value": 1}})).await;
        let id = run["id"].as_str().expect("id");
        assert_eq!(run["definitionVersion"], "0.1.0");
        let done = wait_for(&app, id, &["COMPLETED", "FAILED"]).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        assert_eq!(done["output"], json!({"total": 40}));
        assert!(done["startedAt"].is_string() && done["completedAt"].is_string(), "{done}");
        let steps = steps(&app, id).await;
        assert_eq!(steps.len(), 3);
        assert_eq!(step(&steps, "c")["output"], json!({"value": 4}));
        assert_eq!(step(&steps, "b")["input"], json!({"value": 2}));
        assert_eq!(step(&steps, "a")["attempts"].as_array().map(Vec::len), Some(1));
        assert_eq!(step(&steps, "a")["runner"], "wasm");
        let one = step(&steps, "a")["id"].as_str().expect("id").to_string();
        let fetched = expect_status(app.get(&format!("/api/v1/step-instances/{one}")).await, StatusCode::OK).await;
        assert_eq!(fetched["status"], "COMPLETED");

        let events = expect_status(app.get(&format!("/api/v1/workflow-instances/{id}/events")).await, StatusCode::OK).await;
        let kinds: Vec<&str> = events["items"].as_array().expect("items").iter().filter_map(|e| e["kind"].as_str()).collect();
        assert_eq!(kinds, ["run.created", "run.started", "step.ready", "step.started", "step.completed", "step.ready", "step.started", "step.completed", "step.ready", "step.started", "step.completed", "run.completed"]);
        let seqs: Vec<i64> = events["items"].as_array().expect("items").iter().filter_map(|e| e["seq"].as_i64()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

        let list = expect_status(app.get("/api/v1/workflow-instances?status=COMPLETED").await, StatusCode::OK).await;
        assert_eq!(list["totalCount"], 1);
        let list = expect_status(app.get("/api/v1/workflow-instances?status=FAILED").await, StatusCode::OK).await;
        assert_eq!(list["totalCount"], 0);
    }
}

both_backends! {
    async fn fork_join_and_nested_fork(backend: Backend) {
        let app = app_with_plugins(backend).await;
        deploy(&app, json!({"name": "forks",
            "inputParameters": [{"name": "n", "type": "number"}],
            "steps": [
                {"stepDefinitionId": "f", "type": "fork", "forkConfig": {"joinStepId": "j", "branches": [{"nextStepId": "x"}, {"nextStepId": "g"}]}},
                add("x", Some("j"), from_input("n")),
                {"stepDefinitionId": "g", "type": "fork", "forkConfig": {"joinStepId": "h", "branches": [{"nextStepId": "y"}, {"nextStepId": "z"}]}},
                add("y", Some("h"), json!({"type": "constant", "value": 10})),
                add("z", Some("h"), json!({"type": "constant", "value": 20})),
                {"stepDefinitionId": "h", "type": "join", "joinConfig": {"incomingStepIds": ["y", "z"], "nextStepId": "j"}},
                {"stepDefinitionId": "j", "type": "join", "joinConfig": {"incomingStepIds": ["x", "h"]}}
            ]})).await;
        let run = start(&app, json!({"name": "forks", "input": {"n": 1}})).await;
        let done = wait_for(&app, run["id"].as_str().expect("id"), &["COMPLETED", "FAILED"]).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        assert_eq!(done["output"], json!({"x": {"value": 2}, "h": {"y": {"value": 11}, "z": {"value": 21}}}));
    }
}

both_backends! {
    async fn decisions_take_the_first_true_case_or_the_default(backend: Backend) {
        let app = app_with_plugins(backend).await;
        deploy(&app, json!({"name": "decide",
            "inputParameters": [{"name": "amount", "type": "number", "required": true}],
            "steps": [
                {"stepDefinitionId": "d", "type": "decision", "decisionConfig": {"joinStepId": "j",
                    "cases": [{"name": "big", "condition": "input.amount > 100", "nextStepId": "big"}],
                    "defaultStepId": "small"}},
                add("big", Some("j"), json!({"type": "constant", "value": 1000})),
                add("small", Some("j"), json!({"type": "constant", "value": 1})),
                {"stepDefinitionId": "j", "type": "join", "joinConfig": {"incomingStepIds": ["big", "small"], "nextStepId": "after"}},
                add("after", None, json!({"type": "expression", "value": "has(steps.big) ? steps.big.value : steps.small.value"}))
            ]})).await;
        for (amount, taken, skipped, result) in [(500, "big", "small", 1002), (5, "small", "big", 3)] {
            let run = start(&app, json!({"name": "decide", "input": {"amount": amount}})).await;
            let id = run["id"].as_str().expect("id");
            let done = wait_for(&app, id, &["COMPLETED", "FAILED"]).await;
            assert_eq!(done["status"], "COMPLETED", "{done}");
            assert_eq!(done["output"], json!({"value": result}), "{done}");
            let steps = steps(&app, id).await;
            assert!(steps.iter().any(|s| s["stepId"] == taken));
            assert!(!steps.iter().any(|s| s["stepId"] == skipped), "{steps:?}");
        }
        // No matching case and no default: a clear failure.
        deploy(&app, json!({"name": "strict",
            "steps": [
                {"stepDefinitionId": "d", "type": "decision", "decisionConfig": {"joinStepId": "j",
                    "cases": [{"condition": "false", "nextStepId": "x"}]}},
                add("x", Some("j"), json!({"type": "constant", "value": 1})),
                {"stepDefinitionId": "j", "type": "join", "joinConfig": {"incomingStepIds": ["x"]}}
            ]})).await;
        let run = start(&app, json!({"name": "strict"})).await;
        let done = wait_for(&app, run["id"].as_str().expect("id"), &["COMPLETED", "FAILED"]).await;
        assert_eq!(done["status"], "FAILED");
        assert_eq!(done["error"]["code"], "no_matching_case", "{done}");
    }
}

both_backends! {
    async fn waits_for_a_duration_and_for_signals(backend: Backend) {
        let app = app_with_plugins(backend).await;
        deploy(&app, json!({"name": "waits",
            "inputParameters": [{"name": "pause", "type": "number"}],
            "steps": [
                {"stepDefinitionId": "sleep", "type": "wait", "waitConfig": {"durationSeconds": {"type": "workflowInput", "value": "pause"}, "nextStepId": "approval"}},
                {"stepDefinitionId": "approval", "type": "wait", "waitConfig": {"signal": "approve", "timeoutSeconds": 30}}
            ]})).await;
        let run = start(&app, json!({"name": "waits", "input": {"pause": 0.3}})).await;
        let id = run["id"].as_str().expect("id");
        // Wait until the signal wait is parked.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let steps = steps(&app, id).await;
            if steps.iter().any(|s| s["stepId"] == "approval" && s["waitingFor"]["signal"] == "approve") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{steps:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let running = expect_status(app.get(&format!("/api/v1/workflow-instances/{id}")).await, StatusCode::OK).await;
        assert_eq!(running["status"], "RUNNING");
        // A NUL character (PostgreSQL stores none) is refused alike on both backends; nothing is posted.
        let response = app.post_json(&format!("/api/v1/workflow-instances/{id}/signals/approve"), &json!({"by": "a\u{0}da"})).await;
        expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
        let response = app.post_json(&format!("/api/v1/workflow-instances/{id}/signals/approve"), &json!({"by": "ada"})).await;
        expect_status(response, StatusCode::ACCEPTED).await;
        let done = wait_for(&app, id, &["COMPLETED", "FAILED"]).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        assert_eq!(done["output"]["payload"], json!({"by": "ada"}));

        // A signal wait that times out fails the run with a clear code.
        deploy(&app, json!({"name": "impatient", "steps": [
            {"stepDefinitionId": "w", "type": "wait", "waitConfig": {"signal": "never", "timeoutSeconds": 1}}]})).await;
        let run = start(&app, json!({"name": "impatient"})).await;
        let done = wait_for(&app, run["id"].as_str().expect("id"), &["COMPLETED", "FAILED"]).await;
        assert_eq!(done["error"]["code"], "signal_timeout", "{done}");
        let response = app.post_json(&format!("/api/v1/workflow-instances/{}/signals/never", done["id"].as_str().expect("id")), &json!(null)).await;
        expect_error(response, StatusCode::CONFLICT, "invalid_state").await;
    }
}

both_backends! {
    async fn sub_workflows_return_the_child_output(backend: Backend) {
        let app = app_with_plugins(backend).await;
        deploy(&app, json!({"name": "child",
            "inputParameters": [{"name": "value", "type": "number", "required": true}],
            "steps": [add("a", None, from_input("value"))]})).await;
        deploy(&app, json!({"name": "parent",
            "steps": [
                {"stepDefinitionId": "call", "type": "workflow", "workflowConfig": {"workflowName": "child", "nextStepId": "after"},
                 "parameters": {"value": {"type": "constant", "value": 41}}},
                add("after", None, from_step("call", "value"))
            ]})).await;
        let run = start(&app, json!({"name": "parent"})).await;
        let id = run["id"].as_str().expect("id");
        let done = wait_for(&app, id, &["COMPLETED", "FAILED"]).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        assert_eq!(done["output"], json!({"value": 43}));
        let children = expect_status(app.get(&format!("/api/v1/workflow-instances?parentRunId={id}")).await, StatusCode::OK).await;
        assert_eq!(children["totalCount"], 1);
        assert_eq!(children["items"][0]["status"], "COMPLETED");
        assert_eq!(children["items"][0]["output"], json!({"value": 42}));
    }
}

both_backends! {
    async fn retries_follow_the_policy_then_fail_the_run(backend: Backend) {
        let app = app_with_plugins(backend).await;
        deploy(&app, json!({"name": "flaky", "steps": [
            {"stepDefinitionId": "spin", "type": "task", "taskConfig": {"taskDefinitionId": "hostile-loop"},
             "timeoutSeconds": 1, "retryPolicy": {"maxAttempts": 2, "initialIntervalSeconds": 0.1}}]})).await;
        let run = start(&app, json!({"name": "flaky"})).await;
        let id = run["id"].as_str().expect("id");
        let done = wait_for(&app, id, &["COMPLETED", "FAILED"]).await;
        assert_eq!(done["status"], "FAILED");
        assert_eq!(done["error"]["code"], "timeout", "{done}");
        let steps = steps(&app, id).await;
        let attempts = step(&steps, "spin")["attempts"].as_array().expect("attempts").clone();
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        assert!(attempts.iter().all(|a| a["status"] == "FAILED" && a["error"]["code"] == "timeout"));

        // A plugin's non-retryable error is not retried.
        deploy(&app, json!({"name": "bad-input", "steps": [
            {"stepDefinitionId": "a", "type": "task", "taskConfig": {"taskDefinitionId": "add"},
             "retryPolicy": {"maxAttempts": 5}, "parameters": {"value": {"type": "constant", "value": "x"}}}]})).await;
        let run = start(&app, json!({"name": "bad-input"})).await;
        let id = run["id"].as_str().expect("id");
        let done = wait_for(&app, id, &["COMPLETED", "FAILED"]).await;
        assert_eq!(done["error"]["code"], "invalid_input", "{done}");
        assert_eq!(step(&steps_of(&app, id).await, "a")["attempts"].as_array().map(Vec::len), Some(1));
    }
}

async fn steps_of(app: &TestApp, id: &str) -> Vec<Value> {
    steps(app, id).await
}

both_backends! {
    async fn cancel_and_retry(backend: Backend) {
        let app = app_with_plugins(backend).await;
        deploy(&app, json!({"name": "long", "steps": [
            {"stepDefinitionId": "w", "type": "wait", "waitConfig": {"durationSeconds": {"type": "constant", "value": 600}}}]})).await;
        let run = start(&app, json!({"name": "long"})).await;
        let id = run["id"].as_str().expect("id");
        let definition = run["workflowDefinitionId"].as_str().expect("definition").to_string();
        let response = app.delete(&format!("/api/v1/workflow-definitions/{definition}")).await;
        expect_error(response, StatusCode::CONFLICT, "definition_in_use").await;
        let cancelled = expect_status(app.post(&format!("/api/v1/workflow-instances/{id}/cancel")).await, StatusCode::OK).await;
        assert_eq!(cancelled["status"], "CANCELLED");
        let steps = steps(&app, id).await;
        assert!(steps.iter().all(|s| s["status"] == "CANCELLED"), "{steps:?}");
        expect_error(app.post(&format!("/api/v1/workflow-instances/{id}/cancel")).await, StatusCode::CONFLICT, "invalid_state").await;

        // A cancelled run can be retried: its cancelled steps run again.
        let retried = expect_status(app.post(&format!("/api/v1/workflow-instances/{id}/retry")).await, StatusCode::OK).await;
        assert_eq!(retried["status"], "RUNNING");
        expect_status(app.post(&format!("/api/v1/workflow-instances/{id}/cancel")).await, StatusCode::OK).await;
    }
}

both_backends! {
    async fn a_failed_run_is_retried_from_its_failed_steps(backend: Backend) {
        // No plugins yet: the second step fails for want of a runner.
        let app = spawn_app(backend).await;
        deploy(&app, json!({"name": "two", "steps": [
            {"stepDefinitionId": "first", "type": "wait", "waitConfig": {"durationSeconds": {"type": "constant", "value": 0}, "nextStepId": "second"}},
            add("second", None, json!({"type": "constant", "value": 1}))]})).await;
        let run = start(&app, json!({"name": "two"})).await;
        let id = run["id"].as_str().expect("id");
        let failed = wait_for(&app, id, &["FAILED", "COMPLETED"]).await;
        assert_eq!(failed["error"]["code"], "no_runner", "{failed}");
        let response = app.post(&format!("/api/v1/workflow-instances/{id}/retry")).await;
        expect_error(app.post("/api/v1/workflow-instances/0190b0c2-7a4e-7cc0-8000-000000000000/retry").await, StatusCode::NOT_FOUND, "not_found").await;
        // Retrying before the fix fails again; upload the plugin, retry, and it completes.
        expect_status(response, StatusCode::OK).await;
        wait_for(&app, id, &["FAILED"]).await;
        let upload = app.request(reqwest::Method::POST, "/api/v1/plugins").header("content-type", "application/wasm").body(plugin_bytes("add")).send().await.expect("upload");
        expect_status(upload, StatusCode::CREATED).await;
        expect_status(app.post(&format!("/api/v1/workflow-instances/{id}/retry")).await, StatusCode::OK).await;
        let done = wait_for(&app, id, &["COMPLETED", "FAILED"]).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        assert_eq!(done["output"], json!({"value": 2}));
        let steps = steps(&app, id).await;
        assert_eq!(step(&steps, "first")["attempts"].as_array().map(Vec::len), Some(1), "completed steps are kept");
        assert_eq!(step(&steps, "second")["attempts"].as_array().map(Vec::len), Some(3));
        expect_error(app.post(&format!("/api/v1/workflow-instances/{id}/retry")).await, StatusCode::CONFLICT, "invalid_state").await;
    }
}

both_backends! {
    async fn starting_runs_idempotency_pinning_and_bad_input(backend: Backend) {
        let app = app_with_plugins(backend).await;
        let body = json!({"name": "pinned",
            "inputParameters": [{"name": "value", "type": "integer", "required": true}, {"name": "by", "type": "integer", "default": 5}],
            "steps": [add("a", None, from_input("value"))]});
        let v1 = deploy(&app, body.clone()).await;

        let first = app.request(reqwest::Method::POST, "/api/v1/workflow-instances").header("idempotency-key", "order-42")
            .json(&json!({"workflowDefinitionId": v1, "input": {"value": 1}})).send().await.expect("POST");
        let first = expect_status(first, StatusCode::CREATED).await;
        assert_eq!(first["input"], json!({"value": 1, "by": 5}), "defaults applied");
        let again = app.request(reqwest::Method::POST, "/api/v1/workflow-instances").header("idempotency-key", "order-42")
            .json(&json!({"workflowDefinitionId": v1, "input": {"value": 1}})).send().await.expect("POST");
        let again = expect_status(again, StatusCode::OK).await;
        assert_eq!(again["id"], first["id"]);
        let list = expect_status(app.get("/api/v1/workflow-instances").await, StatusCode::OK).await;
        assert_eq!(list["totalCount"], 1);

        // A new version: runs by name take the newest enabled published version; old runs stay pinned.
        let v2 = expect_status(app.post(&format!("/api/v1/workflow-definitions/{v1}/versions")).await, StatusCode::CREATED).await;
        let v2_id = v2["id"].as_str().expect("id");
        let run = start(&app, json!({"name": "pinned", "input": {"value": 1}})).await;
        assert_eq!(run["definitionVersion"], "0.1.0", "the draft 0.1.1 does not run");
        expect_status(app.post(&format!("/api/v1/workflow-definitions/{v2_id}/publish")).await, StatusCode::OK).await;
        expect_status(app.post(&format!("/api/v1/workflow-definitions/{v2_id}/enable")).await, StatusCode::OK).await;
        let run = start(&app, json!({"name": "pinned", "input": {"value": 1}})).await;
        assert_eq!(run["definitionVersion"], "0.1.1");
        let run = start(&app, json!({"name": "pinned", "version": "0.1.0", "input": {"value": 1}})).await;
        assert_eq!(run["definitionVersion"], "0.1.0");
        let done = wait_for(&app, first["id"].as_str().expect("id"), &["COMPLETED"]).await;
        assert_eq!(done["definitionVersion"], "0.1.0");

        let response = app.post_json("/api/v1/workflow-instances", &json!({"name": "pinned", "input": {"value": "one"}})).await;
        let body = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(issues(&body), [("/input/value".to_string(), "invalid_type".to_string())]);
        let response = app.post_json("/api/v1/workflow-instances", &json!({"name": "pinned", "input": {}})).await;
        let body = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(issues(&body), [("/input/value".to_string(), "required".to_string())]);
        // NUL characters (PostgreSQL stores none) are refused alike on both backends.
        let response = app.post_json("/api/v1/workflow-instances", &json!({"name": "pinned", "input": {"value": 1, "note": {"text": "a\u{0}b"}}})).await;
        let body = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(issues(&body), [("/input/note/text".to_string(), "invalid_value".to_string())]);
        let response = app.post_json("/api/v1/workflow-instances", &json!({"name": "pinned", "input": {"value": 1}, "idempotencyKey": "a\u{0}b"})).await;
        expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
        let response = app.post_json("/api/v1/workflow-instances", &json!({"name": "nothing"})).await;
        expect_error(response, StatusCode::CONFLICT, "not_runnable").await;
        expect_status(app.post(&format!("/api/v1/workflow-definitions/{v1}/disable")).await, StatusCode::OK).await;
        let response = app.post_json("/api/v1/workflow-instances", &json!({"workflowDefinitionId": v1, "input": {"value": 1}})).await;
        expect_error(response, StatusCode::CONFLICT, "not_runnable").await;
        let draft = app.create_definition(&simple_definition("drafty")).await;
        let response = app.post_json("/api/v1/workflow-instances", &json!({"workflowDefinitionId": draft["id"]})).await;
        expect_error(response, StatusCode::CONFLICT, "not_runnable").await;
        let response = app.post_json("/api/v1/workflow-instances", &json!({"input": {}})).await;
        expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        expect_error(app.get("/api/v1/workflow-instances/0190b0c2-7a4e-7cc0-8000-000000000000").await, StatusCode::NOT_FOUND, "not_found").await;
        expect_error(app.get("/api/v1/workflow-instances?status=DONE").await, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
}

both_backends! {
    async fn cancelling_a_parent_cancels_its_child(backend: Backend) {
        let app = app_with_plugins(backend).await;
        deploy(&app, json!({"name": "slow-child", "steps": [
            {"stepDefinitionId": "w", "type": "wait", "waitConfig": {"durationSeconds": {"type": "constant", "value": 600}}}]})).await;
        deploy(&app, json!({"name": "waiting-parent", "steps": [
            {"stepDefinitionId": "call", "type": "workflow", "workflowConfig": {"workflowName": "slow-child"}}]})).await;
        let run = start(&app, json!({"name": "waiting-parent"})).await;
        let id = run["id"].as_str().expect("id");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let child = loop {
            let children = expect_status(app.get(&format!("/api/v1/workflow-instances?parentRunId={id}")).await, StatusCode::OK).await;
            if let Some(child) = children["items"].as_array().and_then(|a| a.first()) {
                break child["id"].as_str().expect("id").to_string();
            }
            assert!(tokio::time::Instant::now() < deadline, "no child run started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let cancelled = expect_status(app.post(&format!("/api/v1/workflow-instances/{id}/cancel")).await, StatusCode::OK).await;
        assert_eq!(cancelled["status"], "CANCELLED");
        let child = wait_for(&app, &child, &["CANCELLED", "COMPLETED", "FAILED"]).await;
        assert_eq!(child["status"], "CANCELLED", "{child}");
        // The parent stays cancelled (the child's end does not revive it).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let parent = expect_status(app.get(&format!("/api/v1/workflow-instances/{id}")).await, StatusCode::OK).await;
        assert_eq!(parent["status"], "CANCELLED");
    }
}

both_backends! {
    async fn a_run_deadline_fails_the_run_and_cancels_its_child(backend: Backend) {
        let app = app_with_plugins(backend).await;
        deploy(&app, json!({"name": "sleepy-child", "steps": [
            {"stepDefinitionId": "w", "type": "wait", "waitConfig": {"durationSeconds": {"type": "constant", "value": 600}}}]})).await;
        deploy(&app, json!({"name": "hurried", "timeoutSeconds": 1, "steps": [
            {"stepDefinitionId": "call", "type": "workflow", "workflowConfig": {"workflowName": "sleepy-child"}}]})).await;
        let run = start(&app, json!({"name": "hurried"})).await;
        let id = run["id"].as_str().expect("id");
        assert!(run["deadlineAt"].is_string(), "{run}");
        let done = wait_for(&app, id, &["FAILED", "COMPLETED", "CANCELLED"]).await;
        assert_eq!(done["status"], "FAILED", "{done}");
        assert_eq!(done["error"]["code"], "deadline_exceeded", "{done}");
        let children = expect_status(app.get(&format!("/api/v1/workflow-instances?parentRunId={id}")).await, StatusCode::OK).await;
        let child = children["items"][0]["id"].as_str().expect("child").to_string();
        let child = wait_for(&app, &child, &["CANCELLED", "FAILED", "COMPLETED"]).await;
        assert_eq!(child["status"], "CANCELLED", "{child}");
    }
}

both_backends!(
    async fn max_concurrent_runs_holds_runs_until_a_slot_frees(backend: Backend) {
        let app = app_with_plugins(backend).await;
        let definition = deploy(
            &app,
            json!({
                "name": "capped",
                "maxConcurrentRuns": 1,
                "steps": [{"stepDefinitionId": "hold", "type": "wait",
                           "waitConfig": {"signal": "go", "timeoutSeconds": 3600}}]
            }),
        )
        .await;
        let mut runs = Vec::new();
        for _ in 0..3 {
            let run = start(
                &app,
                json!({"workflowDefinitionId": definition, "input": {}}),
            )
            .await;
            runs.push(run["id"].as_str().expect("id").to_string());
        }
        wait_for(&app, &runs[0], &["RUNNING"]).await;
        for held in &runs[1..] {
            let run = wait_for(&app, held, &["PENDING", "RUNNING"]).await;
            assert_eq!(run["status"], "PENDING", "{run}");
            assert!(run["startedAt"].is_null(), "{run}");
        }
        // Still held after the dispatcher has had every chance to start them.
        tokio::time::sleep(Duration::from_millis(600)).await;
        for held in &runs[1..] {
            let run = wait_for(&app, held, &["PENDING", "RUNNING"]).await;
            assert_eq!(run["status"], "PENDING", "{run}");
        }

        // A held run can be cancelled; it never starts.
        expect_status(
            app.post(&format!("/api/v1/workflow-instances/{}/cancel", runs[2]))
                .await,
            StatusCode::OK,
        )
        .await;
        wait_for(&app, &runs[2], &["CANCELLED"]).await;

        // The first run ends: the second is admitted, and only then starts.
        let signal = |run: &str| format!("/api/v1/workflow-instances/{run}/signals/go");
        expect_status(
            app.post_json(&signal(&runs[0]), &json!({})).await,
            StatusCode::ACCEPTED,
        )
        .await;
        wait_for(&app, &runs[0], &["COMPLETED"]).await;
        wait_for(&app, &runs[1], &["RUNNING"]).await;
        expect_status(
            app.post_json(&signal(&runs[1]), &json!({})).await,
            StatusCode::ACCEPTED,
        )
        .await;
        wait_for(&app, &runs[1], &["COMPLETED"]).await;

        let events = |body: Value| -> Vec<(i64, String)> {
            body["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|e| {
                    (
                        e["seq"].as_i64().expect("seq"),
                        e["kind"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        };
        let first = events(
            expect_status(
                app.get(&format!("/api/v1/workflow-instances/{}/events", runs[0]))
                    .await,
                StatusCode::OK,
            )
            .await,
        );
        let second = events(
            expect_status(
                app.get(&format!("/api/v1/workflow-instances/{}/events", runs[1]))
                    .await,
                StatusCode::OK,
            )
            .await,
        );
        let first_done = first
            .iter()
            .find(|(_, k)| k == "run.completed")
            .expect("completed")
            .0;
        let second_started = second
            .iter()
            .find(|(_, k)| k == "run.started")
            .expect("started")
            .0;
        assert!(second_started > first_done, "{first:?} {second:?}");
        let third = events(
            expect_status(
                app.get(&format!("/api/v1/workflow-instances/{}/events", runs[2]))
                    .await,
                StatusCode::OK,
            )
            .await,
        );
        assert!(third.iter().all(|(_, k)| k != "run.started"), "{third:?}");
    }
);

both_backends! {
    async fn a_child_run_of_a_capped_definition_waits_for_room(backend: Backend) {
        let app = app_with_plugins(backend).await;
        deploy(&app, json!({"name": "capped-child", "maxConcurrentRuns": 1,
            "outputParameters": [{"name": "got", "value": {"type": "taskOutput", "value": {"taskId": "hold", "outputKey": "payload"}}}],
            "steps": [{"stepDefinitionId": "hold", "type": "wait",
                       "waitConfig": {"signal": "go", "timeoutSeconds": 3600}}]})).await;
        deploy(&app, json!({"name": "calls-capped",
            "outputParameters": [{"name": "child", "value": {"type": "taskOutput", "value": {"taskId": "call", "path": ""}}}],
            "steps": [{"stepDefinitionId": "call", "type": "workflow",
                       "workflowConfig": {"workflowName": "capped-child"}}]})).await;
        let signal = |run: &str, payload: Value| {
            let app = &app;
            let path = format!("/api/v1/workflow-instances/{run}/signals/go");
            async move {
                expect_status(app.post_json(&path, &payload).await, StatusCode::ACCEPTED).await;
            }
        };
        // A run of its own takes the only slot.
        let first = start(&app, json!({"name": "capped-child"})).await;
        let first = first["id"].as_str().expect("id").to_string();
        wait_for(&app, &first, &["RUNNING"]).await;

        let parent = start(&app, json!({"name": "calls-capped"})).await;
        let parent = parent["id"].as_str().expect("id").to_string();
        let child = loop {
            let children = expect_status(
                app.get(&format!("/api/v1/workflow-instances?parentRunId={parent}")).await,
                StatusCode::OK,
            )
            .await;
            if let Some(id) = children["items"][0]["id"].as_str() {
                break id.to_string();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Held while the slot is taken, even after the admission has had every chance.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let held = wait_for(&app, &child, &["PENDING", "RUNNING"]).await;
        assert_eq!(held["status"], "PENDING", "{held}");
        assert!(held["startedAt"].is_null(), "{held}");
        let waiting = wait_for(&app, &parent, &["RUNNING"]).await;
        assert_eq!(waiting["status"], "RUNNING");

        // The slot frees: the child starts, runs, and its output reaches the parent.
        signal(&first, json!({})).await;
        wait_for(&app, &first, &["COMPLETED"]).await;
        wait_for(&app, &child, &["RUNNING"]).await;
        signal(&child, json!({"n": 7})).await;
        let done = wait_for(&app, &parent, &["COMPLETED", "FAILED", "CANCELLED"]).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        assert_eq!(done["output"]["child"]["got"], json!({"n": 7}), "{done}");

        let kinds = |body: Value| -> Vec<(i64, String)> {
            body["items"].as_array().expect("items").iter()
                .map(|e| (e["seq"].as_i64().expect("seq"), e["kind"].as_str().unwrap_or_default().to_string()))
                .collect()
        };
        let first_events = kinds(expect_status(app.get(&format!("/api/v1/workflow-instances/{first}/events")).await, StatusCode::OK).await);
        let child_events = kinds(expect_status(app.get(&format!("/api/v1/workflow-instances/{child}/events")).await, StatusCode::OK).await);
        let first_done = first_events.iter().find(|(_, k)| k == "run.completed").expect("completed").0;
        let started: Vec<i64> = child_events.iter().filter(|(_, k)| k == "run.started").map(|(s, _)| *s).collect();
        assert_eq!(started.len(), 1, "{child_events:?}");
        assert!(started[0] > first_done, "{first_events:?} {child_events:?}");
    }
}

both_backends! {
    async fn a_capped_definition_may_start_itself_as_a_sub_workflow(backend: Backend) {
        // With one slot, a child held until its ancestors end would wait for ever: a child of a
        // definition already running among its ancestors is not held.
        let app = app_with_plugins(backend).await;
        deploy(&app, json!({"name": "countdown", "maxConcurrentRuns": 1,
            "inputParameters": [{"name": "n", "type": "number", "required": true}],
            "outputParameters": [{"name": "n", "value": {"type": "workflowInput", "value": "n"}}],
            "steps": [
                {"stepDefinitionId": "d", "type": "decision", "decisionConfig": {"joinStepId": "j",
                    "cases": [{"condition": "input.n > 0", "nextStepId": "call"}],
                    "defaultStepId": "stop"}},
                {"stepDefinitionId": "call", "type": "workflow",
                 "workflowConfig": {"workflowName": "countdown", "nextStepId": "j"},
                 "parameters": {"n": {"type": "expression", "value": "input.n - 1"}}},
                add("stop", Some("j"), json!({"type": "constant", "value": 0})),
                {"stepDefinitionId": "j", "type": "join", "joinConfig": {"incomingStepIds": ["call", "stop"]}}
            ]})).await;
        let run = start(&app, json!({"name": "countdown", "input": {"n": 2}})).await;
        let id = run["id"].as_str().expect("id");
        let done = wait_for(&app, id, &["COMPLETED", "FAILED", "CANCELLED"]).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        let child = expect_status(app.get(&format!("/api/v1/workflow-instances?parentRunId={id}")).await, StatusCode::OK).await;
        assert_eq!(child["items"][0]["status"], "COMPLETED", "{child}");
        assert_eq!(child["items"][0]["input"]["n"].as_f64(), Some(1.0), "{child}");
    }
}

both_backends! {
    async fn a_run_cancelled_while_held_is_held_again_when_retried(backend: Backend) {
        let app = app_with_plugins(backend).await;
        deploy(&app, json!({"name": "capped-retry", "maxConcurrentRuns": 1,
            "steps": [{"stepDefinitionId": "hold", "type": "wait",
                       "waitConfig": {"signal": "go", "timeoutSeconds": 3600}}]})).await;
        let first = start(&app, json!({"name": "capped-retry"})).await;
        let first = first["id"].as_str().expect("id").to_string();
        wait_for(&app, &first, &["RUNNING"]).await;
        let second = start(&app, json!({"name": "capped-retry"})).await;
        let second = second["id"].as_str().expect("id").to_string();
        assert_eq!(wait_for(&app, &second, &["PENDING", "RUNNING"]).await["status"], "PENDING");
        expect_status(app.post(&format!("/api/v1/workflow-instances/{second}/cancel")).await, StatusCode::OK).await;
        wait_for(&app, &second, &["CANCELLED"]).await;

        // Retried, it waits for room again (it never started: there is nothing to resume).
        let retried = expect_status(app.post(&format!("/api/v1/workflow-instances/{second}/retry")).await, StatusCode::OK).await;
        assert_eq!(retried["status"], "PENDING", "{retried}");
        assert!(retried["startedAt"].is_null(), "{retried}");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(wait_for(&app, &second, &["PENDING", "RUNNING"]).await["status"], "PENDING");

        let signal = |run: &str| format!("/api/v1/workflow-instances/{run}/signals/go");
        expect_status(app.post_json(&signal(&first), &json!({})).await, StatusCode::ACCEPTED).await;
        wait_for(&app, &first, &["COMPLETED"]).await;
        wait_for(&app, &second, &["RUNNING"]).await;
        expect_status(app.post_json(&signal(&second), &json!({})).await, StatusCode::ACCEPTED).await;
        let done = wait_for(&app, &second, &["COMPLETED", "FAILED", "CANCELLED"]).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
    }
}

both_backends! {
    async fn a_held_run_deadline_counts_from_its_admission(backend: Backend) {
        let app = app_with_plugins(backend).await;
        deploy(&app, json!({"name": "capped-hurried", "maxConcurrentRuns": 1, "timeoutSeconds": 1,
            "steps": [{"stepDefinitionId": "hold", "type": "wait",
                       "waitConfig": {"signal": "go", "timeoutSeconds": 3600}}]})).await;
        let first = start(&app, json!({"name": "capped-hurried"})).await;
        let first = first["id"].as_str().expect("id").to_string();
        let second = start(&app, json!({"name": "capped-hurried"})).await;
        let second = second["id"].as_str().expect("id").to_string();
        let held = wait_for(&app, &second, &["PENDING", "RUNNING"]).await;
        assert_eq!(held["status"], "PENDING", "{held}");
        assert!(held["deadlineAt"].is_null(), "a held run has no deadline yet: {held}");

        // The first run hits its deadline; the second is admitted after a wait longer than
        // its own time-out, and still gets its full second.
        let failed = wait_for(&app, &first, &["FAILED", "COMPLETED", "CANCELLED"]).await;
        assert_eq!(failed["error"]["code"], "deadline_exceeded", "{failed}");
        let admitted = wait_for(&app, &second, &["RUNNING", "FAILED", "COMPLETED"]).await;
        assert_eq!(admitted["status"], "RUNNING", "{admitted}");
        let time = |v: &Value| v.as_str().expect("time").parse::<chrono::DateTime<chrono::Utc>>().expect("rfc3339");
        let created = time(&admitted["createdAt"]);
        let started = time(&admitted["startedAt"]);
        let deadline = time(&admitted["deadlineAt"]);
        assert!(started - created >= chrono::TimeDelta::milliseconds(900), "{admitted}");
        assert_eq!(deadline - started, chrono::TimeDelta::seconds(1), "{admitted}");
        let done = wait_for(&app, &second, &["FAILED", "COMPLETED", "CANCELLED"]).await;
        assert_eq!(done["error"]["code"], "deadline_exceeded", "{done}");
    }
}

both_backends!(
    async fn run_input_is_checked_against_parameter_schemas(backend: Backend) {
        let app = app_with_plugins(backend).await;
        let definition = deploy(
            &app,
            json!({
                "name": "schema-checked",
                "inputParameters": [
                    {"name": "value", "type": "number", "required": true,
                     "schema": {"minimum": 0, "maximum": 10}},
                    {"name": "order", "type": "object",
                     "schema": {"type": "object", "required": ["id"],
                                "properties": {"id": {"type": "string", "pattern": "^o-"},
                                               "items": {"type": "array", "maxItems": 2}}}}
                ],
                "steps": [{"stepDefinitionId": "a", "type": "task",
                           "taskConfig": {"taskDefinitionId": "add"},
                           "parameters": {"value": {"type": "workflowInput", "value": "value"}}}]
            }),
        )
        .await;
        let response = app
            .post_json(
                "/api/v1/workflow-instances",
                &json!({"workflowDefinitionId": definition,
                        "input": {"value": 11, "order": {"id": "x", "items": [1, 2, 3]}}}),
            )
            .await;
        let body = expect_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        let mut found = issues(&body);
        found.sort();
        assert_eq!(
            found,
            [
                ("/input/order/id".to_string(), "schema_mismatch".to_string()),
                (
                    "/input/order/items".to_string(),
                    "schema_mismatch".to_string()
                ),
                ("/input/value".to_string(), "schema_mismatch".to_string()),
            ],
            "{body}"
        );
        let run = start(
            &app,
            json!({"workflowDefinitionId": definition,
                   "input": {"value": 3, "order": {"id": "o-1", "items": [1]}}}),
        )
        .await;
        wait_for(&app, run["id"].as_str().expect("id"), &["COMPLETED"]).await;

        // A schema that does not compile is refused with the definition.
        let response = app
            .post_json(
                "/api/v1/workflow-definitions",
                &json!({"name": "bad-schema",
                        "inputParameters": [{"name": "p", "type": "string", "schema": {"type": 5}}],
                        "steps": [{"stepDefinitionId": "a", "type": "task",
                                   "taskConfig": {"taskDefinitionId": "add"}}]}),
            )
            .await;
        let body = expect_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(
            issues(&body),
            [(
                "/inputParameters/0/schema".to_string(),
                "invalid_value".to_string()
            )]
        );
    }
);

both_backends!(
    async fn absurd_durations_and_deadlines_are_clamped_not_fatal(backend: Backend) {
        let app = app_with_plugins(backend).await;
        let definition = deploy(
            &app,
            json!({
                "name": "far-future",
                "timeoutSeconds": u64::MAX,
                "inputParameters": [{"name": "secs", "type": "number", "required": true}],
                "steps": [
                    {"stepDefinitionId": "a", "type": "task", "deadlineSeconds": u64::MAX,
                     "timeoutSeconds": 100_000_000_000_u64,
                     "taskConfig": {"taskDefinitionId": "add", "nextStepId": "pause"},
                     "parameters": {"value": {"type": "constant", "value": 1}}},
                    {"stepDefinitionId": "pause", "type": "wait",
                     "waitConfig": {"durationSeconds": {"type": "workflowInput", "value": "secs"}}}
                ]
            }),
        )
        .await;
        let run = start(
            &app,
            json!({"workflowDefinitionId": definition, "input": {"secs": 1e300}}),
        )
        .await;
        let id = run["id"].as_str().expect("id").to_string();
        // The task ran and the wait parked (far in the future) instead of crashing a worker.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let events = expect_status(
                app.get(&format!("/api/v1/workflow-instances/{id}/events"))
                    .await,
                StatusCode::OK,
            )
            .await;
            let items = events["items"].as_array().expect("items");
            let parked = items
                .iter()
                .any(|e| e["stepId"] == "pause" && e["kind"] == "step.waiting");
            let done = items
                .iter()
                .any(|e| e["stepId"] == "a" && e["kind"] == "step.completed");
            if parked && done {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{events}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        expect_status(
            app.post(&format!("/api/v1/workflow-instances/{id}/cancel"))
                .await,
            StatusCode::OK,
        )
        .await;
        wait_for(&app, &id, &["CANCELLED"]).await;
    }
);

both_backends! {
    async fn a_nul_character_made_at_run_time_fails_the_step(backend: Backend) {
        // Definitions refuse NUL characters, but an expression can make one (PostgreSQL stores
        // none): it fails alike on both backends, and the value is not kept.
        let app = app_with_plugins(backend).await;
        deploy(&app, json!({"name": "nul-out",
            "outputParameters": [{"name": "s", "value": {"type": "expression", "value": "\"a\\u0000b\""}}],
            "steps": [add("a", None, json!({"type": "constant", "value": 1}))]})).await;
        let run = start(&app, json!({"name": "nul-out"})).await;
        let id = run["id"].as_str().expect("id");
        let done = wait_for(&app, id, &["COMPLETED", "FAILED"]).await;
        assert_eq!(done["status"], "FAILED", "{done}");
        assert_eq!(done["error"]["code"], "output_binding_failed", "{done}");
        assert!(done["error"]["message"].as_str().is_some_and(|m| m.contains("output parameter 's' contains a NUL")), "{done}");
        assert_eq!(done["output"], Value::Null);
        // The step did its work: it stays completed.
        assert_eq!(step(&steps(&app, id).await, "a")["status"], "COMPLETED");

        deploy(&app, json!({"name": "nul-in",
            "steps": [add("a", None, json!({"type": "expression", "value": "\"a\\u0000b\""}))]})).await;
        let run = start(&app, json!({"name": "nul-in"})).await;
        let id = run["id"].as_str().expect("id");
        let done = wait_for(&app, id, &["COMPLETED", "FAILED"]).await;
        assert_eq!(done["status"], "FAILED", "{done}");
        assert_eq!(done["error"]["code"], "invalid_value", "{done}");
        let steps = steps(&app, id).await;
        let a = step(&steps, "a");
        assert_eq!(a["input"], Value::Null, "{a}");
        // Failed before its task ran.
        assert_eq!(a["attempts"][0]["error"]["code"], "invalid_value", "{a}");
        assert_eq!(a["attempts"][0]["runner"], "engine", "{a}");
    }
}
