//! Hostile test plugin `hostile-stack`: `run` recurses without bound, for the runtime's stack
//! limit (wasmtime's `max_wasm_stack`): it ends in the host's stack-overflow trap.
//!
//! Each frame holds only scalars, so it lives on the engine's native stack and not on Rust's
//! shadow stack in linear memory (overflowing that one would be an out-of-bounds memory trap
//! instead). The work after the recursive call keeps the optimiser from turning the recursion
//! into a loop.
//!
//! Any input JSON starts it. `{"depth": n}` stops at depth `n` instead and returns
//! `{"depth": n}`.

use std::sync::atomic::{AtomicU64, Ordering};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_plugin_sdk::{Context, Step, StepError};

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    pub depth: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    pub depth: u64,
}

pub struct HostileStack;

impl Step for HostileStack {
    type Input = Value;
    type Output = Output;
    const NAME: &'static str = "hostile-stack";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Test plugin: recurses without bound (or to `depth`).";

    fn run(_: &Context, input: Value) -> Result<Output, StepError> {
        let params: Params = serde_json::from_value(input).unwrap_or_default();
        Ok(Output {
            depth: recurse(0, params.depth.unwrap_or(u64::MAX)),
        })
    }
}

weft_plugin_sdk::export_step!(HostileStack);

/// Frames that returned, counted after each recursive call so that the call is not a tail call.
static RETURNED: AtomicU64 = AtomicU64::new(0);

/// Recurse until `depth == limit`; returns the depth reached.
#[inline(never)]
pub fn recurse(depth: u64, limit: u64) -> u64 {
    if depth >= limit {
        return depth;
    }
    let reached = recurse(depth + 1, limit);
    RETURNED.fetch_add(1, Ordering::Relaxed);
    reached
}

#[cfg(test)]
mod tests {
    use weft_plugin_sdk::step::run_json;

    use super::*;

    #[test]
    fn stops_at_the_given_depth() {
        let ctx = Context::new("run", "step", 1);
        let out = run_json::<HostileStack>(&ctx, r#"{"depth": 1000}"#).unwrap();
        assert_eq!(out, r#"{"depth":1000}"#);
    }
}
