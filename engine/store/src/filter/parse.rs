//! The JSON form of a [`Filter`] → a typed [`Filter`], or a [`FilterError`] pointing at the
//! offending part.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    CompareOp, Field, FieldKind, Filter, FilterError, FilterValue, check_limits, check_operator,
    expected_message,
};

const EXPRESSION_KEYS: [&str; 4] = ["and", "or", "not", "compare"];
const COMPARE_KEYS: [&str; 3] = ["field", "operator", "value"];
/// How much of a user's string an error message quotes.
const QUOTE_MAX: usize = 64;

pub(super) fn parse(value: &Value) -> Result<Filter, FilterError> {
    let mut nodes = 0;
    parse_expression(value, &mut String::new(), 1, &mut nodes)
}

fn parse_expression(
    value: &Value,
    path: &mut String,
    depth: usize,
    nodes: &mut usize,
) -> Result<Filter, FilterError> {
    check_limits(path, depth, nodes)?;
    let Value::Object(map) = value else {
        return Err(FilterError::new(
            path,
            "expected an expression: an object with \"and\", \"or\", \"not\" or \"compare\"",
        ));
    };
    reject_unknown_keys(map, path, &EXPRESSION_KEYS)?;
    let present = |key: &str| map.get(key).filter(|v| !v.is_null());

    let len = path.len();
    let result = if let Some(children) = present("and") {
        path.push_str("/and");
        parse_children(children, path, depth, nodes).map(Filter::And)
    } else if let Some(children) = present("or") {
        path.push_str("/or");
        parse_children(children, path, depth, nodes).map(Filter::Or)
    } else if let Some(inner) = present("not") {
        path.push_str("/not");
        parse_expression(inner, path, depth + 1, nodes).map(|f| Filter::Not(Box::new(f)))
    } else if let Some(compare) = present("compare") {
        path.push_str("/compare");
        parse_compare(compare, path)
    } else {
        Ok(Filter::All)
    };
    path.truncate(len);
    result
}

/// The array of `and` / `or`; `path` points at it.
fn parse_children(
    value: &Value,
    path: &mut String,
    depth: usize,
    nodes: &mut usize,
) -> Result<Vec<Filter>, FilterError> {
    let Value::Array(items) = value else {
        return Err(FilterError::new(path, "expected an array of expressions"));
    };
    let mut children = Vec::with_capacity(items.len().min(super::MAX_NODES));
    for (i, item) in items.iter().enumerate() {
        let len = path.len();
        path.push_str(&format!("/{i}"));
        let child = parse_expression(item, path, depth + 1, nodes);
        path.truncate(len);
        children.push(child?);
    }
    Ok(children)
}

/// `{field, operator, value}`; `path` points at it.
fn parse_compare(value: &Value, path: &str) -> Result<Filter, FilterError> {
    let Value::Object(map) = value else {
        return Err(FilterError::new(
            path,
            "expected a comparison: an object with \"field\", \"operator\" and \"value\"",
        ));
    };
    reject_unknown_keys(map, path, &COMPARE_KEYS)?;

    let field_path = format!("{path}/field");
    let field_name = required_string(map, "field", &field_path)?;
    let field = Field::from_json_name(field_name).ok_or_else(|| {
        let known: Vec<&str> = Field::ALL.iter().map(|f| f.json_name()).collect();
        FilterError::new(
            &field_path,
            format!(
                "unknown field \"{}\"; expected one of: {}",
                quote(field_name),
                known.join(", ")
            ),
        )
    })?;

    let op_path = format!("{path}/operator");
    let symbol = required_string(map, "operator", &op_path)?;
    let op = CompareOp::from_symbol(symbol).ok_or_else(|| {
        let known: Vec<&str> = CompareOp::ALL.iter().map(|op| op.symbol()).collect();
        FilterError::new(
            &op_path,
            format!(
                "unknown operator \"{}\"; expected one of: {}",
                quote(symbol),
                known.join(", ")
            ),
        )
    })?;
    check_operator(path, field, op)?;

    let value_path = format!("{path}/value");
    let Some(value) = map.get("value") else {
        return Err(FilterError::new(&value_path, "missing \"value\""));
    };
    let value = match (op, value) {
        (CompareOp::In, Value::Array(items)) if !items.is_empty() => FilterValue::List(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| parse_scalar(item, field, false, &format!("{value_path}/{i}")))
                .collect::<Result<_, _>>()?,
        ),
        (CompareOp::In, _) => {
            return Err(FilterError::new(
                &value_path,
                format!(
                    "\"in\" takes a non-empty array of {}",
                    super::value_description(field.kind())
                ),
            ));
        }
        (_, Value::Array(_)) => {
            return Err(FilterError::new(
                &value_path,
                format!(
                    "{}, not an array (only \"in\" takes an array)",
                    expected_message(field, false)
                ),
            ));
        }
        (CompareOp::Eq | CompareOp::Ne, value) => parse_scalar(value, field, true, &value_path)?,
        (_, value) => parse_scalar(value, field, false, &value_path)?,
    };
    Ok(Filter::Compare { field, op, value })
}

/// One value of the field's type; `null_ok` for `=` / `!=`, where a nullable field takes null.
fn parse_scalar(
    value: &Value,
    field: Field,
    null_ok: bool,
    path: &str,
) -> Result<FilterValue, FilterError> {
    let kind = field.kind();
    let wrong_type = || {
        FilterError::new(
            path,
            expected_message(field, null_ok && kind == FieldKind::NullableText),
        )
    };
    match (kind, value) {
        (FieldKind::NullableText, Value::Null) if null_ok => Ok(FilterValue::Null),
        (FieldKind::Text | FieldKind::NullableText, Value::String(s)) => {
            Ok(FilterValue::Text(s.clone()))
        }
        (FieldKind::Bool, Value::Bool(b)) => Ok(FilterValue::Bool(*b)),
        (FieldKind::Uuid, Value::String(s)) => {
            Uuid::parse_str(s).map(FilterValue::Uuid).map_err(|e| {
                FilterError::new(path, format!("{}: {e}", expected_message(field, false)))
            })
        }
        (FieldKind::Time, Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| FilterValue::Time(t.with_timezone(&Utc)))
            .map_err(|e| {
                FilterError::new(path, format!("{}: {e}", expected_message(field, false)))
            }),
        _ => Err(wrong_type()),
    }
}

fn required_string<'v>(
    map: &'v Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'v str, FilterError> {
    match map.get(key) {
        None | Some(Value::Null) => Err(FilterError::new(path, format!("missing \"{key}\""))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(FilterError::new(
            path,
            format!("\"{key}\" must be a string"),
        )),
    }
}

fn reject_unknown_keys(
    map: &Map<String, Value>,
    path: &str,
    known: &[&str],
) -> Result<(), FilterError> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(FilterError::new(
            &format!("{path}/{}", escape_pointer(key)),
            format!(
                "unknown key \"{}\"; expected {}",
                quote(key),
                known.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// A JSON pointer reference token: `~` → `~0`, `/` → `~1`.
fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// User text for an error message, cut short.
fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(value: Value) -> FilterError {
        match Filter::from_json(&value) {
            Err(e) => e,
            Ok(f) => panic!("expected an error, got {f:?}"),
        }
    }

    fn cmp(field: &str, operator: &str, value: Value) -> Value {
        json!({ "compare": { "field": field, "operator": operator, "value": value } })
    }

    #[test]
    fn empty_and_null_members_match_everything() {
        assert_eq!(Filter::from_json(&json!({})), Ok(Filter::All));
        assert_eq!(
            Filter::from_json(&json!({"and": null, "or": null, "not": null, "compare": null})),
            Ok(Filter::All)
        );
    }

    #[test]
    fn first_non_null_member_wins_in_order() {
        let f = Filter::from_json(&json!({
            "or": [{}],
            "not": {},
            "compare": {"field": "name", "operator": "=", "value": "x"},
        }));
        assert_eq!(f, Ok(Filter::Or(vec![Filter::All])));
        let f = Filter::from_json(&json!({"and": [], "or": [{}]}));
        assert_eq!(f, Ok(Filter::And(vec![])));
    }

    #[test]
    fn typed_values() {
        let t = "2024-05-01T12:00:00.5+02:00";
        assert_eq!(
            Filter::from_json(&cmp("createdAt", ">=", json!(t))),
            Ok(Filter::Compare {
                field: Field::CreatedAt,
                op: CompareOp::Ge,
                value: FilterValue::Time(
                    DateTime::parse_from_rfc3339("2024-05-01T10:00:00.5Z")
                        .unwrap()
                        .with_timezone(&Utc)
                ),
            })
        );
        let id = "0190f1f4-8e3a-7b3c-9d4e-123456789abc";
        assert_eq!(
            Filter::from_json(&cmp("id", "in", json!([id]))),
            Ok(Filter::Compare {
                field: Field::Id,
                op: CompareOp::In,
                value: FilterValue::List(vec![FilterValue::Uuid(Uuid::parse_str(id).unwrap())]),
            })
        );
        assert_eq!(
            Filter::from_json(&cmp("description", "!=", Value::Null)),
            Ok(Filter::Compare {
                field: Field::Description,
                op: CompareOp::Ne,
                value: FilterValue::Null,
            })
        );
    }

    #[test]
    fn error_paths() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!(null), "", "expected an expression"),
            (json!([]), "", "expected an expression"),
            (json!({"left": 1}), "/left", "unknown key \"left\""),
            (json!({"and": {}}), "/and", "expected an array"),
            (json!({"and": [{}, 3]}), "/and/1", "expected an expression"),
            (
                json!({"and": [{}, {"compare": {"field": null, "operator": "=", "value": 1}}]}),
                "/and/1/compare/field",
                "missing \"field\"",
            ),
            (
                json!({"or": [{"compare": {"field": "owner", "operator": "=", "value": "x"}}]}),
                "/or/0/compare/field",
                "unknown field \"owner\"",
            ),
            (
                json!({"compare": {"field": 7, "operator": "=", "value": "x"}}),
                "/compare/field",
                "must be a string",
            ),
            (
                cmp("name", "~", json!("x")),
                "/compare/operator",
                "unknown operator \"~\"",
            ),
            (
                json!({"compare": {"field": "name", "value": "x"}}),
                "/compare/operator",
                "missing \"operator\"",
            ),
            (
                json!({"compare": {"field": "name", "operator": "="}}),
                "/compare/value",
                "missing \"value\"",
            ),
            (
                json!({"compare": {"field": "name", "operator": "=", "value": 1, "x/y~": 0}}),
                "/compare/x~1y~0",
                "unknown key",
            ),
            (
                cmp("isEnabled", ">", json!(true)),
                "/compare/operator",
                "does not apply",
            ),
            (
                cmp("isDraft", "<=", json!(true)),
                "/compare/operator",
                "does not apply",
            ),
            (
                cmp("isDraft", "contains", json!("t")),
                "/compare/operator",
                "does not apply",
            ),
            (
                cmp("createdAt", "contains", json!("2024")),
                "/compare/operator",
                "does not apply",
            ),
            (
                cmp("id", "contains", json!("01")),
                "/compare/operator",
                "does not apply",
            ),
            (
                cmp("isEnabled", "=", json!("true")),
                "/compare/value",
                "takes a boolean",
            ),
            (
                cmp("name", "=", json!(1)),
                "/compare/value",
                "takes a string",
            ),
            (
                cmp("name", "=", Value::Null),
                "/compare/value",
                "takes a string",
            ),
            (
                cmp("description", ">", Value::Null),
                "/compare/value",
                "takes a string",
            ),
            (
                cmp("createdAt", "<", json!("yesterday")),
                "/compare/value",
                "RFC 3339",
            ),
            (
                cmp("createdAt", "<", json!(1700000000)),
                "/compare/value",
                "RFC 3339",
            ),
            (
                cmp("id", "=", json!("not-a-uuid")),
                "/compare/value",
                "UUID",
            ),
            (
                cmp("name", "in", json!([])),
                "/compare/value",
                "non-empty array",
            ),
            (
                cmp("name", "in", json!("a")),
                "/compare/value",
                "non-empty array",
            ),
            (
                cmp("name", "in", json!(["a", 2])),
                "/compare/value/1",
                "takes a string",
            ),
            (
                cmp("description", "in", json!([null])),
                "/compare/value/0",
                "takes a string",
            ),
            (
                cmp("name", "=", json!(["a"])),
                "/compare/value",
                "only \"in\"",
            ),
            (
                json!({"not": {"and": [{"compare": {"field": "isDraft", "operator": "=", "value": 1}}]}}),
                "/not/and/0/compare/value",
                "takes a boolean",
            ),
        ];
        for (input, path, message) in cases {
            let e = err(input.clone());
            assert_eq!(e.path, path, "{input}: {e:?}");
            assert!(e.message.contains(message), "{input}: {e:?}");
        }
    }

    fn nested_not(levels: usize) -> Value {
        (0..levels).fold(json!({}), |inner, _| json!({ "not": inner }))
    }

    #[test]
    fn depth_limit() {
        // 16 levels: 15 `not` around `{}`.
        assert!(Filter::from_json(&nested_not(15)).is_ok());
        let e = err(nested_not(16));
        assert_eq!(e.path, "/not".repeat(16));
        assert!(e.message.contains("deeper than 16"), "{e:?}");
        // Very deep input is refused without recursing through all of it.
        let e = err(nested_not(1_000));
        assert_eq!(e.path, "/not".repeat(16));
    }

    #[test]
    fn node_limit() {
        let ok = json!({ "and": vec![json!({}); 255] });
        assert!(Filter::from_json(&ok).is_ok());
        let too_many = json!({ "or": vec![json!({}); 256] });
        let e = err(too_many);
        assert_eq!(e.path, "/or/255");
        assert!(e.message.contains("more than 256"), "{e:?}");
    }

    #[test]
    fn validate_agrees_with_from_json() {
        let bad = Filter::And(vec![
            Filter::All,
            Filter::Compare {
                field: Field::IsEnabled,
                op: CompareOp::Eq,
                value: FilterValue::Text("yes".into()),
            },
        ]);
        let e = bad.validate().unwrap_err();
        assert_eq!(e.path, "/and/1/compare/value");

        let bad = Filter::Or(vec![Filter::Compare {
            field: Field::Name,
            op: CompareOp::In,
            value: FilterValue::List(vec![]),
        }]);
        assert_eq!(bad.validate().unwrap_err().path, "/or/0/compare/value");

        let deep = (0..20).fold(Filter::All, |f, _| Filter::Not(Box::new(f)));
        assert_eq!(deep.validate().unwrap_err().path, "/not".repeat(16));

        let parsed = Filter::from_json(&json!({"or": [
            {"compare": {"field": "name", "operator": "contains", "value": "a"}},
            {"not": {"compare": {"field": "description", "operator": "=", "value": null}}},
            {"compare": {"field": "updatedAt", "operator": "in", "value": ["2024-01-01T00:00:00Z"]}},
        ]}))
        .unwrap();
        assert_eq!(parsed.validate(), Ok(()));
    }

    #[test]
    fn long_user_text_is_quoted_short() {
        let long = "x".repeat(10_000);
        let e = err(cmp(&long, "=", json!("v")));
        assert!(e.message.len() < 400, "{}", e.message.len());
    }
}
