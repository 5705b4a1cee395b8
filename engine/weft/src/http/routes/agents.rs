//! `/agents` and `/task-definitions`: connected agents and the tasks they run (like the Go
//! engine's endpoints), with liveness.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::agents::{AgentView, TaskView};
use crate::http::error::{ApiPath, ErrorBody};
use crate::http::{ApiError, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(fetch))
        .routes(routes!(tasks))
        .routes(routes!(task))
}

/// Connected agents.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(dead_code, reason = "a schema only: the handler writes this shape")]
pub struct AgentList {
    items: Vec<AgentView>,
    total_count: u64,
}

/// Tasks of connected agents.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(dead_code, reason = "a schema only: the handler writes this shape")]
pub struct TaskList {
    items: Vec<TaskView>,
    total_count: u64,
}

/// Connected agents.
#[utoipa::path(
    get,
    path = "/agents",
    operation_id = "listAgents",
    tag = "agents",
    responses((status = 200, description = "The agents", body = AgentList))
)]
async fn list(State(state): State<AppState>) -> Json<Value> {
    let agents = state.agents.list();
    Json(json!({"items": agents, "totalCount": agents.len()}))
}

/// One connected agent.
#[utoipa::path(
    get,
    path = "/agents/{id}",
    operation_id = "getAgent",
    tag = "agents",
    params(("id" = Uuid, Path, description = "Agent id (assigned at connection)")),
    responses(
        (status = 200, description = "The agent", body = AgentView),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No connected agent with this id", body = ErrorBody),
    )
)]
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

/// Every task that connected agents provide.
#[utoipa::path(
    get,
    path = "/task-definitions",
    operation_id = "listTaskDefinitions",
    tag = "agents",
    responses((status = 200, description = "The tasks", body = TaskList))
)]
async fn tasks(State(state): State<AppState>) -> Json<Value> {
    let tasks = state.agents.task_definitions();
    Json(json!({"items": tasks, "totalCount": tasks.len()}))
}

/// The versions of one agent task.
#[utoipa::path(
    get,
    path = "/task-definitions/{name}",
    operation_id = "getTaskDefinition",
    tag = "agents",
    params(("name" = String, Path, description = "Task name")),
    responses(
        (status = 200, description = "Its versions", body = TaskList),
        (status = 404, description = "No connected agent provides it", body = ErrorBody),
    )
)]
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
