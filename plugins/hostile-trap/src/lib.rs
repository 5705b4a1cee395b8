//! Hostile test plugin `hostile-trap`: `run` traps.
//!
//! Input `{"mode": "unreachable"}` (the default, also for any other input) executes the Wasm
//! `unreachable` instruction; `{"mode": "panic"}` panics (Rust prints the message to stderr,
//! then the panic aborts, which is also an `unreachable` trap).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_plugin_sdk::{Context, Step, StepError};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Unreachable,
    Panic,
}

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    #[serde(default)]
    pub mode: Mode,
}

pub struct HostileTrap;

impl Step for HostileTrap {
    type Input = Value;
    type Output = Value;
    const NAME: &'static str = "hostile-trap";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Test plugin: executes `unreachable` (or panics, with `mode: panic`).";

    fn run(_: &Context, input: Value) -> Result<Value, StepError> {
        let params: Params = serde_json::from_value(input).unwrap_or_default();
        trap(params.mode)
    }
}

weft_plugin_sdk::export_step!(HostileTrap);

/// Never returns.
pub fn trap(mode: Mode) -> ! {
    match mode {
        Mode::Unreachable => unreachable_instruction(),
        Mode::Panic => panic!("hostile-trap: deliberate panic"),
    }
}

#[cfg(target_arch = "wasm32")]
fn unreachable_instruction() -> ! {
    core::arch::wasm32::unreachable()
}

/// Natively there is no `unreachable` instruction to run: panic so tests can observe it.
#[cfg(not(target_arch = "wasm32"))]
fn unreachable_instruction() -> ! {
    panic!("hostile-trap: `unreachable` (a trap in a component)")
}

#[cfg(test)]
mod tests {
    use weft_plugin_sdk::step::run_json;

    use super::*;

    fn run(input: &str) {
        let _ = run_json::<HostileTrap>(&Context::new("run", "step", 1), input);
    }

    #[test]
    #[should_panic(expected = "`unreachable`")]
    fn traps_by_default_whatever_the_input() {
        run(r#"["not", "an", "object"]"#);
    }

    #[test]
    #[should_panic(expected = "deliberate panic")]
    fn panics_when_asked() {
        run(r#"{"mode": "panic"}"#);
    }
}
