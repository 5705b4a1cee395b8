//! Hostile test plugin `hostile-output`: `run` returns a ~100 MB JSON output (100 000 strings of
//! 1000 bytes: 100 300 012 bytes), for the runtime's output size limit.
//!
//! The output is serialised straight from a counter, so the plugin needs memory for the JSON
//! text only (the SDK's buffer grows by doubling: ~200 MiB of linear memory at the peak).
//! Any input JSON produces it; `{"megabytes": n}` makes `n` MB instead.

use schemars::JsonSchema;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use weft_plugin_sdk::{Context, Step, StepError};

/// One output string: 1000 ASCII `x`.
pub const CHUNK: &str = match std::str::from_utf8(&[b'x'; 1000]) {
    Ok(chunk) => chunk,
    Err(_) => panic!("ASCII is UTF-8"),
};
const CHUNKS_PER_MB: usize = 1000;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    pub megabytes: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// `megabytes * 1000` copies of [`CHUNK`].
    #[schemars(with = "Vec<String>")]
    pub chunks: Chunks,
}

/// Serialises as an array of this many [`CHUNK`]s.
#[derive(Debug)]
pub struct Chunks(pub usize);

impl Serialize for Chunks {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0))?;
        for _ in 0..self.0 {
            seq.serialize_element(CHUNK)?;
        }
        seq.end()
    }
}

pub struct HostileOutput;

impl Step for HostileOutput {
    type Input = Value;
    type Output = Output;
    const NAME: &'static str = "hostile-output";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Test plugin: returns ~100 MB of JSON (or `megabytes` MB).";

    fn run(_: &Context, input: Value) -> Result<Output, StepError> {
        let params: Params = serde_json::from_value(input).unwrap_or_default();
        let megabytes = params.megabytes.unwrap_or(100);
        Ok(Output {
            chunks: Chunks(megabytes.saturating_mul(CHUNKS_PER_MB)),
        })
    }
}

weft_plugin_sdk::export_step!(HostileOutput);

#[cfg(test)]
mod tests {
    use weft_plugin_sdk::step::run_json;

    use super::*;

    fn output_len(input: &str) -> usize {
        let ctx = Context::new("run", "step", 1);
        run_json::<HostileOutput>(&ctx, input).unwrap().len()
    }

    #[test]
    fn output_is_about_a_megabyte_per_megabyte() {
        let one = output_len(r#"{"megabytes": 1}"#);
        assert_eq!(one, r#"{"chunks":[]}"#.len() + 1000 * (1000 + 2) + 999);
    }

    #[test]
    fn default_is_100_mb() {
        let out = HostileOutput::run(&Context::new("run", "step", 1), Value::Null).unwrap();
        assert_eq!(out.chunks.0, 100_000);
    }
}
