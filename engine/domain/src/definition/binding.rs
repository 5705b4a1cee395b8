//! Bindings: how a value (a step parameter, a run output field, a wait duration) is computed
//! at run time. The Go engine's `StepDefinitionParameter {type, value}`, plus `expression`.

use std::fmt::Display;

use serde::de::{self, Deserialize, Deserializer};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::{Map, Value};

use crate::expression::{self, ExpressionError};

/// How a value is computed at run time. Wire format: `{"type": ..., "value": ...}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Binding {
    /// `constant`: `value`, verbatim.
    Constant(Value),
    /// `workflowInput` (Go ef5cfce name: `workflow`, normalised to `workflowInput`): the run
    /// input field named by `value`.
    WorkflowInput(String),
    /// `taskOutput`: `value` is `{taskId, outputKey?, path?}`, a part of an earlier step's output.
    TaskOutput(TaskOutputRef),
    /// `expression` (Weft): `value` is a CEL expression over `input` and `steps`.
    Expression(String),
}

/// Where a `taskOutput` binding reads: the output of step `task_id`, then its field `output_key`
/// (if given), then the JSON Pointer `path` into that (if given).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskOutputRef {
    /// The `stepDefinitionId` of the step whose output is read.
    pub task_id: String,
    /// A top-level field of that output (the Go engine's only way).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_key: Option<String>,
    /// A JSON Pointer (RFC 6901) into the output, or into `output_key`'s value when both are set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl TaskOutputRef {
    /// The part of `output` (the step's whole output) this reference designates, if present.
    pub fn select<'a>(&self, output: &'a Value) -> Option<&'a Value> {
        let base = match &self.output_key {
            Some(key) => output.get(key)?,
            None => output,
        };
        match &self.path {
            Some(path) => base.pointer(path),
            None => Some(base),
        }
    }
}

impl Binding {
    /// The wire name of this binding's type (`constant`, `workflowInput`, `taskOutput`,
    /// `expression`).
    pub fn kind(&self) -> &'static str {
        match self {
            Binding::Constant(_) => "constant",
            Binding::WorkflowInput(_) => "workflowInput",
            Binding::TaskOutput(_) => "taskOutput",
            Binding::Expression(_) => "expression",
        }
    }

    /// The step whose output this binding reads, for `taskOutput`.
    pub fn referenced_step(&self) -> Option<&str> {
        match self {
            Binding::TaskOutput(r) => Some(&r.task_id),
            _ => None,
        }
    }

    /// Computes the value from the run input and the outputs of the steps run so far
    /// (step id → output). Like the Go engine, a missing input field or output is `null`.
    pub fn resolve(
        &self,
        input: &Value,
        steps: &Map<String, Value>,
    ) -> Result<Value, ExpressionError> {
        Ok(match self {
            Binding::Constant(v) => v.clone(),
            Binding::WorkflowInput(key) => input.get(key).cloned().unwrap_or(Value::Null),
            Binding::TaskOutput(r) => steps
                .get(&r.task_id)
                .and_then(|out| r.select(out))
                .cloned()
                .unwrap_or(Value::Null),
            Binding::Expression(src) => expression::evaluate(src, input, steps)?,
        })
    }
}

impl Serialize for Binding {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Binding", 2)?;
        s.serialize_field("type", self.kind())?;
        match self {
            Binding::Constant(v) => s.serialize_field("value", v)?,
            Binding::WorkflowInput(key) => s.serialize_field("value", key)?,
            Binding::TaskOutput(r) => s.serialize_field("value", r)?,
            Binding::Expression(src) => s.serialize_field("value", src)?,
        }
        s.end()
    }
}

/// The wire format as a schema: one object shape per binding type (`workflow` is the Go
/// engine's name of `workflowInput`).
impl utoipa::PartialSchema for Binding {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, SchemaType, Type};
        let variant = |kinds: &[&str], value: utoipa::openapi::RefOr<_>, description: &str| {
            ObjectBuilder::new()
                .description(Some(description))
                .property(
                    "type",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(kinds.iter().copied())),
                )
                .required("type")
                .property("value", value)
                .required("value")
        };
        let string = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(description))
                .into()
        };
        OneOfBuilder::new()
            .description(Some(
                "How a value is computed at run time: `{\"type\": ..., \"value\": ...}`.",
            ))
            .item(variant(
                &["constant"],
                ObjectBuilder::new()
                    .schema_type(SchemaType::AnyValue)
                    .description(Some("The value, verbatim."))
                    .into(),
                "A constant value.",
            ))
            .item(variant(
                &["workflowInput", "workflow"],
                string("The name of a run input field."),
                "A field of the run input (`null` when absent).",
            ))
            .item(variant(
                &["taskOutput"],
                <TaskOutputRef as utoipa::PartialSchema>::schema(),
                "A part of an earlier step's output.",
            ))
            .item(variant(
                &["expression"],
                string("A CEL expression over `input` and `steps`."),
                "A CEL expression.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Binding {}

/// Marks a deserialisation error raised here, so that [`super::structural_issue`] can report it
/// with the code `invalid_binding` and the pointer of the field inside the binding.
pub(crate) const ERROR_MARKER: char = '\u{1}';

/// `invalid_binding` at `subpath` (a JSON Pointer relative to the binding).
fn invalid<E: de::Error>(subpath: &str, message: impl Display) -> E {
    E::custom(format_args!(
        "{ERROR_MARKER}{subpath}{ERROR_MARKER}{message}"
    ))
}

/// Splits an error message made by [`invalid`] into `(subpath, message)`.
pub(crate) fn parse_error_message(message: &str) -> Option<(&str, &str)> {
    let rest = message.strip_prefix(ERROR_MARKER)?;
    rest.split_once(ERROR_MARKER)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn optional_string<E: de::Error>(
    obj: &mut Map<String, Value>,
    key: &str,
) -> Result<Option<String>, E> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(
            &format!("/value/{key}"),
            format!("`{key}` must be a string, not {}", json_type(&other)),
        )),
    }
}

impl<'de> Deserialize<'de> for Binding {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Value::Object(mut obj) = Value::deserialize(deserializer)? else {
            return Err(invalid(
                "",
                "a binding must be an object {\"type\", \"value\"}",
            ));
        };
        let kind = match obj.remove("type") {
            Some(Value::String(s)) => s,
            None | Some(Value::Null) => return Err(invalid("/type", "a binding needs a `type`")),
            Some(other) => {
                return Err(invalid(
                    "/type",
                    format!("binding `type` must be a string, not {}", json_type(&other)),
                ));
            }
        };
        let value = obj.remove("value").unwrap_or(Value::Null);
        match kind.as_str() {
            "constant" => Ok(Binding::Constant(value)),
            "workflowInput" | "workflow" => match value {
                Value::String(key) => Ok(Binding::WorkflowInput(key)),
                other => Err(invalid(
                    "/value",
                    format!(
                        "a `{kind}` binding's value must be the name of a run input field (a string), not {}",
                        json_type(&other)
                    ),
                )),
            },
            "taskOutput" => {
                let Value::Object(mut r) = value else {
                    return Err(invalid(
                        "/value",
                        format!(
                            "a `taskOutput` binding's value must be an object {{taskId, outputKey?, path?}}, not {}",
                            json_type(&value)
                        ),
                    ));
                };
                let Some(task_id) = optional_string(&mut r, "taskId")? else {
                    return Err(invalid(
                        "/value/taskId",
                        "a `taskOutput` binding needs a `taskId`",
                    ));
                };
                Ok(Binding::TaskOutput(TaskOutputRef {
                    task_id,
                    output_key: optional_string(&mut r, "outputKey")?,
                    path: optional_string(&mut r, "path")?,
                }))
            }
            "expression" => match value {
                Value::String(src) => Ok(Binding::Expression(src)),
                other => Err(invalid(
                    "/value",
                    format!(
                        "an `expression` binding's value must be a CEL expression (a string), not {}",
                        json_type(&other)
                    ),
                )),
            },
            other => Err(invalid(
                "/type",
                format!(
                    "unknown binding type `{other}`: expected constant, workflowInput (or workflow), taskOutput or expression"
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Binding, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn wire_format_round_trips() {
        for v in [
            json!({"type": "constant", "value": {"a": [1, 2]}}),
            json!({"type": "workflowInput", "value": "amount"}),
            json!({"type": "taskOutput", "value": {"taskId": "add", "outputKey": "value"}}),
            json!({"type": "taskOutput", "value": {"taskId": "add", "path": "/a/0"}}),
            json!({"type": "expression", "value": "input.n + 1"}),
        ] {
            let b = parse(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&b).unwrap(), v);
        }
    }

    #[test]
    fn legacy_workflow_name_is_normalised() {
        let b = parse(json!({"type": "workflow", "value": "duration"})).unwrap();
        assert_eq!(b, Binding::WorkflowInput("duration".to_owned()));
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            json!({"type": "workflowInput", "value": "duration"})
        );
    }

    #[test]
    fn constant_without_value_is_null_and_extra_fields_are_ignored() {
        assert_eq!(
            parse(json!({"type": "constant", "extra": 1})).unwrap(),
            Binding::Constant(Value::Null)
        );
    }

    #[test]
    fn malformed_bindings_carry_a_subpath() {
        let cases = [
            (json!("x"), ""),
            (json!({"value": 1}), "/type"),
            (json!({"type": 3}), "/type"),
            (json!({"type": "magic", "value": 1}), "/type"),
            (json!({"type": "workflowInput", "value": 1}), "/value"),
            (json!({"type": "taskOutput", "value": "add"}), "/value"),
            (
                json!({"type": "taskOutput", "value": {"outputKey": "v"}}),
                "/value/taskId",
            ),
            (
                json!({"type": "taskOutput", "value": {"taskId": "a", "path": 1}}),
                "/value/path",
            ),
            (json!({"type": "expression", "value": {}}), "/value"),
        ];
        for (v, subpath) in cases {
            let msg = parse(v.clone()).unwrap_err();
            let (got, _) = parse_error_message(&msg).unwrap_or_else(|| panic!("{v}: {msg}"));
            assert_eq!(got, subpath, "{v}");
        }
    }

    #[test]
    fn select_and_resolve() {
        let steps: Map<String, Value> = serde_json::from_value(json!({
            "add": {"value": 4, "deep": {"list": [10, 20]}}
        }))
        .unwrap();
        let input = json!({"n": 1});
        let by_key = Binding::TaskOutput(TaskOutputRef {
            task_id: "add".into(),
            output_key: Some("deep".into()),
            path: Some("/list/1".into()),
        });
        assert_eq!(by_key.resolve(&input, &steps), Ok(json!(20)));
        let missing = Binding::TaskOutput(TaskOutputRef {
            task_id: "nope".into(),
            output_key: Some("value".into()),
            path: None,
        });
        assert_eq!(missing.resolve(&input, &steps), Ok(Value::Null));
        assert_eq!(
            Binding::WorkflowInput("n".into()).resolve(&input, &steps),
            Ok(json!(1))
        );
        assert_eq!(
            Binding::WorkflowInput("m".into()).resolve(&input, &steps),
            Ok(Value::Null)
        );
        assert_eq!(
            Binding::Expression("steps.add.value * 2".into()).resolve(&input, &steps),
            Ok(json!(8))
        );
        assert_eq!(
            Binding::Constant(json!([1])).resolve(&input, &steps),
            Ok(json!([1]))
        );
    }
}
