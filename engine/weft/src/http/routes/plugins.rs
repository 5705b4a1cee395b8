//! `/plugins`: upload (admin), list, get, download, delete (admin), invoke, reload the directory.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::http::error::{ApiJson, ApiPath, ApiQuery};
use crate::http::{ApiError, AppState};
use crate::plugins::{PluginError, PluginLimits};

pub fn routes(max_upload_bytes: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/plugins",
            get(list)
                .post(upload)
                .layer(DefaultBodyLimit::max(max_upload_bytes)),
        )
        .route("/plugins/reload", post(reload))
        .route("/plugins/{name}", get(versions))
        .route("/plugins/{name}/{version}", get(fetch).delete(remove))
        .route("/plugins/{name}/{version}/wasm", get(download))
        .route("/plugins/{name}/{version}/invoke", post(invoke))
}

impl From<PluginError> for ApiError {
    fn from(error: PluginError) -> Self {
        let message = error.to_string();
        match error {
            PluginError::Load(load) => {
                let code = load.code();
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_plugin", message)
                    .with_details([json!({"code": code, "message": load.to_string()})])
            }
            PluginError::NotFound(_) => ApiError::not_found(message),
            PluginError::VersionExists { .. } => ApiError::conflict("version_exists", message),
            PluginError::InUse { .. } => ApiError::conflict("plugin_in_use", message),
            PluginError::FromDirectory(_) => ApiError::conflict("managed_by_directory", message),
            PluginError::Invoke(e) => ApiError::internal(&e),
            PluginError::Store(e) => e.into(),
        }
    }
}

async fn upload(
    State(state): State<AppState>,
    ApiQuery(limits): ApiQuery<PluginLimits>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the component is larger than the server's upload limit (--plugin-max-bytes)",
            )
        } else {
            ApiError::bad_request("invalid_body", rejection.body_text())
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/wasm");
    if !(content_type.starts_with("application/wasm")
        || content_type.starts_with("application/octet-stream"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "upload the raw component with Content-Type: application/wasm",
        ));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the request body is empty",
        ));
    }
    let (info, created) = state.plugins.upload(&body, limits).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!(info))))
}

async fn list(State(state): State<AppState>) -> Json<Value> {
    let items = state.plugins.list();
    Json(json!({"items": items, "totalCount": items.len()}))
}

async fn versions(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let items: Vec<_> = state
        .plugins
        .list()
        .into_iter()
        .filter(|p| p.name == name)
        .collect();
    if items.is_empty() {
        return Err(ApiError::not_found(format!("no plugin named '{name}'")));
    }
    Ok(Json(json!({"items": items, "totalCount": items.len()})))
}

async fn fetch(
    State(state): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.plugins.get(&name, &version)?)))
}

async fn download(
    State(state): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let wasm = state.plugins.wasm(&name, &version).await?;
    let mut response = wasm.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/wasm"),
    );
    if let Ok(disposition) =
        HeaderValue::from_str(&format!("attachment; filename=\"{name}-{version}.wasm\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}

async fn remove(
    State(state): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.plugins.delete(&name, &version).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InvokeRequest {
    #[serde(default)]
    input: Value,
    #[serde(default)]
    limits: PluginLimits,
}

async fn invoke(
    State(state): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<InvokeRequest>,
) -> Result<Json<Value>, ApiError> {
    // Dropping the request (client gone) cancels the invocation.
    let cancel = CancellationToken::new();
    let _guard = cancel.clone().drop_guard();
    let report = state
        .plugins
        .invoke(&name, &version, &request.input, &request.limits, cancel)
        .await?;
    Ok(Json(json!(report)))
}

async fn reload(State(state): State<AppState>) -> Json<Value> {
    Json(json!(state.plugins.reload_directory().await))
}
