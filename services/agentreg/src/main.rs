//! The `agentreg` binary: parse the command line, resolve settings, serve until a signal.

use agentreg::config::{Cli, Command, Settings};
use agentreg::startup::Application;
use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let root_token = std::env::var("AGENTREG_ROOT_TOKEN").ok();
            let settings = Settings::resolve(args, root_token).context("resolving settings")?;
            agentreg::telemetry::init(settings.log_format);
            let application = Application::build(settings).await?;
            tracing::info!(
                rest = %application.http_addr()?,
                grpc = %application.grpc_addr()?,
                "agentreg is serving"
            );
            application.run_until(shutdown_signal()).await
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "listening for Ctrl-C failed");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "listening for SIGTERM failed");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
