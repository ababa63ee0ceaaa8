//! Online backup: an administrator reads a consistent snapshot of the running service.

use super::{App, Caller, Error};

impl App {
    /// The whole database as a snapshot file (administrators only).
    pub async fn snapshot(&self, caller: &Caller) -> Result<Vec<u8>, Error> {
        if !caller.user.is_admin {
            return Err(Error::Forbidden);
        }
        match self.storage().snapshot().await {
            Ok(bytes) => Ok(bytes),
            Err(agentreg_storage::backup::SnapshotError::Store(error)) => Err(error.into()),
            Err(error) => Err(Error::internal("writing a snapshot failed", error)),
        }
    }
}
