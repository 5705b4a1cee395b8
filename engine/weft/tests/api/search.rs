//! The Go engine's search expression: and/or/not/compare, as parameterised SQL.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

async fn search(app: &TestApp, expression: Value) -> Vec<String> {
    let response = app
        .post_json("/api/v1/workflow-definitions/search", &expression)
        .await;
    let body = expect_status(response, StatusCode::OK).await;
    assert_eq!(
        body["totalCount"].as_u64(),
        body["items"].as_array().map(|a| a.len() as u64)
    );
    let mut names: Vec<String> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

both_backends! {
    async fn search_expressions(backend: Backend) {
        let app = spawn_app(backend).await;
        for name in ["a", "b", "c"] {
            app.create_definition(&simple_definition(name)).await;
        }
        let mut with_null = simple_definition("d");
        with_null.as_object_mut().expect("object").remove("description");
        let d = app.create_definition(&with_null).await;
        let id = d["id"].as_str().expect("id");
        expect_status(app.post(&format!("/api/v1/workflow-definitions/{id}/enable")).await, StatusCode::OK).await;

        let eq = |field: &str, value: Value| json!({"compare": {"field": field, "operator": "=", "value": value}});
        assert_eq!(search(&app, json!({})).await, ["a", "b", "c", "d"]);
        assert_eq!(search(&app, eq("name", json!("b"))).await, ["b"]);
        assert_eq!(search(&app, json!({"or": [eq("name", json!("a")), eq("name", json!("c"))]})).await, ["a", "c"]);
        assert_eq!(search(&app, json!({"not": {"and": [eq("name", json!("a")), eq("isEnabled", json!(false))]}})).await, ["b", "c", "d"]);
        assert_eq!(search(&app, json!({"not": eq("description", json!("adds two"))})).await, ["d"]);
        assert_eq!(search(&app, json!({"compare": {"field": "name", "operator": "in", "value": ["a", "d", "zz"]}})).await, ["a", "d"]);
        assert_eq!(search(&app, eq("isEnabled", json!(true))).await, ["d"]);

        // Field names never reach SQL: an injection attempt is a validation error and harmless.
        let response = app.post_json("/api/v1/workflow-definitions/search",
            &json!({"compare": {"field": "name = name; DROP TABLE workflow_definitions; --", "operator": "=", "value": 1}})).await;
        let body = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(body["error"]["details"][0]["path"], "/compare/field");
        let response = app.post_json("/api/v1/workflow-definitions/search", &json!({"compare": {"field": null}})).await;
        expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        let response = app.post_json("/api/v1/workflow-definitions/search", &json!({"and": [{"compare": {"field": "name", "operator": "~", "value": "a"}}]})).await;
        let body = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(body["error"]["details"][0]["path"], "/and/0/compare/operator");
        assert_eq!(search(&app, json!({})).await.len(), 4);
    }
}
