//! One file per resource. Every route is registered with `utoipa_axum::routes!`, which takes its
//! method and path from the handler's `#[utoipa::path]`: a route is in the OpenAPI document by
//! construction (see `super::openapi`).

mod agents;
mod definitions;
mod health;
mod metrics;
mod plugins;
mod runs;
mod tokens;
pub mod ws;

use utoipa_axum::router::OpenApiRouter;

use super::{AppState, HttpOptions};

/// Routes under `/api/v1` (authenticated).
pub fn api(options: &HttpOptions) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(definitions::routes())
        .merge(plugins::routes(options.max_plugin_bytes))
        .merge(runs::routes())
        .merge(agents::routes())
        .merge(tokens::routes())
        .merge(ws::routes())
}

/// `/healthz` and `/readyz` (never authenticated).
pub fn health() -> OpenApiRouter<AppState> {
    health::routes()
}

/// `/metrics` (the caller decides on authentication).
pub fn metrics() -> OpenApiRouter<AppState> {
    metrics::routes()
}
