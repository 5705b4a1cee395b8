//! Weft step `json-transform`: reshape a JSON document with JSON Pointers (RFC 6901).
//!
//! Input `{"data": any, "pick"?: [pointer], "rename"?: {from: to}, "set"?: {pointer: value}}`,
//! output `{"data": any}`. The three operations run in this order, each on the result of the
//! previous one; an absent operation does nothing.
//!
//! 1. **pick** keeps only the values at the listed pointers, each at its original place. The
//!    result starts as an empty container of the same kind as `data` (`{}`, `[]`, or `null`
//!    for a scalar); containers on the way to a picked value are copied as their kind (object or
//!    array), and array elements before a picked index become `null` (like jq's `pick`).
//!    Pointers with no value are skipped. `""` picks the whole document.
//! 2. **rename** moves the value at each `from` pointer to its `to` pointer, one pair at a time
//!    in the sorted order of `from`. The value is removed first (an array element removal shifts
//!    the later elements), then written as by `set`. A `from` with no value is skipped.
//! 3. **set** writes each value at its pointer, in the sorted order of the pointers (so a
//!    parent is written before its children). Missing parents are created as objects; an
//!    existing array element is replaced; index = length, or `-`, appends. `""` replaces the
//!    whole document.
//!
//! Errors (not retryable): `invalid_pointer` for a pointer that is not RFC 6901 syntax, or a
//! write that cannot happen (into a string, number, bool or null, or past the end of an array).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use weft_plugin_sdk::{Context, Step, StepError};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The document to transform.
    pub data: Value,
    /// JSON Pointers of the values to keep (all other values are dropped).
    #[serde(default)]
    pub pick: Option<Vec<String>>,
    /// `{from pointer: to pointer}`: values to move.
    #[serde(default)]
    pub rename: Option<BTreeMap<String, String>>,
    /// `{pointer: value}`: values to write.
    #[serde(default)]
    pub set: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The transformed document.
    pub data: Value,
}

pub struct JsonTransform;

impl Step for JsonTransform {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "json-transform";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Picks, renames and sets values in a JSON document, addressed by JSON Pointers.";

    fn run(_: &Context, input: Input) -> Result<Output, StepError> {
        transform(input).map(|data| Output { data })
    }
}

weft_plugin_sdk::export_step!(JsonTransform);

/// Apply `pick`, then `rename`, then `set` to `input.data`.
pub fn transform(input: Input) -> Result<Value, StepError> {
    let mut data = input.data;
    if let Some(pointers) = input.pick {
        data = pick(&data, &pointers)?;
    }
    for (from, to) in input.rename.unwrap_or_default() {
        rename(&mut data, &from, &to)?;
    }
    for (pointer, value) in input.set.unwrap_or_default() {
        set(&mut data, &parse(&pointer)?, value, &pointer)?;
    }
    Ok(data)
}

/// The parts of `data` at `pointers`, each at its original place.
pub fn pick(data: &Value, pointers: &[String]) -> Result<Value, StepError> {
    let mut out = empty_like(data);
    for pointer in pointers {
        let tokens = parse(pointer)?;
        if get(data, &tokens).is_some() {
            copy_path(&mut out, data, &tokens);
        }
    }
    Ok(out)
}

/// Move the value at `from` to `to`, if there is one.
pub fn rename(data: &mut Value, from: &str, to: &str) -> Result<(), StepError> {
    let (from_tokens, to_tokens) = (parse(from)?, parse(to)?);
    if from_tokens == to_tokens {
        return Ok(());
    }
    match remove(data, &from_tokens) {
        Some(value) => set(data, &to_tokens, value, to),
        None => Ok(()),
    }
}

/// Write `value` at `tokens` (the parsed `pointer`), creating missing parents as objects.
pub fn set(
    data: &mut Value,
    tokens: &[String],
    value: Value,
    pointer: &str,
) -> Result<(), StepError> {
    let Some((last, parents)) = tokens.split_last() else {
        *data = value;
        return Ok(());
    };
    let mut target = data;
    for token in parents {
        target = match target {
            Value::Object(map) => map
                .entry(token.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(items) => {
                let index = array_index(token, items.len())
                    .filter(|&i| i < items.len())
                    .ok_or_else(|| unwritable(pointer, "no such array element"))?;
                &mut items[index]
            }
            _ => return Err(unwritable(pointer, "a parent is not an object or array")),
        };
    }
    match target {
        Value::Object(map) => {
            map.insert(last.clone(), value);
        }
        Value::Array(items) => match array_index(last, items.len()) {
            Some(i) if i < items.len() => items[i] = value,
            Some(i) if i == items.len() => items.push(value),
            _ => return Err(unwritable(pointer, "index past the end of the array")),
        },
        _ => return Err(unwritable(pointer, "the parent is not an object or array")),
    }
    Ok(())
}

/// Parse an RFC 6901 JSON Pointer into its unescaped reference tokens.
pub fn parse(pointer: &str) -> Result<Vec<String>, StepError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(body) = pointer.strip_prefix('/') else {
        return Err(invalid(pointer, "must be empty or start with `/`"));
    };
    body.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => return Err(invalid(pointer, "`~` must be followed by 0 or 1")),
                }
            }
            Ok(out)
        })
        .collect()
}

fn get<'v>(data: &'v Value, tokens: &[String]) -> Option<&'v Value> {
    tokens.iter().try_fold(data, |value, token| match value {
        Value::Object(map) => map.get(token),
        Value::Array(items) => items.get(array_index(token, items.len())?),
        _ => None,
    })
}

fn remove(data: &mut Value, tokens: &[String]) -> Option<Value> {
    let (last, parents) = tokens.split_last()?;
    let mut parent = data;
    for token in parents {
        parent = match parent {
            Value::Object(map) => map.get_mut(token)?,
            Value::Array(items) => {
                let index = array_index(token, items.len())?;
                items.get_mut(index)?
            }
            _ => return None,
        };
    }
    match parent {
        Value::Object(map) => map.remove(last),
        Value::Array(items) => {
            let index = array_index(last, items.len()).filter(|&i| i < items.len())?;
            Some(items.remove(index))
        }
        _ => None,
    }
}

/// Copy the value at `tokens` in `src` (which exists) into `out`, mirroring the containers on
/// the way.
fn copy_path(out: &mut Value, src: &Value, tokens: &[String]) {
    let Some((token, rest)) = tokens.split_first() else {
        *out = src.clone();
        return;
    };
    match src {
        Value::Object(map) => {
            if !out.is_object() {
                *out = Value::Object(Map::new());
            }
            if let (Value::Object(out_map), Some(child)) = (out, map.get(token)) {
                let slot = out_map
                    .entry(token.clone())
                    .or_insert_with(|| empty_like(child));
                copy_path(slot, child, rest);
            }
        }
        Value::Array(items) => {
            if !out.is_array() {
                *out = Value::Array(Vec::new());
            }
            let index = array_index(token, items.len());
            if let (Value::Array(out_items), Some(i)) = (out, index) {
                if out_items.len() <= i {
                    out_items.resize(i + 1, Value::Null);
                }
                if out_items[i].is_null() {
                    out_items[i] = empty_like(&items[i]);
                }
                copy_path(&mut out_items[i], &items[i], rest);
            }
        }
        _ => {}
    }
}

fn empty_like(value: &Value) -> Value {
    match value {
        Value::Object(_) => Value::Object(Map::new()),
        Value::Array(_) => Value::Array(Vec::new()),
        _ => Value::Null,
    }
}

/// The index a token names in an array of `len` elements: digits without leading zeros, or `-`
/// (the position after the last element).
fn array_index(token: &str, len: usize) -> Option<usize> {
    if token == "-" {
        return Some(len);
    }
    let canonical = token == "0" || !token.starts_with('0');
    if canonical && !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
        token.parse().ok()
    } else {
        None
    }
}

fn invalid(pointer: &str, why: &str) -> StepError {
    StepError::fatal(
        "invalid_pointer",
        format!("`{pointer}` is not a JSON Pointer: {why}"),
    )
}

fn unwritable(pointer: &str, why: &str) -> StepError {
    StepError::fatal(
        "invalid_pointer",
        format!("cannot write at `{pointer}`: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weft_plugin_sdk::step::run_json;

    use super::*;

    fn run(input: Value) -> Result<Value, StepError> {
        let ctx = Context::new("run", "step", 1);
        run_json::<JsonTransform>(&ctx, &input.to_string())
            .map(|out| serde_json::from_str::<Value>(&out).unwrap()["data"].take())
    }

    #[test]
    fn no_operation_returns_data() {
        assert_eq!(run(json!({"data": {"a": [1]}})).unwrap(), json!({"a": [1]}));
        assert_eq!(run(json!({"data": null})).unwrap(), json!(null));
    }

    #[test]
    fn pick_keeps_listed_values_in_place() {
        let data = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [10, 20, 30], "f": {"~/": 4}});
        let picked = run(json!({"data": data, "pick": ["/a", "/b/c", "/e/1", "/f/~0~1", "/zz"]}));
        assert_eq!(
            picked.unwrap(),
            json!({"a": 1, "b": {"c": 2}, "e": [null, 20], "f": {"~/": 4}})
        );
    }

    #[test]
    fn pick_edge_cases() {
        let data = json!({"a": {"b": 1, "c": 2}});
        assert_eq!(run(json!({"data": data, "pick": []})).unwrap(), json!({}));
        assert_eq!(run(json!({"data": data, "pick": [""]})).unwrap(), data);
        assert_eq!(
            run(json!({"data": data, "pick": ["/a", "/a/b"]})).unwrap(),
            data,
            "a parent then its child keeps the whole parent"
        );
        assert_eq!(
            run(json!({"data": [1, 2], "pick": ["/1"]})).unwrap(),
            json!([null, 2])
        );
        assert_eq!(
            run(json!({"data": 5, "pick": ["/x"]})).unwrap(),
            json!(null)
        );
    }

    #[test]
    fn rename_moves_values_and_skips_missing_ones() {
        let data = json!({"a": 1, "b": {"c": 2}, "list": ["x", "y", "z"]});
        let out = run(json!({"data": data, "rename": {
            "/a": "/alpha",
            "/b/c": "/flat",
            "/list/0": "/first",
            "/missing": "/nowhere",
            "/list/1": "/list/1",
        }}));
        assert_eq!(
            out.unwrap(),
            json!({"alpha": 1, "b": {}, "flat": 2, "first": "x", "list": ["y", "z"]})
        );
    }

    #[test]
    fn set_writes_creating_parents() {
        let data = json!({"a": {"b": 1}, "list": [1, 2]});
        let out = run(json!({"data": data, "set": {
            "/a/b": 10,
            "/new/deep/key": true,
            "/list/0": "first",
            "/list/2": 3,
            "/list/-": 4,
        }}));
        assert_eq!(
            out.unwrap(),
            json!({"a": {"b": 10}, "new": {"deep": {"key": true}}, "list": ["first", 2, 3]}),
            "sorted order: `/list/-` appends 4, then `/list/2` replaces it"
        );
        assert_eq!(
            run(json!({"data": {"a": 1}, "set": {"": [1]}})).unwrap(),
            json!([1])
        );
    }

    #[test]
    fn operations_run_in_order() {
        let out = run(json!({
            "data": {"user": {"name": "Ada", "password": "x"}},
            "pick": ["/user/name"],
            "rename": {"/user/name": "/name"},
            "set": {"/source": "crm"},
        }));
        assert_eq!(
            out.unwrap(),
            json!({"user": {}, "name": "Ada", "source": "crm"})
        );
    }

    #[test]
    fn bad_pointers_and_impossible_writes_fail() {
        for input in [
            json!({"data": {}, "pick": ["a"]}),
            json!({"data": {}, "rename": {"/a": "b"}}),
            json!({"data": {}, "set": {"/a~2": 1}}),
            json!({"data": {"a": "s"}, "set": {"/a/b": 1}}),
            json!({"data": {"a": [1]}, "set": {"/a/5": 1}}),
            json!({"data": {"a": [1]}, "set": {"/a/01": 1}}),
            json!({"data": {"a": [1]}, "set": {"/a/3/x": 1}}),
        ] {
            let err = run(input.clone()).unwrap_err();
            assert_eq!(
                (err.code.as_str(), err.retryable),
                ("invalid_pointer", false),
                "{input}"
            );
        }
    }

    #[test]
    fn input_needs_data() {
        assert_eq!(run(json!({"pick": []})).unwrap_err().code, "invalid_input");
    }

    #[test]
    fn parses_pointers() {
        assert_eq!(parse("").unwrap(), Vec::<String>::new());
        assert_eq!(parse("/").unwrap(), vec![""]);
        assert_eq!(parse("/a~1b/~0c/~01").unwrap(), vec!["a/b", "~c", "~1"]);
        assert!(parse("/~").is_err());
    }
}
