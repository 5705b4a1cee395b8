//! `/workflow-instances` and `/step-instances`: start, watch, cancel, retry, signal runs.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use weft_store::{AttemptRecord, RunQuery, RunRecord, RunStatus, StepRecord};

use crate::definitions::timestamp;
use crate::http::error::{ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::http::{ApiError, AppState};
use crate::runs::{DefinitionRef, RunError, StartRun};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, start))
        .routes(routes!(fetch))
        .routes(routes!(steps))
        .routes(routes!(events))
        .routes(routes!(cancel))
        .routes(routes!(retry))
        .routes(routes!(signal))
        .routes(routes!(step))
}

/// The status of a run, a step or an attempt.
#[derive(ToSchema)]
#[serde(rename_all = "UPPERCASE")]
#[schema(as = Status)]
#[expect(dead_code, reason = "a schema only: RunStatus::as_str writes it")]
enum StatusSchema {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// A workflow run (the Go engine's workflow instance, plus Weft's fields).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(dead_code, reason = "a schema only: run_json writes this shape")]
pub struct Run {
    id: Uuid,
    workflow_definition_id: Uuid,
    definition_name: String,
    definition_version: String,
    status: StatusSchema,
    input: Value,
    /// The run output, once completed.
    output: Option<Value>,
    /// Why it failed: `{code, message, ...}`.
    error: Option<Value>,
    /// `error.message`, for Go-engine clients.
    error_message: Option<String>,
    idempotency_key: Option<String>,
    /// For a child run (a `workflow` step): the parent run.
    parent_run_id: Option<Uuid>,
    /// For a child run: the parent's step instance.
    parent_step_instance_id: Option<Uuid>,
    /// Nesting depth (0 for a top-level run).
    depth: u32,
    deadline_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

/// A page of runs.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(dead_code, reason = "a schema only: the handler writes this shape")]
pub struct RunPage {
    items: Vec<Run>,
    total_count: u64,
    limit: u32,
    offset: u64,
}

/// One attempt of a step.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(dead_code, reason = "a schema only: step_json writes this shape")]
pub struct StepAttempt {
    attempt: u32,
    status: StatusSchema,
    input: Option<Value>,
    output: Option<Value>,
    error: Option<Value>,
    /// `wasm` or `agent`.
    runner: Option<String>,
    /// The replica (or agent) that ran it.
    replica: Option<String>,
    started_at: DateTime<Utc>,
    completed_at: DateTime<Utc>,
    duration_ms: Option<f64>,
}

/// A step instance of a run, with its attempts.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(dead_code, reason = "a schema only: step_json writes this shape")]
pub struct StepInstance {
    id: Uuid,
    workflow_instance_id: Uuid,
    /// The `stepDefinitionId`.
    step_id: String,
    status: StatusSchema,
    attempt: u32,
    input: Option<Value>,
    output: Option<Value>,
    error: Option<Value>,
    error_message: Option<String>,
    runner: Option<String>,
    /// What a waiting step waits for.
    waiting_for: Option<Value>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    attempts: Vec<StepAttempt>,
}

/// The step instances of a run.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(dead_code, reason = "a schema only: the handler writes this shape")]
pub struct StepList {
    items: Vec<StepInstance>,
    total_count: u64,
}

/// One event of a run's history.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(dead_code, reason = "a schema only: the handler writes this shape")]
pub struct RunEvent {
    /// Increasing; pass the last one as `after` to read on.
    seq: i64,
    run_id: Uuid,
    step_id: Option<String>,
    /// `run_started`, `step_completed`, ...
    kind: String,
    data: Value,
    created_at: DateTime<Utc>,
}

/// A page of a run's events.
#[derive(ToSchema)]
#[expect(dead_code, reason = "a schema only: the handler writes this shape")]
pub struct RunEventList {
    items: Vec<RunEvent>,
}

/// A signal posted to a run.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(dead_code, reason = "a schema only: the handler writes this shape")]
pub struct Signal {
    id: Uuid,
    run_id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
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

/// Start a run of a definition named by id, or by name (and version or requirement).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = StartRun)]
struct StartBody {
    /// The definition's id; exclusive with `name`.
    workflow_definition_id: Option<Uuid>,
    /// The definition's name; exclusive with `workflowDefinitionId`.
    name: Option<String>,
    /// With `name`: an exact version or a semver requirement (default: the latest published).
    version: Option<String>,
    /// The run input.
    #[serde(default)]
    input: Value,
    /// Starting twice with one key starts one run; the `Idempotency-Key` header wins.
    idempotency_key: Option<String>,
}

/// Start a run.
#[utoipa::path(
    post,
    path = "/workflow-instances",
    operation_id = "startRun",
    tag = "runs",
    params(("Idempotency-Key" = Option<String>, Header, description = "Starting twice with one key starts one run")),
    request_body = StartBody,
    responses(
        (status = 201, description = "Started", body = Run),
        (status = 200, description = "A run with this idempotency key exists: that run", body = Run),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 404, description = "No such definition", body = ErrorBody),
        (status = 409, description = "The definition cannot run (draft or disabled: `not_runnable`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid input: every issue in `details`", body = ErrorBody),
    )
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// PENDING, RUNNING, COMPLETED, FAILED or CANCELLED.
    status: Option<String>,
    workflow_definition_id: Option<Uuid>,
    /// The definition's name.
    name: Option<String>,
    /// Children of this run.
    parent_run_id: Option<Uuid>,
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
    /// Page size, 1 to 200 (default 20).
    limit: Option<u32>,
    /// Items to skip.
    offset: Option<u64>,
}

/// List runs, newest first, with filters.
#[utoipa::path(
    get,
    path = "/workflow-instances",
    operation_id = "listRuns",
    tag = "runs",
    params(ListParams),
    responses(
        (status = 200, description = "A page of runs", body = RunPage),
        (status = 400, description = "Invalid query", body = ErrorBody),
    )
)]
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

/// One run.
#[utoipa::path(
    get,
    path = "/workflow-instances/{id}",
    operation_id = "getRun",
    tag = "runs",
    params(("id" = Uuid, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = Run),
        (status = 400, description = "Malformed id or query", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    )
)]
async fn fetch(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(run_json(&state.runs.get(id).await?)))
}

/// A run's step instances, with their attempts.
#[utoipa::path(
    get,
    path = "/workflow-instances/{id}/steps",
    operation_id = "listRunSteps",
    tag = "runs",
    params(("id" = Uuid, Path, description = "Run id")),
    responses(
        (status = 200, description = "The steps", body = StepList),
        (status = 400, description = "Malformed id or query", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    )
)]
async fn steps(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let (steps, attempts) = state.runs.steps(id).await?;
    let items: Vec<Value> = steps.iter().map(|s| step_json(s, &attempts)).collect();
    Ok(Json(json!({"items": items, "totalCount": items.len()})))
}

/// One step instance, with its attempts.
#[utoipa::path(
    get,
    path = "/step-instances/{id}",
    operation_id = "getStepInstance",
    tag = "runs",
    params(("id" = Uuid, Path, description = "Step instance id")),
    responses(
        (status = 200, description = "The step", body = StepInstance),
        (status = 400, description = "Malformed id or query", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    )
)]
async fn step(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let (step, attempts) = state.runs.step(id).await?;
    Ok(Json(step_json(&step, &attempts)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventParams {
    /// Only events with a greater `seq` (default 0).
    after: Option<i64>,
    /// At most this many, 1 to 10000 (default 1000).
    limit: Option<u32>,
}

/// A run's history, oldest first (poll with `after`).
#[utoipa::path(
    get,
    path = "/workflow-instances/{id}/events",
    operation_id = "listRunEvents",
    tag = "runs",
    params(("id" = Uuid, Path, description = "Run id"), EventParams),
    responses(
        (status = 200, description = "The events", body = RunEventList),
        (status = 400, description = "Malformed id or query", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    )
)]
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

/// Cancel a run and its children.
#[utoipa::path(
    post,
    path = "/workflow-instances/{id}/cancel",
    operation_id = "cancelRun",
    tag = "runs",
    params(("id" = Uuid, Path, description = "Run id")),
    responses(
        (status = 200, description = "The cancelled run", body = Run),
        (status = 400, description = "Malformed id or query", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run has ended (`invalid_state`)", body = ErrorBody),
    )
)]
async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(run_json(&state.runs.cancel(id).await?)))
}

/// Retry a failed run from its failed steps.
#[utoipa::path(
    post,
    path = "/workflow-instances/{id}/retry",
    operation_id = "retryRun",
    tag = "runs",
    params(("id" = Uuid, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run, running again", body = Run),
        (status = 400, description = "Malformed id or query", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run has not failed (`invalid_state`)", body = ErrorBody),
    )
)]
async fn retry(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(run_json(&state.runs.retry(id).await?)))
}

/// Post a named signal (any JSON payload, or none) to a run.
#[utoipa::path(
    post,
    path = "/workflow-instances/{id}/signals/{name}",
    operation_id = "signalRun",
    tag = "runs",
    request_body(content = Option<Value>, description = "The payload: any JSON, or empty"),
    params(("id" = Uuid, Path, description = "Run id"), ("name" = String, Path, description = "Signal name")),
    responses(
        (status = 202, description = "Accepted", body = Signal),
        (status = 400, description = "Malformed id or query", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run has ended (`invalid_state`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    )
)]
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
