//! `/plugins`: upload (admin), list, get, download, delete (admin), invoke, reload the directory.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::http::error::{ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::http::{ApiError, AppState};
use crate::plugins::{InvokeReport, PluginError, PluginInfo, PluginLimits, ReloadReport};

pub fn routes(max_upload_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, upload).layer(DefaultBodyLimit::max(max_upload_bytes)))
        .routes(routes!(reload))
        .routes(routes!(versions))
        .routes(routes!(fetch, remove))
        .routes(routes!(download))
        .routes(routes!(invoke))
}

/// Plugin versions.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(dead_code, reason = "a schema only: the handler writes this shape")]
pub struct PluginList {
    items: Vec<PluginInfo>,
    total_count: u64,
}

const NAME: &str = "Plugin name";
const VERSION: &str = "Plugin version";

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

/// Upload a step plugin (a Wasm component); its name and version come from the component.
/// Optional per-plugin limits in the query.
#[utoipa::path(
    post,
    path = "/plugins",
    operation_id = "uploadPlugin",
    tag = "plugins",
    params(
        ("memoryBytes" = Option<u64>, Query, description = "Linear memory cap, bytes"),
        ("fuel" = Option<u64>, Query, description = "Fuel budget (about one unit per instruction)"),
        ("timeoutMs" = Option<u64>, Query, description = "Wall-clock time-out, milliseconds"),
        ("outputBytes" = Option<u64>, Query, description = "Output size cap, bytes"),
        ("logLines" = Option<u32>, Query, description = "Host log calls per invocation"),
    ),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The component (also accepted as application/octet-stream)"),
    responses(
        (status = 201, description = "Loaded", body = PluginInfo),
        (status = 200, description = "The same bytes were uploaded before", body = PluginInfo),
        (status = 400, description = "Empty body or invalid query", body = ErrorBody),
        (status = 409, description = "This name and version exist with other bytes, or come from the plugins directory", body = ErrorBody),
        (status = 413, description = "Larger than the upload limit", body = ErrorBody),
        (status = 415, description = "Not application/wasm", body = ErrorBody),
        (status = 422, description = "Not a usable plugin (`invalid_plugin`)", body = ErrorBody),
    )
)]
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

/// Every loaded plugin version.
#[utoipa::path(
    get,
    path = "/plugins",
    operation_id = "listPlugins",
    tag = "plugins",
    responses((status = 200, description = "The plugins", body = PluginList))
)]
async fn list(State(state): State<AppState>) -> Json<Value> {
    let items = state.plugins.list();
    Json(json!({"items": items, "totalCount": items.len()}))
}

/// The versions of one plugin.
#[utoipa::path(
    get,
    path = "/plugins/{name}",
    operation_id = "listPluginVersions",
    tag = "plugins",
    params(("name" = String, Path, description = NAME)),
    responses(
        (status = 200, description = "Its versions", body = PluginList),
        (status = 404, description = "No plugin with this name", body = ErrorBody),
    )
)]
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

/// One plugin version.
#[utoipa::path(
    get,
    path = "/plugins/{name}/{version}",
    operation_id = "getPlugin",
    tag = "plugins",
    params(("name" = String, Path, description = NAME), ("version" = String, Path, description = VERSION)),
    responses(
        (status = 200, description = "The plugin", body = PluginInfo),
        (status = 404, description = "No such plugin version", body = ErrorBody),
    )
)]
async fn fetch(
    State(state): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.plugins.get(&name, &version)?)))
}

/// Download a plugin version's component.
#[utoipa::path(
    get,
    path = "/plugins/{name}/{version}/wasm",
    operation_id = "downloadPlugin",
    tag = "plugins",
    params(("name" = String, Path, description = NAME), ("version" = String, Path, description = VERSION)),
    responses(
        (status = 200, description = "The component", content_type = "application/wasm", body = Vec<u8>),
        (status = 404, description = "No such plugin version", body = ErrorBody),
    )
)]
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

/// Delete an uploaded plugin version that no definition uses.
#[utoipa::path(
    delete,
    path = "/plugins/{name}/{version}",
    operation_id = "deletePlugin",
    tag = "plugins",
    params(("name" = String, Path, description = NAME), ("version" = String, Path, description = VERSION)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such plugin version", body = ErrorBody),
        (status = 409, description = "In use (`plugin_in_use`) or from the plugins directory (`managed_by_directory`)", body = ErrorBody),
    )
)]
async fn remove(
    State(state): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.plugins.delete(&name, &version).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A test invocation of a plugin.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InvokeRequest {
    /// The step input.
    #[serde(default)]
    input: Value,
    /// Limits for this invocation (unset: the plugin's, else the server's).
    #[serde(default)]
    limits: PluginLimits,
}

/// Run a plugin version once on an input, outside any workflow.
#[utoipa::path(
    post,
    path = "/plugins/{name}/{version}/invoke",
    operation_id = "invokePlugin",
    tag = "plugins",
    params(("name" = String, Path, description = NAME), ("version" = String, Path, description = VERSION)),
    request_body = InvokeRequest,
    responses(
        (status = 200, description = "The outcome (a failed step is a 200 with `status: failed`)", body = InvokeReport),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "No such plugin version", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Unknown fields in the body", body = ErrorBody),
    )
)]
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

/// Reload the plugins directory now (it is also watched).
#[utoipa::path(
    post,
    path = "/plugins/reload",
    operation_id = "reloadPlugins",
    tag = "plugins",
    responses((status = 200, description = "What changed", body = ReloadReport))
)]
async fn reload(State(state): State<AppState>) -> Json<Value> {
    Json(json!(state.plugins.reload_directory().await))
}
