use reqwest::StatusCode;
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

both_backends! {
    async fn tokens_and_roles(backend: Backend) {
        let app = spawn_app_with_auth(backend).await;
        let client = reqwest::Client::new();
        let url = app.url("/api/v1/workflow-definitions");

        let response = client.get(&url).send().await.expect("GET");
        assert_eq!(response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
        expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let response = client.get(&url).bearer_auth("wrong-token").send().await.expect("GET");
        expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let response = client.get(&url).header("authorization", "Basic abc").send().await.expect("GET");
        expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;

        // read: may list, may not create.
        expect_status(client.get(&url).bearer_auth(READ_TOKEN).send().await.expect("GET"), StatusCode::OK).await;
        let response = client.post(&url).bearer_auth(READ_TOKEN).json(&simple_definition("x")).send().await.expect("POST");
        expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;
        // write: may create, may not manage tokens.
        let response = client.post(&url).bearer_auth(WRITE_TOKEN).json(&simple_definition("x")).send().await.expect("POST");
        expect_status(response, StatusCode::CREATED).await;
        let response = client.get(app.url("/api/v1/tokens")).bearer_auth(WRITE_TOKEN).send().await.expect("GET");
        expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;

        // admin: issues a token (shown once), which then works; revoked, it stops working.
        let issued = expect_status(
            app.post_json("/api/v1/tokens", &json!({"name": "ci", "role": "read"})).await,
            StatusCode::CREATED,
        ).await;
        let secret = issued["token"].as_str().expect("token").to_string();
        expect_status(client.get(&url).bearer_auth(&secret).send().await.expect("GET"), StatusCode::OK).await;
        let listed = expect_status(app.get("/api/v1/tokens").await, StatusCode::OK).await;
        assert_eq!(listed["items"][0]["name"], "ci");
        assert!(listed["items"][0].get("token").is_none(), "secrets are never listed: {listed}");
        assert!(!listed.to_string().contains(&secret));
        let response = app.post_json("/api/v1/tokens", &json!({"name": "ci", "role": "read"})).await;
        expect_error(response, StatusCode::CONFLICT, "conflict").await;
        let response = app.post_json("/api/v1/tokens", &json!({"name": "x", "role": "root"})).await;
        expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        let id = issued["id"].as_str().expect("id");
        expect_status(app.delete(&format!("/api/v1/tokens/{id}")).await, StatusCode::NO_CONTENT).await;
        let response = client.get(&url).bearer_auth(&secret).send().await.expect("GET");
        expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
}

both_backends! {
    async fn cors_is_off_by_default_and_an_allowlist_when_on(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = reqwest::Client::new();
        let response = client
            .get(app.url("/api/v1/workflow-definitions"))
            .header("origin", "https://evil.example")
            .send()
            .await
            .expect("GET");
        assert!(response.headers().get("access-control-allow-origin").is_none());

        let app = spawn_app_with(backend, |c| c.cors_origins = vec!["https://ui.example.com".into()]).await;
        let preflight = |origin: &'static str| {
            client
                .request(reqwest::Method::OPTIONS, app.url("/api/v1/workflow-definitions"))
                .header("origin", origin)
                .header("access-control-request-method", "DELETE")
                .header("access-control-request-headers", "authorization")
                .send()
        };
        let response = preflight("https://ui.example.com").await.expect("OPTIONS");
        let headers = response.headers();
        assert_eq!(headers.get("access-control-allow-origin").and_then(|v| v.to_str().ok()), Some("https://ui.example.com"));
        assert_eq!(headers.get("access-control-allow-credentials").and_then(|v| v.to_str().ok()), Some("true"));
        assert!(headers.get("access-control-allow-methods").and_then(|v| v.to_str().ok()).is_some_and(|m| m.contains("DELETE")));
        let response = preflight("https://evil.example").await.expect("OPTIONS");
        assert!(response.headers().get("access-control-allow-origin").is_none());
    }
}
