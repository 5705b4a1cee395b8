//! The WIT bindings (generated from `wit/step.wit`) and the glue between them and [`Step`].
//!
//! Nothing here is public API: [`export_step!`](crate::export_step) expands to code that uses
//! [`exports`].

use super::Step;

pub mod generated {
    wit_bindgen::generate!({
        path: "../wit",
        world: "step",
        pub_export_macro: true,
        export_macro_name: "__export_step_world",
    });
}

/// What the [`export_step!`](crate::export_step) expansion refers to.
pub mod exports {
    pub use super::generated;
    pub use super::generated::{Guest, StepContext, StepDescription, StepError};

    use super::Step;
    use crate::step::{Context, describe as describe_step, run_json};

    /// The `describe` export of a component whose step is `S`.
    pub fn describe<S: Step>() -> StepDescription {
        let d = describe_step::<S>();
        StepDescription {
            name: d.name,
            version: d.version,
            description: d.description,
            input_schema: d.input_schema,
            output_schema: d.output_schema,
        }
    }

    /// The `run` export of a component whose step is `S`.
    pub fn run<S: Step>(ctx: StepContext, input: String) -> Result<String, StepError> {
        let ctx = Context::new(ctx.run_id, ctx.step_id, ctx.attempt);
        run_json::<S>(&ctx, &input).map_err(|e| StepError {
            message: e.message,
            code: e.code,
            retryable: e.retryable,
        })
    }
}

/// Send one line to the host's log (the `host.log` import).
#[cfg(target_arch = "wasm32")]
pub(super) fn host_log(level: super::Level, message: &str) {
    use super::Level;
    use generated::weft::step::host::{LogLevel, log};
    let level = match level {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    };
    log(level, message);
}
