//! Hostile test plugin `hostile-loop`: `run` spins forever, for the runtime's CPU limits (fuel,
//! epoch deadline).
//!
//! Any input JSON starts the loop. `{"iterations": n}` stops it after `n` turns instead and
//! returns `{"iterations": n}` (for tests of the plugin itself and of budgets that are enough).

use std::hint::black_box;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_plugin_sdk::{Context, Step, StepError};

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    pub iterations: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    pub iterations: u64,
}

pub struct HostileLoop;

impl Step for HostileLoop {
    type Input = Value;
    type Output = Output;
    const NAME: &'static str = "hostile-loop";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Test plugin: loops forever (or `iterations` times) without calling the host.";

    fn run(_: &Context, input: Value) -> Result<Output, StepError> {
        let params: Params = serde_json::from_value(input).unwrap_or_default();
        Ok(Output {
            iterations: spin(params.iterations),
        })
    }
}

weft_plugin_sdk::export_step!(HostileLoop);

/// Count up to `limit`, or forever. `black_box` keeps the optimiser from removing the loop.
pub fn spin(limit: Option<u64>) -> u64 {
    let mut turns: u64 = 0;
    while limit.is_none_or(|limit| turns < limit) {
        turns = black_box(turns.wrapping_add(1));
    }
    turns
}

#[cfg(test)]
mod tests {
    use weft_plugin_sdk::step::{describe, run_json};

    use super::*;

    #[test]
    fn stops_only_when_told() {
        let ctx = Context::new("run", "step", 1);
        let out = run_json::<HostileLoop>(&ctx, r#"{"iterations": 100000}"#).unwrap();
        assert_eq!(out, r#"{"iterations":100000}"#);
        assert_eq!(describe::<HostileLoop>().name, "hostile-loop");
    }
}
