//! Expressions: CEL (Common Expression Language) over the run's data.
//!
//! An expression sees two variables: `input`, the run input (a JSON value), and `steps`, a map
//! from step id to that step's output. Decision conditions and `expression` bindings use it;
//! validation only compiles, the executor evaluates.
//!
//! CEL's parser and interpreter recurse once per nesting level and operator, with large frames
//! in unoptimised builds (a dozen nested parentheses overflow a 2 MiB stack). So both run on a
//! short-lived thread with a large stack, joined before returning, and sources are limited to
//! [`MAX_SOURCE_BYTES`]: a hostile expression fails with an error instead of overflowing the
//! caller's stack. No other side effect.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

/// The longest accepted expression source, in bytes.
pub const MAX_SOURCE_BYTES: usize = 4096;

/// Stack of the thread CEL runs on (virtual memory; only the pages used are committed).
const CEL_STACK_BYTES: usize = 256 << 20;

/// Why an expression could not be compiled or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpressionError {
    /// The source is empty or whitespace only.
    #[error("expression is empty")]
    Empty,
    /// The source is longer than [`MAX_SOURCE_BYTES`].
    #[error("expression is longer than {MAX_SOURCE_BYTES} bytes")]
    TooLong,
    /// The source does not parse.
    #[error("expression does not parse: {0}")]
    Parse(String),
    /// Evaluation failed (unknown variable or key, no matching overload, division by zero...).
    #[error("expression failed: {0}")]
    Evaluation(String),
    /// The result is not representable as JSON (e.g. a function value).
    #[error("expression result is not JSON: {0}")]
    NotJson(String),
    /// A condition evaluated to something other than a boolean.
    #[error("condition evaluated to {0}, not a boolean")]
    NotBoolean(String),
    /// The expression engine could not run (thread not started, or it panicked).
    #[error("expression engine failure: {0}")]
    Engine(String),
}

/// Runs `f` on a fresh thread with a [`CEL_STACK_BYTES`] stack and waits for it.
fn on_large_stack<T: Send>(
    f: impl FnOnce() -> Result<T, ExpressionError> + Send,
) -> Result<T, ExpressionError> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("weft-cel".to_owned())
            .stack_size(CEL_STACK_BYTES)
            .spawn_scoped(scope, f)
            .map_err(|e| ExpressionError::Engine(format!("cannot start a thread: {e}")))?
            .join()
            .map_err(|_| ExpressionError::Engine("the CEL interpreter panicked".to_owned()))?
    })
}

/// A compiled expression, to be evaluated many times.
#[derive(Debug)]
pub struct Expression {
    source: String,
    program: cel::Program,
}

impl Expression {
    /// Compiles `source`.
    pub fn compile(source: &str) -> Result<Self, ExpressionError> {
        if source.trim().is_empty() {
            return Err(ExpressionError::Empty);
        }
        if source.len() > MAX_SOURCE_BYTES {
            return Err(ExpressionError::TooLong);
        }
        let program = on_large_stack(|| {
            cel::Program::compile(source).map_err(|e| ExpressionError::Parse(e.to_string()))
        })?;
        Ok(Self {
            source: source.to_owned(),
            program,
        })
    }

    /// The source text this expression was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression with `input` (the run input) and `steps` (step id → output).
    pub fn evaluate(
        &self,
        input: &Value,
        steps: &Map<String, Value>,
    ) -> Result<Value, ExpressionError> {
        on_large_stack(|| {
            let mut context = cel::Context::default();
            context.add_variable_from_value("input", to_cel(input));
            context.add_variable_from_value("steps", map_to_cel(steps));
            let result = self
                .program
                .execute(&context)
                .map_err(|e| ExpressionError::Evaluation(e.to_string()))?;
            result
                .json()
                .map_err(|e| ExpressionError::NotJson(e.to_string()))
        })
    }

    /// Evaluates the expression as a condition: the result must be a boolean.
    pub fn evaluate_condition(
        &self,
        input: &Value,
        steps: &Map<String, Value>,
    ) -> Result<bool, ExpressionError> {
        match self.evaluate(input, steps)? {
            Value::Bool(b) => Ok(b),
            other => Err(ExpressionError::NotBoolean(other.to_string())),
        }
    }
}

/// Checks that `source` is a well-formed expression; the error is the parser's reason.
pub fn compile(source: &str) -> Result<(), String> {
    Expression::compile(source)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Compiles and evaluates `source` once (see [`Expression::evaluate`]).
pub fn evaluate(
    source: &str,
    input: &Value,
    steps: &Map<String, Value>,
) -> Result<Value, ExpressionError> {
    Expression::compile(source)?.evaluate(input, steps)
}

/// JSON → CEL. Integers become `int` when they fit (so `input.n + 1` works), else `uint`;
/// other numbers become `double`.
fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                cel::Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                cel::Value::UInt(u)
            } else {
                cel::Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => map_to_cel(map),
    }
}

fn map_to_cel(map: &Map<String, Value>) -> cel::Value {
    let entries: HashMap<String, cel::Value> =
        map.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
    cel::Value::from(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn steps(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn compile_accepts_valid_and_rejects_invalid() {
        assert_eq!(compile("input.amount > 10 && steps.check.ok"), Ok(()));
        assert_eq!(compile("[1, 2].map(x, x * 2)"), Ok(()));
        assert_eq!(compile("  "), Err("expression is empty".to_owned()));
        let err = compile("input.amount >").unwrap_err();
        assert!(err.starts_with("expression does not parse: "), "{err}");
    }

    #[test]
    fn evaluates_over_input_and_steps() {
        let input = json!({"amount": 12, "name": "x"});
        let steps = steps(json!({"add": {"value": 3}}));
        assert_eq!(
            evaluate("input.amount + steps.add.value", &input, &steps),
            Ok(json!(15))
        );
        assert_eq!(
            evaluate("input.name + '!'", &input, &steps),
            Ok(json!("x!"))
        );
        assert_eq!(
            evaluate("{'a': [input.amount, 1.5, null, true]}", &input, &steps),
            Ok(json!({"a": [12, 1.5, null, true]}))
        );
        assert_eq!(
            evaluate("steps", &input, &steps),
            Ok(json!({"add": {"value": 3}}))
        );
    }

    #[test]
    fn evaluation_errors() {
        let input = json!({});
        let none = Map::new();
        assert!(matches!(
            evaluate("nope + 1", &input, &none),
            Err(ExpressionError::Evaluation(_))
        ));
        assert!(matches!(
            evaluate("1 / 0", &input, &none),
            Err(ExpressionError::Evaluation(_))
        ));
    }

    #[test]
    fn conditions_must_be_boolean() {
        let input = json!({"n": 5});
        let none = Map::new();
        let cond = Expression::compile("input.n >= 5").unwrap();
        assert_eq!(cond.source(), "input.n >= 5");
        assert_eq!(cond.evaluate_condition(&input, &none), Ok(true));
        let not_bool = Expression::compile("input.n").unwrap();
        assert_eq!(
            not_bool.evaluate_condition(&input, &none),
            Err(ExpressionError::NotBoolean("5".to_owned()))
        );
    }

    #[test]
    fn large_unsigned_and_float_numbers() {
        let input = json!({"big": u64::MAX, "f": 0.5});
        let none = Map::new();
        assert_eq!(evaluate("input.big", &input, &none), Ok(json!(u64::MAX)));
        assert_eq!(evaluate("input.f * 2.0", &input, &none), Ok(json!(1.0)));
    }

    #[test]
    fn deeply_nested_source_is_an_error_not_a_crash() {
        let src = format!("{}1{}", "(".repeat(500), ")".repeat(500));
        assert!(matches!(
            Expression::compile(&src),
            Err(ExpressionError::Parse(_))
        ));
        let nested = format!("{}1{}", "[".repeat(90), "]".repeat(90));
        assert!(evaluate(&nested, &json!({}), &Map::new()).is_ok());
    }

    #[test]
    fn long_operator_chains_evaluate_without_overflow() {
        let src = vec!["1"; 2000].join("+");
        assert_eq!(src.len(), 3999);
        assert_eq!(evaluate(&src, &json!({}), &Map::new()), Ok(json!(2000)));
        let too_long = vec!["1"; 2100].join("+");
        assert_eq!(
            Expression::compile(&too_long).err(),
            Some(ExpressionError::TooLong)
        );
    }

    #[test]
    fn hostile_shapes_at_the_size_limit_do_not_overflow() {
        fn fill(prefix: &str, unit: &str, suffix: &str) -> String {
            let n = (MAX_SOURCE_BYTES - prefix.len() - suffix.len()) / unit.len();
            format!("{prefix}{}{suffix}", unit.repeat(n))
        }
        let input = json!({"a": {"b": 1}});
        let none = Map::new();
        for src in [
            fill("input", ".b", ""),
            fill("", "-", "1"),
            fill("", "!", "true"),
            fill("[1]", "[0]", ""),
            fill("'x'", ".size()", ""),
            fill("true", " ? 1 : true", " ? 1 : 2"),
            fill("", "size(", "1"),
            fill("", "{'a':", "1"),
            fill("1", "*1", ""),
            fill("true", "&&true", ""),
            fill("true", "||true", ""),
            fill("1", "<1", ""),
        ] {
            // Ok or Err are both fine; the process must survive.
            let _ = evaluate(&src, &input, &none);
        }
    }

    #[test]
    fn expression_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Expression>();
    }
}
