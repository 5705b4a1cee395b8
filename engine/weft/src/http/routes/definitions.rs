//! `/workflow-definitions`: the Go engine's endpoints, versioned, with one error format.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;
use weft_domain::{Bump, Version};
use weft_store::{DefinitionQuery, Filter};

use crate::definitions::{CreateOptions, Definition, DefinitionError, NextVersion, parse_filter};
use crate::http::error::{ApiJson, ApiPath, ApiQuery};
use crate::http::{ApiError, AppState};

/// Largest page a client may ask for.
const MAX_LIMIT: u32 = 200;
/// Page size when the client does not say.
const DEFAULT_LIMIT: u32 = 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/workflow-definitions", get(list).post(create))
        .route("/workflow-definitions/search", post(search))
        .route(
            "/workflow-definitions/{id}",
            get(fetch).put(update).patch(update).delete(remove),
        )
        .route(
            "/workflow-definitions/{id}/publish",
            post(publish).patch(publish),
        )
        .route(
            "/workflow-definitions/{id}/enable",
            post(enable).patch(enable),
        )
        .route(
            "/workflow-definitions/{id}/disable",
            post(disable).patch(disable),
        )
        .route("/workflow-definitions/{id}/versions", post(new_version))
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    draft: Option<bool>,
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    limit: Option<u32>,
    offset: Option<u64>,
    /// Exact name.
    name: Option<String>,
    /// Free-text search in the name.
    q: Option<String>,
    enabled: Option<bool>,
    draft: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageParams {
    limit: Option<u32>,
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

async fn fetch(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(json_of(&state.definitions.get(id).await?))
}

async fn update(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    Ok(json_of(&state.definitions.update(id, body).await?))
}

async fn remove(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.definitions.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn publish(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(json_of(&state.definitions.publish(id).await?))
}

async fn enable(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(json_of(&state.definitions.set_enabled(id, true).await?))
}

async fn disable(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(json_of(&state.definitions.set_enabled(id, false).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionParams {
    /// patch (default), minor or major.
    bump: Option<String>,
    /// An exact version instead of a bump.
    version: Option<String>,
}

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
