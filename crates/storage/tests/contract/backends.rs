//! The backends under test and their scratch storages: a temporary sled database, or a fresh
//! PostgreSQL database created through the administrative URL in `AGENTREG_TEST_DATABASE_URL`
//! and dropped once its test passes.

use agentreg_storage::embedded::SledStorage;
use agentreg_storage::port::Storage;
use std::io::Write as _;
use std::sync::Arc;

/// The environment variable naming an administrative PostgreSQL connection, such as
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub(crate) const DATABASE_URL_VARIABLE: &str = "AGENTREG_TEST_DATABASE_URL";

/// Every scratch database's name starts with this, so that ones left behind are easy to find.
const DATABASE_PREFIX: &str = "agentreg_contract_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sled,
    Postgres,
}

/// One test's storage, and the database to drop after it on PostgreSQL.
pub(crate) struct Scratch {
    storage: Arc<dyn Storage>,
    database: Option<ScratchDatabase>,
}

impl Scratch {
    /// A fresh, empty storage of `backend`, or `None` when PostgreSQL is not available to this
    /// run (a note says so on stderr, once).
    pub(crate) async fn open(backend: Backend) -> Option<Scratch> {
        match backend {
            Backend::Sled => Some(Scratch {
                storage: Arc::new(SledStorage::temporary().expect("opening a temporary sled")),
                database: None,
            }),
            Backend::Postgres => {
                let admin_url = postgres_admin_url()?;
                let database = ScratchDatabase::create(&admin_url).await;
                let storage = crate::postgres_backend::connect(&database.url).await;
                Some(Scratch {
                    storage,
                    database: Some(database),
                })
            }
        }
    }

    pub(crate) fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// Ends a test: closes the storages, drops their databases if the test passed (a failed
    /// test's database is kept for inspection and named on stderr), then re-raises its panic.
    pub(crate) async fn close_all<const N: usize>(
        scratches: [Scratch; N],
        outcome: std::thread::Result<()>,
    ) {
        for Scratch { storage, database } in scratches {
            drop(storage);
            let Some(database) = database else {
                continue;
            };
            if outcome.is_ok() {
                database.drop_database().await;
            } else {
                note(&format!(
                    "kept PostgreSQL database {} of a failed contract test",
                    database.name
                ));
            }
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// A database created for one test.
struct ScratchDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    async fn create(admin_url: &str) -> ScratchDatabase {
        let name = format!("{DATABASE_PREFIX}{:016x}", rand::random::<u64>());
        // A default collation that ignores punctuation, as glibc's en_US.UTF-8 does, so that a
        // backend relying on the database's default for order or uniqueness fails the cases
        // that expect byte order. A server without ICU gets its own default.
        let linguistic = format!(
            "CREATE DATABASE \"{name}\" TEMPLATE template0 \
             LOCALE_PROVIDER icu ICU_LOCALE 'en-US-u-ka-shifted'"
        );
        if execute(admin_url, &linguistic).await.is_err() {
            execute(admin_url, &format!("CREATE DATABASE \"{name}\""))
                .await
                .unwrap_or_else(|error| panic!("creating database {name}: {error}"));
        }
        ScratchDatabase {
            admin_url: admin_url.to_owned(),
            url: database_url(admin_url, &name),
            name,
        }
    }

    /// Drops the database, ending any connection the backend left open.
    async fn drop_database(self) {
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        execute(&self.admin_url, &statement)
            .await
            .unwrap_or_else(|error| panic!("dropping database {}: {error}", self.name));
    }
}

/// The administrative URL, or `None` when the PostgreSQL cases cannot run. They then pass
/// silently: the end-to-end suite (`tests/it`) prints the one line saying that the PostgreSQL
/// suites were not run.
fn postgres_admin_url() -> Option<String> {
    std::env::var(DATABASE_URL_VARIABLE)
        .ok()
        .filter(|url| !url.is_empty())
}

/// Runs one statement on a connection of its own.
async fn execute(url: &str, statement: &str) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("connecting to {DATABASE_URL_VARIABLE}: {error}"));
    let connection = tokio::spawn(connection);
    let outcome = client.batch_execute(statement).await;
    drop(client);
    connection
        .await
        .expect("the admin connection's task panicked")
        .expect("closing the admin connection");
    outcome
}

/// `admin_url` naming `database` instead of its own: the path of a `postgres://` URL is
/// replaced, and its query (`?sslmode=…`) kept.
fn database_url(admin_url: &str, database: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map_or(0, |scheme_end| scheme_end + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// Writes a line to the process's stderr, past the test harness's capture, so that it shows
/// even when every test passes.
fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "note: {line}");
}

#[test]
fn database_url_replaces_only_the_database() {
    assert_eq!(
        database_url("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        database_url("postgresql://u:p@h/admin?sslmode=disable", "x"),
        "postgresql://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        database_url("postgres://h:5432", "x"),
        "postgres://h:5432/x"
    );
}
