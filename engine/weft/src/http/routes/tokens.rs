//! API tokens: create (the secret is shown once), list, revoke. Admin only.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use weft_store::TokenRecord;

use crate::auth::Role;
use crate::definitions::timestamp;
use crate::http::error::{ApiJson, ApiPath, ErrorBody};
use crate::http::{ApiError, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

/// A new API token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    /// Unique, 1 to 100 characters.
    name: String,
    /// `read`, `write` or `admin`.
    #[schema(example = "read")]
    role: String,
}

/// An API token (never its secret, except once at creation).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(dead_code, reason = "a schema only: view writes this shape")]
pub struct Token {
    id: Uuid,
    name: String,
    /// `read`, `write` or `admin`.
    role: String,
    created_at: DateTime<Utc>,
}

/// A token just created, with its secret (shown this once).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(dead_code, reason = "a schema only: the handler writes this shape")]
pub struct IssuedToken {
    #[serde(flatten)]
    record: Token,
    /// The bearer secret.
    token: String,
}

/// API tokens.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(dead_code, reason = "a schema only: the handler writes this shape")]
pub struct TokenList {
    items: Vec<Token>,
    total_count: u64,
}

fn view(record: &TokenRecord) -> Value {
    json!({
        "id": record.id,
        "name": record.name,
        "role": record.role,
        "createdAt": timestamp(record.created_at),
    })
}

/// Create an API token (admin).
#[utoipa::path(
    post,
    path = "/tokens",
    operation_id = "createToken",
    tag = "tokens",
    request_body = CreateToken,
    responses(
        (status = 201, description = "Created; the secret is in `token`", body = IssuedToken),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 409, description = "A token with this name exists", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid name or role", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::validation(
            "invalid token",
            [
                json!({"path": "/name", "code": "invalid_value", "message": "name must be 1 to 100 characters"}),
            ],
        ));
    }
    let role: Role = body.role.parse().map_err(|message: String| {
        ApiError::validation(
            "invalid token",
            [json!({"path": "/role", "code": "invalid_value", "message": message})],
        )
    })?;
    let issued = state.auth.issue(name, role).await.map_err(|e| match e {
        weft_store::StoreError::Conflict(_) => {
            ApiError::conflict("conflict", format!("a token named '{name}' already exists"))
        }
        other => other.into(),
    })?;
    let mut body = view(&issued.record);
    body["token"] = Value::String(issued.plaintext);
    Ok((StatusCode::CREATED, Json(body)))
}

/// API tokens (admin).
#[utoipa::path(
    get,
    path = "/tokens",
    operation_id = "listTokens",
    tag = "tokens",
    responses((status = 200, description = "The tokens", body = TokenList))
)]
async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let tokens = state.store.list_tokens().await?;
    let items: Vec<Value> = tokens.iter().map(view).collect();
    Ok(Json(json!({"items": items, "totalCount": items.len()})))
}

/// Revoke an API token (admin).
#[utoipa::path(
    delete,
    path = "/tokens/{id}",
    operation_id = "revokeToken",
    tag = "tokens",
    params(("id" = Uuid, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such token", body = ErrorBody),
    )
)]
async fn revoke(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_token(id).await.map_err(|e| match e {
        weft_store::StoreError::NotFound => ApiError::not_found(format!("no token with id {id}")),
        other => other.into(),
    })?;
    Ok(StatusCode::NO_CONTENT)
}
