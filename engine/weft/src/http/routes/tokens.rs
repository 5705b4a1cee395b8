//! API tokens: create (the secret is shown once), list, revoke. Admin only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;
use weft_store::TokenRecord;

use crate::auth::Role;
use crate::definitions::timestamp;
use crate::http::error::{ApiJson, ApiPath};
use crate::http::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tokens", get(list).post(create))
        .route("/tokens/{id}", delete(revoke))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
    role: String,
}

fn view(record: &TokenRecord) -> Value {
    json!({
        "id": record.id,
        "name": record.name,
        "role": record.role,
        "createdAt": timestamp(record.created_at),
    })
}

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

async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let tokens = state.store.list_tokens().await?;
    let items: Vec<Value> = tokens.iter().map(view).collect();
    Ok(Json(json!({"items": items, "totalCount": items.len()})))
}

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
