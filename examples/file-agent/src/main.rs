//! `file-agent --root DIR --engine http://HOST:PORT --token TOKEN`: serves task `read-file` over
//! DIR until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use file_agent::{DEFAULT_MAX_BYTES, ReadFile};
use weft_plugin_sdk::agent::{Agent, AgentOptions, shutdown_on_signals};

/// Example Weft remote agent: runs task `read-file` (1.0.0), which returns the size, SHA-256
/// and (small UTF-8 files) text of a file under --root. Nothing outside --root is readable.
#[derive(Parser)]
#[command(name = "file-agent", version)]
struct Cli {
    /// The directory the engine may read files from (and nothing outside it).
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Files larger than this fail with `too_large`.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BYTES)]
    max_bytes: u64,
    #[command(flatten)]
    agent: AgentOptions,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let task = match ReadFile::new(&cli.root, cli.max_bytes) {
        Ok(task) => task,
        Err(e) => {
            eprintln!("file-agent: --root {}: {e}", cli.root.display());
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(root = %task.root().display(), "granting read access");
    let shutdown = match shutdown_on_signals() {
        Ok(shutdown) => shutdown,
        Err(e) => {
            eprintln!("file-agent: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let agent = Agent::new("file-agent", env!("CARGO_PKG_VERSION"), cli.agent).task(task);
    match agent.run_until(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("file-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
