//! Validation of a [`DefinitionSpec`]: every problem found, each an [`Issue`] naming the field
//! at fault by JSON Pointer and the kind of problem by a stable code (see [`codes`]).

mod document;
mod flow;

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::Serialize;

use crate::definition::DefinitionSpec;
use crate::graph::Graph;
use crate::pointer::Pointer;

pub use document::MAX_NAME_CHARS;

/// One problem in a definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// JSON Pointer of the field at fault (`/steps/2/forkConfig/joinStepId`); `""` for the root.
    pub path: String,
    /// The kind of problem, stable snake_case (one of [`codes`]).
    pub code: String,
    /// A human sentence.
    pub message: String,
}

impl Issue {
    /// An issue at `path` with `code` and `message`.
    pub fn new(path: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "{path}: {} ({})", self.message, self.code)
    }
}

/// The stable codes of [`Issue`]s.
pub mod codes {
    /// A required field is missing.
    pub const REQUIRED: &str = "required";
    /// A field that must not be empty is empty (string, list).
    pub const EMPTY: &str = "empty";
    /// A field has the wrong JSON type.
    pub const INVALID_TYPE: &str = "invalid_type";
    /// A field's value is out of range or malformed (zero or negative number, bad semver,
    /// unknown enum value, contradictory fields...).
    pub const INVALID_VALUE: &str = "invalid_value";
    /// Two steps share a `stepDefinitionId`.
    pub const DUPLICATE_STEP_ID: &str = "duplicate_step_id";
    /// Two input (or two output) parameters share a name.
    pub const DUPLICATE_PARAMETER: &str = "duplicate_parameter";
    /// A reference to a step id that no step has.
    pub const UNKNOWN_STEP: &str = "unknown_step";
    /// A step lacks the config its type needs (or a wait has neither duration nor signal).
    pub const MISSING_CONFIG: &str = "missing_config";
    /// A step carries the config of another step type.
    pub const UNEXPECTED_CONFIG: &str = "unexpected_config";
    /// A fork's `joinStepId` is missing, unknown, or not a join step.
    pub const FORK_WITHOUT_JOIN: &str = "fork_without_join";
    /// A decision's `joinStepId` is missing, unknown, or not a join step.
    pub const DECISION_WITHOUT_JOIN: &str = "decision_without_join";
    /// A join step is the `joinStepId` of no fork or decision, or of several.
    pub const JOIN_WITHOUT_FORK: &str = "join_without_fork";
    /// A join lists a step outside its fork's branches, or one that continues elsewhere.
    pub const JOIN_NOT_REACHABLE: &str = "join_not_reachable";
    /// A step in a fork's branches continues to the join but the join does not list it.
    pub const JOIN_MISSING_INCOMING: &str = "join_missing_incoming";
    /// A branch or case none of whose steps the join waits for.
    pub const BRANCH_NOT_JOINED: &str = "branch_not_joined";
    /// A step inside a fork's branches is also reachable after its join (it would run twice).
    pub const BRANCH_ESCAPES_JOIN: &str = "branch_escapes_join";
    /// A step not reachable from the entry step (`steps[0]`).
    pub const UNREACHABLE_STEP: &str = "unreachable_step";
    /// Steps form a cycle (definitions are acyclic; repetition is done by retries).
    pub const CYCLE: &str = "cycle";
    /// A parameter type Weft does not know.
    pub const INVALID_PARAMETER_TYPE: &str = "invalid_parameter_type";
    /// A parameter default that does not match the parameter's type.
    pub const INVALID_DEFAULT: &str = "invalid_default";
    /// A malformed binding (unknown type, wrong value shape, bad path).
    pub const INVALID_BINDING: &str = "invalid_binding";
    /// A `workflowInput` binding names an input the definition does not declare.
    pub const UNKNOWN_INPUT_PARAMETER: &str = "unknown_input_parameter";
    /// A `taskOutput` binding reads a step that does not run before this one.
    pub const BINDING_NOT_UPSTREAM: &str = "binding_not_upstream";
    /// A CEL expression (decision condition, expression binding) that does not compile.
    pub const INVALID_EXPRESSION: &str = "invalid_expression";
}

/// Checks `spec`; `Err` holds every problem found, in document order by kind of check.
pub fn validate(spec: &DefinitionSpec) -> Result<(), Vec<Issue>> {
    let mut v = Validator::new(spec);
    v.check_document();
    v.check_flow();
    if v.issues.is_empty() {
        Ok(())
    } else {
        Err(v.issues)
    }
}

/// Walks a definition and collects issues.
struct Validator<'a> {
    spec: &'a DefinitionSpec,
    graph: Graph<'a>,
    issues: Vec<Issue>,
    upstream_cache: HashMap<&'a str, BTreeSet<&'a str>>,
}

impl<'a> Validator<'a> {
    fn new(spec: &'a DefinitionSpec) -> Self {
        Self {
            spec,
            graph: Graph::new(spec),
            issues: Vec::new(),
            upstream_cache: HashMap::new(),
        }
    }

    fn report(&mut self, path: &Pointer, code: &str, message: impl Into<String>) {
        self.issues
            .push(Issue::new(path.to_string(), code, message));
    }

    /// Whether `id` is some step's id.
    fn step_exists(&self, id: &str) -> bool {
        self.graph.position(id).is_some()
    }

    /// Reports `unknown_step` at `path` if `id` names no step.
    fn check_step_ref(&mut self, path: &Pointer, id: &str) {
        if !self.step_exists(id) {
            self.report(
                path,
                codes::UNKNOWN_STEP,
                format!("no step has the id `{id}`"),
            );
        }
    }

    /// Whether step `from` may read the output of step `dependency`.
    fn is_upstream(&mut self, from: &'a str, dependency: &str) -> bool {
        let graph = &self.graph;
        self.upstream_cache
            .entry(from)
            .or_insert_with(|| graph.upstream(from))
            .contains(dependency)
    }
}

fn steps_pointer(i: usize) -> Pointer {
    Pointer::root().child("steps").child(i)
}

#[cfg(test)]
mod tests;
