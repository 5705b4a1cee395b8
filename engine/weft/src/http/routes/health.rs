//! Liveness and readiness.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::http::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is alive and serving HTTP.
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers and its schema is current.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::unavailable(format!("database unreachable: {e}")))?;
    let status = state
        .store
        .migration_status()
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot read migration status: {e}")))?;
    if !status.is_current() {
        return Err(ApiError::unavailable(format!(
            "database schema is not current: pending migrations {:?}, unknown migrations {:?}",
            status.pending, status.unknown
        )));
    }
    Ok(Json(json!({
        "status": "ready",
        "database": "ok",
        "migrations": status.applied.len(),
    })))
}
