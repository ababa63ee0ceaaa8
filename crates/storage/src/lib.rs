//! agentreg's storage: the port the app talks to ([`port::Storage`]), its two backends (embedded
//! sled, the default, and PostgreSQL for many replicas), the one snapshot format, and argon2-hashed
//! secrets. Each backend enforces every invariant atomically (unique names, the active-token
//! limit, one URL configuration per agent, cascading deletes). No sled or PostgreSQL type appears
//! in its public API.
//!
//! The sled engine ([`Store`], in the modules named after resources) is synchronous and may block
//! on disk; [`embedded::SledStorage`] adapts it to the port by running it on the blocking pool.
//! Every mutating operation flushes the log before it returns, so a write that a caller has
//! acknowledged survives a crash.

pub mod agent_tokens;
pub mod agents;
pub mod audit;
pub mod backup;
mod combine;
mod dataset;
pub mod embedded;
mod group_commit;
pub mod hashing;
pub mod identity;
mod ids;
mod instance;
pub mod port;
mod positions;
pub mod postgres;
mod records;
mod retrievals;
mod schema;
pub mod url_configs;

use records::DecodeError;
use schema::IdKind;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionResult};
use std::path::Path;

pub use hashing::{SecretHash, SecretHasher};

/// sled's page cache. sled's default (1 GiB) would make the service's memory grow to that for
/// no benefit at agentreg's record counts.
pub const CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

/// A failure of the storage engine or of the data it holds, as opposed to a refused operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine failed")]
    Engine(#[source] EngineError),
    #[error("a stored {tree} record is unreadable")]
    Corrupt {
        tree: &'static str,
        #[source]
        source: DecodeError,
    },
    #[error("a stored {tree} index points at a missing record")]
    Dangling { tree: &'static str },
    /// The database cannot be reached, or did not answer in time. The operation did not happen
    /// (or did not commit); the caller may retry once the database is back.
    #[error("the database is unavailable")]
    Unavailable(#[source] EngineError),
}

/// The storage engine's own error, kept opaque so that its type does not leak.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct EngineError(Box<dyn std::error::Error + Send + Sync>);

impl EngineError {
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> EngineError {
        EngineError(error.into())
    }
}

fn engine(error: sled::Error) -> StoreError {
    StoreError::Engine(EngineError::new(error))
}

impl From<group_commit::SharedFlushFailed> for StoreError {
    fn from(error: group_commit::SharedFlushFailed) -> StoreError {
        StoreError::Engine(EngineError::new(error))
    }
}

/// Opening the store failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another live store (in this process or another) holds the directory.
    #[error("the store at {path} is in use by another process (is the service still running?)")]
    Locked { path: String },
    #[error("opening the store at {path} failed")]
    Engine {
        path: String,
        #[source]
        source: EngineError,
    },
}

impl OpenError {
    /// Whether the directory is held by another live store; it may be free a moment later.
    pub fn is_locked(&self) -> bool {
        matches!(self, OpenError::Locked { .. })
    }
}

/// The file whose lock marks a directory as held by a live store.
const LOCK_FILE: &str = "agentreg.lock";

/// How long opening waits for sled to release the lock of a store this process just dropped:
/// its background threads hold the database for a few moments after the last handle goes.
const SLED_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The handle to the database. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    trees: Trees,
    /// Writers hold it shared; a snapshot holds it exclusively, so that it sees no write half
    /// done across trees.
    gate: std::sync::Arc<std::sync::RwLock<()>>,
    /// Where each agent stands in its project's lists, rebuilt from `agent_names` at open.
    positions: std::sync::Arc<positions::AgentPositions>,
    /// The locked [`LOCK_FILE`] of an on-disk store, held for as long as any clone lives.
    lock: Option<std::sync::Arc<std::fs::File>>,
    /// Lets concurrent writers share flushes (group commit).
    group_commit: std::sync::Arc<group_commit::GroupCommit>,
    /// Applies concurrent agent registrations together, in one transaction and one flush.
    registrations: std::sync::Arc<agents::Registrations>,
    /// Projects (with their owners) decoded before; see [`identity::DecodedProjects`].
    decoded_projects: std::sync::Arc<identity::DecodedProjects>,
    /// Agents decoded before; see [`agents::DecodedAgents`].
    decoded_agents: std::sync::Arc<agents::DecodedAgents>,
    /// The unused rest of each kind's reserved block of ids.
    id_blocks: std::sync::Arc<ids::IdBlocks>,
}

/// A write in progress; see [`Store::writing`].
#[must_use = "a write is finished when this drops"]
struct Writing<'a> {
    _gate: std::sync::RwLockReadGuard<'a, ()>,
    write: group_commit::Write<'a>,
}

/// Pauses a synchronous open while sled releases a lock (only ever on a blocking thread).
#[expect(
    clippy::disallowed_methods,
    reason = "Store::open is synchronous and runs on a blocking thread"
)]
fn wait_briefly() {
    std::thread::sleep(std::time::Duration::from_millis(10));
}

#[derive(Clone)]
struct Trees {
    meta: sled::Tree,
    users: sled::Tree,
    usernames: sled::Tree,
    user_emails: sled::Tree,
    pats: sled::Tree,
    pat_handles: sled::Tree,
    projects: sled::Tree,
    project_paths: sled::Tree,
    members: sled::Tree,
    agents: sled::Tree,
    agent_names: sled::Tree,
    project_agent_counts: sled::Tree,
    agent_token_sets: sled::Tree,
    agent_tokens: sled::Tree,
    agent_token_handles: sled::Tree,
    agent_token_last_used: sled::Tree,
    url_configurations: sled::Tree,
    audit_events: sled::Tree,
    rotation_retrievals: sled::Tree,
}

impl Store {
    /// Opens (or creates) the database in `dir`. A directory held by another live store is
    /// refused with [`OpenError::Locked`].
    pub fn open(dir: &Path) -> Result<Store, OpenError> {
        let path = dir.display().to_string();
        let failed = |source: EngineError| OpenError::Engine {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|error| failed(EngineError::new(error)))?;
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(|error| failed(EngineError::new(error)))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked { path: path.clone() });
            }
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(failed(EngineError::new(error)));
            }
        }
        // The directory is ours, so sled's own lock can only be held by a store this process
        // has just dropped; sled reports that as an `Other` I/O error, and it clears shortly.
        let started = std::time::Instant::now();
        let mut store = loop {
            let config = sled::Config::new()
                .path(dir)
                .cache_capacity(CACHE_CAPACITY_BYTES);
            match Store::from_config(config) {
                Err(sled::Error::Io(error))
                    if error.kind() == std::io::ErrorKind::Other
                        && started.elapsed() < SLED_RELEASE_WAIT =>
                {
                    wait_briefly();
                }
                Err(error) => return Err(failed(EngineError::new(error))),
                Ok(store) => break store,
            }
        };
        store.lock = Some(std::sync::Arc::new(lock));
        Ok(store)
    }

    /// An in-memory database that disappears when dropped, for tests.
    pub fn temporary() -> Result<Store, OpenError> {
        let config = sled::Config::new().temporary(true);
        Store::from_config(config).map_err(|source| OpenError::Engine {
            path: "<temporary>".to_owned(),
            source: EngineError::new(source),
        })
    }

    fn from_config(config: sled::Config) -> Result<Store, sled::Error> {
        let db = config.open()?;
        let trees = Trees {
            meta: db.open_tree(schema::META)?,
            users: db.open_tree(schema::USERS)?,
            usernames: db.open_tree(schema::USERNAMES)?,
            user_emails: db.open_tree(schema::USER_EMAILS)?,
            pats: db.open_tree(schema::PATS)?,
            pat_handles: db.open_tree(schema::PAT_HANDLES)?,
            projects: db.open_tree(schema::PROJECTS)?,
            project_paths: db.open_tree(schema::PROJECT_PATHS)?,
            members: db.open_tree(schema::MEMBERS)?,
            agents: db.open_tree(schema::AGENTS)?,
            agent_names: db.open_tree(schema::AGENT_NAMES)?,
            project_agent_counts: db.open_tree(schema::PROJECT_AGENT_COUNTS)?,
            agent_token_sets: db.open_tree(schema::AGENT_TOKEN_SETS)?,
            agent_tokens: db.open_tree(schema::AGENT_TOKENS)?,
            agent_token_handles: db.open_tree(schema::AGENT_TOKEN_HANDLES)?,
            agent_token_last_used: db.open_tree(schema::AGENT_TOKEN_LAST_USED)?,
            url_configurations: db.open_tree(schema::URL_CONFIGURATIONS)?,
            audit_events: db.open_tree(schema::AUDIT_EVENTS)?,
            rotation_retrievals: db.open_tree(schema::ROTATION_RETRIEVALS)?,
        };
        let positions = positions::AgentPositions::load(&trees.agent_names)?;
        Ok(Store {
            db,
            trees,
            gate: std::sync::Arc::default(),
            positions: std::sync::Arc::new(positions),
            lock: None,
            group_commit: std::sync::Arc::default(),
            registrations: std::sync::Arc::default(),
            decoded_projects: std::sync::Arc::default(),
            decoded_agents: std::sync::Arc::default(),
            id_blocks: std::sync::Arc::default(),
        })
    }

    /// Held by every write for the span of its transaction: it keeps snapshots out (see
    /// [`Store::write_snapshot`]) and tells group commit that a write is in progress. Hand it to
    /// [`Store::commit`] to make the write durable; never wait for a flush while holding it.
    fn writing(&self) -> Writing<'_> {
        Writing {
            // The guarded data is `()`, so a poisoned lock holds nothing inconsistent.
            _gate: self
                .gate
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            write: self.group_commit.begin(),
        }
    }

    /// Finishes a write and returns once it is durable. Concurrent writers share flushes.
    fn commit(&self, writing: Writing<'_>) -> Result<(), StoreError> {
        let Writing { _gate, write } = writing;
        drop(_gate);
        self.group_commit.commit(write, || self.flush_engine())
    }

    /// Makes every write finished so far durable. Concurrent callers share flushes: a caller
    /// waits for the first flush that starts after its call, which may be one another caller runs.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.group_commit.flush(|| self.flush_engine())
    }

    fn flush_engine(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(engine)
    }

    /// The next id of a kind: increasing and never reused, even across restarts (see
    /// [`ids`]). Taken before a transaction starts, so a refused or re-run transaction leaves a
    /// gap rather than a reused id.
    fn next_id(&self, kind: IdKind) -> Result<u64, StoreError> {
        self.id_blocks.next(&self.trees.meta, kind)
    }
}

/// Decodes a record read outside a transaction.
fn decode<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    records::decode(bytes).map_err(|source| StoreError::Corrupt { tree, source })
}

/// Decodes a record read inside a transaction, aborting it on failure.
fn decode_in_tx<T, E>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T, ConflictableTransactionError<E>>
where
    T: serde::de::DeserializeOwned,
    E: From<StoreError>,
{
    decode(tree, bytes).map_err(|error| ConflictableTransactionError::Abort(E::from(error)))
}

/// Aborts a transaction with an operation error.
fn abort<E>(error: E) -> ConflictableTransactionError<E> {
    ConflictableTransactionError::Abort(error)
}

/// Unwraps a transaction's outcome into the operation's error type.
fn finish_tx<T, E: From<StoreError>>(result: TransactionResult<T, E>) -> Result<T, E> {
    match result {
        Ok(value) => Ok(value),
        Err(TransactionError::Abort(error)) => Err(error),
        Err(TransactionError::Storage(error)) => Err(E::from(engine(error))),
    }
}

/// One page of an ordered list, with the total across all pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

/// Which slice of a list to read: skip `offset` items, then take at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageWindow {
    pub offset: u64,
    pub limit: u64,
}

/// Test fixtures shared by the storage modules' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use agentreg_domain::names::{ProjectNaming, UserIdentity};

    pub(crate) fn store() -> Store {
        Store::temporary().unwrap()
    }

    /// Opens `dir` again after a store on it was dropped.
    pub(crate) fn reopen(dir: &std::path::Path) -> Store {
        Store::open(dir).unwrap()
    }

    /// A user `owner` with a project `owner/app`; returns (user id, project id).
    pub(crate) fn project(store: &Store) -> (u64, u64) {
        let identity = UserIdentity::parse("owner", "Owner", "owner@example.com").unwrap();
        let user = store.create_user(&identity, false, 1).unwrap();
        let naming = ProjectNaming::parse(Some("app"), None).unwrap();
        let project = store
            .create_project(user.id.get(), &naming, None, 2)
            .unwrap();
        (user.id.get(), project.id.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_held_by_a_live_store_is_refused_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();

        let second = Store::open(dir.path());

        assert!(matches!(second, Err(OpenError::Locked { .. })));
        drop(store);
        assert!(
            Store::open(dir.path()).is_ok(),
            "the lock goes with the store"
        );
    }
}
