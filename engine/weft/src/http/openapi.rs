//! The OpenAPI 3.1 document of the HTTP API, generated from the code, served at
//! `/api/v1/openapi.json`, with an interactive page (Scalar) at `/api/v1/docs`. Both are public.
//!
//! Every route is registered with `utoipa_axum::routes!`, which takes its method and path from the
//! handler's `#[utoipa::path]` annotation and adds that operation to the document: the router and
//! the document come from the same declaration. [`finish`] adds what every operation shares
//! (the 401/403 answers of authenticated operations, the 500 of all).

use std::sync::Arc;

use axum::Extension;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_scalar::Scalar;

use super::AppState;
use super::error::ErrorBody;

/// The document's fixed parts; the operations come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Weft API",
        description = "Weft, a workflow engine: workflow definitions, runs, step plugins, agents \
            and API tokens.\n\nEvery request under `/api/v1` needs `Authorization: Bearer <token>` \
            when the server has tokens configured (reads need the `read` role, changes `write`, \
            tokens and plugin management `admin`); this document and its docs page are public. \
            Every error is JSON: `{\"error\": {\"code\", \"message\", \"details\"?}}`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "definitions", description = "Workflow definitions: create, version, publish."),
        (name = "runs", description = "Workflow runs (instances) and their steps."),
        (name = "plugins", description = "Wasm step plugins."),
        (name = "agents", description = "Remote agents and the tasks they provide."),
        (name = "tokens", description = "API tokens (admin)."),
        (name = "health", description = "Liveness and readiness (public)."),
        (name = "meta", description = "This document and its docs page (public)."),
    ),
    components(schemas(ErrorBody))
)]
pub struct ApiDoc;

/// The `bearer` security scheme.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`weft token create`, `POST /api/v1/tokens`) or a token \
                         from the configuration.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Shared responses, referenced from the operations by [`finish`].
const UNAUTHORIZED: &str = "Unauthorized";
const FORBIDDEN: &str = "Forbidden";
const INTERNAL: &str = "InternalError";

/// Complete the document the routes built: shared error responses on every operation (401 and
/// 403 where a token is needed, 500 everywhere).
pub fn finish(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Error")))
                    .build(),
            )
            .build()
    };
    let components = document.components.get_or_insert_with(Default::default);
    components.responses.insert(
        UNAUTHORIZED.into(),
        RefOr::T(error("No bearer token, or not a valid one")),
    );
    components.responses.insert(
        FORBIDDEN.into(),
        RefOr::T(error("The token's role is too low for this request")),
    );
    components.responses.insert(
        INTERNAL.into(),
        RefOr::T(error("Internal error (the cause is in the server log)")),
    );
    for item in document.paths.paths.values_mut() {
        for operation in operations(item) {
            // `security` unset: the document's (a bearer token); set (to `[{}]`): public.
            let authenticated = operation.security.is_none();
            let responses = &mut operation.responses.responses;
            if authenticated {
                responses
                    .entry("401".into())
                    .or_insert_with(|| RefOr::Ref(Ref::from_response_name(UNAUTHORIZED)));
                responses
                    .entry("403".into())
                    .or_insert_with(|| RefOr::Ref(Ref::from_response_name(FORBIDDEN)));
            }
            responses
                .entry("500".into())
                .or_insert_with(|| RefOr::Ref(Ref::from_response_name(INTERNAL)));
        }
    }
    document
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The finished document, rendered once: its JSON and the docs page.
pub struct Published {
    json: String,
    html: String,
}

impl Published {
    /// Render `document`.
    pub fn new(document: &utoipa::openapi::OpenApi) -> Self {
        // Serialising the document cannot fail: it is made of strings, maps and numbers.
        let json = document.to_json().unwrap_or_default();
        let html = Scalar::new(document.clone()).to_html();
        Self { json, html }
    }
}

/// Routes of the document and its page (public, under `/api/v1`).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(docs))
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "getOpenApi",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
async fn openapi_json(Extension(published): Extension<Arc<Published>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        published.json.clone(),
    )
        .into_response()
}

/// Interactive API documentation (Scalar; the page loads its script in the browser).
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "getApiDocs",
    tag = "meta",
    security(()),
    responses((status = 200, description = "An HTML page", content_type = "text/html", body = String))
)]
async fn docs(Extension(published): Extension<Arc<Published>>) -> Html<String> {
    Html(published.html.clone())
}
