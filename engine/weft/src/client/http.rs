//! [`Client`]: one method per REST endpoint the CLI uses, answers as the server's JSON.

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::{Value, json};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with its error shape (`{"error": {"code", "message", "details"}}`).
    #[error("{code}: {message}{}", details_suffix(.details))]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The server's stable error code.
        code: String,
        /// The server's message.
        message: String,
        /// Validation issues and the like.
        details: Vec<Value>,
    },
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach the server at {url}: {source}")]
    Transport {
        /// What was asked.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The server's answer is not what the API promises.
    #[error("unexpected answer from the server ({status}): {message}")]
    Unexpected {
        /// HTTP status.
        status: StatusCode,
        /// What was wrong.
        message: String,
    },
    /// The server URL is not usable.
    #[error("invalid server URL '{url}': {message}")]
    InvalidUrl {
        /// As given.
        url: String,
        /// Why.
        message: String,
    },
}

impl ClientError {
    /// The server's error code, when it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// `" (path: code: message; ...)"` for validation details, empty without them.
fn details_suffix(details: &[Value]) -> String {
    let items: Vec<String> = details
        .iter()
        .map(|d| {
            let text = |key: &str| d.get(key).and_then(Value::as_str).unwrap_or_default();
            [text("path"), text("code"), text("message")]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(": ")
        })
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        String::new()
    } else {
        format!(" ({})", items.join("; "))
    }
}

/// A client of one Weft server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

/// Query parameters of `GET /workflow-instances`.
#[derive(Debug, Default, Clone)]
pub struct RunFilter {
    /// PENDING, RUNNING...
    pub status: Option<String>,
    /// A definition id.
    pub definition_id: Option<String>,
    /// A definition name.
    pub name: Option<String>,
    /// A parent run id.
    pub parent_run_id: Option<String>,
    /// Page size.
    pub limit: u32,
    /// Skip.
    pub offset: u64,
}

/// Query parameters of `GET /workflow-definitions`.
#[derive(Debug, Default, Clone)]
pub struct DefinitionFilter {
    /// Exact name.
    pub name: Option<String>,
    /// Name contains.
    pub query: Option<String>,
    /// Page size.
    pub limit: u32,
    /// Skip.
    pub offset: u64,
}

/// What `POST /workflow-instances` takes.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// `{"name": ..., "version"?: ...}` or `{"workflowDefinitionId": ...}`.
    pub definition: DefinitionSelector,
    /// The run's input.
    pub input: Value,
    /// Sent as the `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
}

/// Which definition a run starts.
#[derive(Debug, Clone)]
pub enum DefinitionSelector {
    /// By name, the newest enabled published version or this one.
    Name {
        /// Name.
        name: String,
        /// Version.
        version: Option<String>,
    },
    /// By id.
    Id(String),
}

/// How `POST /workflow-definitions/{id}/versions` numbers the new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextVersion {
    /// `?bump=patch|minor|major`.
    Bump(&'static str),
    /// `?version=x.y.z`.
    Exact(String),
}

impl Client {
    /// A client of the server at `base` (`http://host:port`, `https://...`), sending `token`
    /// as a bearer token when set.
    pub fn new(base: &str, token: Option<String>) -> Result<Client, ClientError> {
        let invalid = |message: String| ClientError::InvalidUrl {
            url: base.to_string(),
            message,
        };
        let mut url = Url::parse(base).map_err(|e| invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https".into()));
        }
        if url.cannot_be_a_base() {
            return Err(invalid("not a base URL".into()));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("weft-cli/", env!("CARGO_PKG_VERSION")))
            // No overall time-out: an upload waits for the server to compile the component.
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Client {
            http,
            base: url,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The token, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// `base` + `path` (no leading slash), with each of `segments` appended percent-encoded.
    fn url(&self, path: &str, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut parts) = url.path_segments_mut() {
            parts.pop_if_empty();
            parts.extend(path.split('/'));
            parts.extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let builder = self.http.request(method, url);
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    async fn send(&self, builder: RequestBuilder) -> Result<Response, ClientError> {
        let request = builder.build().map_err(|source| ClientError::Transport {
            url: self.base.to_string(),
            source,
        })?;
        let url = request.url().to_string();
        self.http
            .execute(request)
            .await
            .map_err(|source| ClientError::Transport { url, source })
    }

    /// Send, and decode a JSON answer (success) or the error shape (failure).
    async fn json(&self, builder: RequestBuilder) -> Result<Value, ClientError> {
        Ok(self.json_with_status(builder).await?.1)
    }

    /// [`Client::json`], with the success status.
    async fn json_with_status(
        &self,
        builder: RequestBuilder,
    ) -> Result<(StatusCode, Value), ClientError> {
        let response = self.send(builder).await?;
        let status = response.status();
        let url = response.url().to_string();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ClientError::Transport { url, source })?;
        if status.is_success() {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok((status, Value::Null));
            }
            let value = serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
                status,
                message: format!("the body is not JSON: {e}"),
            })?;
            return Ok((status, value));
        }
        Err(api_error(status, &bytes))
    }

    /// `GET /api/v1/plugins`.
    pub async fn list_plugins(&self) -> Result<Value, ClientError> {
        self.json(self.request(Method::GET, self.url("api/v1/plugins", &[])))
            .await
    }

    /// `GET /api/v1/plugins/{name}`.
    pub async fn plugin_versions(&self, name: &str) -> Result<Value, ClientError> {
        self.json(self.request(Method::GET, self.url("api/v1/plugins", &[name])))
            .await
    }

    /// `GET /api/v1/plugins/{name}/{version}`.
    pub async fn get_plugin(&self, name: &str, version: &str) -> Result<Value, ClientError> {
        self.json(self.request(Method::GET, self.url("api/v1/plugins", &[name, version])))
            .await
    }

    /// `POST /api/v1/plugins` with the component; `limits` as query parameters
    /// (`memoryBytes`, `timeoutMs`, `fuel`). Also whether it was new (201) rather than the
    /// same bytes again (200).
    pub async fn push_plugin(
        &self,
        wasm: Vec<u8>,
        limits: &[(&str, u64)],
    ) -> Result<(Value, bool), ClientError> {
        let mut url = self.url("api/v1/plugins", &[]);
        if !limits.is_empty() {
            let mut query = url.query_pairs_mut();
            for (key, value) in limits {
                query.append_pair(key, &value.to_string());
            }
        }
        let builder = self
            .request(Method::POST, url)
            .header(reqwest::header::CONTENT_TYPE, "application/wasm")
            .body(wasm);
        let (status, value) = self.json_with_status(builder).await?;
        Ok((value, status == StatusCode::CREATED))
    }

    /// `GET /api/v1/workflow-definitions`.
    pub async fn list_definitions(&self, filter: &DefinitionFilter) -> Result<Value, ClientError> {
        let mut url = self.url("api/v1/workflow-definitions", &[]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(name) = &filter.name {
                query.append_pair("name", name);
            }
            if let Some(q) = &filter.query {
                query.append_pair("q", q);
            }
            query.append_pair("limit", &filter.limit.to_string());
            query.append_pair("offset", &filter.offset.to_string());
        }
        self.json(self.request(Method::GET, url)).await
    }

    /// Every version of the definition named `name` (all pages).
    pub async fn definition_versions(&self, name: &str) -> Result<Vec<Value>, ClientError> {
        let mut items = Vec::new();
        loop {
            let page = self
                .list_definitions(&DefinitionFilter {
                    name: Some(name.to_string()),
                    query: None,
                    limit: 200,
                    offset: items.len() as u64,
                })
                .await?;
            let batch = page
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = page.get("totalCount").and_then(Value::as_u64).unwrap_or(0);
            let empty = batch.is_empty();
            items.extend(batch);
            if empty || items.len() as u64 >= total {
                return Ok(items);
            }
        }
    }

    /// `GET /api/v1/workflow-definitions/{id}`.
    pub async fn get_definition(&self, id: &str) -> Result<Value, ClientError> {
        self.json(self.request(Method::GET, self.url("api/v1/workflow-definitions", &[id])))
            .await
    }

    /// `POST /api/v1/workflow-definitions` (a draft).
    pub async fn create_definition(&self, body: &Value) -> Result<Value, ClientError> {
        self.json(
            self.request(Method::POST, self.url("api/v1/workflow-definitions", &[]))
                .json(body),
        )
        .await
    }

    /// `PUT /api/v1/workflow-definitions/{id}` (a draft; top-level keys replace).
    pub async fn update_definition(&self, id: &str, body: &Value) -> Result<Value, ClientError> {
        self.json(
            self.request(Method::PUT, self.url("api/v1/workflow-definitions", &[id]))
                .json(body),
        )
        .await
    }

    /// `POST /api/v1/workflow-definitions/{id}/versions`.
    pub async fn new_definition_version(
        &self,
        id: &str,
        next: &NextVersion,
        body: &Value,
    ) -> Result<Value, ClientError> {
        let mut url = self.url("api/v1/workflow-definitions", &[id, "versions"]);
        let (key, value) = match next {
            NextVersion::Bump(bump) => ("bump", *bump),
            NextVersion::Exact(version) => ("version", version.as_str()),
        };
        url.query_pairs_mut().append_pair(key, value);
        self.json(self.request(Method::POST, url).json(body)).await
    }

    /// `POST /api/v1/workflow-definitions/{id}/publish`.
    pub async fn publish_definition(&self, id: &str) -> Result<Value, ClientError> {
        self.json(self.request(
            Method::POST,
            self.url("api/v1/workflow-definitions", &[id, "publish"]),
        ))
        .await
    }

    /// `POST /api/v1/workflow-definitions/{id}/enable`.
    pub async fn enable_definition(&self, id: &str) -> Result<Value, ClientError> {
        self.json(self.request(
            Method::POST,
            self.url("api/v1/workflow-definitions", &[id, "enable"]),
        ))
        .await
    }

    /// `POST /api/v1/workflow-instances`.
    pub async fn start_run(&self, request: &StartRequest) -> Result<Value, ClientError> {
        let mut body = match &request.definition {
            DefinitionSelector::Name { name, version } => {
                let mut body = json!({"name": name});
                if let Some(version) = version {
                    body["version"] = json!(version);
                }
                body
            }
            DefinitionSelector::Id(id) => json!({"workflowDefinitionId": id}),
        };
        body["input"] = request.input.clone();
        let mut builder = self
            .request(Method::POST, self.url("api/v1/workflow-instances", &[]))
            .json(&body);
        if let Some(key) = &request.idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        self.json(builder).await
    }

    /// `GET /api/v1/workflow-instances/{id}`.
    pub async fn get_run(&self, id: &str) -> Result<Value, ClientError> {
        self.json(self.request(Method::GET, self.url("api/v1/workflow-instances", &[id])))
            .await
    }

    /// `GET /api/v1/workflow-instances`.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Value, ClientError> {
        let mut url = self.url("api/v1/workflow-instances", &[]);
        {
            let mut query = url.query_pairs_mut();
            let optional = [
                ("status", &filter.status),
                ("workflowDefinitionId", &filter.definition_id),
                ("name", &filter.name),
                ("parentRunId", &filter.parent_run_id),
            ];
            for (key, value) in optional {
                if let Some(value) = value {
                    query.append_pair(key, value);
                }
            }
            query.append_pair("limit", &filter.limit.to_string());
            query.append_pair("offset", &filter.offset.to_string());
        }
        self.json(self.request(Method::GET, url)).await
    }

    /// `GET /api/v1/workflow-instances/{id}/steps`.
    pub async fn run_steps(&self, id: &str) -> Result<Value, ClientError> {
        self.json(self.request(
            Method::GET,
            self.url("api/v1/workflow-instances", &[id, "steps"]),
        ))
        .await
    }

    /// `GET /api/v1/workflow-instances/{id}/events?after=SEQ&limit=N`.
    pub async fn run_events(&self, id: &str, after: i64, limit: u32) -> Result<Value, ClientError> {
        let mut url = self.url("api/v1/workflow-instances", &[id, "events"]);
        url.query_pairs_mut()
            .append_pair("after", &after.to_string())
            .append_pair("limit", &limit.to_string());
        self.json(self.request(Method::GET, url)).await
    }

    /// `POST /api/v1/workflow-instances/{id}/cancel`.
    pub async fn cancel_run(&self, id: &str) -> Result<Value, ClientError> {
        self.json(self.request(
            Method::POST,
            self.url("api/v1/workflow-instances", &[id, "cancel"]),
        ))
        .await
    }

    /// `POST /api/v1/workflow-instances/{id}/retry`.
    pub async fn retry_run(&self, id: &str) -> Result<Value, ClientError> {
        self.json(self.request(
            Method::POST,
            self.url("api/v1/workflow-instances", &[id, "retry"]),
        ))
        .await
    }

    /// `POST /api/v1/workflow-instances/{id}/signals/{name}`.
    pub async fn signal_run(
        &self,
        id: &str,
        name: &str,
        payload: &Value,
    ) -> Result<Value, ClientError> {
        let builder = self
            .request(
                Method::POST,
                self.url("api/v1/workflow-instances", &[id, "signals", name]),
            )
            .json(payload);
        self.json(builder).await
    }

    /// `GET /api/v1/agents`.
    pub async fn list_agents(&self) -> Result<Value, ClientError> {
        self.json(self.request(Method::GET, self.url("api/v1/agents", &[])))
            .await
    }
}

/// The error of a failed answer: the server's error shape, or a description of the body.
fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    let body: Option<Value> = serde_json::from_slice(bytes).ok();
    let error = body.as_ref().and_then(|b| b.get("error"));
    match error {
        Some(error) => ClientError::Api {
            status,
            code: error
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            details: error
                .get("details")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        },
        None => {
            let text = String::from_utf8_lossy(bytes);
            let text = text.trim();
            ClientError::Api {
                status,
                code: status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_lowercase()
                    .replace(' ', "_"),
                message: if text.is_empty() {
                    format!("HTTP {status}")
                } else {
                    text.chars().take(300).collect()
                },
                details: Vec::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_joined_under_the_base_and_segments_encoded() {
        let client = Client::new("http://h:1/prefix", None).expect("client");
        assert_eq!(
            client.url("api/v1/plugins", &["a b", "1.0.0"]).as_str(),
            "http://h:1/prefix/api/v1/plugins/a%20b/1.0.0"
        );
        let client = Client::new("http://h:1", None).expect("client");
        assert_eq!(
            client.url("api/v1/agents", &[]).as_str(),
            "http://h:1/api/v1/agents"
        );
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(matches!(
            Client::new("ftp://h", None),
            Err(ClientError::InvalidUrl { .. })
        ));
        assert!(matches!(
            Client::new("not a url", None),
            Err(ClientError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn the_error_shape_becomes_one_line() {
        let body = br#"{"error":{"code":"validation_failed","message":"invalid definition",
            "details":[{"path":"/steps/0","code":"unknown_step","message":"no such step"}]}}"#;
        let error = api_error(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(
            error.to_string(),
            "validation_failed: invalid definition (/steps/0: unknown_step: no such step)"
        );
        assert_eq!(error.code(), Some("validation_failed"));
        let error = api_error(StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(error.to_string(), "bad_gateway: upstream down");
    }
}
