//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::ErrorBody;
use crate::http::{ApiError, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// Liveness.
#[derive(ToSchema)]
#[expect(dead_code, reason = "a schema only: the handler writes this shape")]
pub struct Health {
    #[schema(example = "ok")]
    status: String,
}

/// Readiness.
#[derive(ToSchema)]
#[expect(dead_code, reason = "a schema only: the handler writes this shape")]
pub struct Readiness {
    #[schema(example = "ready")]
    status: String,
    #[schema(example = "ok")]
    database: String,
    /// Applied migrations.
    migrations: u64,
}

/// The process is alive and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    security(()),
    responses((status = 200, description = "Alive", body = Health))
)]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers and its schema is current.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready", body = ErrorBody),
    )
)]
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
