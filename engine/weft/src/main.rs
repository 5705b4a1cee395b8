//! `weft`: parse the command line, set up logging and signals, run.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use weft::cli::{Cli, Command};
use weft::config::{ADMIN_TOKEN_ENV, AGENT_TOKEN_ENV, Config, ServeArgs};
use weft::{Application, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        client => weft::client::main(client),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let admin_token = std::env::var(ADMIN_TOKEN_ENV).ok();
    let agent_token = std::env::var(AGENT_TOKEN_ENV).ok();
    let config = match Config::load_with_agent_token(&args, admin_token, agent_token) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("weft: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weft: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "weft stopped with an error");
            eprintln!("weft: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown).await?;
    Ok(())
}

/// Cancel `shutdown` on SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
    shutdown.cancel();
}
