//! Which storage backend serves this process: embedded sled in `<data-dir>/db` by default, or
//! PostgreSQL with `--database-url`. Everything above this module sees only the storage port.

use crate::config::DatabaseSettings;
use agentreg_storage::embedded::SledStorage;
use agentreg_storage::port::Storage;
use agentreg_storage::postgres::{PostgresOptions, PostgresStorage};
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long connecting to PostgreSQL may take at start before the service gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the configured backend. For PostgreSQL this connects, and applies pending migrations
/// under an advisory lock so that replicas starting together migrate once.
pub async fn open(
    database: Option<&DatabaseSettings>,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn Storage>> {
    match database {
        Some(database) => {
            let options = postgres_options(database)?;
            let storage = PostgresStorage::connect(options)
                .await
                .context("connecting to PostgreSQL")?;
            Ok(Arc::new(storage))
        }
        None => {
            let db_dir = data_dir.join("db");
            let storage = tokio::task::spawn_blocking(move || SledStorage::open(&db_dir))
                .await
                .context("opening the store")?
                .context("opening the store")?;
            Ok(Arc::new(storage))
        }
    }
}

/// Applies pending PostgreSQL migrations; returns the versions applied now.
pub async fn migrate(database: &DatabaseSettings) -> anyhow::Result<Vec<u32>> {
    let options = postgres_options(database)?;
    agentreg_storage::postgres::migrate(&options)
        .await
        .context("migrating the PostgreSQL schema")
}

fn postgres_options(database: &DatabaseSettings) -> anyhow::Result<PostgresOptions> {
    let password = match &database.password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("reading the database password file {}", path.display())
            })?;
            Some(text.trim_end_matches(['\r', '\n']).to_owned())
        }
        None => None,
    };
    Ok(PostgresOptions {
        url: database.url.clone(),
        password,
        pool_size: database.pool_size,
        statement_timeout: database.statement_timeout,
        connect_timeout: CONNECT_TIMEOUT,
    })
}
