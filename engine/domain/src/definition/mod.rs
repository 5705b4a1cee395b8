//! The workflow-definition document: what a user writes to describe a workflow.
//!
//! JSON field names are the Go engine's (camelCase), so Go definitions are accepted as they are;
//! Weft's additions are optional fields. Unknown fields are ignored and not kept.

mod binding;
mod parameter;
mod retry;
mod step;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

pub use binding::{Binding, TaskOutputRef};
pub use parameter::{OutputParameterDefinition, ParameterDefinition, ParameterType};
pub use retry::RetryPolicy;
pub use step::{
    Branch, DecisionCase, DecisionConfig, ForkConfig, JoinConfig, Runner, StepDefinition, StepType,
    TaskConfig, WaitConfig, WorkflowConfig,
};

use crate::pointer::Pointer;
use crate::validation::{Issue, codes, validate};

/// A workflow definition's body: its parameters and its steps. The entry step is `steps[0]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefinitionSpec {
    /// The definition's name (trimmed, non-empty, at most 255 characters).
    pub name: String,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The run input fields the definition declares.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schema(nullable)]
    pub input_parameters: Vec<ParameterDefinition>,
    /// The run output fields and how each is computed.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schema(nullable)]
    pub output_parameters: Vec<OutputParameterDefinition>,
    /// The steps; the first one is the entry.
    pub steps: Vec<StepDefinition>,
    /// Free-form data for tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Weft: deadline of a whole run, in seconds (> 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Weft: how many runs of this definition may be in progress at once (> 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_runs: Option<u32>,
}

impl DefinitionSpec {
    /// Parses a JSON document (a workflow definition body) and validates it.
    ///
    /// A structural error (a field of the wrong JSON type, a missing required field, a malformed
    /// binding) is returned alone, with the JSON Pointer of the field; when the structure is
    /// fine, every semantic problem is returned. The name is trimmed.
    pub fn from_json(value: Value) -> Result<DefinitionSpec, Vec<Issue>> {
        if !value.is_object() {
            return Err(vec![Issue::new(
                "",
                codes::INVALID_TYPE,
                "a workflow definition must be a JSON object",
            )]);
        }
        let mut spec: DefinitionSpec =
            serde_path_to_error::deserialize(value).map_err(|e| vec![structural_issue(&e)])?;
        let trimmed = spec.name.trim();
        if trimmed.len() != spec.name.len() {
            spec.name = trimmed.to_owned();
        }
        validate(&spec)?;
        Ok(spec)
    }

    /// The definition as JSON; `from_json(spec.to_json())` gives back an equal spec.
    pub fn to_json(&self) -> Value {
        // Cannot fail: every map key is a string and no Serialize impl here returns an error.
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The entry step (`steps[0]`, as in the Go engine); `None` if there are no steps.
    pub fn entry_step(&self) -> Option<&StepDefinition> {
        self.steps.first()
    }

    /// The (first) step with this `stepDefinitionId`.
    pub fn step(&self, id: &str) -> Option<&StepDefinition> {
        self.steps.iter().find(|s| s.step_definition_id == id)
    }

    /// The declared input parameter with this name.
    pub fn input_parameter(&self, name: &str) -> Option<&ParameterDefinition> {
        self.input_parameters.iter().find(|p| p.name == name)
    }
}

/// `null` or absent → `T::default()` (the Go engine writes `null` for empty lists and maps).
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The issue for a deserialisation error: its code from the kind of error, its path from where
/// it happened.
fn structural_issue(err: &serde_path_to_error::Error<serde_json::Error>) -> Issue {
    let mut pointer = Pointer::root();
    for segment in err.path().iter() {
        pointer = match segment {
            serde_path_to_error::Segment::Seq { index } => pointer.child(index),
            serde_path_to_error::Segment::Map { key } => pointer.child(key),
            serde_path_to_error::Segment::Enum { variant } => pointer.child(variant),
            serde_path_to_error::Segment::Unknown => pointer,
        };
    }
    let message = err.inner().to_string();
    if let Some((subpath, reason)) = binding::parse_error_message(&message) {
        return Issue::new(
            format!("{pointer}{subpath}"),
            codes::INVALID_BINDING,
            reason.to_owned(),
        );
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return Issue::new(
            pointer.child(field).into_string(),
            codes::REQUIRED,
            format!("`{field}` is required"),
        );
    }
    let code = if message.starts_with("invalid type") {
        codes::INVALID_TYPE
    } else {
        codes::INVALID_VALUE
    };
    Issue::new(pointer.into_string(), code, message)
}

#[cfg(test)]
mod tests;
