//! Field-level rules: the definition's own fields, parameters, each step's fields and config,
//! bindings and expressions.

use std::collections::HashSet;

use serde_json::Value;

use super::{Validator, codes, steps_pointer};
use crate::definition::{
    Binding, DecisionConfig, ForkConfig, JoinConfig, ParameterType, RetryPolicy, StepDefinition,
    StepType, TaskConfig, WaitConfig, WorkflowConfig,
};
use crate::expression;
use crate::pointer::{Pointer, is_valid_pointer};
use crate::version::parse_requirement;

/// The longest definition name, in characters.
pub const MAX_NAME_CHARS: usize = 255;

impl<'a> Validator<'a> {
    pub(super) fn check_document(&mut self) {
        let root = Pointer::root();
        let spec = self.spec;
        let name_path = root.child("name");
        if spec.name.trim().is_empty() {
            self.report(
                &name_path,
                codes::EMPTY,
                "the definition name must not be empty",
            );
        } else if spec.name.chars().count() > MAX_NAME_CHARS {
            self.report(
                &name_path,
                codes::INVALID_VALUE,
                format!("the definition name must be at most {MAX_NAME_CHARS} characters"),
            );
        } else if spec.name.trim() != spec.name {
            self.report(
                &name_path,
                codes::INVALID_VALUE,
                "the definition name must not start or end with whitespace",
            );
        }
        if spec.timeout_seconds == Some(0) {
            self.report(
                &root.child("timeoutSeconds"),
                codes::INVALID_VALUE,
                "timeoutSeconds must be greater than 0",
            );
        }
        if spec.max_concurrent_runs == Some(0) {
            self.report(
                &root.child("maxConcurrentRuns"),
                codes::INVALID_VALUE,
                "maxConcurrentRuns must be greater than 0",
            );
        }
        if spec.steps.is_empty() {
            self.report(
                &root.child("steps"),
                codes::EMPTY,
                "a definition needs at least one step",
            );
        }
        self.check_input_parameters();
        self.check_output_parameters();
        for (i, step) in spec.steps.iter().enumerate() {
            self.check_step(i, step);
        }
    }

    fn check_input_parameters(&mut self) {
        let mut seen = HashSet::new();
        for (i, param) in self.spec.input_parameters.iter().enumerate() {
            let at = Pointer::root().child("inputParameters").child(i);
            self.check_parameter_name(&at, &param.name, &mut seen);
            match param.parameter_type() {
                None => self.report_parameter_type(&at, &param.type_name),
                Some(ty) => {
                    if let Some(default) = &param.default
                        && !ty.accepts(default)
                    {
                        self.report(
                            &at.child("default"),
                            codes::INVALID_DEFAULT,
                            format!("the default value {default} is not of type {}", ty.as_str()),
                        );
                    }
                }
            }
            if let Some(schema) = &param.schema {
                if !(schema.is_object() || schema.is_boolean()) {
                    self.report(
                        &at.child("schema"),
                        codes::INVALID_VALUE,
                        "schema must be a JSON Schema: an object or a boolean",
                    );
                } else {
                    match jsonschema::validator_for(schema) {
                        Err(e) => self.report(
                            &at.child("schema"),
                            codes::INVALID_VALUE,
                            format!("schema does not compile: {e}"),
                        ),
                        Ok(validator) => {
                            if let Some(default) = &param.default
                                && let Some(error) = validator.iter_errors(default).next()
                            {
                                self.report(
                                    &at.child("default"),
                                    codes::INVALID_DEFAULT,
                                    format!("the default value does not match the schema: {error}"),
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    fn check_output_parameters(&mut self) {
        let mut seen = HashSet::new();
        for (i, param) in self.spec.output_parameters.iter().enumerate() {
            let at = Pointer::root().child("outputParameters").child(i);
            self.check_parameter_name(&at, &param.name, &mut seen);
            if let Some(type_name) = &param.type_name
                && ParameterType::parse(type_name).is_none()
            {
                self.report_parameter_type(&at, type_name);
            }
            self.check_binding(&at.child("value"), &param.value, None);
        }
    }

    fn check_parameter_name(&mut self, at: &Pointer, name: &'a str, seen: &mut HashSet<&'a str>) {
        let path = at.child("name");
        if name.trim().is_empty() {
            self.report(&path, codes::EMPTY, "a parameter name must not be empty");
        } else if !seen.insert(name) {
            self.report(
                &path,
                codes::DUPLICATE_PARAMETER,
                format!("the parameter `{name}` is declared more than once"),
            );
        }
    }

    fn report_parameter_type(&mut self, at: &Pointer, type_name: &str) {
        self.report(
            &at.child("type"),
            codes::INVALID_PARAMETER_TYPE,
            format!(
                "unknown parameter type `{type_name}`: expected string, number, integer, boolean, object, array or any"
            ),
        );
    }

    fn check_step(&mut self, i: usize, step: &'a StepDefinition) {
        let at = steps_pointer(i);
        let id = step.step_definition_id.as_str();
        let id_path = at.child("stepDefinitionId");
        if id.trim().is_empty() {
            self.report(&id_path, codes::EMPTY, "a step id must not be empty");
        } else if self.graph.position(id) != Some(i) {
            self.report(
                &id_path,
                codes::DUPLICATE_STEP_ID,
                format!("another step already has the id `{id}`"),
            );
        }
        let expected = step.step_type.config_key();
        for (key, owner) in step.present_configs() {
            if owner != step.step_type {
                self.report(
                    &at.child(key),
                    codes::UNEXPECTED_CONFIG,
                    format!(
                        "a {} step must not have a {key} (it belongs to {} steps)",
                        step.step_type.as_str(),
                        owner.as_str()
                    ),
                );
            }
        }
        let config_path = at.child(expected);
        let has_config = match step.step_type {
            StepType::Task => step
                .task_config
                .as_ref()
                .map(|c| self.check_task(&config_path, c)),
            StepType::Fork => step
                .fork_config
                .as_ref()
                .map(|c| self.check_fork(&config_path, c)),
            StepType::Join => step
                .join_config
                .as_ref()
                .map(|c| self.check_join(&config_path, c)),
            StepType::Wait => step
                .wait_config
                .as_ref()
                .map(|c| self.check_wait(&config_path, c, id)),
            StepType::Decision => step
                .decision_config
                .as_ref()
                .map(|c| self.check_decision(&config_path, c)),
            StepType::Workflow => step
                .workflow_config
                .as_ref()
                .map(|c| self.check_workflow(&config_path, c)),
        }
        .is_some();
        if !has_config {
            self.report(
                &config_path,
                codes::MISSING_CONFIG,
                format!("a {} step needs a {expected}", step.step_type.as_str()),
            );
        }
        for (field, value) in [
            ("timeoutSeconds", step.timeout_seconds),
            ("deadlineSeconds", step.deadline_seconds),
        ] {
            if value == Some(0) {
                self.report(
                    &at.child(field),
                    codes::INVALID_VALUE,
                    format!("{field} must be greater than 0"),
                );
            }
        }
        if let Some(policy) = &step.retry_policy {
            self.check_retry_policy(&at.child("retryPolicy"), policy);
        }
        for (name, binding) in &step.parameters {
            self.check_binding(&at.child("parameters").child(name), binding, Some(id));
        }
    }

    fn check_next(&mut self, config_path: &Pointer, next: Option<&str>) {
        if let Some(next) = next {
            self.check_step_ref(&config_path.child("nextStepId"), next);
        }
    }

    fn check_task(&mut self, at: &Pointer, config: &TaskConfig) {
        if config.task_definition_id.trim().is_empty() {
            self.report(
                &at.child("taskDefinitionId"),
                codes::EMPTY,
                "taskDefinitionId must not be empty",
            );
        }
        if let Some(version) = &config.version {
            self.check_version_requirement(&at.child("version"), version);
        }
        self.check_next(at, config.next_step_id.as_deref());
    }

    fn check_version_requirement(&mut self, path: &Pointer, version: &str) {
        if let Err(e) = parse_requirement(version) {
            self.report(path, codes::INVALID_VALUE, e.to_string());
        }
    }

    fn check_fork(&mut self, at: &Pointer, config: &ForkConfig) {
        if config.branches.is_empty() {
            self.report(
                &at.child("branches"),
                codes::EMPTY,
                "a fork needs at least one branch",
            );
        }
        for (b, branch) in config.branches.iter().enumerate() {
            let path = at.child("branches").child(b).child("nextStepId");
            self.check_step_ref(&path, &branch.next_step_id);
        }
    }

    fn check_join(&mut self, at: &Pointer, config: &JoinConfig) {
        let list = at.child("incomingStepIds");
        if config.incoming_step_ids.is_empty() {
            self.report(
                &list,
                codes::EMPTY,
                "a join needs at least one incoming step",
            );
        }
        let mut seen = HashSet::new();
        for (k, incoming) in config.incoming_step_ids.iter().enumerate() {
            let path = list.child(k);
            if !seen.insert(incoming.as_str()) {
                self.report(
                    &path,
                    codes::INVALID_VALUE,
                    format!("`{incoming}` is listed more than once"),
                );
            } else {
                self.check_step_ref(&path, incoming);
            }
        }
        self.check_next(at, config.next_step_id.as_deref());
    }

    fn check_wait(&mut self, at: &Pointer, config: &WaitConfig, step_id: &'a str) {
        match (&config.duration_seconds, &config.signal) {
            (None, None) => self.report(
                at,
                codes::MISSING_CONFIG,
                "a wait needs either durationSeconds or signal",
            ),
            (Some(_), Some(_)) => self.report(
                at,
                codes::INVALID_VALUE,
                "a wait has either durationSeconds or signal, not both",
            ),
            _ => {}
        }
        if let Some(duration) = &config.duration_seconds {
            let path = at.child("durationSeconds");
            if let Binding::Constant(value) = duration
                && !is_duration(value)
            {
                self.report(
                    &path.child("value"),
                    codes::INVALID_VALUE,
                    format!("durationSeconds must be a non-negative number, not {value}"),
                );
            }
            self.check_binding(&path, duration, Some(step_id));
        }
        if let Some(signal) = &config.signal
            && signal.trim().is_empty()
        {
            self.report(
                &at.child("signal"),
                codes::EMPTY,
                "signal must not be empty",
            );
        }
        match (config.timeout_seconds, &config.signal) {
            (Some(_), None) => self.report(
                &at.child("timeoutSeconds"),
                codes::INVALID_VALUE,
                "timeoutSeconds applies to a signal wait only",
            ),
            (Some(0), Some(_)) => self.report(
                &at.child("timeoutSeconds"),
                codes::INVALID_VALUE,
                "timeoutSeconds must be greater than 0",
            ),
            _ => {}
        }
        self.check_next(at, config.next_step_id.as_deref());
    }

    fn check_decision(&mut self, at: &Pointer, config: &DecisionConfig) {
        if config.cases.is_empty() {
            self.report(
                &at.child("cases"),
                codes::EMPTY,
                "a decision needs at least one case",
            );
        }
        for (c, case) in config.cases.iter().enumerate() {
            let path = at.child("cases").child(c);
            self.check_expression(&path.child("condition"), &case.condition);
            self.check_step_ref(&path.child("nextStepId"), &case.next_step_id);
        }
        if let Some(default) = &config.default_step_id {
            self.check_step_ref(&at.child("defaultStepId"), default);
        }
    }

    fn check_workflow(&mut self, at: &Pointer, config: &WorkflowConfig) {
        match (&config.workflow_definition_id, &config.workflow_name) {
            (None, None) => self.report(
                at,
                codes::INVALID_VALUE,
                "a workflow step needs workflowDefinitionId or workflowName",
            ),
            (Some(_), Some(_)) => self.report(
                at,
                codes::INVALID_VALUE,
                "a workflow step has workflowDefinitionId or workflowName, not both",
            ),
            _ => {}
        }
        for (field, value) in [
            ("workflowDefinitionId", &config.workflow_definition_id),
            ("workflowName", &config.workflow_name),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                self.report(
                    &at.child(field),
                    codes::EMPTY,
                    format!("{field} must not be empty"),
                );
            }
        }
        if let Some(version) = &config.version {
            let path = at.child("version");
            if config.workflow_name.is_none() {
                self.report(
                    &path,
                    codes::INVALID_VALUE,
                    "version applies with workflowName only (an id names one version already)",
                );
            } else {
                self.check_version_requirement(&path, version);
            }
        }
        self.check_next(at, config.next_step_id.as_deref());
    }

    fn check_retry_policy(&mut self, at: &Pointer, policy: &RetryPolicy) {
        let mut bad = |field: &str, message: &str| {
            self.issues.push(super::Issue::new(
                at.child(field).into_string(),
                codes::INVALID_VALUE,
                message,
            ));
        };
        if policy.max_attempts == 0 {
            bad("maxAttempts", "maxAttempts must be at least 1");
        }
        let initial = policy.initial_interval_seconds;
        if !(initial.is_finite() && initial >= 0.0) {
            bad(
                "initialIntervalSeconds",
                "initialIntervalSeconds must be a non-negative number",
            );
        }
        if !(policy.backoff_coefficient.is_finite() && policy.backoff_coefficient >= 1.0) {
            bad(
                "backoffCoefficient",
                "backoffCoefficient must be at least 1",
            );
        }
        if let Some(max) = policy.max_interval_seconds
            && !(max.is_finite() && max >= initial)
        {
            bad(
                "maxIntervalSeconds",
                "maxIntervalSeconds must be at least initialIntervalSeconds",
            );
        }
        if !(0.0..=1.0).contains(&policy.jitter) {
            bad("jitter", "jitter must be between 0 and 1");
        }
    }

    fn check_expression(&mut self, path: &Pointer, source: &str) {
        if let Err(reason) = expression::compile(source) {
            self.report(path, codes::INVALID_EXPRESSION, reason);
        }
    }

    /// Checks a binding at `at`; `step` is the step it belongs to (`None` for run outputs,
    /// which may read any step).
    fn check_binding(&mut self, at: &Pointer, binding: &Binding, step: Option<&'a str>) {
        let value = at.child("value");
        match binding {
            Binding::Constant(_) => {}
            Binding::WorkflowInput(key) => {
                if key.trim().is_empty() {
                    self.report(
                        &value,
                        codes::EMPTY,
                        "the input field name must not be empty",
                    );
                } else if !self.spec.input_parameters.is_empty()
                    && self.spec.input_parameter(key).is_none()
                {
                    self.report(
                        &value,
                        codes::UNKNOWN_INPUT_PARAMETER,
                        format!("the definition declares no input parameter `{key}`"),
                    );
                }
            }
            Binding::TaskOutput(r) => {
                let task_path = value.child("taskId");
                if !self.step_exists(&r.task_id) {
                    self.check_step_ref(&task_path, &r.task_id);
                } else if let Some(step) = step
                    && !self.is_upstream(step, &r.task_id)
                {
                    self.report(
                        &task_path,
                        codes::BINDING_NOT_UPSTREAM,
                        format!(
                            "step `{step}` reads the output of `{}`, which does not run before it",
                            r.task_id
                        ),
                    );
                }
                if r.output_key.is_none() && r.path.is_none() {
                    self.report(
                        &value,
                        codes::INVALID_BINDING,
                        "a taskOutput binding needs outputKey or path (\"\" for the whole output)",
                    );
                }
                if let Some(path) = r.path.as_deref().filter(|p| !is_valid_pointer(p)) {
                    self.report(
                        &value.child("path"),
                        codes::INVALID_BINDING,
                        format!("`{path}` is not a JSON Pointer (\"\" or \"/a/0/b\")"),
                    );
                }
            }
            Binding::Expression(source) => self.check_expression(&value, source),
        }
    }
}

/// Whether a constant is usable as a duration: a non-negative number.
fn is_duration(value: &Value) -> bool {
    value.as_f64().is_some_and(|d| d >= 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations() {
        assert!(is_duration(&json!(0)));
        assert!(is_duration(&json!(1.5)));
        assert!(!is_duration(&json!(-1)));
        assert!(!is_duration(&json!("5")));
    }
}
