//! Hostile test plugin `hostile-log-flood`: `run` calls the host's `log` 100 000 times with
//! 1 KiB messages (~100 MiB in all), then returns `{"lines": 100000}`; for the runtime's log
//! rate or volume limits.
//!
//! Any input JSON starts it; `{"lines": n, "bytes": m}` changes the count and message size.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_plugin_sdk::{Context, Level, Step, StepError};

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    pub lines: Option<u32>,
    pub bytes: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    pub lines: u32,
}

pub struct HostileLogFlood;

impl Step for HostileLogFlood {
    type Input = Value;
    type Output = Output;
    const NAME: &'static str = "hostile-log-flood";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Test plugin: logs 100 000 lines of 1 KiB (or `lines` of `bytes`), then returns.";

    fn run(ctx: &Context, input: Value) -> Result<Output, StepError> {
        let params: Params = serde_json::from_value(input).unwrap_or_default();
        let lines = params.lines.unwrap_or(100_000);
        flood(ctx, lines, params.bytes.unwrap_or(1024));
        Ok(Output { lines })
    }
}

weft_plugin_sdk::export_step!(HostileLogFlood);

/// Log `lines` messages of exactly `bytes` bytes (at least the line number): the line number,
/// then `x` padding.
pub fn flood(ctx: &Context, lines: u32, bytes: usize) {
    let mut message = String::with_capacity(bytes.max(10));
    for line in 0..lines {
        message.clear();
        message.push_str(&line.to_string());
        while message.len() < bytes {
            message.push('x');
        }
        ctx.log(Level::Info, &message);
    }
}

#[cfg(test)]
mod tests {
    use weft_plugin_sdk::step::run_json;

    use super::*;

    #[test]
    fn logs_the_asked_lines_then_returns() {
        let ctx = Context::new("run", "step", 1);
        let out = run_json::<HostileLogFlood>(&ctx, r#"{"lines": 50}"#).unwrap();
        assert_eq!(out, r#"{"lines":50}"#);
        let logs = ctx.take_logs();
        assert_eq!(logs.len(), 50);
        assert!(
            logs.iter()
                .all(|l| l.message.len() == 1024 && l.level == Level::Info)
        );
        assert!(logs[49].message.starts_with("49x"));
    }
}
