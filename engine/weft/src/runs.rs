//! Workflow runs: start (validated input, idempotent), read, list, cancel, retry, signal.
//! Execution itself is the executor's; this service creates runs and asks for transitions.
//!
//! Invariants: a run is pinned to the definition version it started with; only published
//! definitions run; starting by name picks the newest enabled, published version.

use std::sync::Arc;

use chrono::Utc;
use serde_json::{Map, Value, json};
use uuid::Uuid;
use weft_domain::{DefinitionSpec, Issue};
use weft_store::{
    AttemptRecord, DefinitionRecord, NewRun, Page, RunQuery, RunRecord, SignalRecord, StepRecord,
    Store, StoreError,
};

use crate::executor::plan::{self, RunView, event};
use crate::executor::{DefinitionCache, Executor, ExecutorError};

/// Which definition a run starts from.
#[derive(Debug, Clone)]
pub enum DefinitionRef {
    /// A definition id.
    Id(Uuid),
    /// A name, optionally a version requirement (default: newest enabled published version).
    Name {
        /// Name.
        name: String,
        /// Version or requirement.
        version: Option<String>,
    },
}

/// A request to start a run.
#[derive(Debug, Clone)]
pub struct StartRun {
    /// Which definition.
    pub definition: DefinitionRef,
    /// The run input.
    pub input: Value,
    /// Makes a repeated start return the same run.
    pub idempotency_key: Option<String>,
}

/// Why a run operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No such run (or step).
    #[error("{0}")]
    NotFound(String),
    /// The definition cannot run (draft, disabled, unknown).
    #[error("{0}")]
    NotRunnable(String),
    /// The input does not match the definition's input parameters.
    #[error("the run input is invalid ({} problem(s))", .0.len())]
    InvalidInput(Vec<Issue>),
    /// The run is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The store or executor failed.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
}

impl From<StoreError> for RunError {
    fn from(error: StoreError) -> Self {
        RunError::Executor(ExecutorError::Store(error))
    }
}

/// The runs service.
#[derive(Clone)]
pub struct Runs {
    store: Arc<dyn Store>,
    executor: Executor,
}

impl Runs {
    /// Over the store and the executor.
    pub fn new(store: Arc<dyn Store>, executor: Executor) -> Self {
        Self { store, executor }
    }

    /// Start a run; returns it and whether it was created (false: idempotent repeat).
    pub async fn start(&self, request: StartRun) -> Result<(RunRecord, bool), RunError> {
        if let Some(key) = &request.idempotency_key
            && (key.is_empty() || key.len() > 255)
        {
            return Err(RunError::BadRequest(
                "the idempotency key must be 1 to 255 characters".into(),
            ));
        }
        if request
            .idempotency_key
            .as_deref()
            .is_some_and(|key| key.contains('\0'))
        {
            return Err(RunError::BadRequest(
                "the idempotency key must not contain NUL characters".into(),
            ));
        }
        let definition = match &request.definition {
            DefinitionRef::Id(id) => {
                let record = self.store.get_definition(*id).await?.ok_or_else(|| {
                    RunError::NotFound(format!("no workflow definition with id {id}"))
                })?;
                if record.is_draft {
                    return Err(RunError::NotRunnable(format!(
                        "{}@{} is a draft: publish it before running it",
                        record.name, record.version
                    )));
                }
                if !record.is_enabled {
                    return Err(RunError::NotRunnable(format!(
                        "{}@{} is disabled: enable it to start runs",
                        record.name, record.version
                    )));
                }
                record
            }
            DefinitionRef::Name { name, version } => {
                let requirement = match version
                    .as_deref()
                    .map(weft_domain::version::parse_requirement)
                {
                    Some(Ok(r)) => Some(r),
                    Some(Err(e)) => return Err(RunError::BadRequest(e.to_string())),
                    None => None,
                };
                latest_runnable(self.store.as_ref(), name, requirement.as_ref())
                    .await?
                    .ok_or_else(|| {
                        RunError::NotRunnable(format!(
                            "no enabled, published version of '{name}'{}",
                            version
                                .as_deref()
                                .map(|v| format!(" matches {v}"))
                                .unwrap_or_default()
                        ))
                    })?
            }
        };
        let spec = self.executor.definitions().get(definition.id).await?;
        let input = validate_input(self.executor.definitions(), &spec, request.input)
            .map_err(RunError::InvalidInput)?;
        let Some(entry) = spec.entry_step() else {
            return Err(RunError::NotRunnable("the definition has no steps".into()));
        };
        let now = Utc::now();
        let id = Uuid::now_v7();
        let entry_id = entry.step_definition_id.clone();
        // A capped definition's runs are held (PENDING) until the executor admits them; their
        // deadline counts from the admission.
        let held = spec.max_concurrent_runs.is_some();
        let (deadline_at, initial_steps) = plan::beginning(&spec, &entry_id, held, now);
        let run = NewRun {
            id,
            definition_id: definition.id,
            definition_name: definition.name.clone(),
            definition_version: definition.version.clone(),
            input,
            idempotency_key: request.idempotency_key,
            parent: None,
            depth: 0,
            deadline_at,
            initial_steps,
        };
        let mut events = vec![event(
            id,
            None,
            "run.created",
            json!({"definitionId": definition.id,
            "definitionName": definition.name, "definitionVersion": definition.version}),
        )];
        if !held {
            events.push(event(id, None, "run.started", json!({})));
            events.push(event(id, Some(&entry_id), "step.ready", json!({})));
        }
        let (record, created) = self.store.create_run(run, events).await?;
        if created {
            self.executor.metrics().run_started(&record.definition_name);
            tracing::info!(run_id = %record.id, definition = %record.definition_name, version = %record.definition_version, held, "run started");
            if held {
                self.executor.notify_admission();
            } else {
                self.executor.notify();
            }
        }
        Ok((record, created))
    }

    /// One run.
    pub async fn get(&self, id: Uuid) -> Result<RunRecord, RunError> {
        self.store
            .get_run(id)
            .await?
            .ok_or_else(|| RunError::NotFound(format!("no run with id {id}")))
    }

    /// A page of runs.
    pub async fn list(&self, query: &RunQuery) -> Result<Page<RunRecord>, RunError> {
        Ok(self.store.list_runs(query).await?)
    }

    /// A run's steps with their attempts.
    pub async fn steps(&self, id: Uuid) -> Result<(Vec<StepRecord>, Vec<AttemptRecord>), RunError> {
        self.get(id).await?;
        let steps = self.store.list_steps(id).await?;
        let attempts = self.store.list_attempts(id).await?;
        Ok((steps, attempts))
    }

    /// One step row with its attempts.
    pub async fn step(&self, id: Uuid) -> Result<(StepRecord, Vec<AttemptRecord>), RunError> {
        let step = self
            .store
            .get_step(id)
            .await?
            .ok_or_else(|| RunError::NotFound(format!("no step instance with id {id}")))?;
        let attempts = self
            .store
            .list_attempts(step.run_id)
            .await?
            .into_iter()
            .filter(|a| a.step_row_id == id)
            .collect();
        Ok((step, attempts))
    }

    /// Cancel a run and, after it, its child runs. Running steps are interrupted.
    pub async fn cancel(&self, id: Uuid) -> Result<RunRecord, RunError> {
        let run = self.get(id).await?;
        if run.status.is_terminal() {
            return Err(RunError::Conflict(format!(
                "run {id} is already {}",
                run.status.as_str()
            )));
        }
        self.cancel_tree(id, "cancelled by request").await?;
        self.executor.notify_admission();
        self.get(id).await
    }

    async fn cancel_tree(&self, id: Uuid, reason: &str) -> Result<(), RunError> {
        self.executor.cancel_tree(id, reason, true).await?;
        Ok(())
    }

    /// Retry a failed or cancelled run from its failed and cancelled steps.
    pub async fn retry(&self, id: Uuid) -> Result<RunRecord, RunError> {
        let current = self.get(id).await?;
        let spec = self
            .executor
            .definitions()
            .get(current.definition_id)
            .await?;
        let mut tx = self.store.begin_run(id).await.map_err(|e| match e {
            StoreError::NotFound => RunError::NotFound(format!("no run with id {id}")),
            other => other.into(),
        })?;
        let run = tx.run().clone();
        if !matches!(
            run.status,
            weft_store::RunStatus::Failed | weft_store::RunStatus::Cancelled
        ) {
            tx.rollback().await?;
            return Err(RunError::Conflict(format!(
                "only a failed or cancelled run can be retried; run {id} is {}",
                run.status.as_str()
            )));
        }
        if run.parent.is_some() {
            tx.rollback().await?;
            return Err(RunError::Conflict(
                "retry the parent run instead of a child run".into(),
            ));
        }
        let steps = tx.steps().await?;
        let view = RunView {
            spec: &spec,
            run: &run,
            steps: &steps,
        };
        let changes = plan::retry_run(&view, Utc::now());
        let tally = crate::metrics::Tally::of(&run.definition_name, &changes, &steps);
        tx.apply(changes).await?;
        self.executor.metrics().record(tally);
        tracing::info!(run_id = %id, "run retried");
        self.executor.notify();
        // A run cancelled while held is held again.
        self.executor.notify_admission();
        self.get(id).await
    }

    /// Post a signal to a run.
    pub async fn signal(
        &self,
        id: Uuid,
        name: &str,
        payload: Value,
    ) -> Result<SignalRecord, RunError> {
        if name.is_empty() || name.len() > 128 {
            return Err(RunError::BadRequest(
                "a signal name is 1 to 128 characters".into(),
            ));
        }
        let mut issues = Vec::new();
        crate::definitions::find_nul_characters(&payload, &mut String::new(), &mut issues);
        if name.contains('\0') || !issues.is_empty() {
            return Err(RunError::BadRequest(
                "a signal's name and payload must not contain NUL characters".into(),
            ));
        }
        let signal = self
            .store
            .post_signal(id, name, payload)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => RunError::NotFound(format!("no run with id {id}")),
                StoreError::Conflict(message) => RunError::Conflict(message),
                other => other.into(),
            })?;
        self.executor.notify();
        Ok(signal)
    }
}

/// The newest enabled, published version of `name` matching `requirement`.
pub async fn latest_runnable(
    store: &dyn Store,
    name: &str,
    requirement: Option<&semver::VersionReq>,
) -> Result<Option<DefinitionRecord>, StoreError> {
    let versions = store.list_versions(name).await?;
    Ok(versions
        .into_iter()
        .filter(|d| !d.is_draft && d.is_enabled)
        .filter_map(|d| d.version.parse::<semver::Version>().ok().map(|v| (v, d)))
        .filter(|(v, _)| requirement.is_none_or(|r| r.matches(v)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, d)| d))
}

/// Every way `value` breaks the parameter's JSON Schema, each at its JSON pointer. (Schemas were
/// compiled when the definition was validated; one that no longer compiles is reported too.)
fn schema_issues(
    definitions: &DefinitionCache,
    name: &str,
    schema: &Value,
    value: &Value,
    path: &str,
    issues: &mut Vec<Issue>,
) {
    match definitions.schema(schema) {
        Ok(validator) => {
            for error in validator.iter_errors(value) {
                issues.push(Issue {
                    path: format!("{path}{}", error.instance_path()),
                    code: "schema_mismatch".into(),
                    message: format!("input '{name}': {error}"),
                });
            }
        }
        Err(e) => issues.push(Issue {
            path: path.to_string(),
            code: "invalid_schema".into(),
            message: format!("the schema of input '{name}' does not compile: {e}"),
        }),
    }
}

/// Check a run input against the definition's input parameters; apply defaults. Every problem
/// is reported with its path. Schemas are compiled once, in `definitions`.
pub fn validate_input(
    definitions: &DefinitionCache,
    spec: &DefinitionSpec,
    input: Value,
) -> Result<Value, Vec<Issue>> {
    let mut object = match input {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        _ => {
            return Err(vec![Issue {
                path: "/input".into(),
                code: "invalid_type".into(),
                message: "the run input must be a JSON object".into(),
            }]);
        }
    };
    let mut issues = Vec::new();
    for parameter in &spec.input_parameters {
        let path = format!(
            "/input/{}",
            parameter.name.replace('~', "~0").replace('/', "~1")
        );
        match object.get(&parameter.name) {
            None | Some(Value::Null) => {
                if let Some(default) = &parameter.default {
                    object.insert(parameter.name.clone(), default.clone());
                } else if parameter.required {
                    issues.push(Issue {
                        path,
                        code: "required".into(),
                        message: format!("input '{}' is required", parameter.name),
                    });
                }
            }
            Some(value) => {
                if let Some(kind) = parameter.parameter_type()
                    && !kind.accepts(value)
                {
                    issues.push(Issue {
                        path,
                        code: "invalid_type".into(),
                        message: format!(
                            "input '{}' must be of type {}",
                            parameter.name,
                            kind.as_str()
                        ),
                    });
                } else if let Some(schema) = &parameter.schema {
                    schema_issues(
                        definitions,
                        &parameter.name,
                        schema,
                        value,
                        &path,
                        &mut issues,
                    );
                }
            }
        }
    }
    // No NUL character anywhere (PostgreSQL stores none; a run behaves the same on both).
    let input = Value::Object(object);
    crate::definitions::find_nul_characters(&input, &mut String::from("/input"), &mut issues);
    if issues.is_empty() {
        Ok(input)
    } else {
        Err(issues)
    }
}
