//! The Weft plugin SDK: what a step author depends on.
//!
//! [`step`] is the guest side of the step contract (`wit/step.wit`, world `weft:step/step@1.0.0`):
//! implement [`Step`] for a type, call [`export_step!`] once, build the crate for
//! `wasm32-wasip2` (`cargo xtask plugins`) and the result is a component the engine can load.
//! Plugin crates never touch WIT or wit-bindgen themselves.
//!
//! ```no_run
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//! use weft_plugin_sdk::{Context, Step, StepError};
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct Input { name: String }
//! #[derive(Serialize, JsonSchema)]
//! struct Output { greeting: String }
//!
//! struct Greet;
//! impl Step for Greet {
//!     type Input = Input;
//!     type Output = Output;
//!     const NAME: &'static str = "greet";
//!     const VERSION: &'static str = "1.0.0";
//!     const DESCRIPTION: &'static str = "Says hello.";
//!     fn run(ctx: &Context, input: Input) -> Result<Output, StepError> {
//!         ctx.info(format_args!("greeting {}", input.name));
//!         Ok(Output { greeting: format!("Hello {}!", input.name) })
//!     }
//! }
//! weft_plugin_sdk::export_step!(Greet);
//! ```
//!
//! Everything here also compiles for the host target, so plugin crates are unit-tested natively
//! with [`step::run_json`] and [`step::describe`]; only the host `log` import is replaced there
//! (by an in-memory capture, see [`Context::take_logs`]).
//!
//! `agent` (cargo feature `agent`, off by default; native targets only) is the other side of
//! the same idea for remote agents: implement `agent::Task` (async, typed JSON in and out),
//! hand it to an `agent::Agent`, and the process serves the engine over gRPC. Step plugins do
//! not enable it, so they never compile tonic or tokio.

#[cfg(all(feature = "agent", not(target_arch = "wasm32")))]
pub mod agent;
pub mod step;

pub use step::{Context, Level, Step, StepError};
