//! `/workflow-definitions`: the Go engine's endpoints, versioned, with one error format.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use weft_domain::{Bump, DefinitionSpec, Version};
use weft_store::{DefinitionQuery, Filter};

use crate::definitions::{CreateOptions, Definition, DefinitionError, NextVersion, parse_filter};
use crate::http::error::{ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::http::{ApiError, AppState};

/// Largest page a client may ask for.
const MAX_LIMIT: u32 = 200;
/// Page size when the client does not say.
const DEFAULT_LIMIT: u32 = 20;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(search))
        .routes(routes!(fetch, replace, patch, remove))
        .routes(routes!(publish, publish_patch))
        .routes(routes!(enable, enable_patch))
        .routes(routes!(disable, disable_patch))
        .routes(routes!(new_version))
}

/// A definition body as `POST /workflow-definitions` takes it: the document, plus the record
/// fields `version`, `isDraft` and `isEnabled`. Unknown fields are ignored.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(
    dead_code,
    reason = "a schema only: the handler reads the body as JSON"
)]
pub struct DefinitionBody {
    #[serde(flatten)]
    spec: DefinitionSpec,
    /// Semantic version (default `0.1.0`).
    #[schema(example = "1.0.0")]
    version: Option<String>,
    /// Create as a draft (default true); the `draft` query parameter wins.
    is_draft: Option<bool>,
    /// Whether runs may be started from it once published (default false).
    is_enabled: Option<bool>,
}

/// A change to a draft: every top-level field present replaces the stored one (a full document
/// replaces everything). Record fields other than `version` are ignored.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(
    dead_code,
    reason = "a schema only: the handler reads the body as JSON"
)]
pub struct DefinitionPatch {
    name: Option<String>,
    description: Option<String>,
    input_parameters: Option<Vec<weft_domain::ParameterDefinition>>,
    output_parameters: Option<Vec<weft_domain::OutputParameterDefinition>>,
    steps: Option<Vec<weft_domain::StepDefinition>>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    timeout_seconds: Option<u64>,
    max_concurrent_runs: Option<u32>,
    /// A new semantic version for the draft.
    version: Option<String>,
}

/// A stored workflow definition: the document plus its record fields.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(
    dead_code,
    reason = "a schema only: Definition::to_json writes this shape"
)]
pub struct WorkflowDefinition {
    #[serde(flatten)]
    spec: DefinitionSpec,
    id: Uuid,
    /// Semantic version.
    version: String,
    /// A draft can change; a published version cannot.
    is_draft: bool,
    /// Whether runs may be started from it.
    is_enabled: bool,
    /// RFC 3339, UTC.
    created_at: chrono::DateTime<chrono::Utc>,
    /// RFC 3339, UTC.
    updated_at: chrono::DateTime<chrono::Utc>,
}

/// A page of definitions.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(dead_code, reason = "a schema only: the handler writes this shape")]
pub struct DefinitionPage {
    items: Vec<WorkflowDefinition>,
    /// Matching definitions in all pages.
    total_count: u64,
    limit: u32,
    offset: u64,
}

/// A search expression (the Go engine's `/search` body): an object with `and`, `or`, `not` or
/// `compare`; the first non-null of these, in that order, wins; `{}` matches everything.
#[derive(ToSchema)]
#[expect(dead_code, reason = "a schema only: the store parses the expression")]
pub struct SearchExpression {
    #[schema(no_recursion)]
    and: Option<Vec<SearchExpression>>,
    #[schema(no_recursion)]
    or: Option<Vec<SearchExpression>>,
    #[schema(no_recursion)]
    not: Option<Box<SearchExpression>>,
    compare: Option<Comparison>,
}

/// One comparison of a search expression.
#[derive(ToSchema)]
#[expect(dead_code, reason = "a schema only: the store parses the expression")]
pub struct Comparison {
    /// `name`, `description`, `version`, `isEnabled`, `isDraft`, `id`, `createdAt`, `updatedAt`.
    #[schema(example = "name")]
    field: String,
    /// `=`, `!=`, `<`, `<=`, `>`, `>=`, `contains`, ...
    #[schema(example = "contains")]
    operator: String,
    /// Typed per field.
    value: Value,
}

impl From<DefinitionError> for ApiError {
    fn from(error: DefinitionError) -> Self {
        let message = error.to_string();
        match error {
            DefinitionError::NotFound(_) => ApiError::not_found(message),
            DefinitionError::Invalid(issues) => ApiError::validation(message, issues),
            DefinitionError::NotAnObject => ApiError::bad_request("invalid_body", message),
            DefinitionError::Immutable { .. } => ApiError::conflict("immutable", message),
            DefinitionError::AlreadyPublished { .. } => {
                ApiError::conflict("already_published", message)
            }
            DefinitionError::Conflict(_) => ApiError::conflict("conflict", message),
            DefinitionError::InUse(_) => ApiError::conflict("definition_in_use", message),
            DefinitionError::Store(e) => e.into(),
        }
    }
}

fn json_of(definition: &Definition) -> Json<Value> {
    Json(definition.to_json())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CreateParams {
    /// Create as a draft (true) or published (false); wins over the body's `isDraft`.
    draft: Option<bool>,
}

/// Create a workflow definition (validated; a draft unless said otherwise).
#[utoipa::path(
    post,
    path = "/workflow-definitions",
    operation_id = "createDefinition",
    tag = "definitions",
    params(CreateParams),
    request_body = DefinitionBody,
    responses(
        (status = 201, description = "Created", body = WorkflowDefinition,
            headers(("Location" = String, description = "The new definition's URL"))),
        (status = 400, description = "Malformed JSON or query", body = ErrorBody),
        (status = 409, description = "This name and version exist", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid definition: every issue in `details`", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<CreateParams>,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, HeaderMap, Json<Value>), ApiError> {
    let definition = state
        .definitions
        .create(
            body,
            CreateOptions {
                draft: params.draft,
            },
        )
        .await?;
    let mut headers = HeaderMap::new();
    if let Ok(location) =
        HeaderValue::from_str(&format!("/api/v1/workflow-definitions/{}", definition.id()))
    {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, json_of(&definition)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Page size, 1 to 200 (default 20).
    limit: Option<u32>,
    /// Items to skip.
    offset: Option<u64>,
    /// Exact name.
    name: Option<String>,
    /// Free-text search in the name.
    q: Option<String>,
    /// Only enabled (true) or disabled (false) definitions.
    enabled: Option<bool>,
    /// Only drafts (true) or published versions (false).
    draft: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PageParams {
    /// Page size, 1 to 200 (default 20).
    limit: Option<u32>,
    /// Items to skip.
    offset: Option<u64>,
}

fn page_bounds(limit: Option<u32>, offset: Option<u64>) -> Result<(u32, u64), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    Ok((limit, offset.unwrap_or(0)))
}

/// List workflow definitions, newest first, with filters.
#[utoipa::path(
    get,
    path = "/workflow-definitions",
    operation_id = "listDefinitions",
    tag = "definitions",
    params(ListParams),
    responses(
        (status = 200, description = "A page of definitions", body = DefinitionPage),
        (status = 400, description = "Invalid query", body = ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let (limit, offset) = page_bounds(params.limit, params.offset)?;
    let query = DefinitionQuery {
        name: params.name,
        name_contains: params.q.filter(|q| !q.trim().is_empty()),
        enabled: params.enabled,
        draft: params.draft,
        filter: None,
        limit,
        offset,
    };
    page(&state, query).await
}

/// Search workflow definitions with an expression.
#[utoipa::path(
    post,
    path = "/workflow-definitions/search",
    operation_id = "searchDefinitions",
    tag = "definitions",
    params(PageParams),
    request_body = SearchExpression,
    responses(
        (status = 200, description = "A page of definitions", body = DefinitionPage),
        (status = 400, description = "Malformed JSON or query", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid expression", body = ErrorBody),
    )
)]
async fn search(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let (limit, offset) = page_bounds(params.limit, params.offset)?;
    let filter: Filter = parse_filter(&body).map_err(|e| {
        ApiError::validation(
            "invalid search expression",
            [json!({"path": e.path, "code": "invalid_expression", "message": e.message})],
        )
    })?;
    let query = DefinitionQuery {
        name: None,
        name_contains: None,
        enabled: None,
        draft: None,
        filter: Some(filter),
        limit,
        offset,
    };
    page(&state, query).await
}

async fn page(state: &AppState, query: DefinitionQuery) -> Result<Json<Value>, ApiError> {
    let page = state.definitions.list(&query).await?;
    let items: Vec<Value> = page.items.iter().map(Definition::to_json).collect();
    Ok(Json(json!({
        "items": items,
        "totalCount": page.total,
        "limit": query.limit,
        "offset": query.offset,
    })))
}

/// One workflow definition.
#[utoipa::path(
    get,
    path = "/workflow-definitions/{id}",
    operation_id = "getDefinition",
    tag = "definitions",
    params(("id" = Uuid, Path, description = "Definition id")),
    responses(
        (status = 200, description = "The definition", body = WorkflowDefinition),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such definition", body = ErrorBody),
    )
)]
async fn fetch(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(json_of(&state.definitions.get(id).await?))
}

/// Change a draft: every top-level field of the body replaces the stored one.
#[utoipa::path(
    put,
    path = "/workflow-definitions/{id}",
    operation_id = "replaceDefinition",
    tag = "definitions",
    params(("id" = Uuid, Path, description = "Definition id")),
    request_body = DefinitionPatch,
    responses(
        (status = 200, description = "The changed draft", body = WorkflowDefinition),
        (status = 400, description = "Malformed JSON or id", body = ErrorBody),
        (status = 404, description = "No such definition", body = ErrorBody),
        (status = 409, description = "Published (`immutable`), or the name and version exist", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid definition", body = ErrorBody),
    )
)]
async fn replace(
    state: State<AppState>,
    id: ApiPath<Uuid>,
    body: ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    update(state, id, body).await
}

/// Change a draft (same as `PUT`).
#[utoipa::path(
    patch,
    path = "/workflow-definitions/{id}",
    operation_id = "patchDefinition",
    tag = "definitions",
    params(("id" = Uuid, Path, description = "Definition id")),
    request_body = DefinitionPatch,
    responses(
        (status = 200, description = "The changed draft", body = WorkflowDefinition),
        (status = 400, description = "Malformed JSON or id", body = ErrorBody),
        (status = 404, description = "No such definition", body = ErrorBody),
        (status = 409, description = "Published (`immutable`), or the name and version exist", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid definition", body = ErrorBody),
    )
)]
async fn patch(
    state: State<AppState>,
    id: ApiPath<Uuid>,
    body: ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    update(state, id, body).await
}

async fn update(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    Ok(json_of(&state.definitions.update(id, body).await?))
}

/// Delete a definition version that no run uses.
#[utoipa::path(
    delete,
    path = "/workflow-definitions/{id}",
    operation_id = "deleteDefinition",
    tag = "definitions",
    params(("id" = Uuid, Path, description = "Definition id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such definition", body = ErrorBody),
        (status = 409, description = "Runs use it (`definition_in_use`)", body = ErrorBody),
    )
)]
async fn remove(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.definitions.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Publish a draft: validated again, then frozen.
#[utoipa::path(
    post,
    path = "/workflow-definitions/{id}/publish",
    operation_id = "publishDefinition",
    tag = "definitions",
    params(("id" = Uuid, Path, description = "Definition id")),
    responses(
        (status = 200, description = "The definition", body = WorkflowDefinition),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such definition", body = ErrorBody),
        (status = 409, description = "Already published", body = ErrorBody),
        (status = 422, description = "Invalid definition (references included)", body = ErrorBody),
    )
)]
async fn publish(state: State<AppState>, id: ApiPath<Uuid>) -> Result<Json<Value>, ApiError> {
    publish_definition(state, id).await
}

/// Publish a draft: validated again, then frozen. (same as `POST`).
#[utoipa::path(
    patch,
    path = "/workflow-definitions/{id}/publish",
    operation_id = "publishDefinitionPatch",
    tag = "definitions",
    params(("id" = Uuid, Path, description = "Definition id")),
    responses(
        (status = 200, description = "The definition", body = WorkflowDefinition),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such definition", body = ErrorBody),
        (status = 409, description = "Already published", body = ErrorBody),
        (status = 422, description = "Invalid definition (references included)", body = ErrorBody),
    )
)]
async fn publish_patch(state: State<AppState>, id: ApiPath<Uuid>) -> Result<Json<Value>, ApiError> {
    publish_definition(state, id).await
}

async fn publish_definition(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(json_of(&state.definitions.publish(id).await?))
}

/// Allow runs of a definition.
#[utoipa::path(
    post,
    path = "/workflow-definitions/{id}/enable",
    operation_id = "enableDefinition",
    tag = "definitions",
    params(("id" = Uuid, Path, description = "Definition id")),
    responses(
        (status = 200, description = "The definition", body = WorkflowDefinition),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such definition", body = ErrorBody),
    )
)]
async fn enable(state: State<AppState>, id: ApiPath<Uuid>) -> Result<Json<Value>, ApiError> {
    enable_definition(state, id).await
}

/// Allow runs of a definition. (same as `POST`).
#[utoipa::path(
    patch,
    path = "/workflow-definitions/{id}/enable",
    operation_id = "enableDefinitionPatch",
    tag = "definitions",
    params(("id" = Uuid, Path, description = "Definition id")),
    responses(
        (status = 200, description = "The definition", body = WorkflowDefinition),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such definition", body = ErrorBody),
    )
)]
async fn enable_patch(state: State<AppState>, id: ApiPath<Uuid>) -> Result<Json<Value>, ApiError> {
    enable_definition(state, id).await
}

async fn enable_definition(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(json_of(&state.definitions.set_enabled(id, true).await?))
}

/// Refuse new runs of a definition.
#[utoipa::path(
    post,
    path = "/workflow-definitions/{id}/disable",
    operation_id = "disableDefinition",
    tag = "definitions",
    params(("id" = Uuid, Path, description = "Definition id")),
    responses(
        (status = 200, description = "The definition", body = WorkflowDefinition),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such definition", body = ErrorBody),
    )
)]
async fn disable(state: State<AppState>, id: ApiPath<Uuid>) -> Result<Json<Value>, ApiError> {
    disable_definition(state, id).await
}

/// Refuse new runs of a definition. (same as `POST`).
#[utoipa::path(
    patch,
    path = "/workflow-definitions/{id}/disable",
    operation_id = "disableDefinitionPatch",
    tag = "definitions",
    params(("id" = Uuid, Path, description = "Definition id")),
    responses(
        (status = 200, description = "The definition", body = WorkflowDefinition),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such definition", body = ErrorBody),
    )
)]
async fn disable_patch(state: State<AppState>, id: ApiPath<Uuid>) -> Result<Json<Value>, ApiError> {
    disable_definition(state, id).await
}

async fn disable_definition(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(json_of(&state.definitions.set_enabled(id, false).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct VersionParams {
    /// patch (default), minor or major.
    #[param(pattern = "^(patch|minor|major)$")]
    bump: Option<String>,
    /// An exact version instead of a bump.
    version: Option<String>,
}

/// Create the next version of a definition: a draft copying the source's document, or the
/// given body's.
#[utoipa::path(
    post,
    path = "/workflow-definitions/{id}/versions",
    operation_id = "createDefinitionVersion",
    tag = "definitions",
    params(("id" = Uuid, Path, description = "The source definition's id"), VersionParams),
    request_body(content = Option<DefinitionPatch>, description = "Optional: fields replacing the source's"),
    responses(
        (status = 201, description = "The new draft", body = WorkflowDefinition),
        (status = 400, description = "Malformed JSON, id or query", body = ErrorBody),
        (status = 404, description = "No such definition", body = ErrorBody),
        (status = 409, description = "That version exists", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Invalid definition", body = ErrorBody),
    )
)]
async fn new_version(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<VersionParams>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let next = match (params.version, params.bump.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give either version or bump, not both",
            ));
        }
        (Some(v), None) => NextVersion::Exact(v.parse::<Version>().map_err(|e| {
            ApiError::bad_request(
                "invalid_query",
                format!("'{v}' is not a semantic version: {e}"),
            )
        })?),
        (None, None) | (None, Some("patch")) => NextVersion::Bump(Bump::Patch),
        (None, Some("minor")) => NextVersion::Bump(Bump::Minor),
        (None, Some("major")) => NextVersion::Bump(Bump::Major),
        (None, Some(other)) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("bump must be patch, minor or major, not '{other}'"),
            ));
        }
    };
    // The body is optional: without one, the new version copies the source's spec.
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("the request body is not valid JSON: {e}"),
            )
        })?;
        Some(value).filter(|v| !v.is_null())
    };
    let definition = state.definitions.new_version(id, next, body).await?;
    Ok((StatusCode::CREATED, json_of(&definition)))
}
