//! The `agentreg` binary: parse the command line, resolve settings, serve until a signal.

use agentreg::config::{Cli, Command, DatabaseArgs, Settings};
use agentreg::startup::Application;
use anyhow::Context;
use clap::Parser;

/// mimalloc returns freed memory to the system. With glibc's allocator, the 19 MiB argon2 blocks
/// freed on blocking-pool threads stayed in per-thread arenas, and the soak test's resident
/// memory sat near 400 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let root_token = std::env::var("AGENTREG_ROOT_TOKEN").ok();
            let settings = Settings::resolve(*args, root_token).context("resolving settings")?;
            agentreg::telemetry::init(settings.log_format);
            let application = Application::build(settings).await?;
            tracing::info!(
                rest = %application.http_addr()?,
                grpc = %application.grpc_addr()?,
                "agentreg is serving"
            );
            application.run_until(shutdown_signal()).await
        }
        Command::Backup(args) => {
            let database = args.database.resolve(DatabaseArgs::default());
            let summary = agentreg::snapshots::backup(
                database.as_ref(),
                &args.data_dir,
                &args.out,
                args.encryption_key_file.as_deref(),
            )
            .await?;
            report(&format!(
                "wrote {} ({} trees, {} entries)",
                args.out.display(),
                summary.n_trees,
                summary.n_entries
            ))
        }
        Command::Restore(args) => {
            let database = args.database.resolve(DatabaseArgs::default());
            let summary = agentreg::snapshots::restore(
                &args.input,
                database.as_ref(),
                &args.data_dir,
                args.encryption_key_file.as_deref(),
            )
            .await?;
            let target = match &database {
                Some(_) => "the PostgreSQL database".to_owned(),
                None => args.data_dir.display().to_string(),
            };
            report(&format!(
                "restored {} trees, {} entries into {target}",
                summary.n_trees, summary.n_entries,
            ))?;
            report(
                "snapshots hold no keys: give the restored service the original encryption_key and kas_secret (copy them into its data directory, or point --encryption-key-file and --kas-secret-file at them)",
            )
        }
        Command::Migrate(args) => {
            let Some(database) = args.database.resolve(DatabaseArgs::default()) else {
                anyhow::bail!("agentreg migrate needs --database-url (or AGENTREG_DATABASE_URL)");
            };
            let applied = agentreg::backends::migrate(&database).await?;
            if applied.is_empty() {
                report("the schema is up to date")
            } else {
                let versions: Vec<String> = applied.iter().map(u32::to_string).collect();
                report(&format!("applied migrations {}", versions.join(", ")))
            }
        }
    }
}

/// Prints a one-line result of a command-line operation.
fn report(line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout(), "{line}").context("writing to stdout")
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
