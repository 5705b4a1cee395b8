//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::http::AppState;
use crate::metrics::CONTENT_TYPE;

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// Every series, with the queue gauges read from the store now. A store that does not answer
/// leaves them at their last values (the scrape still succeeds: the other series are local).
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
