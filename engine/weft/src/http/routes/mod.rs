//! One file per resource.

mod agents;
mod definitions;
mod health;
mod metrics;
mod plugins;
mod runs;
mod tokens;
pub mod ws;

use axum::Router;

use super::{AppState, HttpOptions};

/// Routes under `/api/v1` (authenticated).
pub fn api(options: &HttpOptions) -> Router<AppState> {
    Router::new()
        .merge(definitions::routes())
        .merge(plugins::routes(options.max_plugin_bytes))
        .merge(runs::routes())
        .merge(agents::routes())
        .merge(tokens::routes())
        .merge(ws::routes())
}

/// `/healthz` and `/readyz` (never authenticated).
pub fn health() -> Router<AppState> {
    health::routes()
}

/// `/metrics` (the caller decides on authentication).
pub fn metrics() -> Router<AppState> {
    metrics::routes()
}
