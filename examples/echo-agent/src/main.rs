//! `echo-agent --engine http://HOST:PORT --token TOKEN`: serves task `echo` until SIGINT/SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use echo_agent::Echo;
use weft_plugin_sdk::agent::{Agent, AgentOptions, shutdown_on_signals};

/// Example Weft remote agent: runs task `echo` (1.0.0), which returns its input `message`
/// after an optional `delayMs`.
#[derive(Parser)]
#[command(name = "echo-agent", version)]
struct Cli {
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
    let shutdown = match shutdown_on_signals() {
        Ok(shutdown) => shutdown,
        Err(e) => {
            eprintln!("echo-agent: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let agent = Agent::new("echo-agent", env!("CARGO_PKG_VERSION"), cli.agent).task(Echo);
    match agent.run_until(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
