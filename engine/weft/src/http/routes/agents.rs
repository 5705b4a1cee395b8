//! `/agents` and `/task-definitions`: connected agents and the tasks they run (like the Go
//! engine's endpoints), with liveness.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::http::error::ApiPath;
use crate::http::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/agents", get(list))
        .route("/agents/{id}", get(fetch))
        .route("/task-definitions", get(tasks))
        .route("/task-definitions/{name}", get(task))
}

async fn list(State(state): State<AppState>) -> Json<Value> {
    let agents = state.agents.list();
    Json(json!({"items": agents, "totalCount": agents.len()}))
}

async fn fetch(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    state
        .agents
        .list()
        .into_iter()
        .find(|a| a.id == id)
        .map(|a| Json(json!(a)))
        .ok_or_else(|| ApiError::not_found(format!("no connected agent with id {id}")))
}

async fn tasks(State(state): State<AppState>) -> Json<Value> {
    let tasks = state.agents.task_definitions();
    Json(json!({"items": tasks, "totalCount": tasks.len()}))
}

async fn task(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let versions: Vec<_> = state
        .agents
        .task_definitions()
        .into_iter()
        .filter(|t| t.name == name)
        .collect();
    if versions.is_empty() {
        return Err(ApiError::not_found(format!(
            "no connected agent provides task '{name}'"
        )));
    }
    Ok(Json(
        json!({"items": versions, "totalCount": versions.len()}),
    ))
}
