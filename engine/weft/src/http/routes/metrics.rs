//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;
use crate::metrics::CONTENT_TYPE;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Every series, with the queue gauges read from the store now. A store that does not answer
/// leaves them at their last values (the scrape still succeeds: the other series are local).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    responses(
        (status = 200, description = "Every `weft_` series (OpenMetrics text)",
         content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
    )
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let queue = match state.store.queue_stats().await {
        Ok(queue) => Some(queue),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the queue from the store");
            None
        }
    };
    let text = state.metrics.render(queue, chrono::Utc::now());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}
