//! The one error shape of the HTTP API:
//! `{"error": {"code": "not_found", "message": "...", "details": [...]}}`.
//!
//! `code` is stable (clients branch on it); `message` is for people; `details` lists every
//! problem found (validation issues with their JSON path) and is omitted when empty.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// The error body, as the OpenAPI document describes it (the same shape [`ApiError`] writes).
#[derive(utoipa::ToSchema)]
#[schema(as = Error)]
#[expect(dead_code, reason = "a schema only: ApiError writes this shape")]
pub struct ErrorBody {
    error: ErrorInfo,
}

/// What went wrong.
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "a schema only: ApiError writes this shape")]
pub struct ErrorInfo {
    /// Stable, snake_case; clients branch on it (`not_found`, `validation_failed`,
    /// `unauthorized`, `forbidden`, `conflict`, `immutable`, `invalid_json`, ...).
    #[schema(example = "not_found")]
    code: String,
    /// For people.
    message: String,
    /// Every problem found (validation issues with the JSON Pointer of the field at fault);
    /// absent when there is none.
    #[schema(required = false)]
    details: Vec<ErrorDetail>,
}

/// One problem of a request.
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "a schema only: ApiError writes this shape")]
pub struct ErrorDetail {
    /// JSON Pointer of the field at fault (`""` for the whole body), when the problem has one.
    #[schema(required = false)]
    path: String,
    /// Stable, snake_case kind of problem.
    code: String,
    /// For people.
    message: String,
}

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Vec<Value>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    details: &'a [Value],
}

impl ApiError {
    /// An error with a status, a stable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// Attach details (each serialisable to a JSON object).
    pub fn with_details<T: Serialize>(mut self, details: impl IntoIterator<Item = T>) -> Self {
        self.details = details
            .into_iter()
            .filter_map(|d| serde_json::to_value(d).ok())
            .collect();
        self
    }

    /// 400 with code `bad_request`-family.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 409 with a specific code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    /// 422 `validation_failed` with the list of issues.
    pub fn validation<T: Serialize>(
        message: impl Into<String>,
        issues: impl IntoIterator<Item = T>,
    ) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        )
        .with_details(issues)
    }
    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// 500 `internal`: the cause is logged, not sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error; see the server log",
        )
    }
    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                details: &self.details,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is too large",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a body with Content-Type: application/json",
            ),
            StatusCode::UNPROCESSABLE_ENTITY => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                rejection.body_text(),
            ),
            _ => Self::bad_request("invalid_json", rejection.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request("invalid_path", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request("invalid_query", rejection.body_text())
    }
}

impl From<weft_store::StoreError> for ApiError {
    fn from(error: weft_store::StoreError) -> Self {
        use weft_store::StoreError;
        match error {
            StoreError::NotFound => Self::not_found("not found"),
            StoreError::Conflict(message) => Self::conflict("conflict", message),
            StoreError::NotDraft => Self::conflict(
                "immutable",
                "this version is published and cannot change; create a new version",
            ),
            StoreError::Unavailable(message) => Self::unavailable(message),
            StoreError::InvalidFilter(e) => Self::validation(
                "invalid search expression",
                [
                    serde_json::json!({"path": e.path, "code": "invalid_expression", "message": e.message}),
                ],
            ),
            other => Self::internal(&other),
        }
    }
}

/// A JSON body extractor whose rejections use [`ApiError`].
#[derive(Debug, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// A query-string extractor whose rejections use [`ApiError`].
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// A path extractor whose rejections use [`ApiError`].
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);
