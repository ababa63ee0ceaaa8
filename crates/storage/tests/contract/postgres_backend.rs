//! The PostgreSQL backend's constructor for the contract suite: the one place that knows how to
//! build a `PostgresStorage` on a scratch database.

use agentreg_storage::port::Storage;
use agentreg_storage::postgres::{PostgresOptions, PostgresStorage};
use std::sync::Arc;
use std::time::Duration;

/// Connects to the (empty) database at `database_url`. The pool is large enough for the
/// concurrency cases to contend inside the database rather than in the pool.
pub(crate) async fn connect(database_url: &str) -> Arc<dyn Storage> {
    let options = PostgresOptions {
        url: database_url.to_owned(),
        password: None,
        pool_size: 16,
        statement_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
    };
    let storage = PostgresStorage::connect(options)
        .await
        .unwrap_or_else(|error| panic!("connecting to the scratch database: {error:?}"));
    Arc::new(storage)
}
