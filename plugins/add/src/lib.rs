//! Weft step `add`: `{"value": 2, "by": 3}` → `{"value": 5}` (`by` defaults to 1).
//!
//! Two integers give an integer (an `i64` overflow fails with code `overflow`); anything else is
//! added as `f64`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Number;
use weft_plugin_sdk::{Context, Step, StepError};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The number to add to.
    pub value: Number,
    /// How much to add; 1 when absent.
    #[serde(default)]
    pub by: Option<Number>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// `value + by`.
    pub value: Number,
}

pub struct Add;

impl Step for Add {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "add";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Adds `by` (default 1) to `value`.";

    fn run(_: &Context, input: Input) -> Result<Output, StepError> {
        let by = input.by.unwrap_or_else(|| Number::from(1));
        add(&input.value, &by).map(|value| Output { value })
    }
}

weft_plugin_sdk::export_step!(Add);

/// `a + b`: exact for two integers (an overflow of both `i64` and `u64` fails), `f64` otherwise.
pub fn add(a: &Number, b: &Number) -> Result<Number, StepError> {
    if let (Some(x), Some(y)) = (as_int(a), as_int(b)) {
        let sum = x + y;
        return i64::try_from(sum)
            .map(Number::from)
            .or_else(|_| u64::try_from(sum).map(Number::from))
            .map_err(|_| {
                StepError::fatal("overflow", format!("{a} + {b} overflows a 64-bit integer"))
            });
    }
    let sum = a.as_f64().unwrap_or(f64::NAN) + b.as_f64().unwrap_or(f64::NAN);
    Number::from_f64(sum)
        .ok_or_else(|| StepError::fatal("overflow", format!("{a} + {b} is not a finite number")))
}

fn as_int(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use weft_plugin_sdk::step::{describe, run_json};

    use super::*;

    fn run(input: Value) -> Result<Value, StepError> {
        let ctx = Context::new("run", "step", 1);
        run_json::<Add>(&ctx, &input.to_string()).map(|out| serde_json::from_str(&out).unwrap())
    }

    #[test]
    fn adds_by_or_one() {
        assert_eq!(run(json!({"value": 41})).unwrap(), json!({"value": 42}));
        assert_eq!(
            run(json!({"value": 2, "by": 3})).unwrap(),
            json!({"value": 5})
        );
        assert_eq!(
            run(json!({"value": -2, "by": -3})).unwrap(),
            json!({"value": -5})
        );
        assert_eq!(
            run(json!({"value": 1.5, "by": 1})).unwrap(),
            json!({"value": 2.5})
        );
        assert_eq!(
            run(json!({"value": 1, "by": null})).unwrap(),
            json!({"value": 2})
        );
    }

    #[test]
    fn integers_stay_exact_up_to_u64() {
        assert_eq!(
            run(json!({"value": i64::MAX, "by": 1})).unwrap(),
            json!({"value": i64::MAX as u64 + 1})
        );
        let err = run(json!({"value": u64::MAX})).unwrap_err();
        assert_eq!((err.code.as_str(), err.retryable), ("overflow", false));
    }

    #[test]
    fn float_overflow_is_an_error() {
        let err = run(json!({"value": f64::MAX, "by": f64::MAX})).unwrap_err();
        assert_eq!(err.code, "overflow");
    }

    #[test]
    fn rejects_bad_input() {
        for input in [
            json!({}),
            json!({"value": "1"}),
            json!({"value": 1, "extra": 2}),
        ] {
            assert_eq!(run(input).unwrap_err().code, "invalid_input");
        }
    }

    #[test]
    fn schema_requires_value_only() {
        let schema: Value = serde_json::from_str(&describe::<Add>().input_schema).unwrap();
        assert_eq!(schema["required"], json!(["value"]));
        assert_eq!(schema["properties"]["value"]["type"], "number");
    }
}
