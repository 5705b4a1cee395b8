//! Every kind of validation problem comes back as 422 with its JSON path, all at once.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

async fn problems(app: &TestApp, body: Value) -> Vec<(String, String)> {
    let response = app.post_json("/api/v1/workflow-definitions", &body).await;
    let body = expect_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let found = issues(&body);
    assert!(!found.is_empty(), "details list the problems: {body}");
    // Nothing was stored.
    let list = expect_status(
        app.get("/api/v1/workflow-definitions").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["totalCount"], 0);
    found
}

fn has(found: &[(String, String)], path: &str, code: &str) -> bool {
    found.iter().any(|(p, c)| p == path && c == code)
}

fn task(id: &str, next: Option<&str>) -> Value {
    let mut config = json!({"taskDefinitionId": "add"});
    if let Some(next) = next {
        config["nextStepId"] = json!(next);
    }
    json!({"stepDefinitionId": id, "type": "task", "taskConfig": config})
}

both_backends! {
    async fn every_problem_kind_with_its_path(backend: Backend) {
        let app = spawn_app(backend).await;

        let found = problems(&app, json!({"name": "d", "steps": [task("a", Some("b")), task("a", Some("b")), task("b", None)]})).await;
        assert!(has(&found, "/steps/1/stepDefinitionId", "duplicate_step_id"), "{found:?}");

        let found = problems(&app, json!({"name": "d", "steps": [task("a", Some("nowhere"))]})).await;
        assert!(has(&found, "/steps/0/taskConfig/nextStepId", "unknown_step"), "{found:?}");

        let found = problems(&app, json!({"name": "d", "steps": [
            {"stepDefinitionId": "f", "type": "fork", "forkConfig": {"joinStepId": "nope", "branches": [{"nextStepId": "x"}]}},
            task("x", None)
        ]})).await;
        assert!(found.iter().any(|(p, c)| p.starts_with("/steps/0/forkConfig/joinStepId") && c == "fork_without_join"), "{found:?}");

        // The join lists a step that is outside the fork: it cannot reach the join.
        let found = problems(&app, json!({"name": "d", "steps": [
            task("start", Some("f")),
            {"stepDefinitionId": "f", "type": "fork", "forkConfig": {"joinStepId": "j", "branches": [{"nextStepId": "x"}, {"nextStepId": "y"}]}},
            task("x", Some("j")), task("y", Some("j")),
            {"stepDefinitionId": "j", "type": "join", "joinConfig": {"incomingStepIds": ["x", "y", "start"]}}
        ]})).await;
        assert!(has(&found, "/steps/4/joinConfig/incomingStepIds/2", "join_not_reachable"), "{found:?}");

        let found = problems(&app, json!({"name": "d", "steps": [task("a", None), task("orphan", None)]})).await;
        assert!(has(&found, "/steps/1", "unreachable_step"), "{found:?}");

        let found = problems(&app, json!({"name": "d", "steps": [task("a", Some("b")), task("b", Some("c")), task("c", Some("b"))]})).await;
        assert!(found.iter().any(|(p, c)| p.starts_with("/steps/") && c == "cycle"), "{found:?}");

        let found = problems(&app, json!({"name": "d", "inputParameters": [{"name": "n", "type": "decimal"}], "steps": [task("a", None)]})).await;
        assert!(has(&found, "/inputParameters/0/type", "invalid_parameter_type"), "{found:?}");

        let found = problems(&app, json!({"name": "d", "inputParameters": [{"name": "n", "type": "integer", "default": "ten"}], "steps": [task("a", None)]})).await;
        assert!(has(&found, "/inputParameters/0/default", "invalid_default"), "{found:?}");

        let mut step = task("a", None);
        step["parameters"] = json!({"x": {"type": "magic", "value": 1}});
        let found = problems(&app, json!({"name": "d", "steps": [step]})).await;
        assert!(found.iter().any(|(p, c)| p.starts_with("/steps/0/parameters/x") && c == "invalid_binding"), "{found:?}");

        let found = problems(&app, json!({"name": "d", "steps": [
            {"stepDefinitionId": "dec", "type": "decision", "decisionConfig": {"joinStepId": "j", "cases": [
                {"condition": "input.amount >>> 3", "nextStepId": "x"}]}},
            task("x", Some("j")),
            {"stepDefinitionId": "j", "type": "join", "joinConfig": {"incomingStepIds": ["x"]}}
        ]})).await;
        assert!(has(&found, "/steps/0/decisionConfig/cases/0/condition", "invalid_expression"), "{found:?}");

        // Structural problems point at the field.
        let found = problems(&app, json!({"name": "d", "steps": [{"stepDefinitionId": "a", "type": "teleport"}]})).await;
        assert!(found.iter().any(|(p, _)| p.starts_with("/steps/0")), "{found:?}");
        let found = problems(&app, json!({"steps": [task("a", None)]})).await;
        assert!(found.iter().any(|(p, _)| p == "/name" || p.is_empty()), "{found:?}");
    }
}

both_backends! {
    async fn several_problems_reported_together(backend: Backend) {
        let app = spawn_app(backend).await;
        let found = problems(&app, json!({"name": "d",
            "inputParameters": [{"name": "n", "type": "decimal"}],
            "steps": [task("a", Some("ghost")), task("a", None), task("lost", None)]})).await;
        assert!(has(&found, "/inputParameters/0/type", "invalid_parameter_type"), "{found:?}");
        assert!(has(&found, "/steps/0/taskConfig/nextStepId", "unknown_step"), "{found:?}");
        assert!(has(&found, "/steps/1/stepDefinitionId", "duplicate_step_id"), "{found:?}");
        assert!(found.len() >= 3, "{found:?}");
    }
}
