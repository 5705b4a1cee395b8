//! Weft: a workflow engine server whose steps run as sandboxed WebAssembly components or on
//! remote agents.
//!
//! Dependency direction: `http` → services (`definitions`, `auth`) → `weft_domain` (pure model)
//! and `weft_store` (persistence). `app` is the composition root; `main` only parses the command
//! line and handles signals.

pub mod agents;
pub mod app;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod definitions;
pub mod events;
pub mod executor;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod plugins;
pub mod runs;
pub mod telemetry;
pub mod traces;

pub use app::{AppError, Application};
pub use config::{Config, ConfigError};
