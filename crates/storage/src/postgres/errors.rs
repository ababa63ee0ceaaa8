//! Which driver failures mean "the database is unavailable" (the caller may retry later) and
//! which are engine failures, and how a refused constraint is recognised.

use crate::{EngineError, StoreError};
use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

/// Classifies a driver error: lost or refused connections, timeouts and a server shutting down
/// are [`StoreError::Unavailable`]; anything else is [`StoreError::Engine`].
pub(super) fn pg(error: tokio_postgres::Error) -> StoreError {
    if is_unavailable(&error) {
        return StoreError::Unavailable(EngineError::new(error));
    }
    StoreError::Engine(EngineError::new(error))
}

/// Classifies a failure to get a pooled connection.
pub(super) fn pool(error: PoolError) -> StoreError {
    match error {
        PoolError::Backend(error) => pg(error),
        PoolError::Timeout(_) | PoolError::Closed => {
            StoreError::Unavailable(EngineError::new(error.to_string()))
        }
        PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            StoreError::Engine(EngineError::new(error.to_string()))
        }
    }
}

/// The database did not answer within the operation's deadline.
pub(super) fn timed_out() -> StoreError {
    StoreError::Unavailable(EngineError::new("the database did not answer in time"))
}

/// Whether the error is a refusal by the unique index or constraint `constraint`.
pub(super) fn violates(error: &tokio_postgres::Error, constraint: &str) -> bool {
    error.as_db_error().is_some_and(|db| {
        (*db.code() == SqlState::UNIQUE_VIOLATION || *db.code() == SqlState::FOREIGN_KEY_VIOLATION)
            && db.constraint() == Some(constraint)
    })
}

/// Whether a transaction failed only because it lost a race (deadlock or serialization), so
/// that running it again is safe.
pub(super) fn is_retryable(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

fn is_unavailable(error: &tokio_postgres::Error) -> bool {
    if let Some(db) = error.as_db_error() {
        let code = db.code();
        // 08: connection exceptions; 57014: statement timeout (or cancel); 57P0x: the server is
        // shutting down or starting; 53300: too many connections.
        return code.code().starts_with("08")
            || *code == SqlState::QUERY_CANCELED
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS;
    }
    if error.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    // tokio-postgres exposes its error kinds only through their messages: connecting,
    // communicating, TLS and the connect timeout mean the server could not be reached.
    let message = error.to_string();
    [
        "error connecting to server",
        "error communicating with the server",
        "error performing TLS handshake",
        "timeout waiting for server",
        "connection closed",
    ]
    .iter()
    .any(|prefix| message.starts_with(prefix))
}
