//! Online backup: an administrator reads a consistent snapshot of the running service.

use super::{App, Caller, Error};

impl App {
    /// The whole database as a snapshot file (administrators only).
    pub async fn snapshot(&self, caller: &Caller) -> Result<Vec<u8>, Error> {
        if !caller.user.is_admin {
            return Err(Error::Forbidden);
        }
        self.blocking(|store| {
            let mut bytes = Vec::new();
            store.write_snapshot(&mut bytes).map(|_| bytes)
        })
        .await?
        .map_err(|error| Error::internal("writing a snapshot failed", error))
    }
}
