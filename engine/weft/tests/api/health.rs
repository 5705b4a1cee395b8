use reqwest::StatusCode;

use crate::both_backends;
use crate::helpers::*;

both_backends! {
    async fn health_and_readiness(backend: Backend) {
        let app = spawn_app_with_auth(backend).await;
        let anonymous = reqwest::Client::new();
        let response = anonymous.get(app.url("/healthz")).send().await.expect("GET");
        let body = expect_status(response, StatusCode::OK).await;
        assert_eq!(body["status"], "ok");
        let response = anonymous.get(app.url("/readyz")).send().await.expect("GET");
        let body = expect_status(response, StatusCode::OK).await;
        assert_eq!(body["status"], "ready");
        assert!(body["migrations"].as_u64().is_some_and(|n| n >= 1), "{body}");
    }
}
