//! The agent's tasks behind one object-safe trait: their `Hello` definitions, the lookup of an
//! assignment's task, and the JSON boundary (input parsing, output serialisation).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use weft_proto::agent::TaskDefinition;

use super::{AgentError, Task, TaskContext, TaskError};
use crate::step::schema_json;

/// One attempt of a task, from input JSON to output JSON.
pub(crate) type TaskFuture = Pin<Box<dyn Future<Output = Result<String, TaskError>> + Send>>;

/// A [`Task`] with its types erased.
pub(crate) trait Runnable: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn version(&self) -> &'static str;
    fn definition(&self) -> TaskDefinition;
    /// The attempt, to be spawned. Input that does not deserialise fails it with
    /// `invalid_input`; an output serde_json refuses, with `invalid_output` (neither retryable).
    fn start(self: Arc<Self>, ctx: TaskContext, input: String) -> TaskFuture;
}

struct Registered<T>(T);

impl<T: Task> Runnable for Registered<T> {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn version(&self) -> &'static str {
        T::VERSION
    }

    fn definition(&self) -> TaskDefinition {
        TaskDefinition {
            name: T::NAME.to_owned(),
            version: T::VERSION.to_owned(),
            description: T::DESCRIPTION.to_owned(),
            input_schema_json: schema_json::<T::Input>(),
            output_schema_json: schema_json::<T::Output>(),
        }
    }

    fn start(self: Arc<Self>, ctx: TaskContext, input: String) -> TaskFuture {
        Box::pin(async move {
            let input: T::Input = serde_json::from_str(&input).map_err(|e| {
                TaskError::invalid_input(format!("input of task `{}`: {e}", T::NAME))
            })?;
            let output = self.0.run(ctx, input).await?;
            serde_json::to_string(&output).map_err(|e| {
                TaskError::fatal(
                    "invalid_output",
                    format!("output of task `{}` is not JSON: {e}", T::NAME),
                )
            })
        })
    }
}

/// The tasks an agent runs, in registration order.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    tasks: Vec<Arc<dyn Runnable>>,
}

impl Registry {
    pub(crate) fn add<T: Task>(&mut self, task: T) {
        self.tasks.push(Arc::new(Registered(task)));
    }

    /// At least one task, each `(name, version)` once, none with an empty name or version.
    pub(crate) fn validate(&self) -> Result<(), AgentError> {
        if self.tasks.is_empty() {
            return Err(AgentError::Config("the agent has no task".into()));
        }
        for (i, task) in self.tasks.iter().enumerate() {
            if task.name().is_empty() || task.version().is_empty() {
                return Err(AgentError::Config(format!(
                    "task `{}` needs a name and a version",
                    task.name()
                )));
            }
            if self.tasks[..i]
                .iter()
                .any(|t| (t.name(), t.version()) == (task.name(), task.version()))
            {
                return Err(AgentError::Config(format!(
                    "task `{}` {} is registered twice",
                    task.name(),
                    task.version()
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn definitions(&self) -> Vec<TaskDefinition> {
        self.tasks.iter().map(|t| t.definition()).collect()
    }

    /// The task an assignment names: `name` at exactly `version`, or (empty `version`) the only
    /// task called `name`. Otherwise `unknown_task`, not retryable.
    pub(crate) fn find(&self, name: &str, version: &str) -> Result<Arc<dyn Runnable>, TaskError> {
        let mut named = self.tasks.iter().filter(|t| t.name() == name);
        let found = if version.is_empty() {
            match (named.next(), named.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        } else {
            named.find(|t| t.version() == version)
        };
        found.cloned().ok_or_else(|| {
            let runs: Vec<String> = self
                .tasks
                .iter()
                .map(|t| format!("{} {}", t.name(), t.version()))
                .collect();
            let wanted = if version.is_empty() {
                format!("`{name}`")
            } else {
                format!("`{name}` {version}")
            };
            TaskError::fatal(
                "unknown_task",
                format!(
                    "this agent cannot run task {wanted}; it runs: {}",
                    runs.join(", ")
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    use super::*;

    #[derive(Deserialize, JsonSchema)]
    struct In {
        n: u32,
    }

    #[derive(Serialize, JsonSchema)]
    struct Out {
        n: u32,
    }

    struct V1;
    impl Task for V1 {
        type Input = In;
        type Output = Out;
        const NAME: &'static str = "t";
        const VERSION: &'static str = "1.0.0";
        const DESCRIPTION: &'static str = "Version one.";
        async fn run(&self, _: TaskContext, input: In) -> Result<Out, TaskError> {
            Ok(Out { n: input.n })
        }
    }

    struct V2;
    impl Task for V2 {
        type Input = In;
        type Output = Out;
        const NAME: &'static str = "t";
        const VERSION: &'static str = "2.0.0";
        const DESCRIPTION: &'static str = "Version two.";
        async fn run(&self, _: TaskContext, input: In) -> Result<Out, TaskError> {
            Ok(Out { n: input.n * 2 })
        }
    }

    fn ctx() -> TaskContext {
        TaskContext::detached("run", "step", 1).0
    }

    #[tokio::test]
    async fn finds_by_name_and_version() {
        let mut registry = Registry::default();
        registry.add(V1);
        registry.add(V2);
        registry.validate().unwrap();
        let task = registry.find("t", "2.0.0").unwrap();
        assert_eq!(
            task.start(ctx(), r#"{"n":2}"#.into()).await.unwrap(),
            r#"{"n":4}"#
        );
        let err = registry.find("t", "").err().unwrap();
        assert_eq!(err.code, "unknown_task");
        assert!(err.message.contains("t 1.0.0, t 2.0.0"), "{}", err.message);
        assert!(registry.find("t", "3.0.0").is_err());
        assert!(registry.find("other", "1.0.0").is_err());
    }

    #[tokio::test]
    async fn a_lone_task_matches_an_empty_version_and_checks_its_input() {
        let mut registry = Registry::default();
        registry.add(V1);
        let task = registry.find("t", "").unwrap();
        let err = task.start(ctx(), r#"{"n":"x"}"#.into()).await.unwrap_err();
        assert_eq!((err.code.as_str(), err.retryable), ("invalid_input", false));
        assert!(
            err.message.starts_with("input of task `t`: "),
            "{}",
            err.message
        );
    }

    #[test]
    fn definitions_carry_schemas() {
        let mut registry = Registry::default();
        registry.add(V1);
        let [d] = registry.definitions().try_into().unwrap();
        assert_eq!(
            (d.name.as_str(), d.version.as_str(), d.description.as_str()),
            ("t", "1.0.0", "Version one.")
        );
        let input: Value = serde_json::from_str(&d.input_schema_json).unwrap();
        assert_eq!(input["required"], serde_json::json!(["n"]));
        let output: Value = serde_json::from_str(&d.output_schema_json).unwrap();
        assert_eq!(output["properties"]["n"]["type"], "integer");
    }

    #[test]
    fn refuses_no_task_and_duplicates() {
        assert!(Registry::default().validate().is_err());
        let mut registry = Registry::default();
        registry.add(V1);
        registry.add(V1);
        let err = registry.validate().unwrap_err();
        assert_eq!(
            err,
            AgentError::Config("task `t` 1.0.0 is registered twice".into())
        );
    }
}
