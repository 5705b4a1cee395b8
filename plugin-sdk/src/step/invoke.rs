//! The JSON boundary of a step: schemas out, JSON input in, JSON output or a [`StepError`] out.
//!
//! Plain functions with no WIT types, so that they run (and are tested) natively.

use schemars::JsonSchema;

use super::{Context, Step, StepError};

/// What `describe` returns: the WIT `step-description`, with the schemas as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub name: String,
    pub version: String,
    pub description: String,
    pub input_schema: String,
    pub output_schema: String,
}

/// The description of step `S`, with its input and output JSON Schemas.
pub fn describe<S: Step>() -> Description {
    Description {
        name: S::NAME.to_owned(),
        version: S::VERSION.to_owned(),
        description: S::DESCRIPTION.to_owned(),
        input_schema: schema_json::<S::Input>(),
        output_schema: schema_json::<S::Output>(),
    }
}

/// The JSON Schema (draft 2020-12) of `T`, as JSON text.
pub fn schema_json<T: JsonSchema>() -> String {
    schemars::schema_for!(T).to_value().to_string()
}

/// Run step `S` on JSON `input` and return its output as JSON.
///
/// Input that does not deserialise into `S::Input` fails with code `invalid_input` (not
/// retryable) and serde's reason; an output that cannot be serialised fails with code
/// `invalid_output` (not retryable).
pub fn run_json<S: Step>(ctx: &Context, input: &str) -> Result<String, StepError> {
    let input: S::Input = serde_json::from_str(input)
        .map_err(|e| StepError::invalid_input(format!("input of step `{}`: {e}", S::NAME)))?;
    let output = S::run(ctx, input)?;
    serde_json::to_string(&output).map_err(|e| {
        StepError::fatal(
            "invalid_output",
            format!("output of step `{}` is not JSON: {e}", S::NAME),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};
    use serde_json::{Value, json};

    use super::*;

    #[derive(Deserialize, JsonSchema)]
    struct Input {
        n: u32,
    }

    #[derive(Serialize, JsonSchema)]
    struct Output {
        double: u32,
    }

    struct Double;

    impl Step for Double {
        type Input = Input;
        type Output = Output;
        const NAME: &'static str = "double";
        const VERSION: &'static str = "1.2.3";
        const DESCRIPTION: &'static str = "Doubles n.";

        fn run(ctx: &Context, input: Input) -> Result<Output, StepError> {
            ctx.debug(format_args!("attempt {}", ctx.attempt));
            match input.n.checked_mul(2) {
                Some(double) => Ok(Output { double }),
                None => Err(StepError::fatal("overflow", "n is too large")),
            }
        }
    }

    /// An output that serde_json refuses (a map with non-string keys).
    struct BadOutput;

    impl Step for BadOutput {
        type Input = Value;
        type Output = BTreeMap<Vec<u8>, u8>;
        const NAME: &'static str = "bad-output";
        const VERSION: &'static str = "0.1.0";
        const DESCRIPTION: &'static str = "Returns what JSON cannot hold.";

        fn run(_: &Context, _: Value) -> Result<Self::Output, StepError> {
            Ok(BTreeMap::from([(vec![1], 1)]))
        }
    }

    fn ctx() -> Context {
        Context::new("run-1", "step-a", 3)
    }

    #[test]
    fn runs_the_step_on_json() {
        let ctx = ctx();
        assert_eq!(
            run_json::<Double>(&ctx, r#"{"n": 21}"#).unwrap(),
            r#"{"double":42}"#
        );
        assert_eq!(ctx.take_logs()[0].message, "attempt 3");
    }

    #[test]
    fn undeserialisable_input_is_invalid_input_with_serdes_reason() {
        for input in [r#"{"n": "x"}"#, "{}", "not json", r#"{"n": -1}"#] {
            let err = run_json::<Double>(&ctx(), input).unwrap_err();
            assert_eq!(err.code, "invalid_input", "{input}");
            assert!(!err.retryable);
            assert!(
                err.message.starts_with("input of step `double`: "),
                "{}",
                err.message
            );
        }
        let err = run_json::<Double>(&ctx(), "{}").unwrap_err();
        assert!(err.message.contains("missing field `n`"), "{}", err.message);
    }

    #[test]
    fn step_errors_pass_through() {
        let err = run_json::<Double>(&ctx(), r#"{"n": 4000000000}"#).unwrap_err();
        assert_eq!(err, StepError::fatal("overflow", "n is too large"));
    }

    #[test]
    fn unserialisable_output_is_invalid_output() {
        let err = run_json::<BadOutput>(&ctx(), "null").unwrap_err();
        assert_eq!(
            (err.code.as_str(), err.retryable),
            ("invalid_output", false)
        );
    }

    #[test]
    fn description_carries_metadata_and_schemas() {
        let d = describe::<Double>();
        assert_eq!(
            (d.name.as_str(), d.version.as_str(), d.description.as_str()),
            ("double", "1.2.3", "Doubles n.")
        );
        let input: Value = serde_json::from_str(&d.input_schema).unwrap();
        assert_eq!(input["type"], "object");
        assert_eq!(input["required"], json!(["n"]));
        assert_eq!(input["properties"]["n"]["type"], "integer");
        let output: Value = serde_json::from_str(&d.output_schema).unwrap();
        assert_eq!(output["properties"]["double"]["type"], "integer");
        assert!(input["$schema"].as_str().unwrap().contains("2020-12"));
    }
}
