//! The plugin registry: which step plugins exist (uploaded ones, stored in the database; ones
//! dropped in the plugins directory), their metadata, and running them.
//!
//! One owner: [`PluginRegistry`] keeps the catalogue behind a lock of its own and hands out
//! clones. Compiled code lives in the runtime (its bounded hot set and its disk cache); the
//! registry keeps the loaded handles of the plugins it knows.
//!
//! Invariants: `name@version` is immutable (same name and version with other bytes is refused);
//! an uploaded plugin is stored before it is listed; a directory plugin never shadows an
//! uploaded one with other bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use weft_runtime::{
    Invocation, InvokeError, Limits, LoadError, LoadedPlugin, Runtime, StepContext,
};
use weft_store::{NewPlugin, PluginRecord, Store, StoreError};

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum PluginSource {
    /// Uploaded through the API; stored in the database.
    Upload,
    /// A file in the plugins directory.
    Directory {
        /// The file.
        path: String,
    },
}

/// Per-plugin limits; unset fields take the server defaults. All are clamped to the server maxima.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginLimits {
    /// Linear memory cap, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Fuel budget (≈ instructions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Wall-clock time-out, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Output size cap, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
    /// Host log calls per invocation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_lines: Option<u32>,
}

impl PluginLimits {
    /// `base` with every field set here replacing its counterpart.
    pub fn apply_to(&self, base: &Limits) -> Limits {
        Limits {
            memory_bytes: self.memory_bytes.unwrap_or(base.memory_bytes),
            fuel: self.fuel.or(base.fuel),
            timeout: self
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(base.timeout),
            output_bytes: self.output_bytes.unwrap_or(base.output_bytes),
            log_lines: self.log_lines.unwrap_or(base.log_lines),
        }
    }

    /// The effective limits, in this struct's shape, for responses.
    pub fn of(limits: &Limits) -> PluginLimits {
        PluginLimits {
            memory_bytes: Some(limits.memory_bytes),
            fuel: limits.fuel,
            timeout_ms: Some(u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX)),
            output_bytes: Some(limits.output_bytes),
            log_lines: Some(limits.log_lines),
        }
    }
}

/// What the API shows of a plugin version.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginInfo {
    /// Name, as the plugin describes itself.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// What it does.
    pub description: String,
    /// Hex SHA-256 of the component bytes.
    pub sha256: String,
    /// Size of the component, bytes.
    pub wasm_size: u64,
    /// Size of the compiled artifact, bytes.
    pub compiled_size: u64,
    /// JSON Schema of the input.
    pub input_schema: Value,
    /// JSON Schema of the output.
    pub output_schema: Value,
    /// Where it came from.
    pub source: PluginSource,
    /// Limits set for this plugin (unset: server defaults).
    pub limits: PluginLimits,
    /// When it was uploaded (directory plugins: when loaded).
    pub created_at: DateTime<Utc>,
    /// Whether this process loaded it without compiling (from the compiled-code cache).
    pub loaded_from_cache: bool,
}

/// One plugin version, as [`PluginRegistry::resolve`] found it (cheap to clone).
#[derive(Clone)]
pub struct ResolvedPlugin(Arc<Entry>);

impl ResolvedPlugin {
    pub fn info(&self) -> &PluginInfo {
        &self.0.info
    }
}

struct Entry {
    info: PluginInfo,
    loaded: LoadedPlugin,
    version: semver::Version,
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The bytes are not a usable plugin.
    #[error("{0}")]
    Load(#[from] LoadError),
    /// No such plugin or version.
    #[error("no plugin {0}")]
    NotFound(String),
    /// `name@version` exists with other bytes.
    #[error(
        "plugin {name}@{version} already exists with other content (sha256 {existing}); versions are immutable: publish a new version"
    )]
    VersionExists {
        /// Name.
        name: String,
        /// Version.
        version: String,
        /// The hash already registered.
        existing: String,
    },
    /// An enabled definition uses it.
    #[error(
        "plugin {name}@{version} is used by enabled workflow definition(s): {users}; disable them first"
    )]
    InUse {
        /// Name.
        name: String,
        /// Version.
        version: String,
        /// `name@version` of the definitions.
        users: String,
    },
    /// Directory plugins are managed through the directory.
    #[error("plugin {0} comes from the plugins directory; remove the file instead")]
    FromDirectory(String),
    /// The runtime stopped the invocation.
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a directory (re)load did.
#[derive(Debug, Default, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    /// Newly loaded `name@version`.
    pub loaded: Vec<String>,
    /// Unchanged files.
    pub unchanged: usize,
    /// Plugins whose file disappeared.
    pub removed: Vec<String>,
    /// Files that could not be loaded, with the reason.
    pub failed: Vec<FailedFile>,
}

/// A plugin file that could not be loaded.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedFile {
    /// The file.
    pub path: String,
    /// Stable code of the reason.
    pub code: String,
    /// The reason.
    pub message: String,
}

/// The outcome of one invocation, as the invoke endpoint reports it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvokeReport {
    /// `completed` or `failed`.
    pub status: &'static str,
    /// The output, when completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The error, when failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<StepFailure>,
    /// Fuel consumed, if metered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel_used: Option<u64>,
    /// Peak linear memory, bytes.
    pub peak_memory_bytes: u64,
    /// Wall-clock duration, milliseconds.
    pub duration_ms: f64,
    /// The limits the invocation ran under.
    pub limits: PluginLimits,
}

/// A failed step: the plugin's own error, or a limit the sandbox enforced.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepFailure {
    /// `plugin` (the step's own error) or `sandbox` (a limit or trap).
    pub source: &'static str,
    /// Stable code (the plugin's, or the sandbox's: `timeout`, `memory_limit`...).
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Whether running it again may succeed.
    pub retryable: bool,
}

/// Settings of the registry.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// The plugins directory, if any.
    pub plugins_dir: Option<PathBuf>,
    /// How often the directory is checked for changes (`None`: only on demand).
    pub poll_interval: Option<Duration>,
    /// The server's hard caps (the runtime enforces them too; here they make reports exact).
    pub maxima: Limits,
}

/// The plugin registry. Cheap to clone; all clones share one catalogue.
#[derive(Clone)]
pub struct PluginRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Runtime,
    store: Arc<dyn Store>,
    options: RegistryOptions,
    catalogue: RwLock<BTreeMap<String, BTreeMap<semver::Version, Arc<Entry>>>>,
    /// Directory reloads run one at a time.
    reloading: tokio::sync::Mutex<DirState>,
}

#[derive(Default)]
struct DirState {
    /// Fingerprint of each file at the last reload.
    files: BTreeMap<PathBuf, (SystemTime, u64)>,
    /// Files that failed to load, with the reason: reported again until they change.
    failed: BTreeMap<PathBuf, FailedFile>,
}

impl PluginRegistry {
    /// Load every stored plugin (from the compiled cache when possible) and the plugins directory.
    pub async fn start(
        runtime: Runtime,
        store: Arc<dyn Store>,
        options: RegistryOptions,
    ) -> Result<PluginRegistry, StoreError> {
        let registry = PluginRegistry {
            inner: Arc::new(Inner {
                runtime,
                store,
                options,
                catalogue: RwLock::new(BTreeMap::new()),
                reloading: tokio::sync::Mutex::new(DirState::default()),
            }),
        };
        let records = registry.inner.store.list_plugins().await?;
        let count = records.len();
        for record in records {
            if let Err(e) = registry.load_record(record).await {
                tracing::error!(error = %e, "stored plugin could not be loaded; skipped");
            }
        }
        tracing::info!(plugins = count, "stored plugins loaded");
        let report = registry.reload_directory().await;
        if !report.loaded.is_empty() || !report.failed.is_empty() {
            tracing::info!(loaded = ?report.loaded, failed = report.failed.len(), "plugins directory loaded");
        }
        Ok(registry)
    }

    async fn load_record(&self, record: PluginRecord) -> Result<(), PluginError> {
        let wasm = self
            .inner
            .store
            .plugin_wasm(&record.sha256_hex)
            .await?
            .ok_or_else(|| PluginError::NotFound(format!("blob {}", record.sha256_hex)))?;
        let loaded = self.inner.runtime.load(&wasm).await?;
        let limits = record
            .limits
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        self.insert(loaded, PluginSource::Upload, limits, record.created_at);
        Ok(())
    }

    fn insert(
        &self,
        loaded: LoadedPlugin,
        source: PluginSource,
        limits: PluginLimits,
        created_at: DateTime<Utc>,
    ) -> PluginInfo {
        let d = &loaded.description;
        let info = PluginInfo {
            name: d.name.clone(),
            version: d.version.to_string(),
            description: d.description.clone(),
            sha256: loaded.sha256.clone(),
            wasm_size: loaded.wasm_size,
            compiled_size: loaded.compiled_size,
            input_schema: d.input_schema.clone(),
            output_schema: d.output_schema.clone(),
            source,
            limits,
            created_at,
            loaded_from_cache: loaded.compiled_from_cache,
        };
        let entry = Entry {
            info: info.clone(),
            version: d.version.clone(),
            loaded,
        };
        let mut catalogue = self.write();
        catalogue
            .entry(info.name.clone())
            .or_default()
            .insert(entry.version.clone(), Arc::new(entry));
        info
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, BTreeMap<semver::Version, Arc<Entry>>>>
    {
        self.inner
            .catalogue
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, BTreeMap<semver::Version, Arc<Entry>>>>
    {
        self.inner
            .catalogue
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn entry(&self, name: &str, version: &semver::Version) -> Option<Arc<Entry>> {
        self.read().get(name)?.get(version).cloned()
    }

    /// Validate, describe and store an uploaded component. Returns the plugin and whether it is
    /// new (an identical re-upload is not an error).
    pub async fn upload(
        &self,
        wasm: &[u8],
        limits: PluginLimits,
    ) -> Result<(PluginInfo, bool), PluginError> {
        let loaded = self.inner.runtime.load(wasm).await?;
        let name = loaded.description.name.clone();
        let version = loaded.description.version.clone();
        if let Some(existing) = self.entry(&name, &version) {
            return if existing.info.sha256 == loaded.sha256 {
                Ok((existing.info.clone(), false))
            } else {
                Err(PluginError::VersionExists {
                    name,
                    version: version.to_string(),
                    existing: existing.info.sha256.clone(),
                })
            };
        }
        let inserted = self
            .inner
            .store
            .insert_plugin(NewPlugin {
                name: name.clone(),
                version: version.to_string(),
                sha256_hex: loaded.sha256.clone(),
                wasm: wasm.to_vec(),
                description: loaded.description.description.clone(),
                input_schema: loaded.description.input_schema.clone(),
                output_schema: loaded.description.output_schema.clone(),
                limits: Some(serde_json::to_value(&limits).unwrap_or(Value::Null))
                    .filter(|_| limits != PluginLimits::default()),
            })
            .await;
        let record = match inserted {
            Ok(record) => record,
            Err(StoreError::Conflict(_)) => {
                // Another replica (or a concurrent request) stored this version first.
                let stored = self
                    .inner
                    .store
                    .get_plugin(&name, &version.to_string())
                    .await?
                    .ok_or_else(|| PluginError::NotFound(format!("{name}@{version}")))?;
                if stored.sha256_hex != loaded.sha256 {
                    return Err(PluginError::VersionExists {
                        name,
                        version: version.to_string(),
                        existing: stored.sha256_hex,
                    });
                }
                stored
            }
            Err(e) => return Err(e.into()),
        };
        let info = self.insert(loaded, PluginSource::Upload, limits, record.created_at);
        tracing::info!(plugin = %info.name, version = %info.version, sha256 = %info.sha256, compiled_size = info.compiled_size, "plugin uploaded");
        Ok((info, true))
    }

    /// Every plugin version, by name then version.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.read()
            .values()
            .flat_map(|versions| versions.values().map(|e| e.info.clone()))
            .collect()
    }

    /// One version.
    pub fn get(&self, name: &str, version: &str) -> Result<PluginInfo, PluginError> {
        self.lookup(name, version).map(|e| e.info.clone())
    }

    fn lookup(&self, name: &str, version: &str) -> Result<Arc<Entry>, PluginError> {
        let not_found = || PluginError::NotFound(format!("{name}@{version}"));
        let version = semver::Version::parse(version).map_err(|_| not_found())?;
        self.entry(name, &version).ok_or_else(not_found)
    }

    /// The newest version of `name` matching `requirement` (any version when `None`).
    pub fn resolve(
        &self,
        name: &str,
        requirement: Option<&semver::VersionReq>,
    ) -> Option<ResolvedPlugin> {
        let catalogue = self.read();
        let versions = catalogue.get(name)?;
        versions
            .values()
            .rev()
            .find(|e| requirement.is_none_or(|r| r.matches(&e.version)))
            .map(|e| ResolvedPlugin(e.clone()))
    }

    /// The component bytes of one version.
    pub async fn wasm(&self, name: &str, version: &str) -> Result<Vec<u8>, PluginError> {
        let entry = self.lookup(name, version)?;
        match &entry.info.source {
            PluginSource::Upload => self
                .inner
                .store
                .plugin_wasm(&entry.info.sha256)
                .await?
                .ok_or_else(|| PluginError::NotFound(format!("{name}@{version}"))),
            PluginSource::Directory { path } => tokio::fs::read(path)
                .await
                .map_err(|_| PluginError::NotFound(format!("{name}@{version}"))),
        }
    }

    /// Delete an uploaded version, unless an enabled definition uses it.
    pub async fn delete(&self, name: &str, version: &str) -> Result<(), PluginError> {
        let entry = self.lookup(name, version)?;
        if let PluginSource::Directory { .. } = entry.info.source {
            return Err(PluginError::FromDirectory(format!("{name}@{version}")));
        }
        let users = self.enabled_users(name, &entry.version).await?;
        if !users.is_empty() {
            return Err(PluginError::InUse {
                name: name.into(),
                version: version.into(),
                users: users.join(", "),
            });
        }
        match self
            .inner
            .store
            .delete_plugin(name, &entry.info.version)
            .await
        {
            Ok(()) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        let mut catalogue = self.write();
        if let Some(versions) = catalogue.get_mut(name) {
            versions.remove(&entry.version);
            if versions.is_empty() {
                catalogue.remove(name);
            }
        }
        tracing::info!(plugin = %name, version = %version, "plugin deleted");
        Ok(())
    }

    /// `name@version` of enabled definitions with a task step that would run this version.
    async fn enabled_users(
        &self,
        name: &str,
        version: &semver::Version,
    ) -> Result<Vec<String>, StoreError> {
        let mut users = Vec::new();
        let mut offset = 0;
        loop {
            let page = self
                .inner
                .store
                .list_definitions(&weft_store::DefinitionQuery {
                    enabled: Some(true),
                    limit: 200,
                    offset,
                    ..Default::default()
                })
                .await?;
            let fetched = page.items.len() as u64;
            for record in page.items {
                let steps = record.spec.get("steps").and_then(Value::as_array);
                let uses = steps.into_iter().flatten().any(|step| {
                    let config = &step["taskConfig"];
                    config["taskDefinitionId"].as_str() == Some(name)
                        && match config["version"].as_str() {
                            None => true,
                            Some(req) => weft_domain::version::parse_requirement(req)
                                .map(|r| r.matches(version))
                                .unwrap_or(false),
                        }
                });
                if uses {
                    users.push(format!("{}@{}", record.name, record.version));
                }
            }
            offset += fetched;
            if fetched == 0 || offset >= page.total {
                break;
            }
        }
        Ok(users)
    }

    /// Run one version once, outside any workflow.
    pub async fn invoke(
        &self,
        name: &str,
        version: &str,
        input: &Value,
        overrides: &PluginLimits,
        cancel: CancellationToken,
    ) -> Result<InvokeReport, PluginError> {
        let context = StepContext {
            run_id: format!("invoke-{}", uuid::Uuid::now_v7()),
            step_id: name.to_string(),
            attempt: 1,
        };
        self.invoke_with_context(name, version, input, overrides, context, cancel)
            .await
    }

    /// Run one version for a step of a run.
    pub async fn invoke_with_context(
        &self,
        name: &str,
        version: &str,
        input: &Value,
        overrides: &PluginLimits,
        context: StepContext,
        cancel: CancellationToken,
    ) -> Result<InvokeReport, PluginError> {
        let entry = self.lookup(name, version)?;
        Ok(self
            .invoke_resolved(&ResolvedPlugin(entry), input, overrides, context, cancel)
            .await)
    }

    /// [`PluginRegistry::invoke_with_context`] of a plugin already resolved.
    pub async fn invoke_resolved(
        &self,
        plugin: &ResolvedPlugin,
        input: &Value,
        overrides: &PluginLimits,
        context: StepContext,
        cancel: CancellationToken,
    ) -> InvokeReport {
        let entry = &plugin.0;
        let limits = overrides
            .apply_to(
                &entry
                    .info
                    .limits
                    .apply_to(self.inner.runtime.default_limits()),
            )
            .clamp_to(&self.inner.options.maxima);
        let started = std::time::Instant::now();
        let result = self
            .inner
            .runtime
            .invoke(&entry.loaded, context, input, &limits, cancel)
            .await;
        report(result, &limits, started.elapsed())
    }

    /// Re-scan the plugins directory: load new or changed `*.wasm` files, drop vanished ones.
    pub async fn reload_directory(&self) -> ReloadReport {
        let mut report = ReloadReport::default();
        let Some(dir) = self.inner.options.plugins_dir.clone() else {
            return report;
        };
        let mut state = self.inner.reloading.lock().await;
        let files = match scan(&dir).await {
            Ok(files) => files,
            Err(e) => {
                report.failed.push(FailedFile {
                    path: dir.display().to_string(),
                    code: "unreadable_directory".into(),
                    message: e.to_string(),
                });
                return report;
            }
        };
        let mut failed = BTreeMap::new();
        for (path, fingerprint) in &files {
            if state.files.get(path) == Some(fingerprint) {
                match state.failed.get(path) {
                    Some(failure) => {
                        report.failed.push(failure.clone());
                        failed.insert(path.clone(), failure.clone());
                    }
                    None => report.unchanged += 1,
                }
                continue;
            }
            match self.load_file(path).await {
                Ok(info) => report
                    .loaded
                    .push(format!("{}@{}", info.name, info.version)),
                Err(e) => {
                    let code = match &e {
                        PluginError::Load(load) => load.code().to_string(),
                        PluginError::VersionExists { .. } => "version_exists".into(),
                        _ => "load_failed".into(),
                    };
                    tracing::warn!(path = %path.display(), error = %e, "plugin file not loaded");
                    let failure = FailedFile {
                        path: path.display().to_string(),
                        code,
                        message: e.to_string(),
                    };
                    failed.insert(path.clone(), failure.clone());
                    report.failed.push(failure);
                }
            }
        }
        // Directory plugins whose file is gone.
        let mut catalogue = self.write();
        for versions in catalogue.values_mut() {
            versions.retain(|_, e| match &e.info.source {
                PluginSource::Directory { path } if !files.contains_key(Path::new(path)) => {
                    report
                        .removed
                        .push(format!("{}@{}", e.info.name, e.info.version));
                    false
                }
                _ => true,
            });
        }
        catalogue.retain(|_, versions| !versions.is_empty());
        drop(catalogue);
        state.files = files;
        state.failed = failed;
        report
    }

    async fn load_file(&self, path: &Path) -> Result<PluginInfo, PluginError> {
        let wasm = tokio::fs::read(path)
            .await
            .map_err(|e| PluginError::NotFound(format!("{}: {e}", path.display())))?;
        let loaded = self.inner.runtime.load(&wasm).await?;
        let d = &loaded.description;
        if let Some(existing) = self.entry(&d.name, &d.version)
            && existing.info.sha256 != loaded.sha256
            && existing.info.source == PluginSource::Upload
        {
            return Err(PluginError::VersionExists {
                name: d.name.clone(),
                version: d.version.to_string(),
                existing: existing.info.sha256.clone(),
            });
        }
        let source = PluginSource::Directory {
            path: path.display().to_string(),
        };
        Ok(self.insert(loaded, source, PluginLimits::default(), Utc::now()))
    }

    /// Watch the plugins directory until `shutdown`, reloading when a file changes.
    pub async fn watch_directory(self, shutdown: CancellationToken) {
        let (Some(_), Some(interval)) = (
            &self.inner.options.plugins_dir,
            self.inner.options.poll_interval,
        ) else {
            return;
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {
                    let report = self.reload_directory().await;
                    if !report.loaded.is_empty() || !report.removed.is_empty() {
                        tracing::info!(loaded = ?report.loaded, removed = ?report.removed, "plugins directory changed");
                    }
                }
            }
        }
    }

    /// The runtime's counters.
    pub fn runtime_stats(&self) -> weft_runtime::RuntimeStats {
        self.inner.runtime.stats()
    }
}

/// `*.wasm` files of `dir` with their modification time and size.
async fn scan(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, (SystemTime, u64)>> {
    let mut files = BTreeMap::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "wasm") {
            continue;
        }
        let Ok(meta) = entry.metadata().await else {
            continue;
        };
        if meta.is_file() {
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            files.insert(path, (modified, meta.len()));
        }
    }
    Ok(files)
}

fn report(
    result: Result<Invocation, InvokeError>,
    limits: &Limits,
    elapsed: Duration,
) -> InvokeReport {
    let limits_view = PluginLimits::of(limits);
    match result {
        Ok(invocation) => {
            let (status, output, error) = match invocation.outcome {
                Ok(output) => ("completed", Some(output), None),
                Err(e) => (
                    "failed",
                    None,
                    Some(StepFailure {
                        source: "plugin",
                        code: e.code,
                        message: e.message,
                        retryable: e.retryable,
                    }),
                ),
            };
            InvokeReport {
                status,
                output,
                error,
                fuel_used: invocation.fuel_used,
                peak_memory_bytes: invocation.peak_memory_bytes,
                duration_ms: invocation.duration.as_secs_f64() * 1000.0,
                limits: limits_view,
            }
        }
        Err(e) => InvokeReport {
            status: "failed",
            output: None,
            error: Some(StepFailure {
                source: "sandbox",
                code: e.code().to_string(),
                message: e.to_string(),
                retryable: e.retryable(),
            }),
            fuel_used: None,
            peak_memory_bytes: 0,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            limits: limits_view,
        },
    }
}
