//! Workflow definitions: create, read, list, search, edit drafts, publish, version, enable,
//! delete. This is the one place that combines the domain model (validation, versions) with the
//! store; the HTTP layer only translates requests and errors.
//!
//! Invariants: every stored definition passed validation; a published version never changes;
//! `(name, version)` is unique.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;
use weft_domain::{Bump, DefinitionSpec, Issue, Version};
use weft_store::{
    DefinitionQuery, DefinitionRecord, DefinitionUpdate, Filter, NewDefinition, Page, RunQuery,
    RunStatus, Store, StoreError,
};

/// Keys of a definition document that belong to the record, not to the author's spec.
const RECORD_KEYS: [&str; 6] = [
    "id",
    "version",
    "isDraft",
    "isEnabled",
    "createdAt",
    "updatedAt",
];

/// Most steps a definition may have (validation is quadratic in the worst case).
pub const MAX_STEPS: usize = 1000;

/// Why a definition operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// No definition with that id.
    #[error("no workflow definition with id {0}")]
    NotFound(Uuid),
    /// The document is invalid; every problem is listed.
    #[error("the workflow definition is invalid ({} problem(s))", .0.len())]
    Invalid(Vec<Issue>),
    /// The body is not a JSON object.
    #[error("the request body must be a JSON object")]
    NotAnObject,
    /// A published version cannot change.
    #[error("version {version} of '{name}' is published and cannot change; create a new version")]
    Immutable {
        /// Definition name.
        name: String,
        /// Its version.
        version: String,
    },
    /// Publishing twice.
    #[error("version {version} of '{name}' is already published")]
    AlreadyPublished {
        /// Definition name.
        name: String,
        /// Its version.
        version: String,
    },
    /// `(name, version)` already exists.
    #[error("{0}")]
    Conflict(String),
    /// Unfinished runs use the definition.
    #[error("{0} unfinished run(s) use this definition; cancel them or let them finish first")]
    InUse(u64),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for DefinitionError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(message) => DefinitionError::Conflict(message),
            other => DefinitionError::Store(other),
        }
    }
}

/// A stored definition as the API shows it.
#[derive(Debug, Clone)]
pub struct Definition(DefinitionRecord);

impl Definition {
    /// The record's id.
    pub fn id(&self) -> Uuid {
        self.0.id
    }

    /// The Go engine's JSON shape: the spec plus `id`, `version`, `isDraft`, `isEnabled`,
    /// `createdAt`, `updatedAt`.
    pub fn to_json(&self) -> Value {
        let record = &self.0;
        let mut object = match &record.spec {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        object.insert("id".into(), Value::String(record.id.to_string()));
        object.insert("name".into(), Value::String(record.name.clone()));
        object.insert("version".into(), Value::String(record.version.clone()));
        object.insert("isDraft".into(), Value::Bool(record.is_draft));
        object.insert("isEnabled".into(), Value::Bool(record.is_enabled));
        object.insert(
            "createdAt".into(),
            Value::String(timestamp(record.created_at)),
        );
        object.insert(
            "updatedAt".into(),
            Value::String(timestamp(record.updated_at)),
        );
        Value::Object(object)
    }
}

/// Timestamps in API responses: RFC 3339, UTC, microseconds.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Options of [`Definitions::create`].
#[derive(Debug, Default, Clone, Copy)]
pub struct CreateOptions {
    /// Create as a draft (default) or directly published. `None`: the body's `isDraft`, else draft.
    pub draft: Option<bool>,
}

/// How to number a new version.
#[derive(Debug, Clone)]
pub enum NextVersion {
    /// Bump the highest existing version of the name.
    Bump(Bump),
    /// Use this exact version.
    Exact(Version),
}

/// The workflow-definition service.
#[derive(Clone)]
pub struct Definitions {
    store: Arc<dyn Store>,
}

impl Definitions {
    /// Build over a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Validate and store a new definition. The body may carry `version` (default 0.1.0),
    /// `isDraft` and `isEnabled`; other record keys are ignored.
    pub async fn create(
        &self,
        body: Value,
        options: CreateOptions,
    ) -> Result<Definition, DefinitionError> {
        let Value::Object(mut object) = body else {
            return Err(DefinitionError::NotAnObject);
        };
        let mut issues = Vec::new();
        let version = take_version(&mut object, &mut issues).unwrap_or_else(Version::initial);
        let is_draft = options
            .draft
            .or_else(|| take_bool(&mut object, "isDraft", &mut issues))
            .unwrap_or(true);
        let is_enabled = take_bool(&mut object, "isEnabled", &mut issues).unwrap_or(false);
        let spec = parse_spec(object, issues)?;
        let record = self
            .store
            .insert_definition(NewDefinition {
                name: spec.name.clone(),
                version: version.to_string(),
                description: spec.description.clone(),
                is_draft,
                is_enabled,
                spec: spec.to_json(),
            })
            .await
            .map_err(|e| conflict_message(e, &spec.name, &version))?;
        tracing::info!(definition_id = %record.id, name = %record.name, version = %record.version, "workflow definition created");
        Ok(Definition(record))
    }

    /// One definition.
    pub async fn get(&self, id: Uuid) -> Result<Definition, DefinitionError> {
        self.store
            .get_definition(id)
            .await?
            .map(Definition)
            .ok_or(DefinitionError::NotFound(id))
    }

    /// A page of definitions.
    pub async fn list(&self, query: &DefinitionQuery) -> Result<Page<Definition>, DefinitionError> {
        let page = self.store.list_definitions(query).await?;
        Ok(Page {
            items: page.items.into_iter().map(Definition).collect(),
            total: page.total,
        })
    }

    /// Replace fields of a draft: top-level keys present in `body` replace the stored ones
    /// (so a full document replaces everything, and `{"description": "..."}` changes only that).
    pub async fn update(&self, id: Uuid, body: Value) -> Result<Definition, DefinitionError> {
        let Value::Object(mut patch) = body else {
            return Err(DefinitionError::NotAnObject);
        };
        let current = self.get(id).await?.0;
        if !current.is_draft {
            return Err(DefinitionError::Immutable {
                name: current.name,
                version: current.version,
            });
        }
        let mut issues = Vec::new();
        let version = take_version(&mut patch, &mut issues)
            .map(|v| v.to_string())
            .unwrap_or_else(|| current.version.clone());
        let mut object = match current.spec {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        for (key, value) in patch {
            if !RECORD_KEYS.contains(&key.as_str()) {
                object.insert(key, value);
            }
        }
        let spec = parse_spec(object, issues)?;
        let record = self
            .store
            .update_draft(
                id,
                DefinitionUpdate {
                    name: spec.name.clone(),
                    version: version.clone(),
                    description: spec.description.clone(),
                    spec: spec.to_json(),
                },
            )
            .await
            .map_err(|e| match e {
                StoreError::NotFound => DefinitionError::NotFound(id),
                StoreError::NotDraft => DefinitionError::Immutable {
                    name: spec.name.clone(),
                    version: version.clone(),
                },
                StoreError::Conflict(_) => DefinitionError::Conflict(format!(
                    "a workflow definition named '{}' with version {version} already exists",
                    spec.name
                )),
                other => DefinitionError::Store(other),
            })?;
        Ok(Definition(record))
    }

    /// Freeze a draft. Validates again, including references to other definitions.
    pub async fn publish(&self, id: Uuid) -> Result<Definition, DefinitionError> {
        let current = self.get(id).await?.0;
        if !current.is_draft {
            return Err(DefinitionError::AlreadyPublished {
                name: current.name,
                version: current.version,
            });
        }
        let spec = match DefinitionSpec::from_json(current.spec.clone()) {
            Ok(spec) => spec,
            Err(issues) => return Err(DefinitionError::Invalid(issues)),
        };
        let issues = self.check_references(&spec).await?;
        if !issues.is_empty() {
            return Err(DefinitionError::Invalid(issues));
        }
        let record = self
            .store
            .publish_definition(id)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => DefinitionError::NotFound(id),
                StoreError::NotDraft => DefinitionError::AlreadyPublished {
                    name: current.name.clone(),
                    version: current.version.clone(),
                },
                other => DefinitionError::Store(other),
            })?;
        tracing::info!(definition_id = %id, name = %record.name, version = %record.version, "workflow definition published");
        Ok(Definition(record))
    }

    /// Enable or disable a definition (published or not).
    pub async fn set_enabled(
        &self,
        id: Uuid,
        enabled: bool,
    ) -> Result<Definition, DefinitionError> {
        self.store
            .set_definition_enabled(id, enabled)
            .await
            .map(Definition)
            .map_err(|e| not_found_as(e, id))
    }

    /// Delete a definition, unless unfinished runs use it.
    pub async fn delete(&self, id: Uuid) -> Result<(), DefinitionError> {
        for status in [RunStatus::Pending, RunStatus::Running] {
            let runs = self
                .store
                .list_runs(&RunQuery {
                    definition_id: Some(id),
                    status: Some(status),
                    limit: 1,
                    ..Default::default()
                })
                .await?;
            if runs.total > 0 {
                return Err(DefinitionError::InUse(runs.total));
            }
        }
        self.store
            .delete_definition(id)
            .await
            .map_err(|e| not_found_as(e, id))?;
        tracing::info!(definition_id = %id, "workflow definition deleted");
        Ok(())
    }

    /// Create the next version of `id`'s name as a draft: a copy of `id`'s spec with the
    /// top-level keys of `body` (if any) replaced. The name cannot change.
    pub async fn new_version(
        &self,
        id: Uuid,
        next: NextVersion,
        body: Option<Value>,
    ) -> Result<Definition, DefinitionError> {
        let source = self.get(id).await?.0;
        let mut object = match source.spec {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let mut issues = Vec::new();
        if let Some(body) = body {
            let Value::Object(patch) = body else {
                return Err(DefinitionError::NotAnObject);
            };
            for (key, value) in patch {
                if key == "name" && value.as_str() != Some(source.name.as_str()) {
                    issues.push(Issue {
                        path: "/name".into(),
                        code: "invalid_value".into(),
                        message: format!(
                            "a new version keeps the name '{}'; create a new definition to rename",
                            source.name
                        ),
                    });
                } else if !RECORD_KEYS.contains(&key.as_str()) {
                    object.insert(key, value);
                }
            }
        }
        let spec = parse_spec(object, issues)?;
        let version = match next {
            NextVersion::Exact(version) => version,
            NextVersion::Bump(bump) => {
                let highest = self
                    .store
                    .list_versions(&source.name)
                    .await?
                    .iter()
                    .filter_map(|r| r.version.parse::<Version>().ok())
                    .max()
                    .unwrap_or_else(Version::initial);
                highest.bump(bump)
            }
        };
        let record = self
            .store
            .insert_definition(NewDefinition {
                name: source.name.clone(),
                version: version.to_string(),
                description: spec.description.clone(),
                is_draft: true,
                is_enabled: false,
                spec: spec.to_json(),
            })
            .await
            .map_err(|e| conflict_message(e, &source.name, &version))?;
        tracing::info!(definition_id = %record.id, name = %record.name, version = %record.version, "workflow definition version created");
        Ok(Definition(record))
    }

    /// References that only the store can check: sub-workflow steps must name an existing
    /// definition.
    async fn check_references(&self, spec: &DefinitionSpec) -> Result<Vec<Issue>, DefinitionError> {
        let mut issues = Vec::new();
        for (index, step) in spec.steps.iter().enumerate() {
            let Some(config) = &step.workflow_config else {
                continue;
            };
            if let Some(id) = &config.workflow_definition_id {
                let found = match Uuid::parse_str(id) {
                    Ok(uuid) => self.store.get_definition(uuid).await?.is_some(),
                    Err(_) => false,
                };
                if !found {
                    issues.push(Issue {
                        path: format!("/steps/{index}/workflowConfig/workflowDefinitionId"),
                        code: "unknown_definition".into(),
                        message: format!("no workflow definition with id '{id}'"),
                    });
                }
            } else if let Some(name) = &config.workflow_name
                && self.store.list_versions(name).await?.is_empty()
            {
                issues.push(Issue {
                    path: format!("/steps/{index}/workflowConfig/workflowName"),
                    code: "unknown_definition".into(),
                    message: format!("no workflow definition named '{name}'"),
                });
            }
        }
        Ok(issues)
    }
}

/// Parse and validate the author's part; structural issues found earlier are reported too.
fn parse_spec(
    mut object: Map<String, Value>,
    mut issues: Vec<Issue>,
) -> Result<DefinitionSpec, DefinitionError> {
    for key in RECORD_KEYS {
        object.remove(key);
    }
    if let Some(Value::Array(steps)) = object.get("steps")
        && steps.len() > MAX_STEPS
    {
        issues.push(Issue {
            path: "/steps".into(),
            code: "too_many_steps".into(),
            message: format!(
                "a definition has at most {MAX_STEPS} steps, not {}",
                steps.len()
            ),
        });
    }
    let document = Value::Object(object);
    find_nul_characters(&document, &mut String::new(), &mut issues);
    if !issues.is_empty() {
        return Err(DefinitionError::Invalid(issues));
    }
    match DefinitionSpec::from_json(document) {
        Ok(spec) if issues.is_empty() => Ok(spec),
        Ok(_) => Err(DefinitionError::Invalid(issues)),
        Err(mut more) => {
            issues.append(&mut more);
            Err(DefinitionError::Invalid(issues))
        }
    }
}

/// NUL characters cannot be stored by PostgreSQL (TEXT and JSONB refuse them): report each.
pub(crate) fn find_nul_characters(value: &Value, path: &mut String, issues: &mut Vec<Issue>) {
    let nul = |path: &str| Issue {
        path: path.to_string(),
        code: "invalid_value".into(),
        message: "text must not contain NUL characters".into(),
    };
    match value {
        Value::String(text) if text.contains('\0') => issues.push(nul(path)),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("/{index}"));
                find_nul_characters(item, path, issues);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = path.len();
                path.push('/');
                path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                if key.contains('\0') {
                    issues.push(nul(path));
                } else {
                    find_nul_characters(item, path, issues);
                }
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn take_version(object: &mut Map<String, Value>, issues: &mut Vec<Issue>) -> Option<Version> {
    match object.remove("version")? {
        Value::Null => None,
        Value::String(text) => match text.parse::<Version>() {
            Ok(version) => Some(version),
            Err(e) => {
                issues.push(Issue {
                    path: "/version".into(),
                    code: "invalid_value".into(),
                    message: format!("'{text}' is not a semantic version: {e}"),
                });
                None
            }
        },
        _ => {
            issues.push(Issue {
                path: "/version".into(),
                code: "invalid_type".into(),
                message: "version must be a string such as \"1.2.0\"".into(),
            });
            None
        }
    }
}

fn take_bool(object: &mut Map<String, Value>, key: &str, issues: &mut Vec<Issue>) -> Option<bool> {
    match object.remove(key)? {
        Value::Null => None,
        Value::Bool(b) => Some(b),
        _ => {
            issues.push(Issue {
                path: format!("/{key}"),
                code: "invalid_type".into(),
                message: format!("{key} must be a boolean"),
            });
            None
        }
    }
}

fn conflict_message(error: StoreError, name: &str, version: &Version) -> DefinitionError {
    match error {
        StoreError::Conflict(_) => DefinitionError::Conflict(format!(
            "a workflow definition named '{name}' with version {version} already exists; \
             POST /api/v1/workflow-definitions/{{id}}/versions creates the next version"
        )),
        other => DefinitionError::Store(other),
    }
}

fn not_found_as(error: StoreError, id: Uuid) -> DefinitionError {
    match error {
        StoreError::NotFound => DefinitionError::NotFound(id),
        other => other.into(),
    }
}

/// Re-export for the HTTP layer's search endpoint.
pub use weft_store::FilterError;

/// Parse a Go-engine search expression.
pub fn parse_filter(value: &Value) -> Result<Filter, FilterError> {
    Filter::from_json(value)
}
