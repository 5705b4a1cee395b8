//! The `weft` command-line client: `weft plugin|definition|run|agent ...` against a running
//! server.
//!
//! [`http::Client`] is the one place that speaks the REST API; [`watch`] follows a run over the
//! WebSocket; [`output`] formats for people; [`apply`] decides what `definition apply` writes;
//! [`commands`] wires a parsed command line to them. Exit codes: 0 success, 1 a failure (a
//! server error, a watched run that FAILED), 2 a usage or configuration error, 3 a watched run
//! that was CANCELLED.

pub mod apply;
pub mod commands;
pub mod http;
pub mod output;
pub mod watch;

use std::process::ExitCode;

pub use http::{Client, ClientError};

use crate::cli::Command;

/// Exit code of a watched run that was cancelled.
pub const EXIT_CANCELLED: u8 = 3;
/// Exit code of a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments, an unreadable file, an unusable URL: exit code 2.
    #[error("{0}")]
    Usage(String),
    /// The server refused or failed: exit code 1.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Following a run failed: exit code 1.
    #[error(transparent)]
    Watch(#[from] watch::WatchError),
    /// Anything else that failed: exit code 1.
    #[error("{0}")]
    Failed(String),
}

impl From<apply::FileError> for CliError {
    fn from(error: apply::FileError) -> Self {
        CliError::Usage(error.to_string())
    }
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_)
            | CliError::Client(ClientError::InvalidUrl { .. })
            | CliError::Watch(watch::WatchError::InvalidUrl(_)) => EXIT_USAGE,
            _ => 1,
        }
    }
}

/// Run a client command (any [`Command`] but `serve`) to completion; print its result on
/// stdout and any error, in one line, on stderr.
pub fn main(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weft: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::execute(command)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("weft: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
