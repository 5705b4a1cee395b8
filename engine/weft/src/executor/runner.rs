//! The runner seam: a task step asks a [`Runner`] to run its task. The Wasm runtime is one
//! runner; remote agents will be another. The executor knows nothing of either's internals.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use weft_runtime::StepContext;

use super::plan::Failure;
use crate::metrics::Metrics;
use crate::plugins::{PluginLimits, PluginRegistry};

/// One task to run.
#[derive(Debug, Clone)]
pub struct TaskRequest {
    /// The task (plugin) name.
    pub task: String,
    /// A semver requirement, if the step pins one.
    pub version: Option<semver::VersionReq>,
    /// The bound input.
    pub input: Value,
    /// Run, step and attempt.
    pub context: StepContext,
    /// Per-attempt time-out from the step definition.
    pub timeout: Option<Duration>,
    /// The W3C trace context of the attempt's span, when traces are exported.
    pub traceparent: Option<String>,
}

/// What a runner reports.
pub type TaskResult = Result<Value, Failure>;

/// Something that can run task steps.
#[async_trait]
pub trait Runner: Send + Sync + 'static {
    /// `wasm`, `agent`...: recorded on the step.
    fn name(&self) -> &'static str;
    /// Whether this runner can run `task` (at `version`).
    fn provides(&self, task: &str, version: Option<&semver::VersionReq>) -> bool;
    /// Run it; `cancel` interrupts it.
    async fn run(&self, request: TaskRequest, cancel: CancellationToken) -> TaskResult;
}

/// Runs task steps as Wasm plugins from the registry.
pub struct WasmRunner {
    plugins: PluginRegistry,
    metrics: Metrics,
}

impl WasmRunner {
    /// Over the plugin registry; each invocation's fuel and memory go to `metrics`.
    pub fn new(plugins: PluginRegistry, metrics: Metrics) -> Self {
        Self { plugins, metrics }
    }
}

#[async_trait]
impl Runner for WasmRunner {
    fn name(&self) -> &'static str {
        "wasm"
    }

    fn provides(&self, task: &str, version: Option<&semver::VersionReq>) -> bool {
        self.plugins.resolve(task, version).is_some()
    }

    async fn run(&self, request: TaskRequest, cancel: CancellationToken) -> TaskResult {
        let Some(plugin) = self
            .plugins
            .resolve(&request.task, request.version.as_ref())
        else {
            return Err(Failure::fatal(
                "no_runner",
                format!("no plugin provides task '{}'", request.task),
            ));
        };
        let overrides = PluginLimits {
            timeout_ms: request
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            ..PluginLimits::default()
        };
        let report = self
            .plugins
            .invoke_resolved(&plugin, &request.input, &overrides, request.context, cancel)
            .await;
        let info = plugin.info();
        self.metrics
            .wasm_invocation(&info.name, report.fuel_used, report.peak_memory_bytes);
        match (report.output, report.error) {
            (Some(output), None) => Ok(output),
            (_, Some(error)) => Err(Failure {
                code: error.code,
                message: error.message,
                retryable: error.retryable,
            }),
            (None, None) => Ok(Value::Null),
        }
    }
}
