//! Hostile test plugin `hostile-memory`: `run` allocates 1 MiB blocks without bound, writing to
//! every 4 KiB page of each, for the runtime's memory limits.
//!
//! Any input JSON starts it. `{"mebibytes": n}` stops after `n` MiB instead and returns
//! `{"mebibytes": n}` (for tests of the plugin itself and of limits that are enough).

use std::hint::black_box;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_plugin_sdk::{Context, Step, StepError};

/// The size of one allocation.
pub const BLOCK: usize = 1 << 20;
const PAGE: usize = 4096;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    pub mebibytes: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    pub mebibytes: usize,
}

pub struct HostileMemory;

impl Step for HostileMemory {
    type Input = Value;
    type Output = Output;
    const NAME: &'static str = "hostile-memory";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Test plugin: allocates and touches 1 MiB blocks without bound (or `mebibytes` of them).";

    fn run(_: &Context, input: Value) -> Result<Output, StepError> {
        let params: Params = serde_json::from_value(input).unwrap_or_default();
        Ok(Output {
            mebibytes: hog(params.mebibytes),
        })
    }
}

weft_plugin_sdk::export_step!(HostileMemory);

/// Keep allocating 1 MiB blocks (up to `limit` of them), touching every page, and hold on to
/// all of them. Returns how many were held.
pub fn hog(limit: Option<usize>) -> usize {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    while limit.is_none_or(|limit| blocks.len() < limit) {
        let mut block = vec![0u8; BLOCK];
        for (i, page) in block.chunks_mut(PAGE).enumerate() {
            page[0] = i as u8 | 1;
        }
        blocks.push(black_box(block));
    }
    black_box(&blocks).len()
}

#[cfg(test)]
mod tests {
    use weft_plugin_sdk::step::run_json;

    use super::*;

    #[test]
    fn holds_as_many_blocks_as_asked() {
        let ctx = Context::new("run", "step", 1);
        let out = run_json::<HostileMemory>(&ctx, r#"{"mebibytes": 8}"#).unwrap();
        assert_eq!(out, r#"{"mebibytes":8}"#);
    }
}
