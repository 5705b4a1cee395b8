//! Weft step `template`: `{"template": "Hello {{name}}!", "values": {"name": "Ada"}}` →
//! `{"text": "Hello Ada!"}`.
//!
//! Rules (also in the README):
//! - `{{ path }}` is replaced by the value at `path` in `values`; spaces around `path` are
//!   ignored. `path` is a key, or keys and array indices joined by dots: `user.name`,
//!   `items.0.id`.
//! - A string value is inserted as is (no HTML or other escaping); any other value (number,
//!   bool, null, array, object) is inserted as compact JSON.
//! - `\{{` writes a literal `{{`: a backslash right before `{{` is dropped. Nothing else is an
//!   escape: other backslashes, lone braces and `}}` outside a placeholder are copied as they
//!   are. (So a literal backslash right before a placeholder can only come from a value.)
//! - A path with no value fails the step with code `missing_variable` (not retryable), naming
//!   every missing path; a `{{` without its `}}`, or an empty `{{}}`, fails with
//!   `invalid_template` (not retryable).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use weft_plugin_sdk::{Context, Step, StepError};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The text, with `{{ path }}` placeholders.
    pub template: String,
    /// What the placeholders refer to.
    #[serde(default)]
    pub values: Map<String, Value>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The template with every placeholder replaced.
    pub text: String,
}

pub struct Template;

impl Step for Template {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "template";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Fills `{{ path }}` placeholders in a text from `values`.";

    fn run(_: &Context, input: Input) -> Result<Output, StepError> {
        render(&input.template, &input.values).map(|text| Output { text })
    }
}

weft_plugin_sdk::export_step!(Template);

const OPEN: &str = "{{";
const CLOSE: &str = "}}";

/// `template` with its placeholders replaced from `values`.
pub fn render(template: &str, values: &Map<String, Value>) -> Result<String, StepError> {
    let mut text = String::with_capacity(template.len());
    let mut missing: Vec<&str> = Vec::new();
    let mut rest = template;
    while let Some(at) = rest.find(OPEN) {
        if rest[..at].ends_with('\\') {
            text.push_str(&rest[..at - 1]);
            text.push_str(OPEN);
            rest = &rest[at + OPEN.len()..];
            continue;
        }
        text.push_str(&rest[..at]);
        let offset = template.len() - rest.len() + at;
        let after_open = &rest[at + OPEN.len()..];
        let Some(len) = after_open.find(CLOSE) else {
            return Err(StepError::fatal(
                "invalid_template",
                format!("`{OPEN}` at byte {offset} has no closing `{CLOSE}`"),
            ));
        };
        let path = after_open[..len].trim();
        if path.is_empty() {
            return Err(StepError::fatal(
                "invalid_template",
                format!("empty placeholder at byte {offset}"),
            ));
        }
        match lookup(values, path) {
            Some(Value::String(s)) => text.push_str(s),
            Some(other) => text.push_str(&other.to_string()),
            None if missing.contains(&path) => {}
            None => missing.push(path),
        }
        rest = &after_open[len + CLOSE.len()..];
    }
    text.push_str(rest);
    if missing.is_empty() {
        Ok(text)
    } else {
        Err(StepError::fatal(
            "missing_variable",
            format!("no value for {}", missing.join(", ")),
        ))
    }
}

/// The value at a dotted `path` (`a.b.0`) in `values`.
fn lookup<'v>(values: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    let mut keys = path.split('.');
    let first = values.get(keys.next()?)?;
    keys.try_fold(first, |value, key| match value {
        Value::Object(map) => map.get(key),
        Value::Array(items) => items.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weft_plugin_sdk::step::run_json;

    use super::*;

    fn render_with(template: &str, values: Value) -> Result<String, StepError> {
        let Value::Object(values) = values else {
            panic!("values must be an object")
        };
        render(template, &values)
    }

    #[test]
    fn replaces_placeholders() {
        let values = json!({"name": "Ada", "n": 3, "ok": true, "none": null});
        assert_eq!(
            render_with("Hello {{name}}!", values.clone()).unwrap(),
            "Hello Ada!"
        );
        assert_eq!(
            render_with("{{ name }}:{{n}}:{{ok}}:{{none}}", values).unwrap(),
            "Ada:3:true:null"
        );
    }

    #[test]
    fn follows_dotted_paths_into_objects_and_arrays() {
        let values = json!({"user": {"name": "Ada"}, "items": [{"id": 7}], "list": [1, 2]});
        assert_eq!(
            render_with("{{user.name}} {{items.0.id}} {{list}}", values).unwrap(),
            "Ada 7 [1,2]"
        );
    }

    #[test]
    fn strings_are_not_escaped() {
        let values = json!({"html": "<b>\"hi\"</b> {{x}}"});
        assert_eq!(
            render_with("{{html}}", values).unwrap(),
            "<b>\"hi\"</b> {{x}}"
        );
    }

    #[test]
    fn backslash_escapes_an_opening_pair_only() {
        let values = json!({"a": "A"});
        assert_eq!(
            render_with(r"\{{a}} {{a}}", values.clone()).unwrap(),
            "{{a}} A"
        );
        assert_eq!(
            render_with(r"C:\dir {a} }} \n", values).unwrap(),
            r"C:\dir {a} }} \n"
        );
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        assert_eq!(render_with("", json!({})).unwrap(), "");
        assert_eq!(render_with("héllo ✓", json!({})).unwrap(), "héllo ✓");
    }

    #[test]
    fn missing_variables_are_all_named() {
        let err = render_with("{{a}} {{b.c}} {{a}} {{d}}", json!({"d": 1, "b": {}})).unwrap_err();
        assert_eq!(
            err,
            StepError::fatal("missing_variable", "no value for a, b.c")
        );
    }

    #[test]
    fn malformed_placeholders_are_invalid_templates() {
        for template in ["Hello {{name", "{{}}", "a {{  }} b"] {
            let err = render_with(template, json!({"name": "x"})).unwrap_err();
            assert_eq!(
                (err.code.as_str(), err.retryable),
                ("invalid_template", false)
            );
        }
    }

    #[test]
    fn runs_as_a_step() {
        let ctx = Context::new("run", "step", 1);
        let out = run_json::<Template>(
            &ctx,
            r#"{"template": "Hello {{name}}!", "values": {"name": "Ada"}}"#,
        );
        assert_eq!(out.unwrap(), r#"{"text":"Hello Ada!"}"#);
        let err = run_json::<Template>(&ctx, r#"{"template": "{{x}}"}"#).unwrap_err();
        assert_eq!(
            (err.code.as_str(), err.retryable),
            ("missing_variable", false)
        );
    }
}
