//! One file per resource.

mod definitions;
mod health;
mod tokens;

use axum::Router;

use super::AppState;

/// Routes under `/api/v1` (authenticated).
pub fn api() -> Router<AppState> {
    Router::new()
        .merge(definitions::routes())
        .merge(tokens::routes())
}

/// `/healthz` and `/readyz` (never authenticated).
pub fn health() -> Router<AppState> {
    health::routes()
}
