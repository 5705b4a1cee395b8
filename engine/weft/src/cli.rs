//! The `weft` command line. `weft serve` runs the server; client subcommands come later.

use clap::{Parser, Subcommand};

use crate::config::ServeArgs;

/// Weft: a workflow engine with WebAssembly and remote steps.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
}
