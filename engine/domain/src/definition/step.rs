//! Steps: the nodes of a definition's graph, one config object per step type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Binding, RetryPolicy, null_as_default};

/// One step of a definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepDefinition {
    /// The step's id, unique within the definition; edges name steps by it.
    pub step_definition_id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The step's input fields and how each is computed.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schema(nullable)]
    pub parameters: BTreeMap<String, Binding>,
    /// Free-form data for tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// What the step does; selects which config applies.
    #[serde(rename = "type")]
    pub step_type: StepType,
    /// Config of a `task` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_config: Option<TaskConfig>,
    /// Config of a `fork` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_config: Option<ForkConfig>,
    /// Config of a `join` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_config: Option<JoinConfig>,
    /// Config of a `wait` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_config: Option<WaitConfig>,
    /// Config of a `decision` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_config: Option<DecisionConfig>,
    /// Config of a `workflow` (sub-workflow) step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_config: Option<WorkflowConfig>,
    /// Time-out of one attempt, in seconds (> 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Go engine: retries after the first attempt (`maxAttempts = retryCount + 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_count: Option<u32>,
    /// Weft: the full retry policy; wins over `retryCount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    /// Weft: deadline of the whole step, all attempts and delays included, in seconds (> 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_seconds: Option<u64>,
}

impl StepDefinition {
    /// The retry policy that applies: `retryPolicy` if set, else `retryCount + 1` attempts with
    /// default delays, else a single attempt.
    pub fn effective_retry_policy(&self) -> RetryPolicy {
        match (&self.retry_policy, self.retry_count) {
            (Some(policy), _) => policy.clone(),
            (None, Some(retries)) => RetryPolicy::with_max_attempts(retries.saturating_add(1)),
            (None, None) => RetryPolicy::default(),
        }
    }

    /// The `nextStepId` of the config matching the step's type (task, join, wait, workflow);
    /// `None` for fork and decision, whose successors are their branches and cases.
    pub fn next_step_id(&self) -> Option<&str> {
        match self.step_type {
            StepType::Task => self.task_config.as_ref()?.next_step_id.as_deref(),
            StepType::Join => self.join_config.as_ref()?.next_step_id.as_deref(),
            StepType::Wait => self.wait_config.as_ref()?.next_step_id.as_deref(),
            StepType::Workflow => self.workflow_config.as_ref()?.next_step_id.as_deref(),
            StepType::Fork | StepType::Decision => None,
        }
    }

    /// The join a fork or decision step is closed by (`joinStepId`).
    pub fn join_step_id(&self) -> Option<&str> {
        match self.step_type {
            StepType::Fork => Some(self.fork_config.as_ref()?.join_step_id.as_str()),
            StepType::Decision => Some(self.decision_config.as_ref()?.join_step_id.as_str()),
            _ => None,
        }
    }

    /// The configs present on this step, as `(JSON key, type they belong to)`.
    pub(crate) fn present_configs(&self) -> Vec<(&'static str, StepType)> {
        let mut present = Vec::new();
        if self.task_config.is_some() {
            present.push(("taskConfig", StepType::Task));
        }
        if self.fork_config.is_some() {
            present.push(("forkConfig", StepType::Fork));
        }
        if self.join_config.is_some() {
            present.push(("joinConfig", StepType::Join));
        }
        if self.wait_config.is_some() {
            present.push(("waitConfig", StepType::Wait));
        }
        if self.decision_config.is_some() {
            present.push(("decisionConfig", StepType::Decision));
        }
        if self.workflow_config.is_some() {
            present.push(("workflowConfig", StepType::Workflow));
        }
        present
    }
}

/// What a step does.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum StepType {
    /// Runs a task (a plugin or an agent's task).
    Task,
    /// Starts every branch in parallel.
    Fork,
    /// Waits for the branches of its fork (or the taken case of its decision).
    Join,
    /// Waits for a duration or a signal.
    Wait,
    /// Takes the first case whose condition holds.
    Decision,
    /// Runs another definition as a child run.
    Workflow,
}

impl StepType {
    /// The JSON name (`task`, `fork`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Fork => "fork",
            Self::Join => "join",
            Self::Wait => "wait",
            Self::Decision => "decision",
            Self::Workflow => "workflow",
        }
    }

    /// The JSON key of this type's config object (`taskConfig`, `forkConfig`, ...).
    pub fn config_key(self) -> &'static str {
        match self {
            Self::Task => "taskConfig",
            Self::Fork => "forkConfig",
            Self::Join => "joinConfig",
            Self::Wait => "waitConfig",
            Self::Decision => "decisionConfig",
            Self::Workflow => "workflowConfig",
        }
    }
}

/// Where a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Runner {
    /// In the engine, as a Wasm plugin.
    Wasm,
    /// On a remote agent.
    Agent,
}

/// `taskConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskConfig {
    /// The task to run (a plugin or agent task name).
    pub task_definition_id: String,
    /// The step after this one; none = the branch ends here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_step_id: Option<String>,
    /// Weft: which versions of the task may run: an exact version or a semver requirement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Weft: where the task runs; none = wherever the engine finds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<Runner>,
}

/// `forkConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForkConfig {
    /// The join step that closes this fork (empty if missing; reported by validation).
    #[serde(default)]
    pub join_step_id: String,
    /// The branches, started in parallel (≥ 1).
    pub branches: Vec<Branch>,
}

/// A branch of a fork.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Branch {
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The branch's first step.
    pub next_step_id: String,
}

/// `joinConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinConfig {
    /// The steps (branch tails) the join waits for (≥ 1, no duplicates).
    pub incoming_step_ids: Vec<String>,
    /// The step after the join; none = the branch ends here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_step_id: Option<String>,
}

/// `waitConfig`: wait for a duration, or (Weft) for a named signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitConfig {
    /// How long to wait, in seconds (a binding: constant or computed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<Binding>,
    /// The step after this one; none = the branch ends here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_step_id: Option<String>,
    /// Weft: wait until a signal with this name is posted to the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Weft: give up waiting for the signal after this many seconds (> 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// `decisionConfig`: the first case whose condition holds is taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionConfig {
    /// The join step that closes this decision (empty if missing; reported by validation).
    #[serde(default)]
    pub join_step_id: String,
    /// The cases, tried in order (≥ 1).
    pub cases: Vec<DecisionCase>,
    /// Weft: the step taken when no case holds; none = go straight to the join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_step_id: Option<String>,
}

/// A case of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionCase {
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A CEL expression over `input` and `steps` that must evaluate to a boolean.
    pub condition: String,
    /// The case's first step.
    pub next_step_id: String,
}

/// `workflowConfig`: run another definition, named by id (Go) or by name (Weft).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowConfig {
    /// The child definition's id (Go engine); exclusive with `workflowName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_definition_id: Option<String>,
    /// Weft: the child definition's name; exclusive with `workflowDefinitionId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_name: Option<String>,
    /// Weft, with `workflowName`: an exact version or a semver requirement; none = latest
    /// released version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The step after this one; none = the branch ends here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_step_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(json: serde_json::Value) -> StepDefinition {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn effective_retry_policy() {
        let plain = step(serde_json::json!({"stepDefinitionId": "a", "type": "task"}));
        assert_eq!(plain.effective_retry_policy().max_attempts, 1);
        let go =
            step(serde_json::json!({"stepDefinitionId": "a", "type": "task", "retryCount": 2}));
        assert_eq!(
            go.effective_retry_policy(),
            RetryPolicy::with_max_attempts(3)
        );
        let both = step(serde_json::json!({
            "stepDefinitionId": "a", "type": "task", "retryCount": 2,
            "retryPolicy": {"maxAttempts": 5, "jitter": 0.5}
        }));
        let p = both.effective_retry_policy();
        assert_eq!((p.max_attempts, p.jitter), (5, 0.5));
        let max = step(
            serde_json::json!({"stepDefinitionId": "a", "type": "task", "retryCount": u32::MAX}),
        );
        assert_eq!(max.effective_retry_policy().max_attempts, u32::MAX);
    }

    #[test]
    fn next_and_join_ids_follow_the_type() {
        let s = step(serde_json::json!({
            "stepDefinitionId": "a", "type": "task",
            "taskConfig": {"taskDefinitionId": "add", "nextStepId": "b"},
            "waitConfig": {"nextStepId": "c"}
        }));
        assert_eq!(s.next_step_id(), Some("b"));
        assert_eq!(s.join_step_id(), None);
        let f = step(serde_json::json!({
            "stepDefinitionId": "f", "type": "fork",
            "forkConfig": {"joinStepId": "j", "branches": [{"nextStepId": "x"}]}
        }));
        assert_eq!(f.next_step_id(), None);
        assert_eq!(f.join_step_id(), Some("j"));
    }
}
