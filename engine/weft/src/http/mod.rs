//! The HTTP API, versioned under `/api/v1`, plus `/healthz` and `/readyz`.
//!
//! This module translates between HTTP and the services; it holds no business rules. Every error
//! leaves as [`ApiError`] JSON, including unknown routes (404), wrong methods (405), oversized
//! bodies (413) and panics (500). The OpenAPI document is generated from the routes (see
//! [`openapi`]).

pub mod error;
pub mod openapi;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use weft_store::Store;

use crate::agents::AgentRegistry;
use crate::auth::{AuthError, Authenticator, Role};
use crate::definitions::Definitions;
use crate::metrics::Metrics;
use crate::plugins::PluginRegistry;
use crate::runs::Runs;
pub use error::ApiError;

/// What handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Workflow definitions.
    pub definitions: Definitions,
    /// Token authentication.
    pub auth: Authenticator,
    /// The store, for readiness checks.
    pub store: Arc<dyn Store>,
    /// Step plugins.
    pub plugins: PluginRegistry,
    /// Workflow runs.
    pub runs: Runs,
    /// Connected agents.
    pub agents: Arc<AgentRegistry>,
    /// The live event stream (`/ws`).
    pub live: routes::ws::LiveState,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: Metrics,
}

/// HTTP settings taken from the configuration.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Largest accepted JSON body.
    pub max_body_bytes: usize,
    /// CORS origin allowlist (empty: CORS off).
    pub cors_origins: Vec<String>,
    /// Largest accepted plugin upload.
    pub max_plugin_bytes: usize,
    /// Serve `/metrics` without a token even when tokens are configured.
    pub metrics_public: bool,
}

/// Build the whole router.
pub fn router(state: AppState, options: &HttpOptions) -> Router {
    // The OpenAPI document and its page are merged after the token layer: they are public.
    let api = routes::api(options)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .merge(openapi::routes());
    let mut metrics = routes::metrics();
    if !options.metrics_public {
        metrics = metrics.route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    }
    let (routes, document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(routes::health())
        .merge(metrics)
        .nest("/api/v1", api)
        .split_for_parts();
    let published = Arc::new(openapi::Published::new(&openapi::finish(document)));

    let request_id = HeaderName::from_static("x-request-id");
    let mut router = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(published))
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .with_state(state.clone())
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal(&"a request handler panicked").into_response()
        }))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                // The path only: a query may carry a token.
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                )
            }),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid));
    if let Some(cors) = cors_layer(&options.cors_origins) {
        router = router.layer(cors);
    }
    router
}

/// CORS only for listed origins; never a wildcard, never credentials with a wildcard.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
            ])
            .allow_credentials(true)
            .max_age(Duration::from_secs(600)),
    )
}

/// The least role a request needs: reads need `read`, changes `write`; tokens and plugin
/// management (upload, delete, reload) need `admin`.
fn required_role(method: &Method, path: &str) -> Role {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let read = method == Method::GET || method == Method::HEAD;
    if path.starts_with("/tokens")
        || (path.starts_with("/plugins") && !read && !path.ends_with("/invoke"))
    {
        Role::Admin
    } else if read {
        Role::Read
    } else {
        Role::Write
    }
}

async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let header_token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::to_owned);
    // Browsers cannot set headers on a WebSocket: the socket may carry its token in the query
    // (request spans log the path only, never the query).
    let bearer = header_token.or_else(|| {
        // Under `nest`, the path has lost its `/api/v1` prefix.
        (request
            .uri()
            .path()
            .strip_prefix("/api/v1")
            .unwrap_or(request.uri().path())
            == "/ws")
            .then(|| query_token(request.uri().query()))
            .flatten()
    });
    let bearer = bearer.as_deref();
    let principal = match state.auth.authenticate(bearer).await {
        Ok(principal) => principal,
        Err(AuthError::Missing) => {
            return ApiError::unauthorized("this endpoint needs a bearer token").into_response();
        }
        Err(AuthError::Invalid) => {
            return ApiError::unauthorized("the bearer token is not valid").into_response();
        }
        Err(AuthError::Store(e)) => return ApiError::from(e).into_response(),
    };
    let needed = required_role(request.method(), request.uri().path());
    if principal.role < needed {
        return ApiError::forbidden(format!(
            "this request needs the '{needed}' role; the token has '{}'",
            principal.role
        ))
        .into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// `access_token` from a query string.
fn query_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "access_token" && !value.is_empty()).then(|| value.to_string())
    })
}

/// Count every answered request in `weft_http_requests_total`.
async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    state
        .metrics
        .http_request(&method, response.status().as_u16());
    response
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_by_method_and_path() {
        assert_eq!(
            required_role(&Method::GET, "/workflow-definitions"),
            Role::Read
        );
        assert_eq!(
            required_role(&Method::POST, "/workflow-definitions"),
            Role::Write
        );
        assert_eq!(
            required_role(&Method::DELETE, "/workflow-definitions/x"),
            Role::Write
        );
        assert_eq!(required_role(&Method::GET, "/tokens"), Role::Admin);
        assert_eq!(required_role(&Method::POST, "/plugins"), Role::Admin);
        assert_eq!(
            required_role(&Method::DELETE, "/plugins/add/1.0.0"),
            Role::Admin
        );
        assert_eq!(
            required_role(&Method::POST, "/plugins/add/1.0.0/invoke"),
            Role::Write
        );
        assert_eq!(
            required_role(&Method::GET, "/plugins/add/1.0.0/wasm"),
            Role::Read
        );
        assert_eq!(required_role(&Method::GET, "/api/v1/ws"), Role::Read);
    }

    #[test]
    fn websocket_token_from_the_query() {
        assert_eq!(query_token(Some("access_token=abc")), Some("abc".into()));
        assert_eq!(
            query_token(Some("x=1&access_token=abc&y=2")),
            Some("abc".into())
        );
        assert_eq!(query_token(Some("access_token=")), None);
        assert_eq!(query_token(Some("token=abc")), None);
        assert_eq!(query_token(None), None);
    }
}
