//! The OpenAPI document: valid OpenAPI 3.1, public, covering every route (each documented
//! operation is served, each served route is documented), every answer the server gives is a
//! documented status with a body matching its schema, and the example definitions validate
//! against the create-definition schema.

use std::collections::{BTreeSet, HashSet};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];
const CREATE_DEFINITION_BODY: &str =
    "/paths/~1api~1v1~1workflow-definitions/post/requestBody/content/application~1json/schema";

/// The document, fetched without a token from a server that requires one.
async fn fetch_document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("GET openapi.json");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    response.json().await.expect("the document is JSON")
}

/// `pointer` as a JSON Pointer token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A validator for the schema at `pointer` in `document`, its `$ref`s resolved in the document.
fn validator(document: &Value, pointer: &str) -> jsonschema::Validator {
    assert!(
        document.pointer(pointer).is_some(),
        "no schema at {pointer}"
    );
    // The document itself is the root schema: its OpenAPI keys are not JSON Schema keywords, so
    // the root only `$ref`s the schema at `pointer`, and `#/components/...` resolves in it.
    let mut root = document.clone();
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    // A URI fragment: `{` and `}` (path templates) are percent-encoded.
    let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
    root["$ref"] = json!(format!("#{fragment}"));
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("the schema at {pointer} does not compile: {e}"))
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Every `$ref` in `value`, with where it is.
fn refs(value: &Value, at: &str, found: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "$ref"
                    && let Some(target) = child.as_str()
                {
                    found.push((at.to_string(), target.to_string()));
                }
                refs(child, &format!("{at}/{}", escape(key)), found);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                refs(child, &format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

/// Every documented `(method, path)`.
fn operations(document: &Value) -> Vec<(String, String)> {
    let paths = document["paths"].as_object().expect("paths is an object");
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            if item.get(method).is_some() {
                operations.push((method.to_string(), path.clone()));
            }
        }
        for key in item.as_object().expect("a path item is an object").keys() {
            assert!(
                METHODS.contains(&key.as_str()) || key == "parameters" || key == "summary",
                "{path}: unexpected key {key} (a method axum does not route?)"
            );
        }
    }
    operations
}

/// `template` with every `{param}` replaced: a nil UUID where the parameter is a UUID, else
/// `nope`.
fn concrete(document: &Value, method: &str, template: &str) -> String {
    let parameters = document["paths"][template][method]["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut path = template.to_string();
    for parameter in parameters.iter().filter(|p| p["in"] == "path") {
        let name = parameter["name"].as_str().expect("parameter name");
        let value = if parameter["schema"]["format"] == "uuid" {
            "00000000-0000-0000-0000-000000000000"
        } else {
            "nope"
        };
        path = path.replace(&format!("{{{name}}}"), value);
    }
    assert!(
        !path.contains('{'),
        "{method} {template}: a path parameter is not declared"
    );
    path
}

/// Assert that `status` is documented for the operation, and that `body` matches its schema
/// when the documented answer is JSON.
fn assert_documented(document: &Value, method: &str, template: &str, status: u16, body: &Value) {
    let operation = format!("/paths/{}/{method}", escape(template));
    let response = format!("{operation}/responses/{status}");
    let Some(mut documented) = document.pointer(&response) else {
        panic!("{method} {template}: status {status} is not documented (body: {body})");
    };
    let mut at = response.clone();
    if let Some(target) = documented.get("$ref").and_then(Value::as_str) {
        at = target.trim_start_matches('#').to_string();
        documented = document.pointer(&at).expect("the response $ref resolves");
    }
    if documented["content"].get("application/json").is_some() {
        let schema = format!("{at}/content/application~1json/schema");
        let problems = errors(&validator(document, &schema), body);
        assert!(
            problems.is_empty(),
            "{method} {template} → {status}: the body does not match the documented schema: \
             {problems:?}\nbody: {body}"
        );
    }
}

/// Send a request and check its answer against the document; return the status and body.
async fn call(
    app: &TestApp,
    document: &Value,
    method: &str,
    template: &str,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let method_value = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
    let mut request = app.request(method_value, path);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let is_json = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let text = response.text().await.expect("body");
    let body = if is_json {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: bad JSON {e}"))
    } else {
        Value::String(text)
    };
    assert_documented(document, method, template, status.as_u16(), &body);
    (status, body)
}

both_backends! {
    async fn document_is_valid_openapi_3_1(backend: Backend) {
        let app = spawn_app_with_auth(backend).await;
        let document = fetch_document(&app).await;

        let version = document["openapi"].as_str().expect("openapi is a string");
        assert!(version.starts_with("3.1."), "openapi {version}");
        assert!(document["info"]["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(document["info"]["version"].as_str().is_some_and(|v| !v.is_empty()));
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"],
            json!({"type": "http", "scheme": "bearer",
                   "description": document["components"]["securitySchemes"]["bearer"]["description"]}),
        );
        assert_eq!(document["security"], json!([{"bearer": []}]));

        let operations = operations(&document);
        assert!(operations.len() >= 30, "only {} operations", operations.len());

        // Every $ref resolves inside the document.
        let mut found = Vec::new();
        refs(&document, "", &mut found);
        assert!(!found.is_empty());
        for (at, target) in &found {
            let pointer = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{at}: external $ref {target}"));
            assert!(document.pointer(pointer).is_some(), "{at}: $ref {target} does not resolve");
        }

        // Operations: unique ids, responses with descriptions, path parameters declared both ways.
        let mut ids = HashSet::new();
        for (method, path) in &operations {
            let operation = &document["paths"][path][method];
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            assert!(!operation["tags"].as_array().expect("tags").is_empty(), "{method} {path}: no tag");
            let responses = operation["responses"].as_object().expect("responses");
            assert!(responses.contains_key("500"), "{method} {path}: no 500");
            for (status, response) in responses {
                assert!(status.parse::<u16>().is_ok(), "{method} {path}: status {status}");
                let response = match response.get("$ref").and_then(Value::as_str) {
                    Some(target) => document.pointer(&target[1..]).expect("resolves"),
                    None => response,
                };
                assert!(response["description"].is_string(), "{method} {path} {status}");
            }
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            let in_path: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            assert_eq!(declared, in_path, "{method} {path}: path parameters");
            // Public operations say so; the others answer 401 and 403.
            let public = operation.get("security").is_some();
            assert_eq!(
                responses.contains_key("401"),
                !public,
                "{method} {path}: 401 is documented exactly for operations that need a token"
            );
        }

        // Every schema compiles (JSON Schema 2020-12, the dialect of OpenAPI 3.1).
        let schemas = document["components"]["schemas"].as_object().expect("schemas");
        assert!(schemas.contains_key("Error"));
        for name in schemas.keys() {
            validator(&document, &format!("/components/schemas/{}", escape(name)));
        }

        // The docs page is public; the rest of the API still needs a token.
        let page = app.client.get(app.url("/api/v1/docs")).send().await.expect("GET docs");
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html")));
        let html = page.text().await.expect("page");
        assert!(html.contains("Weft API") && html.contains("\"openapi\""), "{html}");
        let response = app.client.get(app.url("/api/v1/workflow-definitions")).send().await.expect("GET");
        expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let response = app
            .client
            .get(app.url("/api/v1/openapi.json"))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), StatusCode::OK, "a token does not hurt");
    }
}

/// Files under `dir` ending in `.rs`.
fn rust_files(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

both_backends! {
    async fn every_route_is_documented(backend: Backend) {
        let app = spawn_app_with_auth(backend).await;
        let document = fetch_document(&app).await;
        let operations = operations(&document);

        // 1. Every documented operation is served: called with made-up ids and an empty JSON
        //    object as body, it never reaches the router's fallbacks, and it answers a
        //    documented status with a body of the documented schema.
        for (method, template) in &operations {
            let path = concrete(&document, method, template);
            let body = (method != "get" && method != "delete").then(|| json!({}));
            let (status, answer) = call(&app, &document, method, template, &path, body.as_ref()).await;
            let fallback = (status == StatusCode::NOT_FOUND
                && answer["error"]["message"].as_str().is_some_and(|m| m.starts_with("no route for")))
                || status == StatusCode::METHOD_NOT_ALLOWED;
            assert!(!fallback, "{method} {template} is documented but not routed: {status} {answer}");
            assert!(!status.is_server_error(), "{method} {path}: {status} {answer}");
        }

        // 2. Every method a documented path serves is documented: the others are 405.
        let paths: BTreeSet<&String> = operations.iter().map(|(_, p)| p).collect();
        for template in paths {
            let documented: Vec<&str> = operations
                .iter()
                .filter(|(_, p)| p == template)
                .map(|(m, _)| m.as_str())
                .collect();
            let path = concrete(&document, documented[0], template);
            for method in METHODS.iter().filter(|m| !documented.contains(m)) {
                let method_value = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
                let response = app.request(method_value, &path).json(&json!({})).send().await.expect("request");
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {template} is served but not documented: {text}"
                );
            }
        }

        // 3. No route is registered except through `utoipa_axum::routes!`, which takes the path
        //    and method from the handler's `#[utoipa::path]`: a route the document lacks cannot
        //    be added without this failing.
        let mut files = Vec::new();
        rust_files(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
        let forbidden = [".route(", ".route_service(", ".nest_service(", "axum::routing", "routing::{"];
        for file in &files {
            let text = std::fs::read_to_string(file).expect("read source");
            for (number, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for pattern in forbidden {
                    assert!(
                        !code.contains(pattern),
                        "{}:{}: `{pattern}` registers a route outside `routes!`, so it is not in \
                         the OpenAPI document: annotate the handler with #[utoipa::path] and \
                         register it with `.routes(routes!(handler))`",
                        file.display(),
                        number + 1
                    );
                }
            }
        }

        // The known resources are all there.
        for (method, path) in [
            ("get", "/healthz"),
            ("get", "/readyz"),
            ("get", "/api/v1/openapi.json"),
            ("get", "/api/v1/docs"),
            ("post", "/api/v1/workflow-definitions"),
            ("patch", "/api/v1/workflow-definitions/{id}/publish"),
            ("get", "/api/v1/workflow-instances/{id}/events"),
            ("post", "/api/v1/workflow-instances/{id}/signals/{name}"),
            ("get", "/api/v1/step-instances/{id}"),
            ("post", "/api/v1/plugins/{name}/{version}/invoke"),
            ("get", "/api/v1/task-definitions/{name}"),
            ("delete", "/api/v1/tokens/{id}"),
        ] {
            assert!(
                operations.contains(&(method.to_string(), path.to_string())),
                "{method} {path} is not documented"
            );
        }
    }
}

both_backends! {
    async fn examples_validate_against_the_document(backend: Backend) {
        let app = spawn_app_with_auth(backend).await;
        let document = fetch_document(&app).await;
        let create = validator(&document, CREATE_DEFINITION_BODY);

        // The schema is not a catch-all.
        let mut broken = simple_definition("broken");
        broken["steps"][0]["type"] = json!("teleport");
        assert!(!create.is_valid(&broken));
        assert!(!create.is_valid(&json!({"name": "no-steps"})));
        let mut broken = simple_definition("broken");
        broken["steps"][0]["parameters"]["value"] = json!({"type": "workflowInput", "value": 3});
        assert!(!create.is_valid(&broken));
        assert!(create.is_valid(&simple_definition("fine")));

        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/definitions");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("examples/definitions")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        assert!(files.len() >= 5, "{files:?}");
        let template = "/api/v1/workflow-definitions";
        for file in &files {
            let text = std::fs::read_to_string(file).expect("read example");
            let example: Value = serde_json::from_str(&text).expect("example is JSON");
            let problems = errors(&create, &example);
            assert!(problems.is_empty(), "{}: {problems:?}", file.display());
            // The server accepts it, and answers with the documented shape.
            let (status, _) = call(&app, &document, "post", template, template, Some(&example)).await;
            assert_eq!(status, StatusCode::CREATED, "{}", file.display());
        }
    }
}

both_backends! {
    async fn answers_match_the_documented_schemas(backend: Backend) {
        let app = spawn_app_with_auth(backend).await;
        let document = fetch_document(&app).await;
        let definitions = "/api/v1/workflow-definitions";

        let upload = app
            .request(Method::POST, "/api/v1/plugins")
            .header("content-type", "application/wasm")
            .body(plugin_bytes("add"))
            .send()
            .await
            .expect("upload");
        assert_eq!(upload.status(), StatusCode::CREATED);
        let plugin: Value = upload.json().await.expect("JSON");
        assert_documented(&document, "post", "/api/v1/plugins", 201, &plugin);
        let version = plugin["version"].as_str().expect("version");
        let (status, report) = call(&app, &document, "post", "/api/v1/plugins/{name}/{version}/invoke",
            &format!("/api/v1/plugins/add/{version}/invoke"), Some(&json!({"input": {"value": 1}}))).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["status"], "completed", "{report}");
        call(&app, &document, "get", "/api/v1/plugins/{name}", "/api/v1/plugins/add", None).await;
        call(&app, &document, "post", "/api/v1/plugins/reload", "/api/v1/plugins/reload", None).await;

        let (_, created) = call(&app, &document, "post", definitions, definitions, Some(&simple_definition("documented"))).await;
        let id = created["id"].as_str().expect("id").to_string();
        let one = "/api/v1/workflow-definitions/{id}";
        let path = format!("{definitions}/{id}");
        call(&app, &document, "get", one, &path, None).await;
        call(&app, &document, "patch", one, &path, Some(&json!({"description": "changed"}))).await;
        call(&app, &document, "get", definitions, definitions, None).await;
        call(&app, &document, "post", "/api/v1/workflow-definitions/search", "/api/v1/workflow-definitions/search",
             Some(&json!({"compare": {"field": "name", "operator": "=", "value": "documented"}}))).await;
        let (status, _) = call(&app, &document, "post", "/api/v1/workflow-definitions/{id}/publish", &format!("{path}/publish"), None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = call(&app, &document, "post", "/api/v1/workflow-definitions/{id}/enable", &format!("{path}/enable"), None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = call(&app, &document, "post", "/api/v1/workflow-definitions/{id}/versions", &format!("{path}/versions?bump=minor"), None).await;
        assert_eq!(status, StatusCode::CREATED);

        let runs = "/api/v1/workflow-instances";
        let (status, run) = call(&app, &document, "post", runs, runs, Some(&json!({"workflowDefinitionId": id, "input": {"value": 1}}))).await;
        assert_eq!(status, StatusCode::CREATED, "{run}");
        let run_id = run["id"].as_str().expect("run id").to_string();
        wait_for(&app, &run_id, &["COMPLETED"]).await;
        let run_path = format!("{runs}/{run_id}");
        call(&app, &document, "get", "/api/v1/workflow-instances/{id}", &run_path, None).await;
        call(&app, &document, "get", runs, runs, None).await;
        let (_, steps) = call(&app, &document, "get", "/api/v1/workflow-instances/{id}/steps", &format!("{run_path}/steps"), None).await;
        assert!(!steps["items"].as_array().expect("items").is_empty());
        let step_id = steps["items"][0]["id"].as_str().expect("step id");
        call(&app, &document, "get", "/api/v1/step-instances/{id}", &format!("/api/v1/step-instances/{step_id}"), None).await;
        let (_, events) = call(&app, &document, "get", "/api/v1/workflow-instances/{id}/events", &format!("{run_path}/events"), None).await;
        assert!(!events["items"].as_array().expect("items").is_empty());
        let (status, _) = call(&app, &document, "post", "/api/v1/workflow-instances/{id}/cancel", &format!("{run_path}/cancel"), None).await;
        assert_eq!(status, StatusCode::CONFLICT);

        let (_, plugins) = call(&app, &document, "get", "/api/v1/plugins", "/api/v1/plugins", None).await;
        assert!(!plugins["items"].as_array().expect("items").is_empty());
        let (status, _) = call(&app, &document, "get", "/api/v1/plugins/{name}/{version}", &format!(
            "/api/v1/plugins/{}/{}", plugins["items"][0]["name"].as_str().expect("name"),
            plugins["items"][0]["version"].as_str().expect("version")), None).await;
        assert_eq!(status, StatusCode::OK);

        let tokens = "/api/v1/tokens";
        let (status, _) = call(&app, &document, "post", tokens, tokens, Some(&json!({"name": "ci", "role": "read"}))).await;
        assert_eq!(status, StatusCode::CREATED);
        call(&app, &document, "get", tokens, tokens, None).await;
        call(&app, &document, "get", "/healthz", "/healthz", None).await;
        call(&app, &document, "get", "/readyz", "/readyz", None).await;

        // Authentication errors are documented too.
        let response = app
            .client
            .post(app.url(definitions))
            .bearer_auth(READ_TOKEN)
            .json(&simple_definition("denied"))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body: Value = response.json().await.expect("JSON");
        assert_documented(&document, "post", definitions, 403, &body);
    }
}
