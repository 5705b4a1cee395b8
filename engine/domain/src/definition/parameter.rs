//! Declared run inputs and outputs of a definition.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Binding;

/// A declared run input field (`inputParameters[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParameterDefinition {
    /// The input field name; unique among the input parameters.
    pub name: String,
    /// The value type as written (see [`ParameterType`] for the accepted names).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Whether a run must supply this field (when there is no default).
    #[serde(default)]
    pub required: bool,
    /// The value used when a run does not supply this field; must match the type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Free-form data for tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Weft: a JSON Schema the value must satisfy (a JSON object or boolean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
}

impl ParameterDefinition {
    /// The declared type, or `None` if `type` is not one Weft knows.
    pub fn parameter_type(&self) -> Option<ParameterType> {
        ParameterType::parse(&self.type_name)
    }
}

/// A declared run output field (`outputParameters[]`), computed when the run completes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputParameterDefinition {
    /// The output field name; unique among the output parameters.
    pub name: String,
    /// The value type, if declared (same names as [`ParameterType`]).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How the field is computed.
    pub value: Binding,
}

impl OutputParameterDefinition {
    /// The declared type: `Some(None)` if a type is written but unknown, `None` if none is.
    pub fn parameter_type(&self) -> Option<Option<ParameterType>> {
        self.type_name.as_deref().map(ParameterType::parse)
    }
}

/// The value types a parameter may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParameterType {
    /// `string`.
    String,
    /// `number` (alias `float`): any JSON number.
    Number,
    /// `integer` (alias `int`): a JSON number with no fractional part (`3` or `3.0`).
    Integer,
    /// `boolean` (alias `bool`).
    Boolean,
    /// `object` (aliases `map`, `json`).
    Object,
    /// `array` (alias `list`).
    Array,
    /// `any`: every JSON value.
    Any,
}

impl ParameterType {
    /// Parses a type name, case-insensitively, aliases included; `None` if unknown.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "string" => Self::String,
            "number" | "float" => Self::Number,
            "integer" | "int" => Self::Integer,
            "boolean" | "bool" => Self::Boolean,
            "object" | "map" | "json" => Self::Object,
            "array" | "list" => Self::Array,
            "any" => Self::Any,
            _ => return None,
        })
    }

    /// The canonical name (`string`, `number`, `integer`, `boolean`, `object`, `array`, `any`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
            Self::Object => "object",
            Self::Array => "array",
            Self::Any => "any",
        }
    }

    /// Whether `value` is of this type.
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            Self::String => value.is_string(),
            Self::Number => value.is_number(),
            Self::Integer => match value {
                Value::Number(n) => {
                    n.is_i64()
                        || n.is_u64()
                        || n.as_f64()
                            .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
                }
                _ => false,
            },
            Self::Boolean => value.is_boolean(),
            Self::Object => value.is_object(),
            Self::Array => value.is_array(),
            Self::Any => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_aliases_case_insensitive() {
        assert_eq!(ParameterType::parse("String"), Some(ParameterType::String));
        assert_eq!(ParameterType::parse("INT"), Some(ParameterType::Integer));
        assert_eq!(ParameterType::parse("float"), Some(ParameterType::Number));
        assert_eq!(ParameterType::parse("bool"), Some(ParameterType::Boolean));
        assert_eq!(ParameterType::parse("map"), Some(ParameterType::Object));
        assert_eq!(ParameterType::parse("json"), Some(ParameterType::Object));
        assert_eq!(ParameterType::parse("list"), Some(ParameterType::Array));
        assert_eq!(ParameterType::parse("any"), Some(ParameterType::Any));
        assert_eq!(ParameterType::parse("date"), None);
        assert_eq!(ParameterType::Integer.as_str(), "integer");
    }

    #[test]
    fn accepts() {
        assert!(ParameterType::Integer.accepts(&json!(3)));
        assert!(ParameterType::Integer.accepts(&json!(3.0)));
        assert!(ParameterType::Integer.accepts(&json!(-3)));
        assert!(!ParameterType::Integer.accepts(&json!(3.5)));
        assert!(!ParameterType::Integer.accepts(&json!("3")));
        assert!(ParameterType::Number.accepts(&json!(3.5)));
        assert!(ParameterType::String.accepts(&json!("x")));
        assert!(!ParameterType::String.accepts(&json!(null)));
        assert!(ParameterType::Boolean.accepts(&json!(false)));
        assert!(ParameterType::Object.accepts(&json!({})));
        assert!(ParameterType::Array.accepts(&json!([])));
        assert!(ParameterType::Any.accepts(&json!(null)));
    }
}
