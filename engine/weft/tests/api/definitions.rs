use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

both_backends! {
    async fn create_get_list_delete(backend: Backend) {
        let app = spawn_app(backend).await;
        let created = app.create_definition(&simple_definition("orders")).await;
        let id = created["id"].as_str().expect("id").to_string();
        assert_eq!(created["name"], "orders");
        assert_eq!(created["version"], "0.1.0");
        assert_eq!(created["isDraft"], true);
        assert_eq!(created["isEnabled"], false);
        assert_eq!(created["steps"][1]["taskConfig"]["taskDefinitionId"], "add");
        assert!(created["createdAt"].as_str().is_some());

        let fetched = expect_status(app.get(&format!("/api/v1/workflow-definitions/{id}")).await, StatusCode::OK).await;
        assert_eq!(fetched, created);

        let list = expect_status(app.get("/api/v1/workflow-definitions").await, StatusCode::OK).await;
        assert_eq!(list["totalCount"], 1);
        assert_eq!(list["items"][0]["id"], id.as_str());

        let response = app.delete(&format!("/api/v1/workflow-definitions/{id}")).await;
        expect_status(response, StatusCode::NO_CONTENT).await;
        let response = app.get(&format!("/api/v1/workflow-definitions/{id}")).await;
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
        let response = app.delete(&format!("/api/v1/workflow-definitions/{id}")).await;
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

both_backends! {
    async fn unknown_and_malformed_ids(backend: Backend) {
        let app = spawn_app(backend).await;
        let response = app.get("/api/v1/workflow-definitions/0190b0c2-7a4e-7cc0-8000-000000000000").await;
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
        let response = app.get("/api/v1/workflow-definitions/not-a-uuid").await;
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_path").await;
        let response = app.post("/api/v1/workflow-definitions/0190b0c2-7a4e-7cc0-8000-000000000000/publish").await;
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

both_backends! {
    async fn update_draft_then_publish_freezes_it(backend: Backend) {
        let app = spawn_app(backend).await;
        let created = app.create_definition(&simple_definition("billing")).await;
        let path = format!("/api/v1/workflow-definitions/{}", created["id"].as_str().expect("id"));

        // A partial update (Go engine ef5cfce style) changes only what it names.
        let updated = expect_status(app.put_json(&path, &json!({"description": "v2 text"})).await, StatusCode::OK).await;
        assert_eq!(updated["description"], "v2 text");
        assert_eq!(updated["steps"], created["steps"]);
        // An invalid update is refused and changes nothing.
        let response = app.put_json(&path, &json!({"steps": []})).await;
        expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        let unchanged = expect_status(app.get(&path).await, StatusCode::OK).await;
        assert_eq!(unchanged["steps"], created["steps"]);

        let published = expect_status(app.post(&format!("{path}/publish")).await, StatusCode::OK).await;
        assert_eq!(published["isDraft"], false);
        assert_eq!(published["version"], "0.1.0");

        let response = app.put_json(&path, &json!({"description": "sneaky"})).await;
        expect_error(response, StatusCode::CONFLICT, "immutable").await;
        let response = app.post(&format!("{path}/publish")).await;
        expect_error(response, StatusCode::CONFLICT, "already_published").await;
        // The Go engine used PATCH for publish: accepted too.
        let response = app.request(reqwest::Method::PATCH, &format!("{path}/publish")).send().await.expect("PATCH");
        expect_error(response, StatusCode::CONFLICT, "already_published").await;
        let still = expect_status(app.get(&path).await, StatusCode::OK).await;
        assert_eq!(still["description"], "v2 text");
    }
}

both_backends! {
    async fn versions(backend: Backend) {
        let app = spawn_app(backend).await;
        let v1 = app.create_definition(&simple_definition("shipping")).await;
        let id = v1["id"].as_str().expect("id");
        let base = format!("/api/v1/workflow-definitions/{id}");
        expect_status(app.post(&format!("{base}/publish")).await, StatusCode::OK).await;

        // Same name, same version: conflict. Same version, other name: fine.
        let response = app.post_json("/api/v1/workflow-definitions", &simple_definition("shipping")).await;
        expect_error(response, StatusCode::CONFLICT, "conflict").await;
        app.create_definition(&simple_definition("returns")).await;

        // The next version is one call; it is a draft copy.
        let v2 = expect_status(app.post(&format!("{base}/versions")).await, StatusCode::CREATED).await;
        assert_eq!(v2["version"], "0.1.1");
        assert_eq!(v2["isDraft"], true);
        assert_eq!(v2["steps"], v1["steps"]);
        assert_ne!(v2["id"], v1["id"]);

        // Bump from the highest existing version, with a changed body.
        let response = app
            .post_json(&format!("{base}/versions?bump=minor"), &json!({"description": "minor bump"}))
            .await;
        let v3 = expect_status(response, StatusCode::CREATED).await;
        assert_eq!(v3["version"], "0.2.0");
        assert_eq!(v3["description"], "minor bump");

        let response = app.post(&format!("{base}/versions?version=0.2.0")).await;
        expect_error(response, StatusCode::CONFLICT, "conflict").await;
        let v4 = expect_status(app.post(&format!("{base}/versions?version=v2.0.0")).await, StatusCode::CREATED).await;
        assert_eq!(v4["version"], "2.0.0");
        let response = app.post(&format!("{base}/versions?bump=huge")).await;
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
        let response = app.post_json(&format!("{base}/versions"), &json!({"name": "renamed"})).await;
        expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

        let list = expect_status(app.get("/api/v1/workflow-definitions?name=shipping").await, StatusCode::OK).await;
        let versions: Vec<&str> = list["items"].as_array().expect("items").iter().map(|d| d["version"].as_str().unwrap_or_default()).collect();
        assert_eq!(versions, ["0.1.0", "0.1.1", "0.2.0", "2.0.0"]);

        // The version given at creation is used; a bad one is a validation error.
        let custom = app.create_definition(&{
            let mut d = simple_definition("custom");
            d["version"] = json!("1.4.2");
            d
        }).await;
        assert_eq!(custom["version"], "1.4.2");
        let mut bad = simple_definition("bad-version");
        bad["version"] = json!("one");
        let body = expect_error(app.post_json("/api/v1/workflow-definitions", &bad).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(issues(&body), [("/version".to_string(), "invalid_value".to_string())]);
    }
}

both_backends! {
    async fn enable_disable_and_created_published(backend: Backend) {
        let app = spawn_app(backend).await;
        let created = expect_status(
            app.post_json("/api/v1/workflow-definitions?draft=false", &simple_definition("payments")).await,
            StatusCode::CREATED,
        ).await;
        assert_eq!(created["isDraft"], false);
        let base = format!("/api/v1/workflow-definitions/{}", created["id"].as_str().expect("id"));
        let enabled = expect_status(app.post(&format!("{base}/enable")).await, StatusCode::OK).await;
        assert_eq!(enabled["isEnabled"], true);
        let disabled = expect_status(
            app.request(reqwest::Method::PATCH, &format!("{base}/disable")).send().await.expect("PATCH"),
            StatusCode::OK,
        ).await;
        assert_eq!(disabled["isEnabled"], false);
    }
}

both_backends! {
    async fn pagination_and_filters(backend: Backend) {
        let app = spawn_app(backend).await;
        let mut ids = Vec::new();
        for name in ["alpha", "beta", "gamma", "delta_1", "delta%2"] {
            ids.push(app.create_definition(&simple_definition(name)).await["id"].clone());
        }
        let beta = ids[1].as_str().expect("id");
        expect_status(app.post(&format!("/api/v1/workflow-definitions/{beta}/publish")).await, StatusCode::OK).await;
        expect_status(app.post(&format!("/api/v1/workflow-definitions/{beta}/enable")).await, StatusCode::OK).await;

        let page = expect_status(app.get("/api/v1/workflow-definitions?limit=2&offset=2").await, StatusCode::OK).await;
        assert_eq!(page["totalCount"], 5);
        assert_eq!(page["limit"], 2);
        let got: Vec<Value> = page["items"].as_array().expect("items").iter().map(|d| d["id"].clone()).collect();
        assert_eq!(got, ids[2..4]);

        let names = |body: &Value| -> Vec<String> {
            body["items"].as_array().expect("items").iter().map(|d| d["name"].as_str().unwrap_or_default().to_string()).collect()
        };
        let body = expect_status(app.get("/api/v1/workflow-definitions?enabled=true").await, StatusCode::OK).await;
        assert_eq!(names(&body), ["beta"]);
        let body = expect_status(app.get("/api/v1/workflow-definitions?draft=true").await, StatusCode::OK).await;
        assert_eq!(body["totalCount"], 4);
        let body = expect_status(app.get("/api/v1/workflow-definitions?q=DELTA").await, StatusCode::OK).await;
        assert_eq!(names(&body), ["delta_1", "delta%2"]);
        // LIKE wildcards in the search text are literal.
        let body = expect_status(app.get("/api/v1/workflow-definitions?q=a%25").await, StatusCode::OK).await;
        assert_eq!(names(&body), ["delta%2"]);
        let body = expect_status(app.get("/api/v1/workflow-definitions?name=gamma").await, StatusCode::OK).await;
        assert_eq!(names(&body), ["gamma"]);

        for bad in ["limit=0", "limit=201", "limit=-1", "offset=x", "enabled=maybe", "colour=red"] {
            let response = app.get(&format!("/api/v1/workflow-definitions?{bad}")).await;
            expect_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
        }
    }
}

both_backends! {
    async fn examples_are_accepted(backend: Backend) {
        let app = spawn_app(backend).await;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/definitions");
        let mut files: Vec<_> = std::fs::read_dir(dir).expect("examples dir").filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
        // Referenced definitions first: sub-workflow examples last.
        files.sort_by_key(|p| (p.to_string_lossy().contains("sub-workflow"), p.clone()));
        assert!(files.len() >= 5, "one example per step type: {files:?}");
        let mut types = std::collections::BTreeSet::new();
        for file in files {
            let body: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
            for step in body["steps"].as_array().expect("steps") {
                types.insert(step["type"].as_str().expect("type").to_string());
            }
            let created = app.create_definition(&body).await;
            let id = created["id"].as_str().expect("id");
            let response = app.post(&format!("/api/v1/workflow-definitions/{id}/publish")).await;
            expect_status(response, StatusCode::OK).await;
        }
        assert_eq!(types.into_iter().collect::<Vec<_>>(), ["decision", "fork", "join", "task", "wait", "workflow"]);
    }
}

both_backends! {
    async fn go_engine_definition_accepted_as_is(backend: Backend) {
        let app = spawn_app(backend).await;
        // The Go engine's own example (Yaak "Save"), with record fields a Go client sends.
        let go = json!({
            "id": "ignored", "isEnabled": false, "createdAt": "2025-11-16T10:00:00Z",
            "name": "fork", "inputParameters": [{"name": "duration", "type": "number", "required": false, "default": 1}],
            "outputParameters": null, "metadata": {"team": "ops"},
            "steps": [
                {"stepDefinitionId": "fork", "name": "Fork", "type": "fork",
                 "forkConfig": {"joinStepId": "join", "branches": [{"nextStepId": "wait1"}, {"nextStepId": "wait2"}]}},
                {"stepDefinitionId": "wait1", "name": "Wait 1", "type": "wait",
                 "waitConfig": {"durationSeconds": {"type": "workflow", "value": "duration"}}},
                {"stepDefinitionId": "wait2", "name": "Wait 2", "type": "wait",
                 "waitConfig": {"durationSeconds": {"type": "workflow", "value": "duration"}}},
                {"stepDefinitionId": "join", "name": "Join", "type": "join",
                 "joinConfig": {"incomingStepIds": ["wait1", "wait2"]}}
            ]
        });
        let created = app.create_definition(&go).await;
        assert_ne!(created["id"], "ignored");
        assert_eq!(created["metadata"]["team"], "ops");
        assert_eq!(created["steps"].as_array().map(Vec::len), Some(4));
        assert_eq!(created["steps"][0]["forkConfig"]["joinStepId"], "join");
    }
}

both_backends! {
    async fn sub_workflow_reference_checked_at_publish(backend: Backend) {
        let app = spawn_app(backend).await;
        let parent = app.create_definition(&json!({
            "name": "parent",
            "steps": [{"stepDefinitionId": "child", "type": "workflow",
                        "workflowConfig": {"workflowName": "missing-child"}}]
        })).await;
        let response = app.post(&format!("/api/v1/workflow-definitions/{}/publish", parent["id"].as_str().expect("id"))).await;
        let body = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(issues(&body), [("/steps/0/workflowConfig/workflowName".to_string(), "unknown_definition".to_string())]);
    }
}
