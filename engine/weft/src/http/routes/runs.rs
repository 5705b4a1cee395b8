//! `/workflow-instances` and `/step-instances`: start, watch, cancel, retry, signal runs.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;
use weft_store::{AttemptRecord, RunQuery, RunRecord, RunStatus, StepRecord};

use crate::definitions::timestamp;
use crate::http::error::{ApiJson, ApiPath, ApiQuery};
use crate::http::{ApiError, AppState};
use crate::runs::{DefinitionRef, RunError, StartRun};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/workflow-instances", get(list).post(start))
        .route("/workflow-instances/{id}", get(fetch))
        .route("/workflow-instances/{id}/steps", get(steps))
        .route("/workflow-instances/{id}/events", get(events))
        .route("/workflow-instances/{id}/cancel", post(cancel))
        .route("/workflow-instances/{id}/retry", post(retry))
        .route("/workflow-instances/{id}/signals/{name}", post(signal))
        .route("/step-instances/{id}", get(step))
}

impl From<RunError> for ApiError {
    fn from(error: RunError) -> Self {
        let message = error.to_string();
        match error {
            RunError::NotFound(_) => ApiError::not_found(message),
            RunError::NotRunnable(_) => {
                ApiError::new(StatusCode::CONFLICT, "not_runnable", message)
            }
            RunError::InvalidInput(issues) => ApiError::validation(message, issues),
            RunError::Conflict(_) => ApiError::conflict("invalid_state", message),
            RunError::BadRequest(_) => ApiError::bad_request("bad_request", message),
            RunError::Executor(crate::executor::ExecutorError::Store(e)) => e.into(),
            RunError::Executor(e) => ApiError::internal(&e),
        }
    }
}

fn ts(at: Option<DateTime<Utc>>) -> Value {
    at.map(|t| Value::String(timestamp(t)))
        .unwrap_or(Value::Null)
}

fn error_message(error: &Option<Value>) -> Value {
    error
        .as_ref()
        .and_then(|e| e.get("message"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// A run in the Go engine's shape, plus Weft's fields.
pub fn run_json(run: &RunRecord) -> Value {
    json!({
        "id": run.id,
        "workflowDefinitionId": run.definition_id,
        "definitionName": run.definition_name,
        "definitionVersion": run.definition_version,
        "status": run.status.as_str(),
        "input": run.input,
        "output": run.output,
        "error": run.error,
        "errorMessage": error_message(&run.error),
        "idempotencyKey": run.idempotency_key,
        "parentRunId": run.parent.map(|p| p.run_id),
        "parentStepInstanceId": run.parent.map(|p| p.step_row_id),
        "depth": run.depth,
        "deadlineAt": ts(run.deadline_at),
        "createdAt": timestamp(run.created_at),
        "startedAt": ts(run.started_at),
        "completedAt": ts(run.completed_at),
        "updatedAt": timestamp(run.updated_at),
    })
}

fn step_json(step: &StepRecord, attempts: &[AttemptRecord]) -> Value {
    let attempts: Vec<Value> = attempts
        .iter()
        .filter(|a| a.step_row_id == step.id)
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "status": a.status.as_str(),
                "input": a.input,
                "output": a.output,
                "error": a.error,
                "runner": a.runner,
                "replica": a.lease_owner,
                "startedAt": timestamp(a.started_at),
                "completedAt": timestamp(a.completed_at),
                "durationMs": (a.completed_at - a.started_at).num_microseconds().map(|us| us as f64 / 1000.0),
            })
        })
        .collect();
    json!({
        "id": step.id,
        "workflowInstanceId": step.run_id,
        "stepId": step.step_id,
        "status": step.status.as_str(),
        "attempt": step.attempt,
        "input": step.input,
        "output": step.output,
        "error": step.error,
        "errorMessage": error_message(&step.error),
        "runner": step.runner,
        "waitingFor": step.wait,
        "createdAt": timestamp(step.created_at),
        "startedAt": ts(step.started_at),
        "completedAt": ts(step.completed_at),
        "updatedAt": timestamp(step.updated_at),
        "attempts": attempts,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StartBody {
    workflow_definition_id: Option<Uuid>,
    name: Option<String>,
    version: Option<String>,
    #[serde(default)]
    input: Value,
    idempotency_key: Option<String>,
}

async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<StartBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let definition = match (body.workflow_definition_id, body.name) {
        (Some(id), None) => DefinitionRef::Id(id),
        (None, Some(name)) => DefinitionRef::Name {
            name,
            version: body.version,
        },
        _ => {
            return Err(ApiError::validation(
                "name the definition",
                [json!({"path": "/workflowDefinitionId", "code": "required",
                        "message": "give exactly one of workflowDefinitionId or name"})],
            ));
        }
    };
    let header_key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| {
            ApiError::bad_request("bad_request", "the Idempotency-Key header must be text")
        })?;
    let (run, created) = state
        .runs
        .start(StartRun {
            definition,
            input: body.input,
            idempotency_key: header_key.or(body.idempotency_key),
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(run_json(&run))))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    workflow_definition_id: Option<Uuid>,
    name: Option<String>,
    parent_run_id: Option<Uuid>,
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
    limit: Option<u32>,
    offset: Option<u64>,
}

async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = params.limit.unwrap_or(20);
    if limit == 0 || limit > 200 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 200",
        ));
    }
    let status = match params.status.as_deref() {
        Some(text) => Some(RunStatus::parse(text).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("status must be one of PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, not '{text}'"),
            )
        })?),
        None => None,
    };
    let query = RunQuery {
        status,
        definition_id: params.workflow_definition_id,
        definition_name: params.name,
        parent_run_id: params.parent_run_id,
        created_after: params.created_after,
        created_before: params.created_before,
        limit,
        offset: params.offset.unwrap_or(0),
    };
    let page = state.runs.list(&query).await?;
    let items: Vec<Value> = page.items.iter().map(run_json).collect();
    Ok(Json(
        json!({"items": items, "totalCount": page.total, "limit": limit, "offset": query.offset}),
    ))
}

async fn fetch(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(run_json(&state.runs.get(id).await?)))
}

async fn steps(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let (steps, attempts) = state.runs.steps(id).await?;
    let items: Vec<Value> = steps.iter().map(|s| step_json(s, &attempts)).collect();
    Ok(Json(json!({"items": items, "totalCount": items.len()})))
}

async fn step(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let (step, attempts) = state.runs.step(id).await?;
    Ok(Json(step_json(&step, &attempts)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventParams {
    after: Option<i64>,
    limit: Option<u32>,
}

async fn events(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<Json<Value>, ApiError> {
    state.runs.get(id).await?;
    let limit = params.limit.unwrap_or(1000).clamp(1, 10_000);
    let events = state
        .store
        .list_events(params.after.unwrap_or(0), Some(id), limit)
        .await?;
    let items: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({"seq": e.seq, "runId": e.run_id, "stepId": e.step_id, "kind": e.kind,
                        "data": e.data, "createdAt": timestamp(e.created_at)})
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(run_json(&state.runs.cancel(id).await?)))
}

async fn retry(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(run_json(&state.runs.retry(id).await?)))
}

async fn signal(
    State(state): State<AppState>,
    ApiPath((id, name)): ApiPath<(Uuid, String)>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let payload: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("the signal payload is not JSON: {e}"),
            )
        })?
    };
    let signal = state.runs.signal(id, &name, payload).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({"id": signal.id, "runId": signal.run_id, "name": signal.name,
        "createdAt": timestamp(signal.created_at)}),
        ),
    ))
}
