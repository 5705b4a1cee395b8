//! Black-box tests of `weft_store::Store`, each run on both backends against a fresh database.
//! PostgreSQL must be reachable (see `weft_store::testing`): without it these tests fail.

mod support;

mod connecting;
mod definitions;
mod filters;
mod plugins;
mod queue;
mod runs;
mod tokens;
mod transitions;
