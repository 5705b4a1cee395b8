//! One JSON error shape everywhere; never a 5xx for bad input.

use reqwest::StatusCode;
use serde_json::json;

use weft_store::Backend;

use crate::both_backends;
use crate::helpers::*;

both_backends! {
    async fn error_shapes_for_bad_requests(backend: Backend) {
        let app = spawn_app_with(backend, |config| config.max_body_bytes = 4096).await;
        expect_error(app.get("/nope").await, StatusCode::NOT_FOUND, "not_found").await;
        expect_error(app.get("/api/v1/nope").await, StatusCode::NOT_FOUND, "not_found").await;
        // The Go engine's unversioned paths are not served.
        expect_error(app.get("/api/workflow-definitions").await, StatusCode::NOT_FOUND, "not_found").await;
        let response = app.delete("/api/v1/workflow-definitions").await;
        expect_error(response, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;

        let response = app
            .request(reqwest::Method::POST, "/api/v1/workflow-definitions")
            .header("content-type", "application/json")
            .body("{\"name\": ")
            .send()
            .await
            .expect("POST");
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_json").await;

        let response = app
            .request(reqwest::Method::POST, "/api/v1/workflow-definitions")
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .expect("POST");
        expect_error(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;

        let response = app.post_json("/api/v1/workflow-definitions", &json!([1, 2])).await;
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_body").await;

        let mut big = simple_definition("big");
        big["description"] = json!("x".repeat(10_000));
        let response = app.post_json("/api/v1/workflow-definitions", &big).await;
        expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

        // Deeply nested or odd JSON is a 4xx, never a 5xx.
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        let response = app
            .request(reqwest::Method::POST, "/api/v1/workflow-definitions")
            .header("content-type", "application/json")
            .body(deep)
            .send()
            .await
            .expect("POST");
        assert!(response.status().is_client_error(), "{}", response.status());
    }
}

both_backends! {
    async fn nul_characters_are_refused_not_stored(backend: Backend) {
        let app = spawn_app(backend).await;
        let mut body = simple_definition("nul");
        body["metadata"] = json!({"note": "a\u{0}b"});
        let response = app.post_json("/api/v1/workflow-definitions", &body).await;
        let body = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(issues(&body), [("/metadata/note".to_string(), "invalid_value".to_string())]);
    }
}

#[tokio::test]
async fn readiness_fails_when_the_database_goes_away() {
    let app = spawn_app(Backend::Postgres).await;
    let response = app.get("/readyz").await;
    expect_status(response, StatusCode::OK).await;
    app.drop_database_for_test().await;
    let response = app.get("/readyz").await;
    expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    // Liveness is about the process, not the database.
    expect_status(app.get("/healthz").await, StatusCode::OK).await;
}
