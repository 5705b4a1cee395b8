//! `spawn_app`: the real application on port 0 with a fresh database, and a client for it.

use std::net::SocketAddr;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use weft::Application;
use weft::auth::{Role, TokenHash};
use weft::config::{Config, ConfiguredToken};
use weft_store::Backend;
use weft_store::testing::{TestDatabase, fresh_database};

/// The admin token configured by [`spawn_app_with_auth`].
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// A read-only token configured by [`spawn_app_with_auth`].
pub const READ_TOKEN: &str = "test-read-token-0123456789";
/// A write token configured by [`spawn_app_with_auth`].
pub const WRITE_TOKEN: &str = "test-write-token-0123456789";

/// A running server and a client for it. Dropping it stops the server.
pub struct TestApp {
    pub address: SocketAddr,
    /// The gRPC address (agents).
    pub grpc_address: SocketAddr,
    pub client: reqwest::Client,
    /// Sent as a bearer token when set.
    pub token: Option<String>,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<Result<(), weft::AppError>>>,
    config: Config,
    _database: TestDatabase,
    _data_dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Start the application on `backend` with no tokens (authentication off).
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Start the application with admin, write and read tokens configured; the client uses admin.
pub async fn spawn_app_with_auth(backend: Backend) -> TestApp {
    let mut app = spawn_app_with(backend, |config| {
        config.tokens = vec![
            token("admin", Role::Admin, ADMIN_TOKEN),
            token("writer", Role::Write, WRITE_TOKEN),
            token("reader", Role::Read, READ_TOKEN),
        ];
    })
    .await;
    app.token = Some(ADMIN_TOKEN.to_string());
    app
}

fn token(name: &str, role: Role, plaintext: &str) -> ConfiguredToken {
    ConfiguredToken {
        name: name.into(),
        role,
        hash: TokenHash::of(plaintext),
    }
}

/// Start the application after letting `adjust` change the configuration.
pub async fn spawn_app_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let database = fresh_database(backend)
        .await
        .unwrap_or_else(|e| panic!("cannot create a test database on {backend:?}: {e}"));
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::for_tests(data_dir.path(), &database.url);
    adjust(&mut config);
    let (address, grpc_address, shutdown, server) = start(config.clone()).await;
    TestApp {
        address,
        grpc_address,
        client: reqwest::Client::new(),
        token: None,
        shutdown,
        server: Some(server),
        config,
        _database: database,
        _data_dir: data_dir,
    }
}

type Started = (
    SocketAddr,
    SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), weft::AppError>>,
);

async fn start(config: Config) -> Started {
    let app = Application::build(config)
        .await
        .expect("the application builds");
    let address = app.address();
    let grpc_address = app.grpc_address();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    (address, grpc_address, shutdown, server)
}

impl TestApp {
    /// Stop the server and start a new one on the same database and data directory.
    pub async fn restart(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("clean stop");
        }
        let mut config = self.config.clone();
        config.http_addr.set_port(0);
        config.grpc_addr.set_port(0);
        let (address, grpc_address, shutdown, server) = start(config).await;
        self.address = address;
        self.grpc_address = grpc_address;
        self.shutdown = shutdown;
        self.server = Some(server);
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// Drop the app's PostgreSQL database from under it (terminating its connections).
    pub async fn drop_database_for_test(&self) {
        self._database
            .drop_now()
            .await
            .expect("drop the test database");
    }

    /// A request with the app's token, if any.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.client.request(method, self.url(path));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.expect("GET")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn post(&self, path: &str) -> Response {
        self.request(Method::POST, path).send().await.expect("POST")
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> Response {
        self.request(Method::PUT, path)
            .json(body)
            .send()
            .await
            .expect("PUT")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path)
            .send()
            .await
            .expect("DELETE")
    }

    /// Create a definition and return its JSON (asserting 201).
    pub async fn create_definition(&self, body: &Value) -> Value {
        let response = self.post_json("/api/v1/workflow-definitions", body).await;
        expect_status(response, StatusCode::CREATED).await
    }
}

/// Assert the status and return the JSON body (or Null when empty).
pub async fn expect_status(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
    }
}

/// Assert an error response: status, the stable code, and the one error shape.
pub async fn expect_error(response: Response, status: StatusCode, code: &str) -> Value {
    let body = expect_status(response, status).await;
    let error = body
        .get("error")
        .unwrap_or_else(|| panic!("no error object: {body}"));
    assert_eq!(error["code"], code, "error code; body: {body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message: {body}"
    );
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["error"], "only an error object: {body}");
    body
}

/// The `(path, code)` pairs of an error's details.
pub fn issues(body: &Value) -> Vec<(String, String)> {
    body["error"]["details"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    (
                        i["path"].as_str().unwrap_or_default().to_string(),
                        i["code"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Create, publish and enable a definition; return its id.
pub async fn deploy(app: &TestApp, definition: Value) -> String {
    let created = app.create_definition(&definition).await;
    let id = created["id"].as_str().expect("id").to_string();
    expect_status(
        app.post(&format!("/api/v1/workflow-definitions/{id}/publish"))
            .await,
        StatusCode::OK,
    )
    .await;
    expect_status(
        app.post(&format!("/api/v1/workflow-definitions/{id}/enable"))
            .await,
        StatusCode::OK,
    )
    .await;
    id
}

/// Poll run `id` until its status is one of `statuses` (fails after 180 s).
pub async fn wait_for(app: &TestApp, id: &str, statuses: &[&str]) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let run = expect_status(
            app.get(&format!("/api/v1/workflow-instances/{id}")).await,
            StatusCode::OK,
        )
        .await;
        if statuses.contains(&run["status"].as_str().unwrap_or_default()) {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {id} stuck: {run}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The bytes of a plugin built by `cargo xtask plugins`.
pub fn plugin_bytes(name: &str) -> Vec<u8> {
    let path = plugin_path(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask plugins` first", path.display()))
}

/// Where `cargo xtask plugins` puts a plugin.
pub fn plugin_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/plugins")
        .join(format!("{name}.wasm"))
}

/// A small valid definition: two task steps.
pub fn simple_definition(name: &str) -> Value {
    serde_json::json!({
        "name": name,
        "description": "adds two",
        "inputParameters": [{"name": "value", "type": "number", "required": true}],
        "steps": [
            {"stepDefinitionId": "first", "name": "First", "type": "task",
             "taskConfig": {"taskDefinitionId": "add", "nextStepId": "second"},
             "parameters": {"value": {"type": "workflowInput", "value": "value"}}},
            {"stepDefinitionId": "second", "name": "Second", "type": "task",
             "taskConfig": {"taskDefinitionId": "add"},
             "parameters": {"value": {"type": "taskOutput", "value": {"taskId": "first", "outputKey": "value"}}}}
        ]
    })
}

/// Emit one test per backend from one async body: `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($(#[$meta:meta])* async fn $name:ident($backend:ident: Backend) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run($backend: weft_store::Backend) $body
            #[tokio::test]
            async fn sqlite() { run(weft_store::Backend::Sqlite).await }
            #[tokio::test]
            async fn postgres() { run(weft_store::Backend::Postgres).await }
        }
    };
}
