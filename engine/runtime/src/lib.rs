//! Weft's sandboxed Wasm step host.
//!
//! A step plugin is a WebAssembly component implementing the `weft:step@1.0.0` world `step`
//! (`wit/step.wit`). [`Runtime::load`] validates, compiles (once, cached on disk across
//! restarts and in memory), links and describes one; [`Runtime::invoke`] runs its `run` export in
//! a fresh sandbox under [`Limits`] and names the limit that stopped it ([`InvokeError`]).
//!
//! No HTTP and no database here: the server calls this crate.
//!
//! Invariants:
//! - one `wasmtime::Engine` per `Runtime`, one epoch ticker thread driving every deadline;
//! - one fresh `Store` per call, never reused (a trapped instance cannot be re-entered);
//! - compilation never runs on an async worker thread;
//! - a guest gets no files, environment, arguments, sockets or host stdio ([`Grants`] is empty);
//! - only artifacts this runtime wrote, and whose digest matches, are deserialized.
//!
//! Codemap: `config` (settings, limits, grants), `engine` (engine + ticker), `cache` (disk
//! artifacts), `sandbox` (bindings, store data, `log`, WASI), `limits` (resource limiter, stop
//! reasons), `invoke` (one guest call), `plugin` (descriptions), `runtime` (the API), `error`.

mod cache;
mod config;
mod engine;
mod error;
mod invoke;
mod limits;
mod plugin;
mod runtime;
mod sandbox;
mod stats;

pub use config::{Grants, Limits, RuntimeConfig};
pub use engine::Allocator;
pub use error::{InvokeError, LoadError, RuntimeError};
pub use invoke::{Invocation, StepContext, StepError};
pub use plugin::{LoadedPlugin, MAX_NAME_LEN, PluginDescription};
pub use runtime::Runtime;
pub use stats::RuntimeStats;
